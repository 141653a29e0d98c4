// swipc::ServiceWorker — the daemon side: accepts clients of one scope, hands their messages to
// your handlers, knows every client (Clients), and posts to any of them.
//
// Threading: as for Client: one loop thread; post()/wake()/stop() are thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "swipc/clients.h"
#include "swipc/error.h"
#include "swipc/message_event.h"
#include "swipc/types.h"
#include "swipc/value.h"

namespace swipc {

namespace detail {
class BroadcastHub;
class PortHost;
}

struct ServiceWorkerOptions {
  std::string scope = "default";
  std::string runtimeDir;
  std::string version = "1.0.0";
  std::chrono::microseconds spin{0};  // busy-poll rings this long after activity before sleeping
  size_t maxClients = 4096;
  uint64_t maxMessageBytes = 64ull << 20;
  uint64_t ringBytes = 256 * 1024;    // per direction, per client (power of two)
  size_t maxBacklog = 4096;           // messages held for a client whose ring is full
  bool allowGroup = false;            // socket mode 0660 and accept same-gid peers
  std::chrono::milliseconds attachTimeout{2000};
  bool handleSignals = true;          // SIGTERM/SIGINT: graceful stop; SIGUSR1: log counters
  /// argv template openWindow runs; "{url}", "{scope}", "{runtime-dir}" are replaced.
  /// Empty: page_client (next to this executable or on PATH) `listen` with that url.
  std::vector<std::string> windowCommand;
  std::chrono::milliseconds openWindowTimeout{5000};
  /// Capacity of each BroadcastChannel ring (power of two >= 4096).
  uint64_t bcRingBytes = 1 << 20;
};

/// A message from a client to the service worker.
struct ExtendableMessageEvent : MessageEvent {
  std::optional<ClientHandle> source;
};

struct Counters {
  uint64_t attached = 0, detached = 0, attachTimeouts = 0, versionMismatches = 0, rejectedClients = 0;
  uint64_t protocolViolations = 0, messagesIn = 0, messagesOut = 0, messageErrors = 0;
  uint64_t queueFull = 0, unresponsive = 0, undelivered = 0, oversize = 0, repliesDropped = 0;
  uint64_t windowsOpened = 0, openWindowFailures = 0, claimed = 0;
  uint64_t broadcastsPosted = 0, channelsOpen = 0;
  uint64_t portMessagesRouted = 0, portsTransferred = 0, portsClosed = 0, portMessagesDropped = 0;
  uint64_t portsOpen = 0;  // entries in the daemon's port table now (a gauge)
  Value toValue() const;
};

class ServiceWorker {
 public:
  explicit ServiceWorker(ServiceWorkerOptions opts);
  ~ServiceWorker();
  ServiceWorker(const ServiceWorker&) = delete;
  ServiceWorker& operator=(const ServiceWorker&) = delete;

  /// Takes the scope: lock, socket. AlreadyRunning when another daemon serves it.
  Result<void> listen();
  /// listen() if needed, then serve until stop() or SIGTERM. Returns how it ended.
  Result<void> run();
  void stop();
  void post(std::function<void()> fn);
  void wake();
  int fd() const;
  void dispatch();

  void onMessage(std::function<void(ExtendableMessageEvent&)> fn);
  void onMessageError(std::function<void(const MessageErrorEvent&, const ClientHandle&)> fn);
  /// A message accepted for a client that could not be handed over (it went away first).
  void onUndelivered(std::function<void(const ClientId&, MessageSeq, const Error&)> fn);
  void onClientAttached(std::function<void(const ClientHandle&)> fn);
  void onClientDetached(std::function<void(const ClientId&, const std::string& reason)> fn);
  TypeRegistry& types();

  /// self.clients: matchAll, get, claim, openWindow.
  Clients& clients();
  const Clients& clients() const;
  /// Shorthands for clients().matchAll / clients().get.
  std::vector<ClientHandle> matchAll(const MatchAllOptions& opts = {}) const { return clients().matchAll(opts); }
  std::optional<ClientHandle> get(const ClientId& id) const { return clients().get(id); }

  const ServiceWorkerOptions& options() const;
  Counters counters() const;
  size_t clientCount() const;

  /// Internal: what BroadcastChannel objects made on this service worker talk to.
  std::shared_ptr<detail::BroadcastHub> broadcastHub();
  /// Internal: what MessagePorts living in this service worker talk to.
  detail::PortHost& portHost();

  class Impl;
  Impl& impl() { return *impl_; }

 private:
  friend class ClientHandle;
  friend class Clients;
  std::unique_ptr<Impl> impl_;
  Clients clients_;
};

}  // namespace swipc
