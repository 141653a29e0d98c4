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

#include "swipc/error.h"
#include "swipc/message_event.h"
#include "swipc/types.h"
#include "swipc/value.h"

namespace swipc {

struct ServiceWorkerOptions {
  std::string scope = "default";
  std::string runtimeDir;
  std::string version = "1.0.0";
  std::chrono::microseconds spin{0};  // busy-poll rings this long after activity before sleeping
  size_t maxClients = 4096;
  uint64_t maxMessageBytes = 64ull << 20;
  uint64_t ringBytes = 64 * 1024;     // per direction, per client (power of two)
  size_t maxBacklog = 4096;           // messages held for a client whose ring is full
  bool allowGroup = false;            // socket mode 0660 and accept same-gid peers
  std::chrono::milliseconds attachTimeout{2000};
  bool handleSignals = true;          // SIGTERM/SIGINT: graceful stop; SIGUSR1: log counters
};

class ServiceWorker;

/// A client as the daemon knows it (a snapshot of its metadata + a way to reach it).
class ClientHandle {
 public:
  const ClientId& id() const { return id_; }
  const std::string& url() const { return url_; }
  ClientType type() const { return type_; }
  bool controlled() const { return controlled_; }
  pid_t pid() const { return pid_; }

  /// client.postMessage. NotFoundError when the client is gone, QueueFull when its backlog is at
  /// the bound (the client stopped draining), QuotaExceededError over the size limit.
  Result<MessageSeq> postMessage(const Value& data);
  Result<MessageSeq> postTyped(uint64_t typeId, const TypedBuilder& build);

  /// JSON-friendly description {id,url,type,frameType,focused,visibilityState}.
  Value describe() const;

 private:
  friend class ServiceWorker;
  ServiceWorker* sw_ = nullptr;
  ClientId id_;
  std::string url_;
  ClientType type_ = ClientType::WINDOW;
  bool controlled_ = true;
  pid_t pid_ = 0;
};

/// A message from a client to the service worker.
struct ExtendableMessageEvent : MessageEvent {
  std::optional<ClientHandle> source;
};

struct MatchAllOptions {
  bool includeUncontrolled = false;
  ClientType type = ClientType::WINDOW;
};

struct Counters {
  uint64_t attached = 0, detached = 0, attachTimeouts = 0, versionMismatches = 0, rejectedClients = 0;
  uint64_t protocolViolations = 0, messagesIn = 0, messagesOut = 0, messageErrors = 0;
  uint64_t queueFull = 0, unresponsive = 0, undelivered = 0, oversize = 0, repliesDropped = 0;
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

  /// clients.matchAll / clients.get.
  std::vector<ClientHandle> matchAll(const MatchAllOptions& opts = {}) const;
  std::optional<ClientHandle> get(const ClientId& id) const;

  const ServiceWorkerOptions& options() const;
  Counters counters() const;
  size_t clientCount() const;

  class Impl;
  Impl& impl() { return *impl_; }

 private:
  friend class ClientHandle;
  std::unique_ptr<Impl> impl_;
};

}  // namespace swipc
