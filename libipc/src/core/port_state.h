// PortState: the state behind a MessagePort, shared by both sides of the library, and PortHost:
// the Client or ServiceWorker a port lives on.
//
// A port is in one of four modes:
//   LOCAL     entangled with a peer in this same process (a fresh MessageChannel): posts go
//             straight into the peer's queue, no IPC.
//   REMOTE    registered with the daemon; posts travel as PortPost envelopes and the daemon
//             routes them to wherever the peer lives now.
//   NEUTERED  transferred away: this object is dead (posts are no-ops).
//   CLOSED    close()d here, or the host went away.
// `peerGone` is orthogonal: the peer closed or died; messages already here are still delivered,
// posts are no-ops, `close` fires once.
//
// Sequence numbers: each end numbers its posts contiguously from 1 (sendSeq) and each end knows
// the next seq it expects (recvNext). Both travel with a shipped port, so numbering continues
// at the new owner and the daemon can tell which of its copies the old owner never received.
//
// @concurrent: single-threaded; everything runs on the host's loop thread.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <unordered_set>
#include <vector>

#include "core/payload.h"
#include "envelope.capnp.h"
#include "swipc/message_event.h"
#include "swipc/message_port.h"

namespace swipc::core {

/// A fresh random non-zero port id: unguessable, so a client cannot name another's port.
PortId newPortId();

}  // namespace swipc::core

namespace swipc::detail {

using PortPtr = std::shared_ptr<PortState>;

/// A message waiting at a port. `payload` points into bytes that `keepAlive` owns; the ports it
/// carried are live on this host already (they receive their own messages meanwhile).
struct QueuedPortMessage {
  uint64_t seq = 0;
  std::shared_ptr<const void> keepAlive;
  schema::Payload::Reader payload;
  std::vector<PortPtr> ports;
  /// What holding it costs, charged to the port's byte bound (PortHost::maxQueuedBytes()).
  uint64_t bytes = 0;
  /// Delivered as a messageerror with this error instead of a message: what arrived could not
  /// be read here, or messages were dropped at this point because the queue was over its bound.
  std::optional<Error> error;
};

/// FIFO of waiting messages: a vector with a moving head (a std::deque allocates on
/// construction, and one is made per port — twice per messageSW).
class MessageQueue {
 public:
  bool empty() const { return head_ == items_.size(); }
  size_t size() const { return items_.size() - head_; }
  void push_back(QueuedPortMessage m) { items_.push_back(std::move(m)); }
  QueuedPortMessage& front() { return items_[head_]; }
  void pop_front() {
    items_[head_++] = QueuedPortMessage{};
    if (head_ == items_.size()) {
      items_.clear();
      head_ = 0;
    } else if (head_ > 64 && head_ * 2 > items_.size()) {
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }
  void clear() {
    items_.clear();
    head_ = 0;
  }
  const QueuedPortMessage& operator[](size_t i) const { return items_[head_ + i]; }
  QueuedPortMessage& operator[](size_t i) { return items_[head_ + i]; }

 private:
  std::vector<QueuedPortMessage> items_;
  size_t head_ = 0;
};

class PortHost {
 public:
  virtual ~PortHost() = default;
  /// Posts from REMOTE port `from` to its peer. `transfer` is checked; the host describes the
  /// ports into its message and, once it is accepted, neuters them (commitShip).
  virtual Result<void> postRemote(PortState& from, const core::OutgoingPayload& payload, std::vector<PortPtr>& transfer) = 0;
  /// REMOTE port `port` closed here (or its last handle went away).
  virtual void closeRemote(PortState& port) = 0;
  /// REMOTE port `port` has received many messages since it last told the daemon.
  virtual void ackRemote(PortState& port) = 0;
  /// Every live port of this host is tracked (so the host can end them when it goes away, and
  /// route messages to them by id).
  virtual void track(const PortPtr& port) = 0;
  virtual void untrack(PortState& port) = 0;
  /// Runs `fn` from the loop soon, never inside the caller.
  virtual void later(std::function<void()> fn) = 0;
  /// Runs `fn` now or, when the host is inside a blocking call, right after it.
  virtual void deliver(std::function<void()> fn) = 0;
  virtual const TypeRegistry& types() const = 0;
  virtual uint64_t maxMessageBytes() const = 0;
  /// Port handlers run through core::callUser() (the daemon: a handler's exception is logged, and
  /// never ends the daemon or blames a client); otherwise they propagate (a page's own code).
  virtual bool shieldsUserCode() const { return false; }
  /// Bytes of messages one port may hold before it is started (0: no bound). Past it, arriving
  /// messages are dropped (PortState::receive() says so) and reported as one messageerror
  /// (QuotaExceededError) at the point where they were dropped.
  virtual uint64_t maxQueuedBytes() const { return DEFAULT_MAX_QUEUED_BYTES; }

  static constexpr uint64_t DEFAULT_MAX_QUEUED_BYTES = 16ull << 20;
};

/// Which local pairs a message being built registers (both ends of a pair may travel together).
struct ShipContext {
  std::unordered_set<uint64_t> registered;
};

class PortState : public std::enable_shared_from_this<PortState> {
 public:
  enum class Mode { LOCAL, REMOTE, NEUTERED, CLOSED };

  PortState(PortHost* host, PortId id, PortId peer, Mode mode) : host(host), id(id), peer(peer), mode(mode) {}
  ~PortState();
  PortState(const PortState&) = delete;
  PortState& operator=(const PortState&) = delete;

  /// A new entangled pair on `host`, both ends LOCAL and tracked.
  static std::pair<PortPtr, PortPtr> createPair(PortHost& host);

  bool live() const { return mode == Mode::LOCAL || mode == Mode::REMOTE; }
  /// Posts reach the peer (live and entangled).
  bool entangled() const { return live() && !peerGone; }

  // ---- public API
  Result<void> post(const core::OutgoingPayload& payload, TransferList& transfer);
  void start();
  void close();

  // ---- hosts
  /// A message for this port arrived. Duplicates (seq < recvNext) are dropped. `now`: the host
  /// may deliver at once (it came from IPC); otherwise delivery goes through the loop. False
  /// when it was dropped because the messages waiting here are over the host's byte bound
  /// (maxQueuedBytes; a message that arrives at an empty queue is always taken): counted,
  /// logged, and reported to the port as one messageerror (QuotaExceededError).
  bool receive(QueuedPortMessage m, bool now);
  /// The fast lane's port message (a Value, no ports) for a port with interceptValue set.
  void receiveValue(uint64_t seq, Value& data);
  /// The peer closed or died: `close` fires after the messages already queued here (at once if
  /// there are none; after start() has delivered them otherwise).
  void peerClosed(bool now);
  /// onClose was (re)set: a `close` that happened before anybody listened fires now (from the loop).
  void closeListenerSet();
  /// The host is going away: closed, no callbacks, no messages.
  void hostGone();
  /// Writes this port into a transfer descriptor (its queue included). Nothing changes until
  /// commitShip(): a post that fails to send leaves the port as it was.
  void describe(schema::PortDescriptor::Builder d, ShipContext& ctx) const;
  /// The message carrying this port was accepted: neuter it (and the ports in its queue); its
  /// LOCAL peer, if any, becomes REMOTE (the daemon now knows the pair).
  void commitShip();
  /// Transfer whose message stays in this process: a new object takes the state over, this one
  /// is neutered.
  PortPtr moveHere();

  PortHost* host;
  PortId id;
  PortId peer;
  Mode mode;
  std::weak_ptr<PortState> localPeer;  // LOCAL only
  bool started = false;
  bool peerGone = false;
  uint64_t sendSeq = 1;
  uint64_t recvNext = 1;
  uint32_t unacked = 0;
  MessageQueue queue;
  /// Bytes the messages in `queue` are charged (QueuedPortMessage::bytes).
  uint64_t queuedBytes = 0;
  /// Messages dropped here because `queue` was over its byte bound (for the logs and tests).
  uint64_t droppedOverQuota = 0;
  std::function<void(const MessageEvent&)> onMessage;
  std::function<void(const MessageErrorEvent&)> onMessageError;
  std::function<void()> onClose;
  /// Library-internal receivers (messageSW's reply port) take each message synchronously, even
  /// inside a blocking call, bypassing queue and start().
  std::function<void(QueuedPortMessage&)> intercept;
  std::function<void()> interceptClose;
  /// The same as `intercept` for a message that came on the fast lane, already decoded.
  std::function<void(Value&)> interceptValue;
  /// Closing it need not wake the daemon (messageSW's reply port).
  bool quietClose = false;

  /// Messages a REMOTE port receives before it tells the daemon (PortAck), so the daemon can
  /// drop its copies.
  static constexpr uint32_t ACK_EVERY = 64;

 private:
  /// Seq bookkeeping for an arriving message: false for a duplicate (or a port that is over).
  bool accept(uint64_t seq);
  /// Holding `bytes` more would take the queue past the host's bound.
  bool overQuota(uint64_t bytes) const;
  void dropOverQuota(QueuedPortMessage& m);
  void scheduleFlush(bool now);
  void flush();
  void dispatch(QueuedPortMessage& m);
  void neuter();
  /// No more messages or callbacks: the port is over (closed or neutered).
  void end(Mode final);

  bool flushScheduled_ = false;
  bool closeFired_ = false;
};

/// Checks a transfer list for a post on `from` (nullptr: a controller or client post):
/// DataCloneError for `from` itself, its peer, a duplicate, an unbound, closed or neutered port,
/// or a port of another host. Returns the ports in order.
Result<std::vector<PortPtr>> checkTransfer(const PortState* from, const PortHost& host, TransferList& transfer);

/// describe() each port into `out` (initialised to ports.size()).
void describeAll(const std::vector<PortPtr>& ports, capnp::List<schema::PortDescriptor>::Builder out, ShipContext& ctx);
void commitAll(const std::vector<PortPtr>& ports);

/// Live REMOTE ports (tracked on `host`) from descriptors that arrived there, with the messages
/// queued in them (recursively). `keepAlive` owns the bytes the readers point into. A port that
/// arrives with a queue is charged `envelopeBytes` (the size of what `keepAlive` holds) on its
/// first queued message, without reading the messages (every read counts against the reader's
/// traversal budget). Throws kj::Exception when a descriptor cannot be read (the caller's
/// messageerror; the ports adopted so far close as they go).
std::vector<PortPtr> adoptDescriptors(PortHost& host, capnp::List<schema::PortDescriptor>::Reader ds,
                                      const std::shared_ptr<const void>& keepAlive, uint64_t envelopeBytes = 0);

/// Encodes a payload for a post that stays in this process (the value is serialized now).
Result<QueuedPortMessage> encodeLocal(const core::OutgoingPayload& payload, uint64_t maxBytes);

}  // namespace swipc::detail
