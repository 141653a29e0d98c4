// FederationFeature: a scope across hosts over NATS (DESIGN §16), as a daemon Feature. Started
// only when the daemon has --nats; without it nothing here exists, connects or runs.
//
// - Node: announces itself every second on swipc.<scope>.node (its name, its epoch, its
//   high-water mark per channel) and watches the others' announcements; a node silent for 3 s is
//   gone. Both kinds of change, and every connection transition, are logged.
// - Interest: each announcement also lists the channels this node has objects of (sent at once
//   when that set changes, else every second). A post that originates here is published only when
//   some other node announced its channel (DESIGN §16: a remote object is a destination once its
//   node announced it, within 1 s of its open), so a channel used on one node costs nothing over
//   NATS. A node's interest stays until it announces another set, restarts or leaves, also while
//   it is silent. Where the others' interest cannot be known, every channel is published (and
//   numbered, so what does not arrive is a gap): while this node is off NATS, for INTEREST_GRACE
//   after each (re)connection, and while another node is silent (SILENT_AFTER .. PEER_FORGET).
// - Runs: a channel's numbering is a run (remote_post.h); one not posted on for
//   --nats-channel-idle-ms ends once every other node has heard its last mark (runs.h), so the
//   announcements, and what every node keeps, stay as small as the channels in use.
// - BroadcastChannel: every post that originates here (daemon/broadcast_hub's post observer), of a
//   channel some other node wants, is published with (node, epoch, per-channel seq, counting
//   published posts only); a post from another node is written into the
//   local channel's ring (BroadcastHub::injectRemote) when the channel has an object here. Posts
//   another node made that never arrived (NATS dropped them, a node was cut off) are counted by
//   the SequenceTracker and reach the local objects as lapped(missed) (reportRemoteGap). Local
//   delivery never waits for any of this: the observer only queues (NatsLink).
// - Clients: matchAll / get / postMessage reach the clients of the other live nodes. A request
//   goes to each asked node's direct subject, the answers come back on ours (remote_clients.h);
//   every request has REMOTE_TIMEOUT, after which what did not answer is left out (matchAll),
//   not found (get) or a TimeoutError (postMessage). Nothing here waits: the answers finish the
//   request on the loop. Requests from other nodes are served from the local Clients API.
//
// @concurrent: single-threaded (the daemon's loop thread); NatsLink hands everything over.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "daemon/broadcast_hub.h"
#include "daemon/feature.h"
#include "federation/nats_link.h"
#include "federation/remote_clients.h"
#include "federation/remote_post.h"
#include "federation/runs.h"
#include "federation/sequence_tracker.h"

namespace swipc::federation {

class FederationFeature final : public daemon::Feature {
 public:
  /// How often a node announces itself, and how long a silent one stays alive.
  static constexpr std::chrono::milliseconds HEARTBEAT_INTERVAL{1000};
  static constexpr std::chrono::milliseconds NODE_TIMEOUT{3000};

  /// How long a request to another node's clients waits for its answer.
  static constexpr std::chrono::milliseconds REMOTE_TIMEOUT{2000};
  /// After a (re)connection, every channel is published this long (two announcements of the others).
  static constexpr std::chrono::milliseconds INTEREST_GRACE{2500};
  /// A node not heard for this long may have opened channels we cannot know of: every channel is
  /// published (and numbered, so it learns what it missed as lapped) until it is heard again, or
  /// until PEER_FORGET has passed. Two and a half heartbeats: a late one under load does not
  /// flip it. Seen at the next tick, so 2.5 .. 3.5 s after the node's last announcement.
  static constexpr std::chrono::milliseconds SILENT_AFTER{2500};
  /// A node silent this long no longer makes every channel published: a node cut off for
  /// longer may not learn of posts on channels it opened during the cut.
  static constexpr std::chrono::milliseconds PEER_FORGET{600000};
  /// Announcements on a change of interest or a new peer are at least this far apart.
  static constexpr std::chrono::milliseconds ANNOUNCE_SPACING{50};
  /// An announcement larger than this leaves its interest out (NATS' default max_payload is 1 MiB).
  static constexpr size_t MAX_HEARTBEAT_BYTES = 256 * 1024;
  /// Other nodes known at once. Any NATS client on the scope's subjects can pose as a node: past
  /// this many, a new node's announcement takes the place of the node silent longest (one that is
  /// gone), or is refused (federationRejected) while every one known is alive.
  static constexpr size_t MAX_PEERS = 256;
  /// A node's announced interest past this many channels, or this many bytes of names, is taken
  /// as "every channel" (what it costs here stays bounded; it gets more than it asked for).
  static constexpr size_t MAX_PEER_INTEREST = 4096;
  static constexpr size_t MAX_PEER_INTEREST_BYTES = 256 * 1024;
  /// Senders of posts not (yet) announced here: a node's posts can arrive before the first of its
  /// announcements this node hears (it subscribed in between). What is kept of one is forgotten
  /// UNANNOUNCED_TTL after its first post unless an announcement of it came; past this many at
  /// once, posts of another such sender are refused (federationRejected).
  static constexpr size_t MAX_UNANNOUNCED = 64;
  static constexpr std::chrono::milliseconds UNANNOUNCED_TTL{10000};

  /// This node's own clients, as the service worker's Clients API has them.
  struct LocalClients {
    std::function<std::vector<ClientHandle>(const MatchAllOptions&)> matchAll;
    std::function<std::optional<ClientHandle>(const ClientId&)> get;
    std::function<Result<void>(const ClientId&, const Value&)> post;
  };

  FederationFeature(std::shared_ptr<daemon::BroadcastHub> hub, LocalClients local)
      : hub_(std::move(hub)), local_(std::move(local)) {}
  ~FederationFeature() override;

  /// This node's name (valid once started).
  const std::string& node() const { return node_; }

  /// The clients of every other live node matching `opts`, nodes by name, each node's in its
  /// order. `done` runs on the loop once every asked node answered or REMOTE_TIMEOUT passed.
  void matchAllRemote(const MatchAllOptions& opts, std::function<void(std::vector<RemoteClient>)> done);
  /// The client `id` on another live node, or nullopt (none has it, none answered in time).
  void getRemote(const ClientId& id, std::function<void(std::optional<RemoteClient>)> done);
  /// postMessage to client `id` of `node`: `done` gets what that node's Clients API said, or
  /// NotFoundError (the node is not live), Disconnected (no NATS), TimeoutError (no answer).
  void postRemote(const std::string& node, const ClientId& id, const Value& data, std::function<void(Result<void>)> done);
  /// postMessage to client `id` wherever it lives: every live node is asked; delivered as soon
  /// as one says so; else the most telling error (QueueFull, … before NotFoundError), and
  /// TimeoutError when a node that might have it did not answer.
  void postAnywhere(const ClientId& id, const Value& data, std::function<void(Result<void>)> done);

  std::string_view name() const override { return "federation"; }
  /// Checks the node name, starts connecting (in the background: never waits for NATS), hooks
  /// the broadcast hub, starts the heartbeat.
  Result<void> start(daemon::FeatureHost& host) override;
  void stop() override;

 private:
  void localPost(const ChannelName& name, const uint8_t* envelope, size_t bytes);
  /// A channel appeared here or went: announce the new interest soon (once per loop turn).
  void localChannel(const ChannelName& name, bool open);
  /// Another node's announced interest (nullopt: it does not say, so it wants every channel).
  void setInterest(const std::string& node, std::optional<std::vector<ChannelName>> interest);
  /// Whether a post of `name` is published (and numbered). Every channel is while this node
  /// cannot know the others' interest: NATS down (the post is then a gap the others will see),
  /// for INTEREST_GRACE after each (re)connection (until their announcements came), and while
  /// another node is silent (it may have opened channels meanwhile).
  bool wanted(const ChannelName& name) const {
    return wantAll_ > 0 || wanted_.count(name) > 0 || !linkUp_ || inGrace_ || silentPeers_ > 0;
  }
  /// Counts the other nodes that went silent (see SILENT_AFTER).
  void updateSilence();
  /// This node's announcement (`leaving`: its last one).
  std::string heartbeatText(bool leaving);
  /// Announces after the current loop turn, at most once per ANNOUNCE_SPACING.
  void announceSoon();
  /// Connected: every channel is published for INTEREST_GRACE (logged when that ends).
  void startGrace();
  /// Brings the federationBundled counter up to the link's count.
  void syncBundled();
  void onMessage(std::string_view subject, std::span<const uint8_t> data);
  void onRemotePost(std::span<const uint8_t> data);
  void onHeartbeat(std::span<const uint8_t> data);
  void onDirect(std::span<const uint8_t> data);
  void serve(const ClientsRequest& request);
  void onAnswer(ClientsAnswer answer);
  /// Sends `request` (its req is set here) to each of `nodes`; false when NATS did not take it.
  struct Pending;
  void ask(ClientsRequest request, std::vector<std::string> nodes, Pending pending);
  void finish(uint64_t req, bool timedOut);
  std::vector<std::string> liveNodes() const;
  void onState(NatsLink::State state, const std::string& url);
  void tick();
  /// `tick`: the heartbeat's own (counted as a repeat of every mark, runs.h).
  void announce(bool tick);
  /// Ends the runs not posted on for idleTicks_ whose last mark every other node has heard
  /// (runs.h): their channels leave the announcements. Only while connected and past the grace.
  void endIdleRuns();
  /// Forgets the nodes that left runs::PEER_GONE ago (what the tracker kept of them too), and
  /// the senders of posts that were not announced within UNANNOUNCED_TTL.
  void forgetGonePeers();
  /// Room for one more node at MAX_PEERS: forgets the one silent longest among those gone (not
  /// alive). False when every node known is alive.
  bool makeRoomForPeer();
  /// Forgets a node: its interest leaves the counts, the tracker forgets its numbering.
  void dropPeer(const std::string& node);
  /// Something from another host refused by a limit (MAX_PEERS, MAX_UNANNOUNCED, the tracker's
  /// budget): counted; logged at most every 10 s per limit.
  enum class Limit { PEERS, UNANNOUNCED, CHANNELS };
  void refuseByLimit(Limit limit, const std::string& what);
  /// A local post did not go out (NATS unreachable, or the link's queue full): counted, and
  /// logged with the reason at most every 10 s.
  void notPublished();
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
  /// Our posts per channel run in use (the seq of the last one; also the heartbeat's marks).
  struct Sent {
    uint64_t seq = 0;       // the last post's
    uint32_t run = 0;       // which numbering (remote_post.h)
    uint64_t lastTick = 0;  // ticks_ when it was last posted on
    uint64_t announcedAtPost = 0;  // announced_ then
    std::string subject;    // the channel's subject, made once
  };
  std::map<ChannelName, Sent> sent_;
  uint32_t nextRun_ = 1;  // runs are unique within the epoch
  uint64_t ticks_ = 0;    // heartbeat ticks since start
  uint64_t announced_ = 0;  // announcements the link took (runs.h counts repeats of a mark in them)
  uint64_t idleTicks_ = 0;  // a run not posted on for this many ticks ends (--nats-channel-idle-ms)
  uint64_t bundledSeen_ = 0;  // the link's bundled() already counted
  SequenceTracker tracker_;
  struct Peer {
    uint64_t epoch = 0;
    Clock::time_point lastHeard;
    bool alive = false;
    bool announced = false;                         // its interest is in the counts below
    bool left = false;                              // it announced that it stops (this epoch)
    uint64_t heardSince = 0;                        // announced_ when heard again after a silence
    uint64_t receiveBreaks = 0;                     // as its last announcement said
    std::optional<std::set<ChannelName>> interest;  // nullopt: every channel
  };
  /// Takes `peer`'s announced interest out of wanted_ / wantAll_.
  void uncount(const Peer& peer);
  std::map<std::string, Peer> peers_;
  std::map<std::string, Clock::time_point> unannounced_;  // post senders not announced: first post
  std::vector<uint64_t> remoteWords_;  // a received post's envelope, aligned for the fast lane
  Value remoteValue_;                  // its Value, storage reused post after post
  uint64_t refusedByLimit_[3] = {};           // refuseByLimit() calls per Limit (logged with the count)
  Clock::time_point lastLimitLog_[3] = {};
  std::set<ChannelName> interest_;            // the channels this node has objects of
  std::map<ChannelName, size_t> wanted_;      // channel -> other nodes that announced it
  size_t wantAll_ = 0;                        // other nodes that want every channel
  bool announceSoon_ = false;                 // an announcement is posted to the loop
  std::shared_ptr<bool> alive_;               // while started: what a posted announcement checks
  bool linkUp_ = false;                       // connected to NATS (as the link last said)
  Clock::time_point graceUntil_{};            // every channel is published until then
  bool inGrace_ = false;                      // before graceUntil_ (the grace timer clears it)
  size_t silentPeers_ = 0;                    // other nodes silent past SILENT_AFTER (updateSilence)
  Clock::time_point lastAnnounce_{};
  bool interestTooLarge_ = false;             // the last announcement left its interest out
  LocalClients local_;
  struct Pending {
    ClientsRequest::Kind kind = ClientsRequest::Kind::MATCH_ALL;
    std::set<std::string> waiting;                            // nodes not answered yet
    std::map<std::string, std::vector<RemoteClient>> lists;  // MATCH_ALL: by node name
    std::optional<RemoteClient> client;                      // GET
    Result<void> outcome = Result<void>{};                   // POST
    std::function<void(std::vector<RemoteClient>)> onList;
    std::function<void(std::optional<RemoteClient>)> onClient;
    std::function<void(Result<void>)> onOutcome;
    core::EventLoop::TimerId timer = 0;
    bool timerArmed = false;
  };
  std::map<uint64_t, Pending> pending_;
  uint64_t nextReq_ = 1;
  bool everConnected_ = false;
  uint64_t notSent_ = 0;  // posts that did not go out (not connected, queue full)
  uint64_t notSentLogged_ = 0;          // notSent_ when notPublished() last logged
  Clock::time_point lastNotSentLog_{};  // when it did
};

}  // namespace swipc::federation
