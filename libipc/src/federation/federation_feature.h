// FederationFeature: a scope across hosts over NATS (DESIGN §16), as a daemon Feature. Started
// only when the daemon has --nats; without it nothing here exists, connects or runs.
//
// - Node: announces itself every second on swipc.<scope>.node (its name, its epoch, its
//   high-water mark per channel) and watches the others' announcements; a node silent for 3 s is
//   gone. Both kinds of change, and every connection transition, are logged.
// - BroadcastChannel: every post that originates here (daemon/broadcast_hub's post observer) is
//   published with (node, epoch, per-channel seq); a post from another node is written into the
//   local channel's ring (BroadcastHub::injectRemote) when the channel has an object here. Posts
//   another node made that never arrived (NATS dropped them, a node was cut off) are counted by
//   the SequenceTracker and reach the local objects as lapped(missed) (reportRemoteGap). Local
//   delivery never waits for any of this: the observer only queues (NatsLink).
//
// @concurrent: single-threaded (the daemon's loop thread); NatsLink hands everything over.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "daemon/broadcast_hub.h"
#include "daemon/feature.h"
#include "federation/nats_link.h"
#include "federation/remote_post.h"
#include "federation/sequence_tracker.h"

namespace swipc::federation {

class FederationFeature final : public daemon::Feature {
 public:
  /// How often a node announces itself, and how long a silent one stays alive.
  static constexpr std::chrono::milliseconds HEARTBEAT_INTERVAL{1000};
  static constexpr std::chrono::milliseconds NODE_TIMEOUT{3000};

  explicit FederationFeature(std::shared_ptr<daemon::BroadcastHub> hub) : hub_(std::move(hub)) {}
  ~FederationFeature() override;

  std::string_view name() const override { return "federation"; }
  /// Checks the node name, starts connecting (in the background: never waits for NATS), hooks
  /// the broadcast hub, starts the heartbeat.
  Result<void> start(daemon::FeatureHost& host) override;
  void stop() override;

 private:
  void localPost(const ChannelName& name, const uint8_t* envelope, size_t bytes);
  void onMessage(const std::string& subject, const std::vector<uint8_t>& data);
  void onRemotePost(const std::vector<uint8_t>& data);
  void onHeartbeat(const std::vector<uint8_t>& data);
  void onState(NatsLink::State state, const std::string& url);
  void tick();
  void announce();
  /// `missed` posts of another node on `channel` never came: the local objects learn it.
  void reportGap(const std::string& node, const ChannelName& channel, uint64_t missed);

  std::shared_ptr<daemon::BroadcastHub> hub_;
  daemon::FeatureHost* host_ = nullptr;
  std::unique_ptr<NatsLink> link_;
  std::string node_;
  uint64_t epoch_ = 0;
  Subjects subjects_;
  core::EventLoop::TimerId timer_ = 0;
  bool timerArmed_ = false;
  /// Our posts per channel in this epoch (the seq of the last one; also the heartbeat's marks).
  std::map<ChannelName, uint64_t> sent_;
  SequenceTracker tracker_;
  struct Peer {
    uint64_t epoch = 0;
    Clock::time_point lastHeard;
    bool alive = false;
  };
  std::map<std::string, Peer> peers_;
  bool everConnected_ = false;
  uint64_t notSent_ = 0;  // posts that did not go out (not connected, queue full)
};

}  // namespace swipc::federation
