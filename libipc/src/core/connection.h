// Connection: one attached client link, as seen from either side. It owns the control socket,
// the mapped segment, this side's ring writer and reader, and the wake-ups of each direction.
//
//   client --(up ring + eventfd doorbell)--> daemon
//   client <--(down ring + wake pipe)-- daemon
//
// The daemon creates both and passes the eventfd and the pipe's read end with the Welcome. It
// never reads the eventfd (it watches it edge-triggered), and it writes the pipe through a
// non-blocking write end only it holds (a full pipe already means "wake"), so nothing the client
// does to a shared fd can block the daemon.
//
// With WakeMode::SOCKET (a daemon short of fds: daemon/fd_budget.h) there is neither: each side
// wakes the other with an 8-byte WAKE datagram on the control socket, sent without blocking. A
// send that finds the socket full loses nothing: the peer then has unread datagrams of ours, so
// its socket is readable and it will look at the ring anyway. The daemon then holds one fd for
// the client instead of three.
#pragma once

#include <capnp/message.h>

#include <deque>
#include <functional>
#include <memory>
#include <unordered_map>

#include "common/unique_fd.h"
#include "core/socket.h"
#include "queue/doorbell.h"
#include "queue/spsc_ring.h"
#include "shm/layout.h"
#include "shm/mapping.h"
#include "swipc/error.h"
#include "wire/codec.h"
#include "wire/plain_post.h"

namespace swipc::core {

/// Out-of-line messages one sender may have in flight (sent, not yet consumed). The sender waits
/// at this bound; a receiver holding more than OOL_RECEIVER_LIMIT fds from one peer disconnects it.
inline constexpr size_t OOL_IN_FLIGHT = 32;
inline constexpr size_t OOL_RECEIVER_LIMIT = 64;
/// Passed files (Background Fetch bodies) a client holds before the envelope that names them is
/// read: one answer passes at most one per request of a fetch (MAX_FETCH_REQUESTS).
inline constexpr size_t FILE_FD_RECEIVER_LIMIT = 1024;
/// Largest record the receiving fast lane (wire/plain_post.h) reads: small posts are where it
/// pays, and the reused copy buffer stays small for each of many connections.
inline constexpr size_t PLAIN_MAX_BYTES = 8192;

struct RingSizes {
  uint64_t up = 64 * 1024;
  uint64_t down = 64 * 1024;
};

class Connection {
 public:
  enum class Role { DAEMON, CLIENT };
  enum class SendStatus { OK, FULL, TOO_BIG, BROKEN };
  enum class RecvStatus { OK, PLAIN, EMPTY, VIOLATION };

  /// How the two sides wake each other: WAKE_FDS (an eventfd up, a pipe down) or SOCKET (WAKE
  /// datagrams on the control socket; no fd but the socket).
  enum class WakeMode { WAKE_FDS, SOCKET };

  /// Daemon side: creates and seals the segment and, with WAKE_FDS, the doorbell and the wake
  /// pipe. The caller sends `segmentFd` (and with WAKE_FDS `doorbellFd` and `wakeReadFd`) to the
  /// client with the Welcome. `socket` is taken only on success (so the caller can still report a
  /// failure on it).
  static Result<std::unique_ptr<Connection>> createForDaemon(UniqueFd&& socket, RingSizes sizes,
                                                             uint64_t maxMessageBytes,
                                                             WakeMode wakes = WakeMode::WAKE_FDS);
  /// Client side: maps and validates the segment the daemon sent. Without a doorbell and a wake
  /// read end (both invalid) the link uses socket wakes.
  static Result<std::unique_ptr<Connection>> openForClient(UniqueFd socket, UniqueFd segment, UniqueFd doorbell,
                                                           UniqueFd wakeReadEnd,
                                                           uint64_t maxMessageBytes);
  WakeMode wakeMode() const { return wakeMode_; }

  Role role() const { return role_; }
  int socketFd() const { return socket_.get(); }
  /// The up doorbell (client rings, daemon watches); -1 with socket wakes.
  int doorbellFd() const { return doorbell_.fd(); }
  /// The wake pipe's read end (daemon writes, client watches and drains); -1 with socket wakes
  /// (poll() skips a negative fd, so a pollfd array may keep it).
  int wakeReadFd() const { return wake_.readFd(); }
  /// Client side: reads the pending wake bytes (wake datagrams are read by pumpSocket()).
  void drainWakes() {
    if (wake_.readFd() >= 0) wake_.drain();
  }
  int segmentFd() const { return segmentFd_.get(); }
  /// Daemon side: drops the daemon's copies of the fds it has passed (after Welcome is sent).
  void forgetPassedFds() {
    segmentFd_.reset();
    wake_.forgetReadEnd();
  }
  size_t segmentBytes() const { return mapping_.size(); }

  /// Sends one envelope (inline, or out of line when larger than a ring record).
  /// FULL: nothing was sent, try again later. TOO_BIG: over maxMessageBytes, never sendable.
  SendStatus send(capnp::MessageBuilder& envelope, uint64_t seq);
  /// True when a message of `bytes` fits in one ring record.
  bool fitsInline(size_t bytes) const { return bytes <= out_.maxPayload(); }
  /// Sends a fast-lane envelope (wire/plain_post.h) of wire::plainBytes(m, data) == `bytes`,
  /// written straight into the ring; only for one that fitsInline() (others are built and send()).
  SendStatus sendPlain(const wire::PlainMessage& m, const Value& data, size_t bytes);
  /// The fast-lane choice in one place: `m` with `data` written straight into the ring when it
  /// fits one record. A larger one: with Fit::ANY written once into a reused scratch and sent
  /// out of line (still no builder); with INLINE_ONLY, NOT_INLINE (build the envelope and send()
  /// it instead). FULL: the ring (or the out-of-line allowance) has no room now; TOO_BIG: over
  /// maxMessageBytes; BROKEN: the ring is corrupt or the memfd could not be made.
  /// Never blocks, never wakes the peer (call wakePeerIfSleeping() after a batch).
  enum class ValueStatus { SENT, NOT_INLINE, FULL, TOO_BIG, BROKEN };
  enum class Fit { INLINE_ONLY, ANY };
  ValueStatus sendValue(const wire::PlainMessage& m, const Value& data, Fit fit = Fit::INLINE_ONLY);
  /// Wakes the peer if it sleeps on our outgoing ring (once per sleep). Call after a batch.
  void wakePeerIfSleeping();
  /// Unconditional wake (used when the peer asked for space).
  void wakePeer();

  /// Next inbound envelope; consumed locally, published by publishConsumed().
  RecvStatus receive(wire::Inbound& out, Error& err);
  /// The same, with the fast lane: an inline envelope of one of `plainKinds` (wire::kindBit) that
  /// the fast lane reads is decoded into `plain` and `data` (whatever it held is replaced) and
  /// PLAIN returned; any other (or one `filter` does not want) comes back in `out` (OK) as from
  /// receive(), and `data` is not to be used.
  RecvStatus receive(wire::Inbound& out, wire::PlainMessage& plain, Value& data, uint32_t plainKinds, Error& err,
                     const wire::PlainFilter* filter = nullptr);
  /// Publishes what receive() consumed; wakes a writer that waits for space.
  void publishConsumed();
  /// Reader-sleeping handshake on the incoming ring: true when it still has data after arming.
  bool armAndCheck();
  void disarm();
  bool hasIncoming();

  /// Reads every pending datagram on the socket: WAKE datagrams are dropped (the caller looks at
  /// the ring after pumping), out-of-line fds kept for receive(), other control messages handed
  /// to onControl. CLOSED when the peer hung up.
  using ControlHandler = std::function<void(wire::Inbound&&)>;
  IoStatus pumpSocket(const ControlHandler& onControl, Error& err);

  /// Outgoing ring: bytes the peer has consumed / we have published (for delivery accounting).
  uint64_t outConsumed();
  uint64_t outPublished() const { return out_.tail(); }
  uint64_t inConsumedPublished() const { return in_.head(); }

  /// Client side: the channel-ring memfd announced by a Control.bcRing datagram (pumps the socket
  /// if it has not been read yet); invalid fd when the daemon never sent it.
  UniqueFd takeRingFd(uint64_t ringId, uint64_t& capacity);
  /// Client side: the read-only file a Control.fileFd datagram named `token` (pumps the socket
  /// if it has not been read yet); invalid fd when the daemon never sent it.
  UniqueFd takeFileFd(uint64_t token);

  /// Sends a Control datagram (no fds) — errors and goodbyes.
  bool sendControl(capnp::MessageBuilder& control);

  uint64_t maxMessageBytes() const { return maxMessageBytes_; }

 private:
  Connection() = default;
  Result<void> initRings(const shm::SegmentLayout& layout);
  /// Claims an inline record of `bytes` on the outgoing ring, marking the writer as waiting when
  /// it is full (and trying once more). OK with `dst` set, FULL or BROKEN.
  SendStatus claimInline(size_t bytes, uint8_t*& dst);
  /// Sends `bytes` out of line: an OutOfLineRecord claimed on the ring, then the sealed memfd
  /// makeFd() returns over the socket. FULL when too many are in flight or the ring is full.
  template <typename MakeFd>
  SendStatus sendOutOfLine(uint64_t seq, size_t bytes, MakeFd&& makeFd);

  /// Sends one WAKE datagram without blocking (a full socket already means "wake").
  void sendWake();

  Role role_ = Role::CLIENT;
  WakeMode wakeMode_ = WakeMode::WAKE_FDS;
  UniqueFd socket_;
  UniqueFd segmentFd_;
  queue::Doorbell doorbell_;
  queue::WakePipe wake_;
  shm::Mapping mapping_;
  queue::RingWriter out_;
  queue::RingReader in_;
  uint64_t maxMessageBytes_ = 0;
  capnp::ReaderOptions options_;
  std::vector<capnp::word> scratch_;  // the private copy of a small inline record (reused)
  std::unordered_map<uint64_t, UniqueFd> oolFds_;  // seq -> sealed memfd, waiting for its record
  std::deque<uint64_t> oolSent_;                    // ring positions after our in-flight OOL records
  std::unordered_map<uint64_t, std::pair<UniqueFd, uint64_t>> ringFds_;  // ringId -> (memfd, capacity)
  std::unordered_map<uint64_t, UniqueFd> fileFds_;  // token -> read-only file, waiting for its envelope
};

}  // namespace swipc::core
