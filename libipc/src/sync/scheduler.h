// SyncScheduler: the Background Sync state machine of DESIGN §14 on one EventLoop.
//
// It keeps an in-memory mirror of the SyncStore (which it writes through on every change) plus
// what is not durable: timers (retry, periodic due, event timeout) and the events in flight.
// Events are handed to one handler installed by the owner (the ServiceWorker); the handler settles
// each through its SyncCompletion, at once or later from the loop.
//
//   registerTag ──► pending ──(online, handler set)──► firing ──resolve──► removed / fires again
//                      ▲                                  │ reject / timeout
//                      └──── retry timer ◄──── waiting ◄──┘ (attempt < max; else removed)
//
// "At once" is the next pass of the loop: a due tag is fired from a timer at Clock::now().
//
// @concurrent: one thread, the loop's. Every callback (handler, abort, settled hook) runs on it,
// after the scheduler's state (memory and disk) is updated. After the scheduler is destroyed no
// callback runs and every outstanding completion is inert.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/event_loop.h"
#include "swipc/error.h"
#include "swipc/value.h"
#include "sync/store.h"

namespace swipc::sync {

/// The tag rule of §14: 1..10240 bytes of valid UTF-8 (no overlong forms, no surrogates, nothing
/// above U+10FFFF), else TYPE ("TypeError").
Result<void> checkTag(std::string_view tag);

/// Tunables; the defaults are Chromium's (DESIGN §14) and map to the sw_daemon flags.
struct SyncOptions {
  /// --sync-max-attempts, --sync-retry-ms, --sync-retry-factor
  RetryPolicy retry;
  /// --sync-timeout-ms: an event unsettled this long is a failure.
  std::chrono::milliseconds timeout = std::chrono::minutes(3);
  /// --periodic-min-interval-ms: the floor under every periodic tag's minInterval.
  std::chrono::milliseconds periodicMinInterval = std::chrono::hours(12);
};

/// How an event ended.
enum class SyncOutcome { SUCCESS, FAILURE, TIMEOUT };
/// "success" | "failure" | "timeout": the names of the sync-log reports.
std::string_view syncOutcomeName(SyncOutcome outcome);

class SyncScheduler;

/// The settle side of one event, shared between the scheduler and the handler (which may keep it
/// past its own return). The first resolve()/reject() wins; a settle after the timeout, after
/// another settle or after the scheduler is gone is ignored.
class SyncCompletion {
 public:
  /// The event's work is done: the tag is removed (or fires again while entries remain).
  void resolve();
  /// The attempt failed: retried with back-off, or dropped when it was the last chance.
  void reject(std::string_view reason);
  /// Commits the deletion of entry `seq` of this event before returning; it is never handed out
  /// again. Allowed until the scheduler is gone, also after the event settled or timed out (the
  /// work was done: forgetting it would hand it out twice). Idempotent. NOT_FOUND when `seq` was
  /// not given to this event, INVALID_STATE when the scheduler is gone.
  Result<void> entryDone(uint64_t seq);

  /// True once resolved, rejected or timed out.
  bool settled() const { return settled_; }
  /// True once the scheduler gave up on this event (timeout): stop the work.
  bool aborted() const { return aborted_; }
  /// Runs `fn` once, on the loop, when the event times out (at once when it already has).
  /// Never runs after a settle.
  void onAbort(std::function<void()> fn);

 private:
  friend class SyncScheduler;
  struct Anchor {
    SyncScheduler* scheduler;
  };
  SyncCompletion(std::shared_ptr<Anchor> anchor, SyncKind kind, std::string tag, uint64_t eventId,
                 std::vector<uint64_t> seqs);
  void settle(SyncOutcome outcome, std::string_view reason);

  std::shared_ptr<Anchor> anchor_;  // anchor_->scheduler is null once the scheduler is gone
  SyncKind kind_;
  std::string tag_;
  uint64_t eventId_;
  std::vector<uint64_t> seqs_;  // sorted: the entries this event was given
  uint64_t entriesDone_ = 0;
  bool settled_ = false;
  bool aborted_ = false;
  std::vector<std::function<void()>> abortHandlers_;
};

/// One `sync` or `periodicsync` event as the handler sees it.
struct SyncEvent {
  std::string tag;
  /// 1-based; periodic: within the current period.
  int attempt = 1;
  /// True on the last attempt (attempt == maxAttempts): a failure now drops the tag.
  bool lastChance = false;
  /// True for a periodicsync event (periodic namespace).
  bool periodic = false;
  /// The tag's queued entries, in registration order (empty for periodic events).
  std::vector<SyncEntry> entries;
  /// Settle here: resolve(), reject(reason), entryDone(seq), onAbort(fn).
  std::shared_ptr<SyncCompletion> completion;
};

/// What onSettled reports once per event (sync-log's SYNC_DONE).
struct SettledEvent {
  std::string tag;
  int attempt = 1;
  bool periodic = false;
  SyncOutcome outcome = SyncOutcome::SUCCESS;
};

/// One row of SYNC_STATE: a one-shot tag.
struct TagSnapshot {
  std::string tag;
  TagState state = TagState::PENDING;
  /// Failed attempts so far.
  int attempts = 0;
  /// Entries waiting (not done).
  uint64_t entries = 0;
  /// When a `waiting` tag's next attempt is due.
  std::optional<WallTime> nextAttempt;
};

/// Counters for the inspector / SIGUSR1.
struct SyncCounters {
  uint64_t fired = 0;           ///< events handed to the handler (both kinds)
  uint64_t succeeded = 0;       ///< resolved
  uint64_t failed = 0;          ///< rejected, thrown, or timed out
  uint64_t timedOut = 0;        ///< of which timed out
  uint64_t gaveUp = 0;          ///< one-shot tags removed after their last chance failed
  uint64_t droppedEntries = 0;  ///< entries removed undone with them
  uint64_t storeErrors = 0;     ///< SyncStore calls that failed during scheduling (logged)
};

class SyncScheduler {
 public:
  /// Receives every event. Must not block; settle through event.completion, now or later.
  /// An exception escaping it counts as reject(what()).
  using Handler = std::function<void(SyncEvent event)>;
  /// Told once per event, after the state is updated, how it ended.
  using SettledHook = std::function<void(const SettledEvent& settled)>;

  /// Loads the registrations from `store` and arms their timers. Starts offline and without a
  /// handler: nothing fires until setOnline(true) and setHandler(). `loop` and `store` must
  /// outlive the scheduler.
  static Result<std::unique_ptr<SyncScheduler>> create(core::EventLoop& loop, SyncStore& store, SyncOptions options);

  SyncScheduler(const SyncScheduler&) = delete;
  SyncScheduler& operator=(const SyncScheduler&) = delete;
  /// Cancels its timers; outstanding completions become inert; no callback runs after this.
  ~SyncScheduler();

  /// Installs the event handler (replacing any); due tags fire on the next loop pass.
  void setHandler(Handler handler);
  /// Installs the outcome hook (sync-log reports).
  void setSettledHook(SettledHook hook);

  /// sync.register: TYPE for a bad tag; committed (with `data` as a new entry) when this returns
  /// ok. Coalesces with an existing registration (§14).
  Result<void> registerTag(std::string_view tag, const std::optional<Value>& data = std::nullopt);
  /// sync.getTags: registered and not finished, in registration order.
  std::vector<std::string> getTags() const;

  /// periodicSync.register: TYPE for a bad tag; re-registering updates the interval. First fires
  /// max(minInterval, periodicMinInterval) after now, never at registration.
  Result<void> registerPeriodic(std::string_view tag, std::chrono::milliseconds minInterval);
  /// periodicSync.unregister: silent for an unknown tag. An event in flight runs on, unreported.
  Result<void> unregisterPeriodic(std::string_view tag);
  /// periodicSync.getTags, in registration order.
  std::vector<std::string> getPeriodicTags() const;

  /// Going online fires every pending tag (one-shot first, each kind in registration order) at
  /// once. Events already firing are not affected by going offline.
  void setOnline(bool online);
  bool online() const { return online_; }

  /// SYNC_STATE: the one-shot tags in registration order.
  Result<std::vector<TagSnapshot>> state();
  const SyncCounters& counters() const { return counters_; }
  const SyncOptions& options() const { return options_; }

 private:
  friend class SyncCompletion;
  /// A registration in memory: the stored record plus its timer and event in flight.
  struct Registration {
    SyncRecord record;
    core::EventLoop::TimerId timer = 0;  // retry/period timer while waiting, timeout while firing
    uint64_t eventId = 0;                // the event in flight (firing)
    std::shared_ptr<SyncCompletion> completion;
  };
  /// One namespace: registrations by registration order, plus an index by tag.
  struct Registry {
    std::map<int64_t, Registration> byOrder;
    std::unordered_map<std::string, int64_t> orderOf;
    Registration* find(std::string_view tag);
    const Registration* find(std::string_view tag) const;
    Registration& put(SyncRecord record);
    void erase(std::string_view tag);
    std::vector<std::string> tags() const;
  };

  SyncScheduler(core::EventLoop& loop, SyncStore& store, SyncOptions options);
  Registry& registry(SyncKind kind) { return kind == SyncKind::ONE_SHOT ? oneShots_ : periodics_; }
  void clearTimer(Registration& reg);
  /// Arms the timer that makes a waiting registration pending (or marks it pending at once).
  void armWaiting(Registration& reg);
  /// When a waiting registration becomes due.
  WallTime dueAt(const SyncRecord& record) const;
  void becomePending(SyncKind kind, const std::string& tag);
  void scheduleFirePass();
  void firePass();
  void fireBatch(SyncKind kind);
  void dispatch(Registration& reg);
  /// From a completion (or the timeout timer): applies the end of event `eventId` of `tag`.
  void settle(SyncKind kind, const std::string& tag, uint64_t eventId, SyncOutcome outcome,
              std::string_view reason, uint64_t entriesDone);
  /// A settle waiting for the settle pass (one commit for every settle of a loop pass).
  struct PendingSettle {
    SyncKind kind;
    std::string tag;
    int attempt;
    SyncOutcome outcome;
    std::string reason;
    uint64_t entriesDone;
    std::shared_ptr<SyncCompletion> completion;
  };
  void settlePass();
  void applySettled(const PendingSettle& p, SettleResult& result);
  void applySettleFailure(const PendingSettle& p, const Error& error);
  /// Deletes entry `seq` (committed); false when it was already gone.
  Result<bool> entryDone(uint64_t seq);
  void storeError(std::string_view what, const Error& error);

  core::EventLoop& loop_;
  SyncStore& store_;
  SyncOptions options_;
  std::shared_ptr<SyncCompletion::Anchor> anchor_;
  Handler handler_;
  SettledHook settledHook_;
  bool online_ = false;
  core::EventLoop::TimerId firePassTimer_ = 0;
  core::EventLoop::TimerId settlePassTimer_ = 0;
  std::vector<PendingSettle> settling_;
  uint64_t nextEventId_ = 1;
  Registry oneShots_;
  Registry periodics_;
  SyncCounters counters_;
};

}  // namespace swipc::sync
