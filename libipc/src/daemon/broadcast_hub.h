// BroadcastHub: the daemon's side of BroadcastChannel (DESIGN §4 "Broadcast rings", §9). One
// channel per name with at least one open object anywhere in the scope; each channel has one
// ring in a sealed memfd that the daemon writes and the members map read-only. A post travels
// sender -> daemon -> ring once, whatever the number of receivers; service-worker objects of the
// channel get it at once, in creation order. A channel goes when its last object leaves.
//
// Clients reach it through their envelopes (bcJoin, bcLeave, bcPost: clientJoin/Leave/Post);
// service-worker code through its BroadcastChannel objects (the detail::BroadcastHub interface).
// What it needs from the daemon goes through a narrow Sink, so it is testable with a fake one.
//
// Posting objects are told apart by a tag on each record: a client's tag prefix (one per
// client, given with its first join) | the object id; 0 | id for service-worker objects.
//
// @concurrent: single-threaded; the daemon's loop thread.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "core/broadcast_object.h"
#include "envelope.capnp.h"
#include "queue/broadcast_ring.h"
#include "shm/mapping.h"
#include "swipc/service_worker.h"
#include "swipc/types.h"
#include "wire/codec.h"

namespace swipc::daemon {

class BroadcastHub final : public detail::BroadcastHub {
 public:
  /// What a client is told when its object joined (bcJoined).
  struct Joined {
    uint32_t objectId = 0;
    uint64_t ringId = 0;
    uint64_t startPos = 0;   // the ring's tail now: the object reads from here
    uint64_t startSeq = 0;   // the first channel seq it receives
    uint64_t senderTag = 0;  // the client's tag prefix
  };

  /// What the hub needs from the daemon.
  class Sink {
   public:
    virtual ~Sink() = default;
    /// Passes the ring's memfd to client `id` (once per client and ring). False when it could not.
    virtual bool passRing(const ClientId& id, uint64_t ringId, uint64_t capacity, int fd) = 0;
    virtual void joined(const ClientId& id, const Joined& joined) = 0;
    /// The post `seq` of client `id` is in the ring.
    virtual void ack(const ClientId& id, MessageSeq seq) = 0;
    virtual void reportError(const ClientId& id, Errc code, const std::string& message, uint64_t refSeq) = 0;
    /// Disconnects client `id` now (ProtocolViolation).
    virtual void violation(const ClientId& id, const Error& why) = 0;
    /// Client `id` has `delta` more (or fewer) objects joined: its accounting.
    virtual void channelsJoined(const ClientId& id, int delta) = 0;
    /// A record went into a ring (the daemon's spin phase counts it as activity). The first
    /// one since the last flushWakes() must get flushWakes() called once the loop has handled
    /// what is ready now (readers are woken once per pass, not once per post).
    virtual void published(bool firstSinceFlush) = 0;
  };

  struct Config {
    uint64_t ringBytes = 1 << 20;  // each ring's capacity (power of two)
    uint64_t maxMessageBytes = 64ull << 20;
    /// --max-channels: distinct channel names open in the scope (each holds a ring and an fd).
    size_t maxChannels = 4096;
    /// --max-channels-per-client: BroadcastChannel objects one client may have joined.
    size_t maxObjectsPerClient = 1024;
  };

  /// One channel name with at least one open object somewhere in the scope.
  struct Channel {
    ChannelName name;
    uint64_t ringId = 0;
    uint64_t capacity = 0;
    UniqueFd fd;
    shm::Mapping map;
    queue::BroadcastWriter writer;
    uint64_t nextSeq = 1;
    std::vector<std::pair<ClientId, uint32_t>> members;           // client objects
    std::map<uint32_t, std::shared_ptr<detail::BcObject>> local;  // service-worker objects
    bool wakePending = false;  // records appended since its readers were last woken
    uint64_t laps = 0;         // objects that reported being lapped (clients' bcLapped, gaps)
  };

  BroadcastHub(Sink& sink, Config config, const TypeRegistry& types, Counters& counters)
      : sink_(sink), config_(config), types_(types), counters_(counters) {}

  // ---- clients
  /// bcJoin: object `objectId` of client `id` joins `name`. False when the client was
  /// disconnected (it joined that object twice).
  bool clientJoin(const ClientId& id, const ChannelName& name, uint32_t objectId, MessageSeq seq);
  void clientLeave(const ClientId& id, uint32_t objectId);
  /// bcLapped: object `objectId` of client `id` missed `missed` records (it fell a lap behind, or
  /// a gap record told it of posts from another node that never came): counted in its channel's
  /// laps. What the client says is only a figure for swctl: nothing else trusts it.
  void clientLapped(const ClientId& id, uint32_t objectId, uint64_t missed);
  /// bcPost: `post` (whose bytes `owner` keeps) from object `objectId` of client `id`.
  void clientPost(const ClientId& id, schema::BcPost::Reader post, MessageSeq seq,
                  const std::shared_ptr<const wire::Inbound>& owner);
  /// The same from the fast lane: the Value `data` posted by object `objectId`.
  void clientPostValue(const ClientId& id, uint32_t objectId, const Value& data, bool wantAck, MessageSeq seq);
  /// The client is gone: every object of its leaves (a member process that exits leaves).
  void clientGone(const ClientId& id);

  // ---- service-worker objects (detail::BroadcastHub)
  void open(const std::shared_ptr<detail::BcObject>& obj) override;
  Result<MessageSeq> post(detail::BcObject& obj, const core::OutgoingPayload& payload, bool wantAck) override;
  void close(detail::BcObject& obj) override;

  // ---- federation seam (DESIGN §16; federation/federation_feature.h)
  /// Sees each post that originates on this node (a client's or service-worker code's) once it is
  /// in its ring: the channel and the record's encoded envelope. Never a post injectRemote()
  /// wrote. It runs inside the post, on the loop: it must only queue.
  using PostObserver = std::function<void(const ChannelName& name, const uint8_t* envelope, size_t bytes)>;
  void onLocalPost(PostObserver fn) { postObserver_ = std::move(fn); }
  /// Sees each channel appear (its first object is joining) and go (its last object left, or
  /// every channel at clear()): which channels this node has objects of. On the loop.
  using ChannelObserver = std::function<void(const ChannelName& name, bool open)>;
  void onChannel(ChannelObserver fn) { channelObserver_ = std::move(fn); }
  /// The channels open here (with at least one object, or one joining), in no order.
  std::vector<ChannelName> channelNames() const;
  /// A post from another node: into `name`'s ring and to its service-worker objects, as a post
  /// from none of the objects here. False when no object of `name` is open here, or (then
  /// reported as one missed post) it is larger than a record of this node's ring.
  /// Service-worker objects see `fromNode` as MessageEvent::node.
  bool injectRemote(const ChannelName& name, const std::string& fromNode, schema::Payload::Reader payload,
                    const std::shared_ptr<const wire::Inbound>& owner);
  /// The same for a post the fast lane read: its Value `data`.
  bool injectRemoteValue(const ChannelName& name, const std::string& fromNode, const Value& data);
  /// `missed` posts from another node never reached this one: every object of `name` here learns
  /// it as lapped(missed) (client objects through a gap record in the ring, which takes the
  /// sequence numbers of the missed posts). False when no object of `name` is open here.
  bool reportRemoteGap(const ChannelName& name, uint64_t missed);

  /// Every channel goes (the daemon stops).
  void clear();
  const Channel* find(const ChannelName& name) const;
  size_t channelCount() const { return channels_.size(); }

  /// What the inspector shows of one channel (swctl channels).
  struct ChannelStats {
    ChannelName name;
    size_t members = 0;         // open objects: client ones and service-worker ones
    uint64_t posts = 0;         // records written into its ring
    uint64_t laps = 0;          // times one of its objects was lapped (Channel::laps)
    uint64_t retainedBytes = 0; // ring bytes holding records (not yet overwritten), <= capacity
    uint64_t capacity = 0;
  };
  /// Every open channel, by name.
  std::vector<ChannelStats> stats() const;

  /// Wakes the readers of every channel that got records since the last call (one FUTEX_WAKE
  /// per channel, however many posts went in).
  void flushWakes();

 private:
  std::vector<ChannelName> pendingWakes_;  // channels with wakePending set, in the order they got it

  /// A client with an object on some channel.
  struct Member {
    uint64_t tagPrefix = 0;
    size_t objects = 0;                      // its objects joined, all channels together
    std::unordered_set<uint64_t> ringsSent;  // channel rings whose memfd it has
  };

  /// The channel `name`, made (with its ring) when it does not exist yet.
  Result<Channel*> channel(const ChannelName& name);
  void maybeDrop(const ChannelName& name);
  /// QuotaExceededError when client `id` may not join `name` now (its own object quota, or a new
  /// name past the scope's channel quota); counted and logged.
  Result<void> admitJoin(const ClientId& id, const ChannelName& name);
  /// Member bookkeeping of `id` after `delta` objects joined (or left).
  void objectsJoined(const ClientId& id, int delta);
  /// What a post carries: a Value (written by the fast lane's writer), service-worker code's
  /// payload `out`, or a client's (or another node's) payload `in`, whose bytes `owner` keeps.
  struct PostPayload {
    const Value* value = nullptr;
    const core::OutgoingPayload* out = nullptr;
    schema::Payload::Reader* in = nullptr;
    const std::shared_ptr<const wire::Inbound>* owner = nullptr;
  };
  /// The channel client `id`'s object `objectId` is a member of, and that object's sender tag;
  /// nullptr (InvalidStateError sent, for envelope `seq`) when it has no such open object.
  Channel* posterChannel(const ClientId& id, uint32_t objectId, MessageSeq seq, uint64_t& tag);
  /// Counts and tells client `id` (QuotaExceededError for envelope `seq`) that its post is larger
  /// than a record of `ch`.
  void refuseOversize(const Channel& ch, const ClientId& id, MessageSeq seq);
  /// injectRemote*: a post of another node into `name`'s ring.
  bool inject(const ChannelName& name, const std::string& fromNode, const PostPayload& p);
  /// Writes one post into the channel ring and hands it to service-worker objects (all but
  /// `localSender`). False, and nothing written, when its record is larger than the ring's
  /// records (the one size limit, exact, for every kind of post).
  bool publish(Channel& ch, uint64_t tag, const PostPayload& p, uint32_t localSender);
  /// Hands the record `bytes` (an encoded envelope of `p`) to the channel's service-worker objects.
  void deliverLocal(Channel& ch, const uint64_t* words, size_t bytes, const PostPayload& p, uint32_t localSender);

  Sink& sink_;
  PostObserver postObserver_;  // federation: posts that originate here
  ChannelObserver channelObserver_;  // federation: which channels this node has objects of
  const std::string* remoteNode_ = nullptr;  // while injectRemote() publishes: the node it came from
  // publish()'s working space, reused post after post so that a post allocates nothing: the
  // builder's first segment (zero whenever no builder holds it) and the encoded record.
  static constexpr size_t SCRATCH_WORDS = 256;
  std::unique_ptr<capnp::word[]> scratch_{new capnp::word[SCRATCH_WORDS]()};
  std::vector<uint64_t> record_;
  Config config_;
  const TypeRegistry& types_;
  Counters& counters_;
  std::unordered_map<ChannelName, std::unique_ptr<Channel>> channels_;
  std::unordered_map<ClientId, Member> members_;
  uint64_t nextRingId_ = 1;
  uint32_t nextLocalId_ = 1;
  uint64_t nextTag_ = 1;
};

}  // namespace swipc::daemon
