// SequenceTracker: what this node has seen of every other node's BroadcastChannel posts, so that
// a post NATS never brought here is counted, never silently lost (DESIGN §16). Each node numbers
// its posts per channel from 1 within an epoch (its start); posts and heartbeats (which carry the
// sender's last number per channel) say how far each sender has got. A hole between what was seen
// and what a later post or heartbeat shows is the number of posts missed.
//
// Baselines: what was posted before this node first heard of a sender is not missed (a node that
// joins late gets nothing posted before). The first heartbeat of a sender sets the baseline of
// every channel it names; a channel first heard of in a post, before that, starts at that post.
// After it, a channel the sender never named before started at 1.
//
// Runs: a sender numbers each channel within a run (remote_post.h). Every heartbeat names every
// run in use there, and a post always travels before any heartbeat built after it, so a channel
// a heartbeat does not name has no run in use: it is forgotten here (what is kept stays as small
// as what the senders use). A post or mark of a run not known here is a run started after the
// last one known: numbered from 1 (or, before the sender's first heartbeat, a baseline).
//
// @concurrent: single-threaded (the daemon's loop thread).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "swipc/types.h"

namespace swipc::federation {

class SequenceTracker {
 public:
  struct Verdict {
    bool deliver = false;  // a new post, in order: deliver it
    uint64_t missed = 0;   // posts of that sender on that channel that never came, before this one
    bool refused = false;  // a channel not kept yet, past the budget: not tracked, not delivered
  };

  /// What the channels kept (every node's) may cost at most: their names' bytes plus
  /// CHANNEL_OVERHEAD each. Senders are other hosts, any NATS client among them.
  static constexpr size_t DEFAULT_BUDGET = 64u << 20;
  static constexpr size_t CHANNEL_OVERHEAD = 96;
  explicit SequenceTracker(size_t budgetBytes = DEFAULT_BUDGET) : budget_(budgetBytes) {}

  /// Post `seq` of run `run` of `node` (epoch `epoch`) on `channel` arrived. A channel new to
  /// this node past the budget is refused (Verdict::refused).
  Verdict onPost(const std::string& node, uint64_t epoch, const ChannelName& channel, uint64_t seq, uint32_t run = 1);
  /// `node`'s heartbeat says its last post on `channel` (run `run`) is `seq`: the posts missed up
  /// to there. A heartbeat is taken as a whole: onMark() for each mark, then heartbeatDone().
  /// A channel new here past the budget is not kept (its later posts are refused).
  uint64_t onMark(const std::string& node, uint64_t epoch, const ChannelName& channel, uint64_t seq,
                  uint32_t run = 1);
  /// Every mark of `node`'s heartbeat has been given: its later new channels start at 1, and the
  /// channels it did not name are forgotten (returned).
  std::vector<ChannelName> heartbeatDone(const std::string& node, uint64_t epoch);

  /// Forgets everything of `node` (gone for good).
  void forgetNode(const std::string& node);
  /// What the channels kept cost now (see DEFAULT_BUDGET).
  size_t usedBytes() const { return used_; }

  /// Senders known (tests, logs).
  size_t nodeCount() const { return nodes_.size(); }
  /// Channels kept for `node` (tests).
  size_t channelCount(const std::string& node) const {
    auto it = nodes_.find(node);
    return it == nodes_.end() ? 0 : it->second.channels.size();
  }

 private:
  struct Channel {
    uint32_t run = 0;
    uint64_t last = 0;       // the last seq seen or accounted for in that run
    uint64_t namedIn = 0;    // the heartbeat (NodeState::heartbeats) that last named it
  };
  struct NodeState {
    uint64_t epoch = 0;
    bool announced = false;  // a heartbeat of this epoch was seen
    uint64_t heartbeats = 0; // of this epoch, taken whole
    std::map<ChannelName, Channel> channels;
  };
  /// The state of `node`, started again when `epoch` is not the one it had.
  NodeState* state(const std::string& node, uint64_t epoch);
  /// `channel` of `s`, made when within the budget; nullptr past it. `fresh`: made now.
  Channel* channel(NodeState& s, const ChannelName& channel, bool& fresh);
  static size_t cost(const ChannelName& c) { return c.str().size() + CHANNEL_OVERHEAD; }
  void release(const NodeState& s);

  std::map<std::string, NodeState> nodes_;
  size_t budget_;
  size_t used_ = 0;
};

}  // namespace swipc::federation
