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
    s = NodeState{};
    s.epoch = epoch;
  }
  return &s;
}

SequenceTracker::Verdict SequenceTracker::onPost(const std::string& node, uint64_t epoch, const ChannelName& channel,
                                                 uint64_t seq) {
  NodeState* s = state(node, epoch);
  if (!s) return {};
  auto [it, fresh] = s->last.try_emplace(channel, 0);
  if (fresh && !s->announced) it->second = seq - 1;  // first heard of here: nothing before counts
  if (seq <= it->second) return {};                   // seen already (or older)
  Verdict v{true, seq - it->second - 1};
  it->second = seq;
  return v;
}

uint64_t SequenceTracker::onMark(const std::string& node, uint64_t epoch, const ChannelName& channel, uint64_t seq) {
  NodeState* s = state(node, epoch);
  if (!s) return 0;
  auto [it, fresh] = s->last.try_emplace(channel, 0);
  if (fresh && !s->announced) {
    it->second = seq;  // the baseline: posted before we listened
    return 0;
  }
  if (seq <= it->second) return 0;
  const uint64_t missed = seq - it->second;
  it->second = seq;
  return missed;
}

void SequenceTracker::heartbeatDone(const std::string& node, uint64_t epoch) {
  if (NodeState* s = state(node, epoch)) s->announced = true;
}

}  // namespace swipc::federation
