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
#include "swipc/background_fetch.h"
#include "swipc/sync.h"
#include "swipc/types.h"
#include "swipc/value.h"

namespace swipc {

namespace detail {
class BroadcastHub;
class PortHost;
}

/// Background Sync's schedule (DESIGN §14); the defaults are Chromium's.
struct BackgroundSyncOptions {
  int maxAttempts = 3;                                      // --sync-max-attempts
  std::chrono::milliseconds retry{300000};                  // --sync-retry-ms: first retry delay
  double retryFactor = 3;                                   // --sync-retry-factor
  std::chrono::milliseconds timeout{180000};                // --sync-timeout-ms: unsettled = failed
  std::chrono::milliseconds periodicMinInterval{43200000};  // --periodic-min-interval-ms
  /// When events may fire: AUTO while the host has a default route (netlink), ALWAYS, or MANUAL
  /// (online unless startOffline; then setOnline() decides).
  enum class Connectivity { AUTO, ALWAYS, MANUAL } connectivity = Connectivity::AUTO;
  bool startOffline = false;  // --offline (MANUAL only)
};

/// A scope across hosts over NATS (DESIGN §16). Without servers: off, nothing connects.
struct FederationOptions {
  std::vector<std::string> natsServers;  // --nats URL[,URL...]
  std::string node;                      // --node: this node's name; "" = the short host name
                                         // (options() then says which)
  /// --nats-channel-idle-ms: a channel this node has not posted on for about this long (counted
  /// in heartbeats, so up to one earlier) leaves its announcements once every other node has
  /// heard its last mark (its next post starts a new numbering), so they stay as small as the
  /// channels in use.
  std::chrono::milliseconds channelIdle{600000};
};

struct ServiceWorkerOptions {
  std::string scope = "default";
  std::string runtimeDir;
  std::string version = "1.0.0";
  std::chrono::microseconds spin{0};  // busy-poll rings this long after activity before sleeping
  size_t maxClients = 4096;
  uint64_t maxMessageBytes = 64ull << 20;
  uint64_t ringBytes = 256 * 1024;    // per direction, per client (power of two)
  /// The backlog the daemon holds for a client whose down ring is full, in messages and in
  /// bytes (--max-backlog, --max-backlog-bytes). At either bound, posts from service-worker code
  /// to it fail with QueueFull and it is marked unresponsive; the daemon's own traffic to it
  /// (acks, notices, replies) may take it to twice the bounds, past which it is disconnected.
  size_t maxBacklog = 4096;
  uint64_t maxBacklogBytes = 64ull << 20;
  /// All backlogs of the clients of one uid together (--max-backlog-bytes-per-uid).
  uint64_t maxBacklogBytesPerUid = 256ull << 20;
  /// A client that stays unresponsive (backlog at its bound) this long is disconnected and what
  /// it held is reported undelivered and reclaimed (--unresponsive-ms).
  std::chrono::milliseconds unresponsiveTimeout{5000};
  /// Distinct BroadcastChannel names in the scope (--max-channels), objects per client
  /// (--max-channels-per-client).
  size_t maxChannels = 4096;
  size_t maxChannelsPerClient = 1024;
  /// clients.openWindow calls in flight (spawned, not yet attached) (--max-open-windows).
  size_t maxOpenWindows = 8;
  /// Port-table entries one client may own: live ports and the tombstones waiting for its
  /// portClose (--max-ports-per-client; 0: no bound). A message that would register more
  /// pairs is refused with QuotaExceededError to its sender (nothing delivered; the ports it
  /// shipped close).
  size_t maxPortsPerClient = 4096;
  /// Bytes of client messages one MessagePort of service-worker code holds before it is started
  /// (--max-port-queue-bytes; 0: no bound); past it they are dropped, QuotaExceededError to the sender.
  uint64_t maxPortQueueBytes = 16ull << 20;
  /// Dir 0750, socket 0660, and a peer any of whose groups (supplementary included) is ours may
  /// attach (--allow-group).
  bool allowGroup = false;
  /// A listening AF_UNIX SOCK_SEQPACKET socket to serve instead of binding one (systemd socket
  /// activation: sw_daemon passes the one LISTEN_FDS names). The ServiceWorker owns it from
  /// construction. It must be bound to this scope's socket path; listen() checks the directory
  /// as for its own socket, sets the file's mode (0600, 0660 with allowGroup), serves it, and
  /// at shutdown closes it but leaves the file to the socket unit that owns the name (a listen()
  /// after that binds its own). -1: bind our own.
  int listenFd = -1;
  /// Per-uid slots, dbus-broker style (QuotaExceededError past them): connections that have not
  /// sent their Hello yet (--max-pending-per-uid; each is also dropped after attachTimeout), and
  /// attached clients (--max-clients-per-uid).
  size_t maxPendingPerUid = 64;
  size_t maxClientsPerUid = 4096;
  std::chrono::milliseconds attachTimeout{2000};
  bool handleSignals = true;          // SIGTERM/SIGINT: graceful stop; SIGUSR1: log counters
  /// argv template openWindow runs; "{url}", "{scope}", "{runtime-dir}" are replaced.
  /// Empty: page_client (next to this executable or on PATH) `listen` with that url.
  std::vector<std::string> windowCommand;
  std::chrono::milliseconds openWindowTimeout{5000};
  /// Capacity of each BroadcastChannel ring (power of two >= 4096).
  uint64_t bcRingBytes = 1 << 20;
  /// Durable state (Background Sync / Fetch): empty means $XDG_STATE_HOME/swipc/<scope>, else
  /// ~/.local/state/swipc/<scope>. Created 0700 when a feature first needs it.
  std::string stateDir;
  BackgroundSyncOptions sync;
  BackgroundFetchSettings fetch;
  FederationOptions federation;
};

/// A message from a client to the service worker.
struct ExtendableMessageEvent : MessageEvent {
  std::optional<ClientHandle> source;
};

struct Counters {
  uint64_t attached = 0, detached = 0, attachTimeouts = 0, versionMismatches = 0, rejectedClients = 0;
  uint64_t uidQuotaRefused = 0;  // of rejectedClients: over --max-pending-per-uid / --max-clients-per-uid
  uint64_t fdLimitRefused = 0;   // of rejectedClients: the daemon near its file descriptor limit
  uint64_t protocolViolations = 0, messagesIn = 0, messagesOut = 0, messageErrors = 0;
  uint64_t queueFull = 0, unresponsive = 0, undelivered = 0, oversize = 0, repliesDropped = 0;
  uint64_t windowsOpened = 0, openWindowFailures = 0, claimed = 0;
  uint64_t broadcastsPosted = 0, channelsOpen = 0;
  uint64_t portMessagesRouted = 0, portsTransferred = 0, portsClosed = 0, portMessagesDropped = 0;
  uint64_t portsOpen = 0;  // entries in the daemon's port table now (a gauge)
  uint64_t syncFired = 0, syncSucceeded = 0, syncFailed = 0, syncTimedOut = 0, syncGaveUp = 0;
  uint64_t syncDroppedEntries = 0;
  uint64_t fetchStarted = 0, fetchSucceeded = 0, fetchFailed = 0, fetchAborted = 0, fetchResumed = 0;
  uint64_t fetchRetries = 0, fetchBytes = 0;
  // Quotas (issue 14): refusals and disconnections because a client went past a limit.
  uint64_t channelQuotaRefused = 0, unresponsiveDisconnects = 0, openWindowRefused = 0;
  uint64_t portQuotaRefused = 0;  // messages refused: their sender at --max-ports-per-client
  // Federation (--nats): BroadcastChannel posts sent to / taken from other nodes, posts of ours that
  // did not go out (NATS unreachable, queue full), posts of others that never came (each reported
  // as lapped), frames from other nodes refused as malformed, disconnections from NATS.
  uint64_t federationPostsOut = 0, federationPostsIn = 0, federationNotSent = 0, federationMissed = 0;
  uint64_t federationRejected = 0, federationDisconnects = 0;
  // Federation: messages of ours (posts, almost always: a burst on one channel) that went out
  // packed with others in one NATS message; kept up to date with each post and announcement.
  uint64_t federationBundled = 0;
  // Federation: posts of ours not published because no other node had an object of their
  // channel (its announced interest); they are no gap for anyone.
  uint64_t federationLocalOnly = 0;
  // Federation: requests about clients sent to / served for other nodes, and those unanswered.
  uint64_t federationRequestsOut = 0, federationRequestsIn = 0, federationTimeouts = 0;
  Value toValue() const;
};

class ServiceWorker {
 public:
  /// Throws std::system_error when the process cannot create the service worker's event loop
  /// (it is out of file descriptors); every other failure is listen()'s Result.
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

  /// Background Sync (swipc/sync.h): `sync` and `periodicsync` events. Set before listen() to
  /// see the events due at start.
  void onSync(std::function<void(SyncEventPtr)> fn);
  void onPeriodicSync(std::function<void(SyncEventPtr)> fn);
  /// registration.sync from service-worker code (committed when it returns ok); InvalidStateError
  /// before listen().
  Result<void> registerSync(const std::string& tag, std::optional<Value> data = std::nullopt);
  Result<std::vector<std::string>> syncTags() const;
  /// The one-shot tags, in registration order (SYNC_STATE, swctl sync).
  std::vector<SyncTagState> syncState() const;
  /// Connectivity for Background Sync: MANUAL mode only (InvalidStateError otherwise); going
  /// online fires every pending tag at once.
  Result<void> setOnline(bool online);
  bool online() const;

  /// Background Fetch (swipc/background_fetch.h): the completion events. Set before listen() to
  /// see the events of fetches that finished while the daemon was down or before it restarted.
  void onBackgroundFetchSuccess(std::function<void(BackgroundFetchEventPtr)> fn);
  void onBackgroundFetchFail(std::function<void(BackgroundFetchEventPtr)> fn);
  void onBackgroundFetchAbort(std::function<void(BackgroundFetchEventPtr)> fn);
  /// Every registration (active, or awaiting its completion event), in creation order.
  std::vector<BackgroundFetchState> backgroundFetches() const;

  /// Runs `fn` on the loop once `delay` has passed (service-worker code's asynchronous work, e.g.
  /// settling a sync event later); clearTimeout before then and it never runs. After listen().
  using TimerId = uint64_t;
  TimerId setTimeout(std::chrono::milliseconds delay, std::function<void()> fn);
  void clearTimeout(TimerId id);

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

 private:
  class Impl;
  friend class ClientHandle;
  friend class Clients;
  std::unique_ptr<Impl> impl_;
  Clients clients_;
};

}  // namespace swipc
