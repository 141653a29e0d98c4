// MessageChannel and MessagePort: entangled pairs of ports that can be moved to other processes
// inside messages (the web's transferable MessagePort).
//
//   auto ch = swipc::MessageChannel::create(client);   // two entangled ports, both here: no IPC
//   ch.port1.onMessage([](const swipc::MessageEvent& e) { ... });   // also start()s port1
//   client.controller()->postMessage(swipc::Value::map({{"type", "PORT_INITIALIZATION"}}),
//                                    {std::move(ch.port2)});         // port2 moves to the daemon
//
// Semantics (DESIGN §9): a post arrives at the entangled peer only, in order. Messages wait at a
// port until it is started (start() or onMessage) — held, never lost. Transferring a port moves
// it: the receiver gets it in MessageEvent::ports, every handle to it here is neutered (posting
// is a no-op, transferring it again is DataCloneError), and messages queued at it or in flight
// to it follow it to its new owner. close() disentangles: later posts are no-ops and the peer
// gets `close`; a process that dies or exits closes its ports the same way.
//
// Ownership: MessagePort is a handle; copies refer to the same port (like references to one JS
// object). When the last handle — yours, or the one in an event you did not keep — goes away,
// the port is closed. PendingPort is the inert, move-only form a port takes in a transfer list.
//
// Threading: a port belongs to the Client or ServiceWorker it was made on or arrived at, and to
// that loop's thread; its callbacks run there. After close() (or once neutered) no callback runs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "swipc/error.h"
#include "swipc/typed.h"
#include "swipc/value.h"

namespace swipc {

class Client;
class ServiceWorker;
class MessagePort;
struct MessageEvent;
struct MessageErrorEvent;

namespace detail {
class PortState;
}

/// One end of a MessageChannel: 64 random bits, unique in its scope while the port lives.
class PortId {
 public:
  constexpr PortId() = default;
  explicit constexpr PortId(uint64_t v) : v_(v) {}
  constexpr uint64_t value() const { return v_; }
  constexpr bool empty() const { return v_ == 0; }
  /// 16 lowercase hex characters.
  std::string toString() const;
  friend constexpr bool operator==(PortId, PortId) = default;
  friend constexpr auto operator<=>(PortId, PortId) = default;

 private:
  uint64_t v_ = 0;
};

/// A port on its way into a transfer list: inert (delivers nothing) and move-only. Made from a
/// MessagePort; the port is neutered once the message carrying it is posted.
class PendingPort {
 public:
  PendingPort(MessagePort port);  // NOLINT(google-explicit-constructor): `{std::move(port)}` lists
  PendingPort(PendingPort&&) noexcept = default;
  PendingPort& operator=(PendingPort&&) noexcept = default;
  PendingPort(const PendingPort&) = delete;
  PendingPort& operator=(const PendingPort&) = delete;
  ~PendingPort();

  bool valid() const { return state_ != nullptr; }
  /// Internal: the port behind it.
  const std::shared_ptr<detail::PortState>& state() const { return state_; }

 private:
  std::shared_ptr<detail::PortState> state_;
};

/// The transfer list of a post: `{std::move(a), std::move(b)}`, `{}` or a vector of ports.
class TransferList {
 public:
  TransferList() = default;
  template <typename... P>
    requires(sizeof...(P) > 0 && (std::is_constructible_v<PendingPort, P &&> && ...))
  TransferList(P&&... ports) {  // NOLINT(google-explicit-constructor)
    ports_.reserve(sizeof...(P));
    (ports_.emplace_back(std::forward<P>(ports)), ...);
  }
  TransferList(std::vector<MessagePort> ports);  // NOLINT(google-explicit-constructor)
  TransferList(std::vector<PendingPort> ports) : ports_(std::move(ports)) {}  // NOLINT

  bool empty() const { return ports_.empty(); }
  size_t size() const { return ports_.size(); }
  std::vector<PendingPort>& ports() { return ports_; }
  const std::vector<PendingPort>& ports() const { return ports_; }

 private:
  std::vector<PendingPort> ports_;
};

class MessagePort {
 public:
  /// An unbound handle (valid() is false); posting on it is InvalidStateError.
  MessagePort() = default;
  /// Internal: a handle to a port of the library.
  explicit MessagePort(std::shared_ptr<detail::PortState> state);

  bool valid() const { return state_ != nullptr; }
  PortId id() const;

  /// Posts to the entangled peer; the value is serialized now, the ports in `transfer` move with
  /// it. Returns at once: delivery is asynchronous (an IPC failure later, such as a peer that
  /// stopped draining, is reported through Client::onUndelivered — never silent).
  /// DataCloneError (nothing sent): `transfer` holds this port, the same port twice, or a port
  /// that is closed, neutered or unbound. QuotaExceededError over the size limit.
  /// A no-op that returns ok when this port is closed, neutered, or its peer has gone.
  Result<void> postMessage(const Value& data, TransferList transfer = {});
  Result<void> postTyped(uint64_t typeId, const TypedBuilder& build, TransferList transfer = {});
  template <typename T, typename F>
  Result<void> postMessage(F&& fill, TransferList transfer = {}) {
    auto [id, b] = typedBuilder<T>(std::forward<F>(fill));
    return postTyped(id, b, std::move(transfer));
  }

  /// Sets the message handler and starts the port (like assigning port.onmessage).
  void onMessage(std::function<void(const MessageEvent&)> fn);
  void onMessageError(std::function<void(const MessageErrorEvent&)> fn);
  /// The peer closed, or its process died (also fired when this side's daemon goes away). It comes
  /// after the messages that arrived before it: a port still holding messages (not started)
  /// gets it once start() has delivered them.
  void onClose(std::function<void()> fn);
  /// Enables delivery: messages held so far arrive first, in order (asynchronously, from the loop).
  void start();
  /// Disentangles: the peer gets `close`, queued messages here are dropped, no more callbacks.
  void close();

  bool closed() const;
  /// True once the port was transferred away from this process (or this handle's object).
  bool neutered() const;
  bool started() const;
  /// Messages waiting for start() (a snapshot).
  size_t queuedCount() const;

  /// Internal.
  const std::shared_ptr<detail::PortState>& state() const { return state_; }

 private:
  std::shared_ptr<detail::PortState> state_;
};

/// new MessageChannel(): two entangled ports in this process. Until one of them is transferred
/// they cost no IPC at all; the first transfer registers the pair with the daemon.
struct MessageChannel {
  MessagePort port1;
  MessagePort port2;

  static MessageChannel create(Client& client);
  static MessageChannel create(ServiceWorker& sw);
};

}  // namespace swipc
