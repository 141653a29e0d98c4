// sync: SyncStore, the durable half of the §14 state machine. Opening creates the state dir 0700
// and refuses (INVALID_STATE, "state dir <dir>: ...") a non-directory, an unwritable directory, a
// corrupt file and a newer schema; registration coalesces; entries keep their order and data;
// settle applies success, retry with back-off, last chance and refire; a process killed mid-event
// leaves the attempt uncounted; periodic registrations live in their own namespace. After every
// test the file passes PRAGMA integrity_check.
#include "sync/store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "sync_test_util.h"

namespace swipc::sync {
namespace {

using namespace std::chrono_literals;
using testing::runInChild;
using testing::TempDir;

const RetryPolicy POLICY{.maxAttempts = 3, .retry = 1000ms, .factor = 3.0};
const WallTime NOW = WallTime(1'700'000'000'000ms);

mode_t modeOf(const std::filesystem::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

class SyncStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { reopen(); }
  void TearDown() override {
    if (!checkIntegrity_) return;
    if (!sut_) reopen();
    ASSERT_TRUE(sut_);
    auto check = sut_->integrityCheck();
    ASSERT_TRUE(check.ok()) << check.error().describe();
    EXPECT_EQ(*check, "ok");
  }

  std::filesystem::path stateDir() const { return dir_ / "state"; }
  void reopen() {
    sut_.reset();
    auto store = SyncStore::open(stateDir());
    ASSERT_TRUE(store.ok()) << store.error().describe();
    sut_ = std::move(*store);
  }
  Error openFails(const std::filesystem::path& where) {
    sut_.reset();
    auto store = SyncStore::open(where);
    EXPECT_FALSE(store.ok());
    return store.ok() ? makeError(Errc::SYSTEM, "opened") : store.error();
  }
  SyncRecord one(SyncKind kind, const std::string& tag) {
    auto all = sut_->load(kind);
    EXPECT_TRUE(all.ok());
    for (auto& rec : *all) {
      if (rec.tag == tag) return rec;
    }
    ADD_FAILURE() << "no tag " << tag;
    return {};
  }
  size_t countOf(SyncKind kind) { return sut_->load(kind)->size(); }
  SyncRecord registered(const std::string& tag, std::optional<Value> data = std::nullopt) {
    auto rec = sut_->registerOneShot(tag, data);
    EXPECT_TRUE(rec.ok()) << rec.error().describe();
    return rec.ok() ? *rec : SyncRecord{};
  }
  void fire(const std::string& tag, SyncKind kind = SyncKind::ONE_SHOT) {
    const std::string tags[] = {tag};
    ASSERT_TRUE(sut_->markFiring(kind, tags).ok());
  }
  SettleResult settle(const std::string& tag, bool success, uint64_t done = 0, SyncKind kind = SyncKind::ONE_SHOT,
                      WallTime now = NOW) {
    auto r = sut_->settle(kind, tag, Settlement{success, done}, POLICY, now);
    EXPECT_TRUE(r.ok()) << r.error().describe();
    return r.ok() ? *r : SettleResult{};
  }
  std::vector<Value> dataOf(const std::string& tag) {
    std::vector<Value> out;
    auto entries = sut_->entries(tag);  // named: a range-for over *temporary would dangle
    EXPECT_TRUE(entries.ok());
    for (auto& e : *entries) out.push_back(e.data);
    return out;
  }

  TempDir dir_;
  std::unique_ptr<SyncStore> sut_;
  bool checkIntegrity_ = true;
};

// ---- open ----

TEST_F(SyncStoreTest, OpenCreatesMissingDirectoriesWithMode0700AndTheFile0600) {
  const auto nested = dir_ / "a" / "b";
  auto store = SyncStore::open(nested);
  ASSERT_TRUE(store.ok()) << store.error().describe();
  EXPECT_EQ(modeOf(dir_ / "a"), 0700u);
  EXPECT_EQ(modeOf(nested), 0700u);
  EXPECT_EQ(modeOf(nested / "state.db"), 0600u);
  EXPECT_EQ((*store)->databasePath(), nested / "state.db");
}

TEST_F(SyncStoreTest, OpenMigratesToTheLatestSchemaVersion) {
  sut_.reset();
  auto db = sql::Database::open((stateDir() / "state.db").string());
  ASSERT_TRUE(db.ok());
  EXPECT_EQ(*db->queryInt("PRAGMA user_version"), 2);
  EXPECT_EQ(*db->queryInt("SELECT COUNT(*) FROM sqlite_schema WHERE name IN ('oneshot', 'entry', 'periodic')"), 3);
  // Version 2: Background Fetch's tables in the same file.
  EXPECT_EQ(*db->queryInt("SELECT COUNT(*) FROM sqlite_schema WHERE name IN ('fetch_registration', 'fetch_request')"), 2);
}

TEST_F(SyncStoreTest, OpenRefusesAStateDirThatIsNotADirectory) {
  std::ofstream(dir_ / "file") << "x";
  Error e = openFails(dir_ / "file");
  EXPECT_EQ(e.code, Errc::INVALID_STATE);
  EXPECT_EQ(e.message, "state dir " + (dir_ / "file").string() + ": not a directory");
}

TEST_F(SyncStoreTest, OpenRefusesAnUnwritableStateDir) {
  sut_.reset();
  const auto readOnly = dir_ / "ro";
  ASSERT_EQ(::mkdir(readOnly.c_str(), 0555), 0);
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);  // reachable by the unprivileged child
  const int status = runInChild([&] {
    // root writes anywhere: become nobody first
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) return 10;
    auto store = SyncStore::open(readOnly);
    if (store.ok()) return 11;
    if (store.error().code != Errc::INVALID_STATE) return 12;
    const std::string expected = "state dir " + readOnly.string() + ": not writable (Permission denied)";
    return store.error().message == expected ? 0 : 13;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: cannot drop root, 11: opened, 12: wrong code, 13: wrong message";
}

TEST_F(SyncStoreTest, OpenRefusesAFileThatIsNotADatabase) {
  sut_.reset();
  std::ofstream(stateDir() / "state.db", std::ios::trunc) << std::string(8192, 'x');
  Error e = openFails(stateDir());
  EXPECT_EQ(e.code, Errc::INVALID_STATE);
  EXPECT_EQ(e.message.rfind("state dir " + stateDir().string() + ": database is corrupt: ", 0), 0u) << e.message;
  checkIntegrity_ = false;
}

TEST_F(SyncStoreTest, OpenRefusesADatabaseWithDamagedPages) {
  // Many entries of one tag: the last pages of the file hold only entries, which nothing at
  // open reads. Only the integrity check finds them damaged.
  for (int i = 0; i < 300; ++i) registered("a", Value(std::string(500, 'd')));
  sut_.reset();  // the last connection checkpoints the WAL into the file
  ASSERT_FALSE(std::filesystem::exists(stateDir() / "state.db-wal"));
  const auto size = std::filesystem::file_size(stateDir() / "state.db");
  ASSERT_GT(size, 40u * 4096);
  {
    std::fstream file(stateDir() / "state.db", std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(size - 4 * 4096));
    const std::string garbage(4 * 4096, '\xA5');
    file.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  Error e = openFails(stateDir());
  EXPECT_EQ(e.code, Errc::INVALID_STATE);
  EXPECT_EQ(e.message.rfind("state dir " + stateDir().string() + ": database is corrupt: ", 0), 0u) << e.message;
  checkIntegrity_ = false;
}

TEST_F(SyncStoreTest, OpenRefusesADatabaseFromANewerBuild) {
  sut_.reset();
  {
    auto db = sql::Database::open((stateDir() / "state.db").string());
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE(db->exec("PRAGMA user_version=99").ok());
  }
  Error e = openFails(stateDir());
  EXPECT_EQ(e.code, Errc::INVALID_STATE);
  EXPECT_NE(e.message.find("schema version 99 is newer than this build's 2"), std::string::npos) << e.message;
  checkIntegrity_ = false;  // the file is fine, but this build cannot open it
}

// ---- one-shot registration ----

TEST_F(SyncStoreTest, RegisterCreatesAPendingTagWithNoAttempts) {
  SyncRecord rec = registered("a");
  EXPECT_EQ(rec.state, TagState::PENDING);
  EXPECT_EQ(rec.attempts, 0);
  reopen();
  EXPECT_EQ(one(SyncKind::ONE_SHOT, "a").state, TagState::PENDING);  // committed
}

TEST_F(SyncStoreTest, RegisterCoalescesPendingTag) {
  const SyncRecord first = registered("a");
  const SyncRecord second = registered("a");
  EXPECT_EQ(second.order, first.order);
  EXPECT_EQ(second.state, TagState::PENDING);
  EXPECT_EQ(countOf(SyncKind::ONE_SHOT), 1u);
}

TEST_F(SyncStoreTest, TagsKeepTheirRegistrationOrder) {
  registered("b");
  registered("a");
  registered("c");
  registered("a");  // coalesces: keeps its place
  std::vector<std::string> tags;
  auto all = sut_->load(SyncKind::ONE_SHOT);
  ASSERT_TRUE(all.ok());
  for (auto& rec : *all) tags.push_back(rec.tag);
  EXPECT_EQ(tags, (std::vector<std::string>{"b", "a", "c"}));
}

TEST_F(SyncStoreTest, RegisterMakesAWaitingTagPendingAndKeepsItsAttempts) {
  registered("a");
  fire("a");
  ASSERT_EQ(settle("a", false).after, AfterSettle::RETRY);
  SyncRecord rec = registered("a");
  EXPECT_EQ(rec.state, TagState::PENDING);
  EXPECT_EQ(rec.attempts, 1);
  EXPECT_EQ(rec.nextAttempt, WallTime{});
}

TEST_F(SyncStoreTest, RegisterWhileFiringSetsRefire) {
  registered("a");
  fire("a");
  SyncRecord rec = registered("a");
  EXPECT_EQ(rec.state, TagState::FIRING);
  EXPECT_TRUE(rec.refire);
}

TEST_F(SyncStoreTest, RegisterAppendsDataAsEntriesInOrder) {
  registered("a", Value(1));
  registered("b", Value("other tag"));
  registered("a");  // no data: no entry
  registered("a", Value(2));
  EXPECT_EQ(dataOf("a"), (std::vector<Value>{Value(1), Value(2)}));
  auto counts = sut_->entryCounts();
  ASSERT_TRUE(counts.ok());
  std::sort(counts->begin(), counts->end());
  EXPECT_EQ(*counts, (std::vector<std::pair<std::string, uint64_t>>{{"a", 2}, {"b", 1}}));
}

TEST_F(SyncStoreTest, EntryDataRoundTripsExactly) {
  const Value data = Value::map({
      {"bytes", Value(Bytes{{0, 1, 2, 255}})},
      {"int", Value(std::numeric_limits<int64_t>::min())},
      {"float", Value(0.1 + 0.2)},
      {"negZero", Value(-0.0)},
      {"nested", Value::list({Value(nullptr), Value(true), Value("t\xc3\xa9xt")})},
  });
  registered("a", data);
  reopen();
  auto entries = sut_->entries("a");
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 1u);
  const Value& got = (*entries)[0].data;
  EXPECT_EQ(got, data);
  EXPECT_EQ(got["float"].asFloat(), 0.1 + 0.2);  // bit-exact, not reparsed decimal
  EXPECT_TRUE(std::signbit(got["negZero"].asFloat()));
}

TEST_F(SyncStoreTest, EntryDoneDeletesTheEntryDurably) {
  registered("a", Value(1));
  registered("a", Value(2));
  const uint64_t seq = (*sut_->entries("a"))[0].seq;
  auto done = sut_->entryDone(seq);
  ASSERT_TRUE(done.ok());
  EXPECT_TRUE(*done);
  reopen();
  EXPECT_EQ(dataOf("a"), std::vector<Value>{Value(2)});
  EXPECT_FALSE(*sut_->entryDone(seq));  // already gone
}

TEST_F(SyncStoreTest, SequenceNumbersAreNeverReused) {
  registered("a", Value(1));
  const uint64_t first = (*sut_->entries("a"))[0].seq;
  ASSERT_TRUE(*sut_->entryDone(first));
  registered("a", Value(2));
  EXPECT_GT((*sut_->entries("a"))[0].seq, first);
}

// ---- settle ----

TEST_F(SyncStoreTest, SettleSuccessRemovesTheTag) {
  registered("a");
  fire("a");
  SettleResult r = settle("a", true);
  EXPECT_EQ(r.after, AfterSettle::REMOVED);
  EXPECT_FALSE(r.record);
  EXPECT_EQ(countOf(SyncKind::ONE_SHOT), 0u);
}

TEST_F(SyncStoreTest, SettleAllAppliesEveryRequestAndReportsAStaleOneAlone) {
  registered("ok");
  registered("bad");
  registered("idle");
  fire("ok");
  fire("bad");
  const SettleRequest requests[] = {
      {SyncKind::ONE_SHOT, "ok", Settlement{true, 0}},
      {SyncKind::ONE_SHOT, "bad", Settlement{false, 0}},
      {SyncKind::ONE_SHOT, "idle", Settlement{true, 0}},     // not firing
      {SyncKind::ONE_SHOT, "missing", Settlement{true, 0}},  // not registered
  };
  auto results = sut_->settleAll(requests, POLICY, NOW);
  ASSERT_TRUE(results.ok()) << results.error().describe();
  ASSERT_EQ(results->size(), 4u);
  ASSERT_TRUE((*results)[0].ok());
  EXPECT_EQ((*results)[0]->after, AfterSettle::REMOVED);
  ASSERT_TRUE((*results)[1].ok());
  EXPECT_EQ((*results)[1]->after, AfterSettle::RETRY);
  ASSERT_FALSE((*results)[2].ok());
  EXPECT_EQ((*results)[2].error().code, Errc::INVALID_STATE);
  ASSERT_FALSE((*results)[3].ok());
  EXPECT_EQ((*results)[3].error().code, Errc::NOT_FOUND);
  EXPECT_EQ(countOf(SyncKind::ONE_SHOT), 2u);
  EXPECT_EQ(one(SyncKind::ONE_SHOT, "bad").state, TagState::WAITING);
  EXPECT_EQ(one(SyncKind::ONE_SHOT, "idle").state, TagState::PENDING);
}

TEST_F(SyncStoreTest, SettleSuccessWithEntriesLeftFiresAgainWithAttemptsReset) {
  registered("a", Value(1));
  fire("a");
  ASSERT_EQ(settle("a", false).after, AfterSettle::RETRY);
  fire("a");
  SettleResult r = settle("a", true, /*done=*/1);  // one done since, one still left
  EXPECT_EQ(r.after, AfterSettle::FIRE_AGAIN);
  ASSERT_TRUE(r.record);
  EXPECT_EQ(r.record->state, TagState::PENDING);
  EXPECT_EQ(r.record->attempts, 0);
}

TEST_F(SyncStoreTest, SettleSuccessWithoutProgressWaitsOneRetry) {
  registered("a", Value(1));
  fire("a");
  SettleResult r = settle("a", true, /*done=*/0);
  EXPECT_EQ(r.after, AfterSettle::RETRY);
  EXPECT_EQ(r.record->state, TagState::WAITING);
  EXPECT_EQ(r.record->attempts, 0);
  EXPECT_EQ(r.record->nextAttempt, NOW + POLICY.retry);
}

TEST_F(SyncStoreTest, SettleFailureWaitsRetryTimesFactorToTheAttempt) {
  registered("a");
  fire("a");
  SettleResult first = settle("a", false);
  EXPECT_EQ(first.after, AfterSettle::RETRY);
  EXPECT_EQ(first.record->attempts, 1);
  EXPECT_EQ(first.record->nextAttempt, NOW + 1000ms);
  fire("a");
  SettleResult second = settle("a", false);
  EXPECT_EQ(second.record->attempts, 2);
  EXPECT_EQ(second.record->nextAttempt, NOW + 3000ms);
  reopen();
  const SyncRecord stored = one(SyncKind::ONE_SHOT, "a");
  EXPECT_EQ(stored.state, TagState::WAITING);
  EXPECT_EQ(stored.nextAttempt, NOW + 3000ms);  // durable
}

TEST_F(SyncStoreTest, SettleLastChanceFailureDropsTheTagAndItsEntries) {
  registered("a", Value(1));
  registered("a", Value(2));
  registered("keep", Value(3));
  for (int attempt = 1; attempt < POLICY.maxAttempts; ++attempt) {
    fire("a");
    ASSERT_EQ(settle("a", false).after, AfterSettle::RETRY);
  }
  fire("a");
  SettleResult r = settle("a", false);
  EXPECT_EQ(r.after, AfterSettle::GAVE_UP);
  EXPECT_EQ(r.droppedEntries, 2u);
  EXPECT_EQ(countOf(SyncKind::ONE_SHOT), 1u);
  EXPECT_TRUE(sut_->entries("a")->empty());
  EXPECT_EQ(dataOf("keep"), std::vector<Value>{Value(3)});
}

TEST_F(SyncStoreTest, SettleAfterRefireFiresAgainWithAttemptsReset) {
  registered("a");
  fire("a");
  ASSERT_EQ(settle("a", false).after, AfterSettle::RETRY);
  fire("a");
  registered("a");  // while firing
  SettleResult r = settle("a", false);
  EXPECT_EQ(r.after, AfterSettle::FIRE_AGAIN);
  EXPECT_EQ(r.record->attempts, 0);
  EXPECT_FALSE(r.record->refire);
}

TEST_F(SyncStoreTest, SettleRefusesATagThatIsNotFiring) {
  registered("a");
  auto pending = sut_->settle(SyncKind::ONE_SHOT, "a", Settlement{true, 0}, POLICY, NOW);
  ASSERT_FALSE(pending.ok());
  EXPECT_EQ(pending.error().code, Errc::INVALID_STATE);
  auto unknown = sut_->settle(SyncKind::ONE_SHOT, "zz", Settlement{true, 0}, POLICY, NOW);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, Errc::NOT_FOUND);
}

// ---- a process killed mid-event ----

TEST_F(SyncStoreTest, KillMidEventLeavesTheAttemptUncountedAndDoneEntriesGone) {
  registered("a", Value(1));
  registered("a", Value(2));
  fire("a");
  ASSERT_EQ(settle("a", false).after, AfterSettle::RETRY);  // attempts: 1
  sut_.reset();
  const auto dir = stateDir();
  const int status = runInChild([&] {
    auto store = SyncStore::open(dir);
    if (!store.ok()) return 10;
    const std::string tags[] = {"a"};
    if (!(*store)->markFiring(SyncKind::ONE_SHOT, tags).ok()) return 11;
    if (!(*store)->entryDone((*(*store)->entries("a"))[0].seq).ok()) return 12;
    ::raise(SIGKILL);  // mid-event: no settle, no close
    return 13;
  });
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;
  reopen();
  const SyncRecord rec = one(SyncKind::ONE_SHOT, "a");
  EXPECT_EQ(rec.state, TagState::PENDING);
  EXPECT_EQ(rec.attempts, 1);
  EXPECT_EQ(dataOf("a"), std::vector<Value>{Value(2)});
}

TEST_F(SyncStoreTest, ReopenAfterReRegisterWhileFiringResetsAttempts) {
  registered("a");
  fire("a");
  ASSERT_EQ(settle("a", false).after, AfterSettle::RETRY);
  fire("a");
  registered("a");  // refire
  reopen();
  const SyncRecord rec = one(SyncKind::ONE_SHOT, "a");
  EXPECT_EQ(rec.state, TagState::PENDING);
  EXPECT_EQ(rec.attempts, 0);
  EXPECT_FALSE(rec.refire);
}

// ---- periodic ----

TEST_F(SyncStoreTest, PeriodicRegisterWaitsFromNow) {
  auto rec = sut_->registerPeriodic("p", 5000ms, NOW);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->state, TagState::WAITING);
  EXPECT_EQ(rec->lastFire, NOW);
  EXPECT_EQ(rec->minInterval, 5000ms);
}

TEST_F(SyncStoreTest, PeriodicReRegisterUpdatesOnlyTheInterval) {
  const SyncRecord first = *sut_->registerPeriodic("p", 5000ms, NOW);
  const SyncRecord second = *sut_->registerPeriodic("p", 9000ms, NOW + 1h);
  EXPECT_EQ(second.minInterval, 9000ms);
  EXPECT_EQ(second.lastFire, NOW);
  EXPECT_EQ(second.order, first.order);
  EXPECT_EQ(countOf(SyncKind::PERIODIC), 1u);
}

TEST_F(SyncStoreTest, PeriodicSuccessStartsTheNextPeriod) {
  ASSERT_TRUE(sut_->registerPeriodic("p", 5000ms, NOW).ok());
  fire("p", SyncKind::PERIODIC);
  SettleResult r = settle("p", true, 0, SyncKind::PERIODIC, NOW + 10s);
  EXPECT_EQ(r.after, AfterSettle::NEXT_PERIOD);
  EXPECT_EQ(r.record->state, TagState::WAITING);
  EXPECT_EQ(r.record->lastFire, NOW + 10s);
  EXPECT_EQ(r.record->attempts, 0);
}

TEST_F(SyncStoreTest, PeriodicFailureRetriesWithinThePeriod) {
  ASSERT_TRUE(sut_->registerPeriodic("p", 5000ms, NOW).ok());
  fire("p", SyncKind::PERIODIC);
  SettleResult r = settle("p", false, 0, SyncKind::PERIODIC);
  EXPECT_EQ(r.after, AfterSettle::RETRY);
  EXPECT_EQ(r.record->attempts, 1);
  EXPECT_EQ(r.record->nextAttempt, NOW + POLICY.retry);
  EXPECT_EQ(r.record->lastFire, NOW);  // still the same period
}

TEST_F(SyncStoreTest, PeriodicLastChanceFailureStartsTheNextPeriod) {
  ASSERT_TRUE(sut_->registerPeriodic("p", 5000ms, NOW).ok());
  for (int attempt = 1; attempt < POLICY.maxAttempts; ++attempt) {
    fire("p", SyncKind::PERIODIC);
    ASSERT_EQ(settle("p", false, 0, SyncKind::PERIODIC).after, AfterSettle::RETRY);
  }
  fire("p", SyncKind::PERIODIC);
  SettleResult r = settle("p", false, 0, SyncKind::PERIODIC, NOW + 1h);
  EXPECT_EQ(r.after, AfterSettle::GAVE_UP);
  ASSERT_TRUE(r.record);  // periodic registrations stay
  EXPECT_EQ(r.record->attempts, 0);
  EXPECT_EQ(r.record->lastFire, NOW + 1h);
}

TEST_F(SyncStoreTest, PeriodicUnregisterOfAnUnknownTagReturnsFalse) {
  ASSERT_TRUE(sut_->registerPeriodic("p", 0ms, NOW).ok());
  EXPECT_FALSE(*sut_->unregisterPeriodic("unknown"));
  EXPECT_TRUE(*sut_->unregisterPeriodic("p"));
  EXPECT_EQ(countOf(SyncKind::PERIODIC), 0u);
}

TEST_F(SyncStoreTest, PeriodicAndOneShotTagsAreSeparateNamespaces) {
  registered("same");
  ASSERT_TRUE(sut_->registerPeriodic("same", 0ms, NOW).ok());
  fire("same", SyncKind::PERIODIC);
  EXPECT_EQ(one(SyncKind::ONE_SHOT, "same").state, TagState::PENDING);
  EXPECT_EQ(one(SyncKind::PERIODIC, "same").state, TagState::FIRING);
}

TEST(SyncRetryDelayTest, GrowsByTheFactorPerFailedAttempt) {
  const RetryPolicy sut{.maxAttempts = 5, .retry = 300000ms, .factor = 3.0};
  EXPECT_EQ(retryDelay(sut, 1), 300000ms);
  EXPECT_EQ(retryDelay(sut, 2), 900000ms);
  EXPECT_EQ(retryDelay(sut, 3), 2700000ms);
  EXPECT_EQ(retryDelay(RetryPolicy{.retry = 20ms, .factor = 1.5}, 2), 30ms);
}

}  // namespace
}  // namespace swipc::sync
