// Connection: one attached client link, as seen from either side. It owns the control socket,
// the mapped segment, this side's ring writer and reader, and the up doorbell.
//
//   client --(up ring + eventfd doorbell)--> daemon
//   client <--(down ring + 1-byte socket datagram wake)-- daemon
//
// The daemon never reads the eventfd (it watches it edge-triggered) and wakes the client through
// the socket with MSG_DONTWAIT: nothing the client does to a shared fd can block the daemon.
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

namespace swipc::core {

inline constexpr uint8_t WAKE_BYTE = 'w';
/// Out-of-line messages one sender may have in flight (sent, not yet consumed). The sender waits
/// at this bound; a receiver holding more than OOL_RECEIVER_LIMIT fds from one peer disconnects it.
inline constexpr size_t OOL_IN_FLIGHT = 32;
inline constexpr size_t OOL_RECEIVER_LIMIT = 64;

struct RingSizes {
  uint64_t up = 64 * 1024;
  uint64_t down = 64 * 1024;
};

class Connection {
 public:
  enum class Role { DAEMON, CLIENT };
  enum class SendStatus { OK, FULL, TOO_BIG, BROKEN };
  enum class RecvStatus { OK, EMPTY, VIOLATION };

  /// Daemon side: creates and seals the segment and the doorbell. The caller sends
  /// `segmentFd` and `doorbellFd` to the client with the Welcome.
  /// `socket` is taken only on success (so the caller can still report a failure on it).
  static Result<std::unique_ptr<Connection>> createForDaemon(UniqueFd&& socket, RingSizes sizes,
                                                             uint64_t maxMessageBytes);
  /// Client side: maps and validates the segment the daemon sent.
  static Result<std::unique_ptr<Connection>> openForClient(UniqueFd socket, UniqueFd segment, UniqueFd doorbell,
                                                           uint64_t maxMessageBytes);

  Role role() const { return role_; }
  int socketFd() const { return socket_.get(); }
  int doorbellFd() const { return doorbell_.fd(); }
  int segmentFd() const { return segmentFd_.get(); }
  /// Daemon side: drops the daemon's copies of the fds it has passed (after Welcome is sent).
  void forgetPassedFds() { segmentFd_.reset(); }
  size_t segmentBytes() const { return mapping_.size(); }

  /// Sends one envelope (inline, or out of line when larger than a ring record).
  /// FULL: nothing was sent, try again later. TOO_BIG: over maxMessageBytes, never sendable.
  SendStatus send(capnp::MessageBuilder& envelope, uint64_t seq);
  /// Wakes the peer if it sleeps on our outgoing ring (once per sleep). Call after a batch.
  void wakePeerIfSleeping();
  /// Unconditional wake (used when the peer asked for space).
  void wakePeer();

  /// Next inbound envelope; consumed locally, published by publishConsumed().
  RecvStatus receive(wire::Inbound& out, Error& err);
  /// Publishes what receive() consumed; wakes a writer that waits for space.
  void publishConsumed();
  /// Reader-sleeping handshake on the incoming ring: true when it still has data after arming.
  bool armAndCheck();
  void disarm();
  bool hasIncoming();

  /// Reads every pending datagram on the socket: wakes are dropped, out-of-line fds kept for
  /// receive(), other control messages handed to onControl. CLOSED when the peer hung up.
  using ControlHandler = std::function<void(wire::Inbound&&)>;
  IoStatus pumpSocket(const ControlHandler& onControl, Error& err);

  /// Outgoing ring: bytes the peer has consumed / we have published (for delivery accounting).
  uint64_t outConsumed();
  uint64_t outPublished() const { return out_.tail(); }
  uint64_t inConsumedPublished() const { return in_.head(); }

  /// Client side: the channel-ring memfd announced by a Control.bcRing datagram (pumps the socket
  /// if it has not been read yet); invalid fd when the daemon never sent it.
  UniqueFd takeRingFd(uint64_t ringId, uint64_t& capacity);

  /// Sends a Control datagram (no fds) — errors and goodbyes.
  bool sendControl(capnp::MessageBuilder& control);

  uint64_t maxMessageBytes() const { return maxMessageBytes_; }

 private:
  Connection() = default;
  Result<void> initRings(const shm::SegmentLayout& layout);

  Role role_ = Role::CLIENT;
  UniqueFd socket_;
  UniqueFd segmentFd_;
  queue::Doorbell doorbell_;
  shm::Mapping mapping_;
  queue::RingWriter out_;
  queue::RingReader in_;
  uint64_t maxMessageBytes_ = 0;
  capnp::ReaderOptions options_;
  std::unordered_map<uint64_t, UniqueFd> oolFds_;  // seq -> sealed memfd, waiting for its record
  std::deque<uint64_t> oolSent_;                    // ring positions after our in-flight OOL records
  std::unordered_map<uint64_t, std::pair<UniqueFd, uint64_t>> ringFds_;  // ringId -> (memfd, capacity)
};

}  // namespace swipc::core
