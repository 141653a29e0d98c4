// The frames daemons of one federated scope exchange over NATS (DESIGN §16): a BroadcastChannel
// post that crosses nodes, and the subjects they travel on. Everything here is plain bytes in,
// plain bytes out: no NATS, no loop, so it is tested on its own (tests/unit/federation/).
//
// A cross-node post is one NATS message on subject `swipc.<scope>.bc.c<hex(channel name)>`:
//
//   0        4        6        8        12       16                24                32
//   +--------+--------+--------+--------+--------+-----------------+-----------------+
//   | magic  | version| nodeLen| channel| run    | epoch u64       | seq u64         |
//   | u32    | u16    | u16    | Len u32| u32    |                 |                 |
//   +--------+--------+--------+--------+--------+-----------------+-----------------+
//   32: node name (nodeLen bytes), channel name (channelLen bytes), zero padding to 8
//   then: the post's Envelope (Cap'n Proto, flat: seq, bcMessage{payload}), exactly the bytes
//         the sending node wrote into its own channel ring
//
//   epoch: the sending daemon's start (a restarted node counts its posts from 1 again, under a
//          new epoch); seq: the sender's count of posts on that channel in this run, from 1,
//          with no holes: a receiver that sees one has missed posts (reported as lapped);
//   run:   which numbering of that channel, within the epoch. A channel not posted on for a
//          while (--nats-channel-idle-ms) leaves the sender's announcements, so they stay as
//          small as the channels in use; its next post starts a new run, numbered from 1 again.
//          Runs are unique within an epoch (a node-wide counter; it would wrap after 2^32 runs,
//          harmless unless a receiver kept one channel through all of them). When a run may
//          end: runs.h.
//
// Heartbeats go on `swipc.<scope>.node` as one JSON object:
//   {"node":N,"epoch":E,"intervalMs":I,"marks":[["<hex channel>",seq,run],…]}
// where marks are the sender's last seq per channel run in use (its high-water marks), so a gap
// at the tail of a stream is found too. A channel a heartbeat does not name has no run in use:
// what a receiver kept of it goes.
//
// @concurrent: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "swipc/error.h"
#include "swipc/types.h"

namespace swipc::federation {

/// The fixed part of a cross-node post (little-endian, as every host of a scope is).
struct RemotePostHeader {
  uint32_t magic;
  uint16_t version;
  uint16_t nodeLen;
  uint32_t channelLen;
  uint32_t run;
  uint64_t epoch;
  uint64_t seq;
};
static_assert(std::is_standard_layout_v<RemotePostHeader> && std::is_trivially_copyable_v<RemotePostHeader>);
static_assert(offsetof(RemotePostHeader, magic) == 0);
static_assert(offsetof(RemotePostHeader, version) == 4);
static_assert(offsetof(RemotePostHeader, nodeLen) == 6);
static_assert(offsetof(RemotePostHeader, channelLen) == 8);
static_assert(offsetof(RemotePostHeader, run) == 12);
static_assert(offsetof(RemotePostHeader, epoch) == 16);
static_assert(offsetof(RemotePostHeader, seq) == 24);
static_assert(sizeof(RemotePostHeader) == 32);

inline constexpr uint32_t REMOTE_POST_MAGIC = 0x42465753;  // "SWFB"
inline constexpr uint16_t REMOTE_POST_VERSION = 2;  // 2: runs (a node of version 1 is refused)
inline constexpr size_t MAX_NODE_NAME = 64;
inline constexpr size_t MAX_CHANNEL_NAME = 1024;  // as the daemon's BroadcastHub

/// A decoded cross-node post; `envelope` points into the frame it was decoded from.
struct RemotePost {
  std::string node;
  ChannelName channel;
  uint64_t epoch = 0;
  uint64_t seq = 0;
  uint32_t run = 0;
  const uint8_t* envelope = nullptr;
  size_t envelopeBytes = 0;
};

/// The size of that frame.
size_t remotePostBytes(std::string_view node, const ChannelName& channel, size_t envelopeBytes);
/// Writes that frame into `out` (remotePostBytes() of room), so that a caller can build it in
/// place in a buffer of its own.
void writeRemotePost(uint8_t* out, std::string_view node, uint64_t epoch, const ChannelName& channel, uint32_t run,
                     uint64_t seq, const uint8_t* envelope, size_t envelopeBytes);
/// The frame of a post of `channel` by `node`: header, names, padding, then the envelope bytes.
std::vector<uint8_t> encodeRemotePost(std::string_view node, uint64_t epoch, const ChannelName& channel, uint64_t seq,
                                      const uint8_t* envelope, size_t envelopeBytes, uint32_t run = 1);
/// Checks a received frame in a fixed order (size, magic, version, lengths, alignment of the
/// envelope); PROTOCOL_VIOLATION naming the step that failed.
Result<RemotePost> decodeRemotePost(const uint8_t* data, size_t bytes);

/// A node's heartbeat: who it is, its high-water mark per channel, and the channels it has
/// objects of (its interest: the others publish only those channels' posts). A heartbeat with no
/// "interest" (a node that does not say) wants every channel.
struct Heartbeat {
  std::string node;
  uint64_t epoch = 0;
  uint32_t intervalMs = 0;
  struct Mark {
    ChannelName channel;
    uint64_t seq = 0;
    uint32_t run = 1;
    bool operator==(const Mark&) const = default;
  };
  std::vector<Mark> marks;
  std::optional<std::vector<ChannelName>> interest;
  bool leaving = false;  // the node's last announcement: it stops
  /// Times its NATS client lost messages (slow consumer) or its connection: when this changes,
  /// it may have missed marks it was thought to have heard (runs.h). Absent = 0.
  uint64_t receiveBreaks = 0;
};
std::string encodeHeartbeat(const Heartbeat& hb);
Result<Heartbeat> decodeHeartbeat(std::string_view text);

/// The NATS subjects of one scope. A scope name may hold '.', NATS's token separator: it is
/// written with '~' instead (a character no scope name has, so the mapping is one to one).
struct Subjects {
  std::string nodes;        // heartbeats
  std::string bcPrefix;     // + channelToken(name)
  std::string bcWildcard;   // every channel of the scope
  /// Everything of the scope, heartbeats and posts: one subscription, so that libnats hands them
  /// over on one thread in the order each node published them. With one subscription per subject
  /// a heartbeat could overtake the posts it counts, and they were taken for missed.
  std::string everything;
  std::string bcFor(const ChannelName& name) const;
  /// What is for one node only (the Clients API's requests and answers, remote_clients.h):
  /// outside `everything`, so no other node receives it.
  std::string directPrefix;  // + nodeToken(node)
  std::string directFor(std::string_view node) const;
};
Subjects subjectsFor(std::string_view scope);
/// What node `node` subscribes to: `everything`, one subscription, so heartbeats and posts reach
/// the loop in the order each node published them (a heartbeat never overtakes the posts it
/// counts), and its own direct subject.
std::vector<std::string> subscriptionsFor(const Subjects& subjects, std::string_view node);
/// "c" + lowercase hex of the name (a NATS token whatever bytes the name holds, never empty).
std::string channelToken(const ChannelName& name);
std::string toHex(std::string_view bytes);
std::optional<std::string> fromHex(std::string_view hex);

/// A valid node name: [A-Za-z0-9._-]{1,64}.
bool validNodeName(std::string_view name);
/// The short host name (gethostname up to the first '.'), "node" when it is not a valid name.
std::string defaultNodeName();

}  // namespace swipc::federation
