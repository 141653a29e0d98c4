// sync: SyncScheduler, the §14 state machine on a real EventLoop with small durations. Events
// fire only online and with a handler, in registration order, "at once" (< 100 ms); failures are
// retried after retry × factor^(n-1) with lastChance on the last attempt, then dropped with their
// entries; registering coalesces (pending, waiting) or fires again after the event (firing); a
// timeout is a failure whose late settle is ignored; entries are handed out in order and never
// again once done; the state survives a restart; periodic tags keep their own namespace, never
// fire at registration and fire no sooner than max(minInterval, floor). Nothing here sleeps: each
// test steps the loop until an event, under a guard deadline.
#include "sync/scheduler.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "sync_test_util.h"

namespace swipc::sync {
namespace {

using namespace std::chrono_literals;
using testing::runFor;
using testing::TempDir;

constexpr auto AT_ONCE = 100ms;  // DESIGN §14's "at once"

/// An event as the test saw it, with when it arrived.
struct Seen {
  SyncEvent event;
  Deadline at;
};

class SyncSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.retry = RetryPolicy{.maxAttempts = 3, .retry = 30ms, .factor = 2.0};
    options_.timeout = 60ms;
    options_.periodicMinInterval = 50ms;
    auto loop = core::EventLoop::create();
    ASSERT_TRUE(loop.ok());
    loop_ = std::move(*loop);
    start();
  }
  void TearDown() override {
    sut_.reset();
    if (!store_) return;
    auto check = store_->integrityCheck();
    ASSERT_TRUE(check.ok()) << check.error().describe();
    EXPECT_EQ(*check, "ok");
  }

  /// (Re)creates store and scheduler on the same state dir, online, with the recording handler.
  void start(bool online = true) {
    sut_.reset();
    store_.reset();
    auto store = SyncStore::open(dir_.path());
    ASSERT_TRUE(store.ok()) << store.error().describe();
    store_ = std::move(*store);
    auto scheduler = SyncScheduler::create(*loop_, *store_, options_);
    ASSERT_TRUE(scheduler.ok()) << scheduler.error().describe();
    sut_ = std::move(*scheduler);
    sut_->setHandler([this](SyncEvent e) {
      seen_.push_back(Seen{e, Clock::now()});
      if (policy_) policy_(seen_.back().event);
    });
    sut_->setSettledHook([this](const SettledEvent& s) { settled_.push_back(s); });
    sut_->setOnline(online);
  }
  /// Steps the loop until `n` events were seen; false on the guard.
  bool waitEvents(size_t n) { return testing::runUntil(*loop_, [&] { return seen_.size() >= n; }); }
  bool waitSettled(size_t n) { return testing::runUntil(*loop_, [&] { return settled_.size() >= n; }); }
  void reg(const std::string& tag, std::optional<Value> data = std::nullopt) {
    auto r = sut_->registerTag(tag, data);
    ASSERT_TRUE(r.ok()) << r.error().describe();
  }
  TagSnapshot snapshot(const std::string& tag) {
    auto all = sut_->state();
    EXPECT_TRUE(all.ok());
    for (auto& s : *all) {
      if (s.tag == tag) return s;
    }
    ADD_FAILURE() << "no tag " << tag;
    return {};
  }
  static std::vector<Value> dataOf(const SyncEvent& e) {
    std::vector<Value> out;
    for (const auto& entry : e.entries) out.push_back(entry.data);
    return out;
  }
  void rejectAll() {
    policy_ = [](SyncEvent& e) { e.completion->reject("no"); };
  }

  TempDir dir_;
  SyncOptions options_;
  std::unique_ptr<core::EventLoop> loop_;
  std::unique_ptr<SyncStore> store_;
  std::unique_ptr<SyncScheduler> sut_;
  std::function<void(SyncEvent&)> policy_;  // what the handler does; nothing = keep it unsettled
  std::vector<Seen> seen_;
  std::vector<SettledEvent> settled_;
};

// ---- firing ----

TEST_F(SyncSchedulerTest, RegisterFiresAtOnceWhenOnline) {
  const Deadline registered = Clock::now();
  reg("a");
  ASSERT_TRUE(waitEvents(1));
  const SyncEvent& e = seen_[0].event;
  EXPECT_EQ(e.tag, "a");
  EXPECT_EQ(e.attempt, 1);
  EXPECT_FALSE(e.lastChance);
  EXPECT_FALSE(e.periodic);
  EXPECT_LT(seen_[0].at - registered, AT_ONCE);
}

TEST_F(SyncSchedulerTest, RegisterWhileOfflineDoesNotFire) {
  sut_->setOnline(false);
  reg("a");
  runFor(*loop_, 4 * options_.retry.retry);
  EXPECT_TRUE(seen_.empty());
  EXPECT_EQ(sut_->getTags(), std::vector<std::string>{"a"});
}

TEST_F(SyncSchedulerTest, GoingOnlineFiresPendingTagsInRegistrationOrder) {
  sut_->setOnline(false);
  for (const char* tag : {"c", "a", "b"}) reg(tag);
  const Deadline online = Clock::now();
  sut_->setOnline(true);
  ASSERT_TRUE(waitEvents(3));
  EXPECT_EQ(seen_[0].event.tag, "c");
  EXPECT_EQ(seen_[1].event.tag, "a");
  EXPECT_EQ(seen_[2].event.tag, "b");
  EXPECT_LT(seen_[2].at - online, AT_ONCE);
}

TEST_F(SyncSchedulerTest, NothingFiresWithoutAHandler) {
  sut_->setHandler(nullptr);
  reg("a");
  runFor(*loop_, 4 * options_.retry.retry);
  EXPECT_EQ(sut_->counters().fired, 0u);
}

TEST_F(SyncSchedulerTest, SuccessRemovesTheTag) {
  policy_ = [](SyncEvent& e) { e.completion->resolve(); };
  reg("a");
  ASSERT_TRUE(waitSettled(1));
  EXPECT_EQ(settled_[0].outcome, SyncOutcome::SUCCESS);
  EXPECT_TRUE(sut_->getTags().empty());
  EXPECT_EQ(sut_->counters().succeeded, 1u);
}

// ---- failure, back-off, last chance ----

TEST_F(SyncSchedulerTest, FailedAttemptWaitsTheRetryDelayThenFiresAgain) {
  rejectAll();
  reg("a");
  ASSERT_TRUE(waitSettled(1));
  EXPECT_EQ(snapshot("a").state, TagState::WAITING);
  EXPECT_EQ(snapshot("a").attempts, 1);
  ASSERT_TRUE(waitEvents(2));
  EXPECT_EQ(seen_[1].event.attempt, 2);
  // Measured from the event (which rejected at once): the delay runs from the failure.
  EXPECT_GE(seen_[1].at - seen_[0].at, options_.retry.retry - 2ms);  // wall-clock ms rounding
}

TEST_F(SyncSchedulerTest, SecondFailureWaitsRetryTimesFactor) {
  rejectAll();
  reg("a");
  ASSERT_TRUE(waitEvents(3));
  EXPECT_GE(seen_[2].at - seen_[1].at, 2 * options_.retry.retry - 2ms);
}

TEST_F(SyncSchedulerTest, OnlyTheLastAttemptHasLastChance) {
  rejectAll();
  reg("a");
  ASSERT_TRUE(waitEvents(3));
  EXPECT_FALSE(seen_[0].event.lastChance);
  EXPECT_FALSE(seen_[1].event.lastChance);
  EXPECT_EQ(seen_[2].event.attempt, 3);
  EXPECT_TRUE(seen_[2].event.lastChance);
}

TEST_F(SyncSchedulerTest, FailedLastChanceDropsTheTagWithItsEntries) {
  rejectAll();
  sut_->setOnline(false);
  reg("a", Value(1));
  reg("a", Value(2));
  sut_->setOnline(true);
  ASSERT_TRUE(waitSettled(3));
  EXPECT_TRUE(sut_->getTags().empty());
  EXPECT_EQ(sut_->counters().gaveUp, 1u);
  EXPECT_EQ(sut_->counters().droppedEntries, 2u);
  EXPECT_TRUE(store_->entryCounts()->empty());
  runFor(*loop_, 4 * options_.retry.retry);
  EXPECT_EQ(seen_.size(), 3u);  // no fourth attempt
}

TEST_F(SyncSchedulerTest, RetryDueWhileOfflineWaitsForOnline) {
  policy_ = [this](SyncEvent& e) {
    e.completion->reject("no");
    sut_->setOnline(false);
  };
  reg("a");
  ASSERT_TRUE(waitSettled(1));
  runFor(*loop_, 3 * options_.retry.retry);
  EXPECT_EQ(seen_.size(), 1u);
  EXPECT_EQ(snapshot("a").state, TagState::PENDING);  // due, waiting for online
  sut_->setOnline(true);
  ASSERT_TRUE(waitEvents(2));
}

// ---- re-registration ----

TEST_F(SyncSchedulerTest, ReRegisterWhilePendingCoalesces) {
  policy_ = [](SyncEvent& e) { e.completion->resolve(); };
  sut_->setOnline(false);
  reg("a");
  reg("a");
  sut_->setOnline(true);
  ASSERT_TRUE(waitEvents(1));
  runFor(*loop_, 4 * options_.retry.retry);
  EXPECT_EQ(seen_.size(), 1u);
}

TEST_F(SyncSchedulerTest, ReRegisterWhileWaitingFiresAtOnceKeepingAttempts) {
  options_.retry.retry = 10s;
  start();
  rejectAll();
  reg("a");
  ASSERT_TRUE(waitSettled(1));
  const Deadline registered = Clock::now();
  reg("a");
  ASSERT_TRUE(waitEvents(2));
  EXPECT_LT(seen_[1].at - registered, AT_ONCE);
  EXPECT_EQ(seen_[1].event.attempt, 2);
}

TEST_F(SyncSchedulerTest, ReRegisterWhileFiringFiresAgainAfterTheEventWithAttemptsReset) {
  reg("a");
  ASSERT_TRUE(waitEvents(1));
  reg("a");  // while firing
  EXPECT_EQ(snapshot("a").state, TagState::FIRING);
  const Deadline settledAt = Clock::now();
  seen_[0].event.completion->reject("no");
  ASSERT_TRUE(waitEvents(2));
  EXPECT_LT(seen_[1].at - settledAt, AT_ONCE);
  EXPECT_EQ(seen_[1].event.attempt, 1);
}

// ---- timeout ----

TEST_F(SyncSchedulerTest, UnsettledEventTimesOutAsAFailureAndIsAborted) {
  bool aborted = false;
  policy_ = [&](SyncEvent& e) { e.completion->onAbort([&] { aborted = true; }); };
  reg("a");
  ASSERT_TRUE(waitSettled(1));
  EXPECT_EQ(settled_[0].outcome, SyncOutcome::TIMEOUT);
  EXPECT_TRUE(aborted);
  EXPECT_TRUE(seen_[0].event.completion->aborted());
  EXPECT_GE(Clock::now() - seen_[0].at, options_.timeout);
  EXPECT_EQ(snapshot("a").attempts, 1);
  EXPECT_EQ(sut_->counters().timedOut, 1u);
}

TEST_F(SyncSchedulerTest, LateSettleAfterTimeoutIsIgnored) {
  options_.retry.retry = 10s;
  start();
  reg("a");
  ASSERT_TRUE(waitSettled(1));
  seen_[0].event.completion->resolve();
  runFor(*loop_, 20ms);
  EXPECT_EQ(sut_->getTags(), std::vector<std::string>{"a"});  // not removed
  EXPECT_EQ(snapshot("a").state, TagState::WAITING);
  EXPECT_EQ(sut_->counters().succeeded, 0u);
  EXPECT_EQ(settled_.size(), 1u);
}

// ---- entries ----

TEST_F(SyncSchedulerTest, EventCarriesTheEntriesInRegistrationOrder) {
  sut_->setOnline(false);
  reg("a", Value("one"));
  reg("a");
  reg("a", Value::map({{"n", Value(2)}}));
  sut_->setOnline(true);
  ASSERT_TRUE(waitEvents(1));
  EXPECT_EQ(dataOf(seen_[0].event), (std::vector<Value>{Value("one"), Value::map({{"n", Value(2)}})}));
}

TEST_F(SyncSchedulerTest, EntriesMarkedDoneAreNotHandedOutAgain) {
  policy_ = [](SyncEvent& e) {
    if (e.attempt == 1) {
      ASSERT_TRUE(e.completion->entryDone(e.entries[0].seq).ok());
      e.completion->reject("first one only");
    }
  };
  sut_->setOnline(false);
  reg("a", Value(1));
  reg("a", Value(2));
  sut_->setOnline(true);
  ASSERT_TRUE(waitEvents(2));
  EXPECT_EQ(dataOf(seen_[1].event), std::vector<Value>{Value(2)});
  EXPECT_EQ(snapshot("a").entries, 1u);
}

TEST_F(SyncSchedulerTest, SuccessWithEntriesLeftFiresAgainAtOnceWithTheRest) {
  policy_ = [](SyncEvent& e) {
    ASSERT_TRUE(e.completion->entryDone(e.entries[0].seq).ok());
    e.completion->resolve();
  };
  sut_->setOnline(false);
  reg("a", Value(1));
  reg("a", Value(2));
  sut_->setOnline(true);
  ASSERT_TRUE(waitEvents(2));
  EXPECT_EQ(dataOf(seen_[1].event), std::vector<Value>{Value(2)});
  EXPECT_EQ(seen_[1].event.attempt, 1);
  EXPECT_LT(seen_[1].at - seen_[0].at, AT_ONCE);
  ASSERT_TRUE(waitSettled(2));
  EXPECT_TRUE(sut_->getTags().empty());
}

TEST_F(SyncSchedulerTest, SuccessWithoutMarkingEntriesWaitsOneRetry) {
  policy_ = [](SyncEvent& e) { e.completion->resolve(); };
  reg("a", Value(1));
  ASSERT_TRUE(waitSettled(1));
  EXPECT_EQ(snapshot("a").state, TagState::WAITING);
  ASSERT_TRUE(waitEvents(2));
  EXPECT_GE(seen_[1].at - seen_[0].at, options_.retry.retry - 2ms);
}

TEST_F(SyncSchedulerTest, EntryDoneRefusesAnEntryOfAnotherEvent) {
  reg("a", Value(1));
  ASSERT_TRUE(waitEvents(1));
  auto r = seen_[0].event.completion->entryDone(seen_[0].event.entries[0].seq + 1000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::NOT_FOUND);
}

TEST_F(SyncSchedulerTest, TenThousandPendingTagsAllFireInOrderOnGoingOnline) {
  constexpr int TAGS = 10000;
  sut_.reset();
  store_.reset();
  {  // written in one transaction: 10,000 separate registrations would be 10,000 fsyncs
    auto db = sql::Database::open((dir_.path() / "state.db").string());
    ASSERT_TRUE(db.ok());
    auto tx = sql::Transaction::begin(*db);
    ASSERT_TRUE(tx.ok());
    for (int i = 1; i <= TAGS; ++i) {
      ASSERT_TRUE(db->exec("INSERT INTO oneshot (tag, ord, state) VALUES ('t" + std::to_string(i) + "', " +
                           std::to_string(i) + ", 'pending')").ok());
    }
    ASSERT_TRUE(tx->commit().ok());
  }
  options_.timeout = 1h;
  start(/*online=*/false);
  const Deadline online = Clock::now();
  sut_->setOnline(true);
  ASSERT_TRUE(waitEvents(TAGS));
  // How fast is bench/sync_bench's business (sync_online_all_fired_10000tags); here: all of them,
  // in order.
  RecordProperty("allFiredMs", static_cast<int>((seen_.back().at - online) / 1ms));
  EXPECT_EQ(seen_.front().event.tag, "t1");
  EXPECT_EQ(seen_.back().event.tag, "t" + std::to_string(TAGS));
}

TEST_F(SyncSchedulerTest, SettlesOfOneLoopPassShareOneCommit) {
  constexpr int TAGS = 50;
  sut_->setOnline(false);
  for (int i = 0; i < TAGS; ++i) reg("t" + std::to_string(i));
  policy_ = [](SyncEvent& e) { e.completion->resolve(); };
  // PRAGMA data_version on a second connection moves once per commit made by another connection.
  auto watcher = sql::Database::open((dir_.path() / "state.db").string());
  ASSERT_TRUE(watcher.ok());
  const int64_t before = *watcher->queryInt("PRAGMA data_version");
  sut_->setOnline(true);
  ASSERT_TRUE(waitSettled(TAGS));
  const int64_t commits = *watcher->queryInt("PRAGMA data_version") - before;
  EXPECT_LE(commits, 2) << "one commit marks them firing, one settles them all";
  EXPECT_TRUE(sut_->getTags().empty());
}

TEST_F(SyncSchedulerTest, SettledHookRunsOnlyOnceTheSettleIsDurable) {
  auto watcher = sql::Database::open((dir_.path() / "state.db").string());
  ASSERT_TRUE(watcher.ok());
  std::vector<int64_t> rowsAtHook;
  sut_->setSettledHook([&](const SettledEvent& s) {
    settled_.push_back(s);
    rowsAtHook.push_back(*watcher->queryInt("SELECT COUNT(*) FROM oneshot"));
  });
  policy_ = [](SyncEvent& e) { e.completion->resolve(); };
  reg("a");
  ASSERT_TRUE(waitSettled(1));
  ASSERT_EQ(rowsAtHook.size(), 1u);
  EXPECT_EQ(rowsAtHook[0], 0) << "another connection still saw the tag when the hook ran";
}

TEST_F(SyncSchedulerTest, SecondSettleBeforeTheSettlePassIsIgnored) {
  policy_ = [](SyncEvent& e) {
    e.completion->reject("first");
    e.completion->resolve();  // stale: the first settle won, even before it was written
  };
  reg("a");
  ASSERT_TRUE(waitSettled(1));
  EXPECT_EQ(settled_[0].outcome, SyncOutcome::FAILURE);
  EXPECT_EQ(snapshot("a").state, TagState::WAITING);
  EXPECT_EQ(snapshot("a").attempts, 1);
}

// ---- handler errors, validation, state ----

TEST_F(SyncSchedulerTest, HandlerExceptionCountsAsAFailure) {
  policy_ = [](SyncEvent&) { throw std::runtime_error("boom"); };
  reg("a");
  ASSERT_TRUE(waitSettled(1));
  EXPECT_EQ(settled_[0].outcome, SyncOutcome::FAILURE);
  EXPECT_EQ(snapshot("a").attempts, 1);
}

TEST_F(SyncSchedulerTest, InvalidTagsAreTypeErrors) {
  const std::string invalid[] = {"", std::string(10241, 't'), "\xff", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\xe2\x82"};
  for (const auto& tag : invalid) {
    auto r = sut_->registerTag(tag);
    ASSERT_FALSE(r.ok()) << tag.size();
    EXPECT_EQ(r.error().code, Errc::TYPE);
    EXPECT_EQ(sut_->registerPeriodic(tag, 0ms).error().code, Errc::TYPE);
  }
  EXPECT_TRUE(sut_->getTags().empty());
  EXPECT_TRUE(sut_->registerTag(std::string(10240, 't')).ok());
  EXPECT_TRUE(sut_->registerTag("\xf0\x9f\x98\x80 caf\xc3\xa9").ok());
}

TEST_F(SyncSchedulerTest, StateListsOneShotTagsInRegistrationOrder) {
  options_.retry.retry = 10s;
  start(/*online=*/false);
  policy_ = [](SyncEvent& e) {
    if (e.tag == "w") e.completion->reject("no");
  };
  reg("w", Value(1));
  reg("f");
  reg("p", Value(2));
  reg("p", Value(3));
  sut_->setOnline(true);
  ASSERT_TRUE(waitSettled(1));  // w failed; f and p are still firing
  auto state = sut_->state();
  ASSERT_TRUE(state.ok());
  ASSERT_EQ(state->size(), 3u);
  EXPECT_EQ((*state)[0].tag, "w");
  EXPECT_EQ((*state)[0].state, TagState::WAITING);
  EXPECT_EQ((*state)[0].attempts, 1);
  EXPECT_EQ((*state)[0].entries, 1u);
  ASSERT_TRUE((*state)[0].nextAttempt);
  EXPECT_GT(*(*state)[0].nextAttempt, wallNow() + 5s);
  EXPECT_EQ((*state)[1].tag, "f");
  EXPECT_EQ((*state)[1].state, TagState::FIRING);
  EXPECT_FALSE((*state)[1].nextAttempt);
  EXPECT_EQ((*state)[2].tag, "p");
  EXPECT_EQ((*state)[2].entries, 2u);
}

// ---- restart ----

TEST_F(SyncSchedulerTest, RestartResumesAWaitingTagAtItsTime) {
  rejectAll();
  reg("a");
  ASSERT_TRUE(waitSettled(1));
  start();  // a new daemon on the same state dir
  ASSERT_TRUE(waitEvents(2));
  EXPECT_EQ(seen_[1].event.attempt, 2);
}

TEST_F(SyncSchedulerTest, RestartWhileFiringFiresAgainWithTheSameAttempt) {
  policy_ = [](SyncEvent& e) {
    if (e.attempt == 1) e.completion->reject("no");  // attempt 2 hangs: the daemon dies in it
  };
  reg("a");
  ASSERT_TRUE(waitEvents(2));
  start();
  ASSERT_TRUE(waitEvents(3));
  EXPECT_EQ(seen_[2].event.attempt, 2);
}

TEST_F(SyncSchedulerTest, CompletionIsInertOnceTheSchedulerIsGone) {
  reg("a", Value(1));
  ASSERT_TRUE(waitEvents(1));
  sut_.reset();
  auto done = seen_[0].event.completion->entryDone(seen_[0].event.entries[0].seq);
  ASSERT_FALSE(done.ok());
  EXPECT_EQ(done.error().code, Errc::INVALID_STATE);
  seen_[0].event.completion->resolve();  // no effect, no crash
  EXPECT_TRUE(settled_.empty());
}

// ---- periodic ----

TEST_F(SyncSchedulerTest, PeriodicFiresNoSoonerThanTheFloorAfterRegistration) {
  const Deadline registered = Clock::now();
  ASSERT_TRUE(sut_->registerPeriodic("p", 0ms).ok());
  ASSERT_TRUE(waitEvents(1));
  EXPECT_TRUE(seen_[0].event.periodic);
  EXPECT_EQ(seen_[0].event.attempt, 1);
  EXPECT_GE(seen_[0].at - registered, options_.periodicMinInterval - 2ms);
}

TEST_F(SyncSchedulerTest, PeriodicUsesMinIntervalWhenAboveTheFloor) {
  const Deadline registered = Clock::now();
  ASSERT_TRUE(sut_->registerPeriodic("p", 150ms).ok());
  ASSERT_TRUE(waitEvents(1));
  EXPECT_GE(seen_[0].at - registered, 150ms - 2ms);
}

TEST_F(SyncSchedulerTest, PeriodicFiresAgainNoSoonerThanAnIntervalAfterItsLastFire) {
  policy_ = [](SyncEvent& e) { e.completion->resolve(); };
  ASSERT_TRUE(sut_->registerPeriodic("p", 0ms).ok());
  ASSERT_TRUE(waitEvents(2));
  EXPECT_GE(seen_[1].at - seen_[0].at, options_.periodicMinInterval - 2ms);
  EXPECT_EQ(seen_[1].event.attempt, 1);
}

TEST_F(SyncSchedulerTest, PeriodicFailureIsRetriedWithLastChanceThenWaitsForTheNextPeriod) {
  rejectAll();
  ASSERT_TRUE(sut_->registerPeriodic("p", 0ms).ok());
  ASSERT_TRUE(waitEvents(4));
  std::vector<int> attempts;
  for (const auto& s : seen_) attempts.push_back(s.event.attempt);
  EXPECT_EQ(attempts, (std::vector<int>{1, 2, 3, 1}));
  EXPECT_TRUE(seen_[2].event.lastChance);
  EXPECT_GE(seen_[3].at - seen_[2].at, options_.periodicMinInterval - 2ms);
  EXPECT_EQ(sut_->getPeriodicTags(), std::vector<std::string>{"p"});
}

TEST_F(SyncSchedulerTest, PeriodicReRegisterUpdatesTheInterval) {
  ASSERT_TRUE(sut_->registerPeriodic("p", 1h).ok());
  ASSERT_TRUE(sut_->registerPeriodic("p", 0ms).ok());
  ASSERT_TRUE(waitEvents(1));  // at the floor, not in an hour
  EXPECT_EQ(sut_->getPeriodicTags(), std::vector<std::string>{"p"});
}

TEST_F(SyncSchedulerTest, PeriodicUnregisterStopsItsEventsAndUnknownIsSilent) {
  ASSERT_TRUE(sut_->registerPeriodic("p", 0ms).ok());
  EXPECT_TRUE(sut_->unregisterPeriodic("p").ok());
  EXPECT_TRUE(sut_->unregisterPeriodic("never-registered").ok());
  runFor(*loop_, 3 * options_.periodicMinInterval);
  EXPECT_TRUE(seen_.empty());
  EXPECT_TRUE(sut_->getPeriodicTags().empty());
}

TEST_F(SyncSchedulerTest, PeriodicTagsAreASeparateNamespaceInRegistrationOrder) {
  sut_->setOnline(false);
  ASSERT_TRUE(sut_->registerPeriodic("y", 0ms).ok());
  ASSERT_TRUE(sut_->registerPeriodic("x", 0ms).ok());
  reg("x");
  EXPECT_EQ(sut_->getPeriodicTags(), (std::vector<std::string>{"y", "x"}));
  EXPECT_EQ(sut_->getTags(), std::vector<std::string>{"x"});
  ASSERT_TRUE(sut_->unregisterPeriodic("x").ok());
  EXPECT_EQ(sut_->getTags(), std::vector<std::string>{"x"});
}

TEST_F(SyncSchedulerTest, PeriodicWaitsForOnline) {
  sut_->setOnline(false);
  ASSERT_TRUE(sut_->registerPeriodic("p", 0ms).ok());
  runFor(*loop_, 3 * options_.periodicMinInterval);
  EXPECT_TRUE(seen_.empty());
  sut_->setOnline(true);
  ASSERT_TRUE(waitEvents(1));
  EXPECT_TRUE(seen_[0].event.periodic);
}

}  // namespace
}  // namespace swipc::sync
