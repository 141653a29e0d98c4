#include "federation/sequence_tracker.h"

namespace swipc::federation {

SequenceTracker::NodeState* SequenceTracker::state(const std::string& node, uint64_t epoch) {
  auto [it, fresh] = nodes_.try_emplace(node);
  NodeState& s = it->second;
  // Another epoch: that node restarted (or, rarely, a straggler of its previous life arrived
  // after the new one spoke). Either way its numbering starts again: new baselines, no gap
  // claimed. Epochs are compared for equality only: a host clock set back must not make a
  // restarted node's posts look stale forever.
  if (fresh || epoch != s.epoch) {
    release(s);
    s = NodeState{};
    s.epoch = epoch;
  }
  return &s;
}

void SequenceTracker::release(const NodeState& s) {
  for (const auto& [name, c] : s.channels) used_ -= cost(name);
}

void SequenceTracker::forgetNode(const std::string& node) {
  auto it = nodes_.find(node);
  if (it == nodes_.end()) return;
  release(it->second);
  nodes_.erase(it);
}

SequenceTracker::Channel* SequenceTracker::channel(NodeState& s, const ChannelName& name, bool& fresh) {
  fresh = false;
  if (auto it = s.channels.find(name); it != s.channels.end()) return &it->second;
  if (used_ + cost(name) > budget_) return nullptr;
  used_ += cost(name);
  fresh = true;
  return &s.channels[name];
}

SequenceTracker::Verdict SequenceTracker::onPost(const std::string& node, uint64_t epoch, const ChannelName& channel,
                                                 uint64_t seq, uint32_t run) {
  NodeState* s = state(node, epoch);
  if (!s) return {};
  bool fresh = false;
  Channel* kept = this->channel(*s, channel, fresh);
  if (!kept) return Verdict{false, 0, true};
  Channel& c = *kept;
  if (fresh || c.run != run) {
    // A run not known here: before the sender's first heartbeat nothing before this post counts;
    // after it, the run started after that heartbeat, at 1.
    c.run = run;
    c.last = s->announced ? 0 : seq - 1;
  }
  if (seq <= c.last) return {};  // seen already (or older)
  Verdict v{true, seq - c.last - 1};
  c.last = seq;
  return v;
}

uint64_t SequenceTracker::onMark(const std::string& node, uint64_t epoch, const ChannelName& channel, uint64_t seq,
                                 uint32_t run) {
  NodeState* s = state(node, epoch);
  if (!s) return 0;
  bool fresh = false;
  Channel* kept = this->channel(*s, channel, fresh);
  if (!kept) return 0;
  Channel& c = *kept;
  c.namedIn = s->heartbeats + 1;  // the heartbeat being taken
  if (fresh || c.run != run) {
    c.run = run;
    if (!s->announced) {
      c.last = seq;  // the baseline: posted before we listened
      return 0;
    }
    c.last = 0;  // a run started since the sender's last heartbeat: every post of it counts
  }
  if (seq <= c.last) return 0;
  const uint64_t missed = seq - c.last;
  c.last = seq;
  return missed;
}

std::vector<ChannelName> SequenceTracker::heartbeatDone(const std::string& node, uint64_t epoch) {
  std::vector<ChannelName> forgotten;
  NodeState* s = state(node, epoch);
  if (!s) return forgotten;
  s->announced = true;
  const uint64_t taken = ++s->heartbeats;
  for (auto it = s->channels.begin(); it != s->channels.end();) {
    if (it->second.namedIn == taken) {
      ++it;
      continue;
    }
    forgotten.push_back(it->first);
    used_ -= cost(it->first);
    it = s->channels.erase(it);
  }
  return forgotten;
}

}  // namespace swipc::federation
