// Background Sync (DESIGN §14): durable, tagged work that the service worker runs when the host
// is online, retried with back-off, surviving the page going away and the daemon being killed.
//
// Page side:    client.sync().registerTag("outbox", Value("mail #1"))   -> committed, then ok
//               client.periodicSync().registerTag("news", 12h)
// Daemon side:  sw.onSync([](SyncEventPtr e) { ...; e->done(entry.seq); e->resolve(); })
//
// Beyond the web, a registration may carry data: each data is an entry of the tag's durable
// queue. The sync event hands the entries in registration order; the handler marks each one
// done as it finishes it (committed at once: never handed out again); entries not done stay for
// the next attempt.
//
// Threading: as for Client and ServiceWorker: everything on the loop thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "swipc/error.h"
#include "swipc/types.h"
#include "swipc/value.h"

namespace swipc {

class Client;

/// One entry of a tag's durable queue.
struct SyncEntry {
  uint64_t seq = 0;  // increasing per scope, in registration order
  Value data;
};

/// One `sync` or `periodicsync` event given to service-worker code. Settle it exactly once,
/// with resolve() or reject(), now or later from the loop (keep the pointer). Once the daemon
/// has timed the event out (aborted()), settling does nothing.
class SyncEvent {
 public:
  virtual ~SyncEvent() = default;
  virtual const std::string& tag() const = 0;
  /// 1-based; for a periodic tag, within the current period.
  virtual uint32_t attempt() const = 0;
  /// True on the last attempt before the registration is dropped.
  virtual bool lastChance() const = 0;
  virtual bool periodic() const = 0;
  /// The durable queue's entries not yet done, in registration order (empty for periodic).
  virtual const std::vector<SyncEntry>& entries() const = 0;
  /// Marks entry `seq` done; committed before it returns (never handed out again). Allowed also
  /// after the event settled or timed out: the work was done. NotFoundError for an entry not
  /// given to this event.
  virtual Result<void> done(uint64_t seq) = 0;
  virtual void resolve() = 0;
  virtual void reject(const std::string& reason) = 0;
  virtual bool settled() const = 0;
  /// True once the daemon gave up on the event (--sync-timeout-ms): it counts as a failure.
  virtual bool aborted() const = 0;
  /// Runs once if the event is aborted (the event's abort signal): stop the work.
  virtual void onAbort(std::function<void()> fn) = 0;
};
using SyncEventPtr = std::shared_ptr<SyncEvent>;

/// One one-shot tag as SYNC_STATE and `swctl sync` show it.
struct SyncTagState {
  std::string tag;
  std::string state;         // pending | firing | waiting
  uint32_t attempts = 0;     // failed attempts so far
  uint64_t entries = 0;      // entries waiting
  int64_t nextAttemptMs = 0; // ms until the next attempt (0: due or waiting for online)
};

// ---- page side ----------------------------------------------------------------------------

/// registration.sync of a page. Every call is answered once, on the loop thread; the ok of a
/// register means the registration (and its entry) is committed to the daemon's database.
/// Errors: TypeError (bad tag), Disconnected (no daemon now, or it went away before answering:
/// the registration may or may not have been committed), QueueFull.
class SyncManager {
 public:
  explicit SyncManager(Client& client) : client_(&client) {}
  void registerTag(const std::string& tag, std::optional<Value> data, std::function<void(Result<void>)> done);
  void getTags(std::function<void(Result<std::vector<std::string>>)> done);
  /// Blocking forms: run the client's loop (its callbacks may run) until answered or deadline.
  Result<void> registerTag(const std::string& tag, std::optional<Value> data = std::nullopt,
                           Deadline deadline = NO_DEADLINE);
  Result<std::vector<std::string>> getTags(Deadline deadline);

 private:
  Client* client_;
};

/// registration.periodicSync of a page: a separate tag namespace.
class PeriodicSyncManager {
 public:
  explicit PeriodicSyncManager(Client& client) : client_(&client) {}
  void registerTag(const std::string& tag, std::chrono::milliseconds minInterval,
                   std::function<void(Result<void>)> done);
  /// Unregistering an unknown tag succeeds.
  void unregister(const std::string& tag, std::function<void(Result<void>)> done);
  void getTags(std::function<void(Result<std::vector<std::string>>)> done);
  Result<void> registerTag(const std::string& tag, std::chrono::milliseconds minInterval,
                           Deadline deadline = NO_DEADLINE);

 private:
  Client* client_;
};

}  // namespace swipc
