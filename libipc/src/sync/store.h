// SyncStore: the durable half of Background Sync (DESIGN §11, §14). One SQLite file, state.db,
// in the state dir holds the one-shot registrations, their queued entries and the periodic
// registrations. Every mutating call commits before it returns, so a caller may acknowledge
// (send the page its ok) as soon as it has the result.
//
// The store applies the persistent half of the §14 state machine (coalescing, re-register while
// firing, retry bookkeeping, final failure) atomically, one transaction per call; the scheduler
// adds time, connectivity and events on top.
//
//   one-shot:  pending ──markFiring──► firing ──settle──► removed | pending | waiting | dropped
//                 ▲                        │ reopen (daemon killed mid-event)
//                 └────────────────────────┘ attempts unchanged (refire: reset to 0)
//
// Times that must survive a restart (next attempt, last periodic fire) are wall-clock
// milliseconds (WallTime).
//
// @concurrent: one thread; one SyncStore per state dir (a second process on the same file waits
// for the write lock up to the busy timeout, then fails with SYSTEM).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "swipc/error.h"
#include "swipc/value.h"
#include "sync/sqlite.h"

namespace swipc::sync {

/// A wall-clock time in milliseconds: durable across restarts (unlike the steady Deadline).
using WallTime = std::chrono::sys_time<std::chrono::milliseconds>;
/// The current wall-clock time, in WallTime's resolution.
WallTime wallNow();

/// The two tag namespaces: `sync.register` and `periodicSync.register`.
enum class SyncKind { ONE_SHOT, PERIODIC };

/// Where a registration is in its lifecycle. Periodic: `waiting` until its period (or retry)
/// is due, `pending` when due and waiting for online, `firing` while its event runs.
enum class TagState { PENDING, FIRING, WAITING };
/// "pending" | "firing" | "waiting": the names SYNC_STATE reports.
std::string_view tagStateName(TagState state);

/// The back-off rule (DESIGN §14): attempt n that fails with n < maxAttempts is retried after
/// retry × factor^(n-1); attempt maxAttempts is the last chance.
struct RetryPolicy {
  int maxAttempts = 3;
  std::chrono::milliseconds retry = std::chrono::minutes(5);
  double factor = 3.0;
};
/// retry × factor^(failedAttempts-1), saturating at one year. Requires failedAttempts >= 1.
std::chrono::milliseconds retryDelay(const RetryPolicy& policy, int failedAttempts);

/// One registration as stored. Fields marked one-shot or periodic are zero for the other kind.
struct SyncRecord {
  SyncKind kind = SyncKind::ONE_SHOT;
  std::string tag;
  /// Registration order: larger is later; unique within a kind.
  int64_t order = 0;
  TagState state = TagState::PENDING;
  /// Failed attempts so far (periodic: within the current period).
  int attempts = 0;
  /// When a `waiting` retry is due; the epoch when not waiting for a retry.
  WallTime nextAttempt{};
  /// One-shot: registered again while firing, so it fires again once that event settles.
  bool refire = false;
  /// Periodic: the interval the page asked for (before the daemon's floor is applied).
  std::chrono::milliseconds minInterval{0};
  /// Periodic: when its last period ended (an event settled for good), else when registered.
  WallTime lastFire{};
};

/// An entry's data as stored: a single-segment Cap'n Proto message of schemas/value.capnp (bytes,
/// 64-bit ints and floats round-trip), and back (DATA_CLONE when the bytes are not one).
std::vector<uint8_t> encodeValue(const Value& value);
Result<Value> decodeValue(const std::vector<uint8_t>& bytes);

/// A queued piece of work of a one-shot tag: `seq` is unique forever (never reused).
struct SyncEntry {
  uint64_t seq = 0;
  Value data;
};

/// How a settled event ended, from the scheduler's point of view.
struct Settlement {
  /// The handler resolved (true) or rejected / timed out (false).
  bool success = false;
  /// Entries this event marked done (its progress).
  uint64_t entriesDone = 0;
};

/// What the store did with a registration when its event settled.
enum class AfterSettle {
  REMOVED,      ///< one-shot succeeded with no entry left: gone
  FIRE_AGAIN,   ///< pending now, attempts reset: re-registered while firing, or entries remain
  RETRY,        ///< waiting until nextAttempt (also: succeeded with entries left but no progress)
  GAVE_UP,      ///< last chance failed: one-shot removed with its entries; periodic: next period
  NEXT_PERIOD,  ///< periodic succeeded: waiting for its next period
};

/// The result of settle(): the new record (unless removed) and how many entries were dropped.
struct SettleResult {
  AfterSettle after = AfterSettle::REMOVED;
  /// The registration now; absent when it was removed.
  std::optional<SyncRecord> record;
  /// Entries removed undone (GAVE_UP of a one-shot tag).
  uint64_t droppedEntries = 0;
};

/// One event's end, for SyncStore::settleAll.
struct SettleRequest {
  SyncKind kind = SyncKind::ONE_SHOT;
  std::string tag;
  Settlement how;
};

/// The durable registration store of one scope. Move-free; hold it by unique_ptr.
class SyncStore {
 public:
  /// Opens `stateDir`/state.db. Creates the directory (and missing parents) 0700 and the file
  /// 0600 when missing; checks the file (PRAGMA quick_check); runs migrations; puts every tag
  /// that was `firing` (the daemon died mid-event) back to `pending` with the attempt count it
  /// had before that event (attempts reset to 0 when it had been re-registered while firing).
  /// INVALID_STATE, message starting "state dir <dir>: ", when the directory is not a directory
  /// or not writable, or the database is corrupt or from a newer build; SYSTEM for other
  /// failures.
  static Result<std::unique_ptr<SyncStore>> open(const std::filesystem::path& stateDir);

  SyncStore(const SyncStore&) = delete;
  SyncStore& operator=(const SyncStore&) = delete;
  ~SyncStore();

  /// The database file (state.db inside the state dir).
  const std::filesystem::path& databasePath() const { return path_; }

  /// Every registration of `kind`, in registration order.
  Result<std::vector<SyncRecord>> load(SyncKind kind);

  /// sync.register: creates the tag `pending`, or coalesces with the existing one — `pending`
  /// stays, `waiting` becomes `pending` at once (attempts kept), `firing` gets `refire`. When
  /// `data` is given it is appended to the tag's entries, in the same commit.
  Result<SyncRecord> registerOneShot(std::string_view tag, const std::optional<Value>& data);

  /// periodicSync.register: creates the tag `waiting` with lastFire = `now`, or updates the
  /// interval of the existing one (nothing else changes).
  Result<SyncRecord> registerPeriodic(std::string_view tag, std::chrono::milliseconds minInterval, WallTime now);

  /// periodicSync.unregister: false (and no error) when the tag is not registered.
  Result<bool> unregisterPeriodic(std::string_view tag);

  /// Marks `tags` of `kind` `firing`, all in one commit (going online with many pending tags
  /// costs one fsync). Unknown tags are skipped.
  Result<void> markFiring(SyncKind kind, std::span<const std::string> tags);

  /// Applies the end of an event of `tag` (which must be `firing`) and commits:
  ///   refire (one-shot)              -> FIRE_AGAIN, attempts 0
  ///   success, no entry left         -> REMOVED (periodic: NEXT_PERIOD, lastFire = now)
  ///   success, entries left          -> FIRE_AGAIN, attempts 0; RETRY after policy.retry when the
  ///                                     event marked no entry done (no hot loop for a handler that
  ///                                     ignores its entries)
  ///   failure, attempt n < max       -> RETRY, attempts n, nextAttempt = now + retryDelay(n)
  ///   failure, attempt n = max       -> GAVE_UP (one-shot: removed with its entries;
  ///                                     periodic: attempts 0, lastFire = now)
  /// NOT_FOUND when the tag is not registered, INVALID_STATE when it is not firing.
  Result<SettleResult> settle(SyncKind kind, std::string_view tag, const Settlement& how,
                              const RetryPolicy& policy, WallTime now);

  /// settle() for many events in one commit (one fsync for a whole loop pass of settles). Each
  /// request gets its own result (NOT_FOUND / INVALID_STATE as settle() says, and nothing written
  /// for it); any other failure rolls the whole batch back and is returned instead.
  Result<std::vector<Result<SettleResult>>> settleAll(std::span<const SettleRequest> requests,
                                                      const RetryPolicy& policy, WallTime now);

  /// The entries of one-shot `tag`, in sequence order. DATA_CLONE when a stored value no longer
  /// decodes.
  Result<std::vector<SyncEntry>> entries(std::string_view tag);
  /// How many entries wait, per one-shot tag (tags without entries are absent).
  Result<std::vector<std::pair<std::string, uint64_t>>> entryCounts();
  /// Deletes entry `seq` and commits. False when it was already gone (done before, or dropped).
  Result<bool> entryDone(uint64_t seq);

  /// PRAGMA integrity_check: "ok" or the problems found.
  Result<std::string> integrityCheck();

 private:
  SyncStore(sql::Database db, std::filesystem::path path) : db_(std::move(db)), path_(std::move(path)) {}
  Result<void> recoverInterruptedEvents();
  /// settle() inside the caller's transaction.
  Result<SettleResult> applySettle(SyncKind kind, std::string_view tag, const Settlement& how,
                                   const RetryPolicy& policy, WallTime now);
  Result<std::optional<SyncRecord>> find(SyncKind kind, std::string_view tag);
  Result<int64_t> nextOrder(SyncKind kind);
  Result<uint64_t> countEntries(std::string_view tag);
  Result<uint64_t> dropEntries(std::string_view tag);
  Result<void> write(const SyncRecord& record);
  Result<void> erase(SyncKind kind, std::string_view tag);

  sql::Database db_;
  std::filesystem::path path_;
};

}  // namespace swipc::sync
