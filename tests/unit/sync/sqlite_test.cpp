// sync: the SQLite wrapper. Opening sets WAL and synchronous=FULL; a file that is not a database
// is INVALID_STATE; statements bind and read every column type exactly; errors carry SQLite's
// message; a borrowed cached statement comes back reset; a transaction rolls back unless
// committed; migrations run once each, in order, atomically, and refuse a newer file.
#include "sync/sqlite.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "sync_test_util.h"

namespace swipc::sync::sql {
namespace {

using swipc::sync::testing::TempDir;

class SqliteTest : public ::testing::Test {
 protected:
  Database open() {
    auto db = Database::open((dir_ / "test.db").string());
    EXPECT_TRUE(db.ok()) << (db.ok() ? "" : db.error().describe());
    return std::move(*db);
  }
  int64_t count(Database& db, const std::string& table) { return *db.queryInt("SELECT COUNT(*) FROM " + table); }

  TempDir dir_;
};

TEST_F(SqliteTest, OpenUsesWalAndFullSynchronous) {
  Database sut = open();
  auto mode = sut.prepare("PRAGMA journal_mode");
  ASSERT_TRUE(mode.ok());
  ASSERT_TRUE(*mode->step());
  EXPECT_EQ(mode->columnText(0), "wal");
  EXPECT_EQ(*sut.queryInt("PRAGMA synchronous"), 2);  // FULL
}

TEST_F(SqliteTest, OpenOfAFileThatIsNotADatabaseIsInvalidState) {
  std::ofstream(dir_ / "test.db") << std::string(8192, 'x');
  auto sut = Database::open((dir_ / "test.db").string());
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::INVALID_STATE);
  EXPECT_NE(sut.error().message.find("file is not a database"), std::string::npos) << sut.error().message;
}

TEST_F(SqliteTest, StatementBindsAndReadsEveryColumnTypeExactly) {
  Database sut = open();
  ASSERT_TRUE(sut.exec("CREATE TABLE t (i INTEGER, d REAL, s TEXT, b BLOB, e BLOB, n)").ok());
  const std::string text("a\0b\xc3\xa9", 5);
  const std::vector<uint8_t> blob{0, 1, 255};
  auto insert = sut.prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  ASSERT_TRUE(insert.ok());
  ASSERT_TRUE(insert->bindInt(1, std::numeric_limits<int64_t>::min()).ok());
  ASSERT_TRUE(insert->bindDouble(2, -0.1).ok());
  ASSERT_TRUE(insert->bindText(3, text).ok());
  ASSERT_TRUE(insert->bindBlob(4, blob).ok());
  ASSERT_TRUE(insert->bindBlob(5, {}).ok());
  ASSERT_TRUE(insert->bindNull(6).ok());
  ASSERT_TRUE(insert->run().ok());

  auto select = sut.prepare("SELECT i, d, s, b, e, n, typeof(e) FROM t");
  ASSERT_TRUE(select.ok());
  ASSERT_TRUE(*select->step());
  EXPECT_EQ(select->columnInt(0), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(select->columnDouble(1), -0.1);
  EXPECT_EQ(select->columnText(2), text);
  EXPECT_EQ(select->columnBlob(3), blob);
  EXPECT_TRUE(select->columnBlob(4).empty());
  EXPECT_EQ(select->columnText(6), "blob");  // an empty blob, not NULL
  EXPECT_TRUE(select->columnIsNull(5));
  EXPECT_FALSE(*select->step());
}

TEST_F(SqliteTest, ErrorsCarrySqlitesMessage) {
  Database sut = open();
  auto bad = sut.prepare("SELEC 1");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, Errc::SYSTEM);
  EXPECT_NE(bad.error().message.find("syntax error"), std::string::npos) << bad.error().message;

  ASSERT_TRUE(sut.exec("CREATE TABLE t (k INTEGER PRIMARY KEY)").ok());
  ASSERT_TRUE(sut.exec("INSERT INTO t VALUES (1)").ok());
  auto duplicate = sut.exec("INSERT INTO t VALUES (1)");
  ASSERT_FALSE(duplicate.ok());
  EXPECT_NE(duplicate.error().message.find("UNIQUE constraint failed"), std::string::npos) << duplicate.error().message;
}

TEST_F(SqliteTest, ABorrowedCachedStatementComesBackResetWithBindingsCleared) {
  Database sut = open();
  ASSERT_TRUE(sut.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2), (3)").ok());
  {
    auto first = sut.cached("SELECT x, ?1 IS NULL FROM t ORDER BY x");
    ASSERT_TRUE(first.ok());
    ASSERT_TRUE((*first)->bindInt(1, 7).ok());
    ASSERT_TRUE(*(*first)->step());
    ASSERT_TRUE(*(*first)->step());
    EXPECT_EQ((*first)->columnInt(0), 2);
    EXPECT_EQ((*first)->columnInt(1), 0);
  }
  auto again = sut.cached("SELECT x, ?1 IS NULL FROM t ORDER BY x");
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(*(*again)->step());
  EXPECT_EQ((*again)->columnInt(0), 1);  // from the start
  EXPECT_EQ((*again)->columnInt(1), 1);  // the old binding is gone
}

TEST_F(SqliteTest, TransactionRollsBackUnlessCommitted) {
  Database sut = open();
  ASSERT_TRUE(sut.exec("CREATE TABLE t (x)").ok());
  {
    auto tx = Transaction::begin(sut);
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE(sut.exec("INSERT INTO t VALUES (1)").ok());
  }
  EXPECT_EQ(count(sut, "t"), 0);
}

TEST_F(SqliteTest, CommittedTransactionSurvivesReopen) {
  {
    Database sut = open();
    ASSERT_TRUE(sut.exec("CREATE TABLE t (x)").ok());
    auto tx = Transaction::begin(sut);
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE(sut.exec("INSERT INTO t VALUES (1)").ok());
    ASSERT_TRUE(tx->commit().ok());
  }
  Database reopened = open();
  EXPECT_EQ(count(reopened, "t"), 1);
}

constexpr Migration STEP_1{1, "CREATE TABLE t (a)"};
constexpr Migration STEP_2{2, "ALTER TABLE t ADD COLUMN b"};  // fails if it ran twice

TEST_F(SqliteTest, MigrateAppliesEachStepOnceInOrder) {
  Database sut = open();
  const Migration steps[] = {STEP_1, STEP_2};
  auto first = migrate(sut, steps);
  ASSERT_TRUE(first.ok()) << first.error().describe();
  EXPECT_EQ(*first, 2);
  auto second = migrate(sut, steps);
  ASSERT_TRUE(second.ok()) << second.error().describe();
  EXPECT_EQ(*sut.queryInt("PRAGMA user_version"), 2);
  EXPECT_TRUE(sut.exec("INSERT INTO t (a, b) VALUES (1, 2)").ok());
}

TEST_F(SqliteTest, MigrateStartsFromTheFilesVersion) {
  Database sut = open();
  const Migration v1[] = {STEP_1};
  ASSERT_TRUE(migrate(sut, v1).ok());
  const Migration v2[] = {STEP_1, STEP_2};
  auto r = migrate(sut, v2);  // STEP_1 again would fail: table t already exists
  ASSERT_TRUE(r.ok()) << r.error().describe();
  EXPECT_EQ(*sut.queryInt("PRAGMA user_version"), 2);
}

TEST_F(SqliteTest, MigrateFailedStepRollsBackAndKeepsTheVersion) {
  Database sut = open();
  const Migration steps[] = {STEP_1, {2, "CREATE TABLE u (x); SELEC"}};
  auto r = migrate(sut, steps);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(*sut.queryInt("PRAGMA user_version"), 1);
  EXPECT_EQ(*sut.queryInt("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'u'"), 0);
}

TEST_F(SqliteTest, MigrateRefusesAFileFromANewerBuild) {
  Database sut = open();
  ASSERT_TRUE(sut.exec("PRAGMA user_version=5").ok());
  const Migration steps[] = {STEP_1};
  auto r = migrate(sut, steps);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::INVALID_STATE);
  EXPECT_NE(r.error().message.find("schema version 5 is newer than this build's 1"), std::string::npos)
      << r.error().message;
}

}  // namespace
}  // namespace swipc::sync::sql
