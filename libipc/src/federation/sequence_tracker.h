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
  };

  /// Post `seq` of `node` (epoch `epoch`) on `channel` arrived.
  Verdict onPost(const std::string& node, uint64_t epoch, const ChannelName& channel, uint64_t seq);
  /// `node`'s heartbeat says its last post on `channel` is `seq`: the posts missed up to there.
  /// A heartbeat is taken as a whole: onMark() for each mark, then heartbeatDone().
  uint64_t onMark(const std::string& node, uint64_t epoch, const ChannelName& channel, uint64_t seq);
  /// Every mark of `node`'s heartbeat has been given: its later new channels start at 1.
  void heartbeatDone(const std::string& node, uint64_t epoch);

  /// Senders known (tests, logs).
  size_t nodeCount() const { return nodes_.size(); }

 private:
  struct NodeState {
    uint64_t epoch = 0;
    bool announced = false;  // a heartbeat of this epoch was seen
    std::map<ChannelName, uint64_t> last;
  };
  /// The state of `node`, started again when `epoch` is not the one it had.
  NodeState* state(const std::string& node, uint64_t epoch);

  std::map<std::string, NodeState> nodes_;
};

}  // namespace swipc::federation
