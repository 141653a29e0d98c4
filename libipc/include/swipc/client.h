// swipc::Client — the page side: attach to a scope's service worker daemon, post to it, receive
// its messages, ask it questions (messageSW).
//
// Threading: a Client and everything made from it belong to the thread that runs its loop
// (run(), runUntil() or fd()+dispatch()); callbacks run there, never under a library lock.
// post() and wake() are the only thread-safe entries.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "swipc/error.h"
#include "swipc/message_event.h"
#include "swipc/background_fetch.h"
#include "swipc/sync.h"
#include "swipc/types.h"
#include "swipc/value.h"

namespace swipc {

namespace detail {
class BroadcastHub;
class PortHost;
}
namespace page {
class FeatureSet;
}

struct ClientOptions {
  std::string scope = "default";
  std::string runtimeDir;  // empty: $SWIPC_RUNTIME_DIR, $XDG_RUNTIME_DIR/swipc or /tmp/swipc-<uid>
  std::string url;         // empty: app://<scope>/
  ClientType type = ClientType::WINDOW;
  bool controlled = true;  // false: attach uncontrolled (no controller until the daemon claims us)
  std::chrono::milliseconds attachTimeout{2000};
  /// Busy-poll this long for a reply before sleeping (lower latency, burns a core while waiting).
  std::chrono::microseconds spin{0};
  /// Re-attach by itself (with backoff) after the daemon dies or restarts.
  bool reconnect = true;
  /// Set by pages the daemon spawns (clients.openWindow); empty: taken from $SWIPC_OPEN_TOKEN.
  std::string openToken;
  /// Bytes of service-worker messages held before startMessages() (0: no bound). Past it, the
  /// messages that arrive are dropped (logged, counted) and one messageerror (QuotaExceededError)
  /// stands for each run of them, in their place. A message that arrives at an empty queue is
  /// always held.
  uint64_t maxHeldBytes = 32ull << 20;
  /// Bytes of messages waiting at one MessagePort that is not started (0: no bound); past it
  /// as maxHeldBytes, the messageerror going to that port.
  uint64_t maxPortQueueBytes = 16ull << 20;
  /// When no daemon answers: start sw_daemon for the scope and attach to it (DESIGN §17). It is
  /// started detached (its own session, stdio on /dev/null, logging to
  /// <runtime-dir>/<scope>/daemon.log) and lives until SIGTERM, not tied to this client. Clients
  /// that do this at once end with one daemon (the scope's lock decides; all attach to it).
  /// Only connect() starts one: a client that loses its daemon later re-attaches as usual.
  bool spawnDaemon = false;
  /// The sw_daemon to start; empty: the one next to this program's executable, else on PATH.
  std::string daemonPath;
  /// How long connect() waits for the daemon it started to answer.
  std::chrono::milliseconds spawnTimeout{5000};
};

struct PostOptions {
  /// Report, through onDelivered, when the daemon has consumed the message.
  bool requestAck = false;
  /// Wait this long for ring space when the up ring is full (0: fail at once with QueueFull).
  std::chrono::milliseconds waitForSpace{1000};
};

class Client;

/// navigator.serviceWorker.controller: the way to the daemon. Valid while the client is
/// controlled; obtain it again after a controllerchange.
class Controller {
 public:
  /// Posts to the service worker. Returns the message's sequence number. QueueFull when the ring
  /// stays full past opts.waitForSpace, QuotaExceededError over the size limit (nothing sent),
  /// InvalidStateError when not controlled.
  /// With `transfer`: the ports move to the service worker (event.ports there, in order) and are
  /// neutered here; DataCloneError (nothing sent) for a duplicate, closed or neutered port.
  Result<MessageSeq> postMessage(const Value& data, const PostOptions& opts = {});
  Result<MessageSeq> postMessage(const Value& data, TransferList transfer, const PostOptions& opts = {});
  Result<MessageSeq> postTyped(uint64_t typeId, const TypedBuilder& build, const PostOptions& opts = {});
  Result<MessageSeq> postTyped(uint64_t typeId, const TypedBuilder& build, TransferList transfer,
                               const PostOptions& opts = {});
  template <typename T, typename F>
  Result<MessageSeq> postMessage(F&& fill, const PostOptions& opts = {}) {
    auto [id, b] = typedBuilder<T>(std::forward<F>(fill));
    return postTyped(id, b, opts);
  }

  /// Made by Client; use Client::controller().
  explicit Controller(Client* c) : client_(c) {}

 private:
  Client* client_;
};

class Client {
 public:
  /// Attaches to the daemon of opts.scope: NoDaemon, AttachTimeout, VersionMismatch, TypeError.
  static Result<Client> connect(const ClientOptions& opts);

  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();  // detaches gracefully

  const ClientId& id() const;
  bool controlled() const;
  /// True while attached to a daemon (controlled or not).
  bool attached() const;
  /// nullptr while uncontrolled or detached.
  Controller* controller();
  /// The daemon's --sw-version as told at attach.
  const std::string& swVersion() const;

  /// SW -> client messages. Held (in order) until startMessages().
  void onMessage(std::function<void(const MessageEvent&)> fn);
  void onMessageError(std::function<void(const MessageErrorEvent&)> fn);
  /// Fired with the new state when the controller appears or goes (claim, daemon loss/restart).
  void onControllerChange(std::function<void(bool controlled)> fn);
  /// A post (or messageSW request) the daemon never consumed: e.g. it died first.
  void onUndelivered(std::function<void(MessageSeq, const Error&)> fn);
  /// A post made with requestAck was consumed by the daemon.
  void onDelivered(std::function<void(MessageSeq)> fn);
  /// The service worker navigated this window (WindowClient.navigate); url() is already updated.
  void onNavigate(std::function<void(const std::string& url)> fn);
  /// The service worker focused this window (WindowClient.focus).
  void onFocus(std::function<void()> fn);

  /// This client's url (changes on navigate).
  const std::string& url() const;
  /// Report window state to the daemon (drives matchAll order). Kept across re-attaches.
  Result<void> setFocus(bool focused);
  Result<void> setVisibility(bool visible);
  /// Accept typed payloads of schema T (others raise messageerror).
  TypeRegistry& types();

  /// Enables the message queue (DOMContentLoaded / startMessages()).
  void startMessages();

  /// Workbox messageSW: creates a MessageChannel, posts `data` with port2 in the transfer list
  /// and waits for the first reply on port1 (then closes port1). TimeoutError at the deadline;
  /// Disconnected if the daemon goes away first; without a deadline, AbortError when the
  /// service worker drops the port unanswered (with one, the deadline decides). Events that
  /// arrive meanwhile are kept for the next dispatch (no callbacks run inside this call).
  Result<Value> messageSW(const Value& data, Deadline deadline = NO_DEADLINE);
  Result<Value> messageSW(const Value& data, std::chrono::milliseconds timeout) {
    return messageSW(data, deadlineIn(timeout));
  }
  /// Non-blocking messageSW: `done` runs on the loop thread with the reply or the error.
  void messageSWAsync(const Value& data, std::function<void(Result<Value>)> done,
                      std::optional<Deadline> deadline = std::nullopt);

  /// registration.sync / registration.periodicSync (Background Sync, swipc/sync.h). Works
  /// controlled or not; the calls answer on this client's loop.
  SyncManager sync() { return SyncManager(*this); }
  PeriodicSyncManager periodicSync() { return PeriodicSyncManager(*this); }
  /// registration.backgroundFetch (Background Fetch, swipc/background_fetch.h).
  BackgroundFetchManager backgroundFetch() { return BackgroundFetchManager(*this); }

  /// A pollable fd: readable when dispatch() has work. For embedding in your own poll loop.
  int fd() const;
  /// Handles everything ready now; never blocks.
  void dispatch();
  /// Runs the loop until stop().
  void run();
  /// Runs the loop until `deadline` or stop(); returns false on deadline.
  bool runUntil(Deadline deadline);
  /// Runs the loop until `pred()` is true (checked after each step) or the deadline.
  bool runUntil(const std::function<bool()>& pred, Deadline deadline);
  void stop();
  /// Thread-safe: run `fn` on the loop thread.
  void post(std::function<void()> fn);
  /// Thread-safe: wake a blocked run().
  void wake();

  /// Detaches gracefully now (the daemon sees a normal exit). Later calls fail Disconnected.
  void close();

  /// Internal: what BroadcastChannel objects made on this client talk to.
  std::shared_ptr<detail::BroadcastHub> broadcastHub();
  /// Internal: what MessagePorts living on this client talk to.
  detail::PortHost& portHost();
  /// Internal: the page's feature seam (libipc/src/page/feature.h), through which a feature
  /// module (Background Sync's page ops, ...) plugs into this client.
  page::FeatureSet& pageFeatures();

  class Impl;

 private:
  friend class Controller;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace swipc
