// A thin RAII layer over the SQLite C API: Database, Statement, Transaction, migrations.
//
// Errors are Results carrying SQLite's own message ("<what>: <sqlite message>"). A file that is
// not a database or whose pages are damaged (SQLITE_NOTADB, SQLITE_CORRUPT) is INVALID_STATE;
// every other failure (I/O, full disk, locked, read-only, misuse) is SYSTEM.
//
// @concurrent: a Database and its Statements belong to one thread (opened SQLITE_OPEN_NOMUTEX).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "swipc/error.h"

struct sqlite3;
struct sqlite3_stmt;

namespace swipc::sync::sql {

/// A prepared statement. Move-only; finalized on destruction (always before its Database closes).
/// Parameter and column indexes follow SQLite: parameters from 1, columns from 0.
class Statement {
 public:
  Statement() = default;
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  Result<void> bindInt(int index, int64_t value);
  Result<void> bindDouble(int index, double value);
  /// Binds a copy of `text` (SQLITE_TRANSIENT), so the argument may die before step().
  Result<void> bindText(int index, std::string_view text);
  /// Binds a copy of `bytes`; an empty span binds a zero-length blob, not NULL.
  Result<void> bindBlob(int index, std::span<const uint8_t> bytes);
  Result<void> bindNull(int index);

  /// Runs one step: true when a row is ready to be read with column*(), false when done.
  Result<bool> step();
  /// Steps until done; for statements that return no rows (INSERT, UPDATE, DELETE, DDL).
  Result<void> run();
  /// Back to the start with every binding cleared, ready to be bound and stepped again.
  void reset();

  int64_t columnInt(int column) const;
  double columnDouble(int column) const;
  std::string columnText(int column) const;
  std::vector<uint8_t> columnBlob(int column) const;
  bool columnIsNull(int column) const;

 private:
  friend class Database;
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Error failure(int rc, std::string_view what) const;

  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
};

/// A cached statement borrowed from its Database for one use: reset, with its bindings cleared,
/// when the borrow ends, so no read stays open between calls (an open read would pin the WAL).
class CachedStatement {
 public:
  explicit CachedStatement(Statement* stmt) : stmt_(stmt) {}
  CachedStatement(CachedStatement&& other) noexcept : stmt_(std::exchange(other.stmt_, nullptr)) {}
  CachedStatement& operator=(CachedStatement&&) = delete;
  CachedStatement(const CachedStatement&) = delete;
  CachedStatement& operator=(const CachedStatement&) = delete;
  ~CachedStatement() {
    if (stmt_ != nullptr) stmt_->reset();
  }

  Statement* operator->() const { return stmt_; }
  Statement& operator*() const { return *stmt_; }

 private:
  Statement* stmt_;
};

/// How Database::open treats its file.
struct OpenOptions {
  /// How long a statement waits for another connection's lock before failing with SQLITE_BUSY.
  std::chrono::milliseconds busyTimeout{5000};
};

/// One connection, opened in WAL mode with synchronous=FULL: a commit is durable when commit()
/// returns. Move-only; closes on destruction after finalizing its cached statements.
class Database {
 public:
  /// Opens (creating when missing) the database file at `path`, sets WAL, synchronous=FULL and
  /// the busy timeout. A file that is not a database fails here with INVALID_STATE.
  static Result<Database> open(const std::string& path, const OpenOptions& options = {});

  Database(Database&& other) noexcept;
  Database& operator=(Database&& other) noexcept;
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  ~Database();

  /// Runs one or more `;`-separated statements that return nothing of interest.
  Result<void> exec(std::string_view sql);
  /// Compiles one statement.
  Result<Statement> prepare(std::string_view sql);
  /// A statement compiled once per connection and reused, borrowed for one use (see
  /// CachedStatement). Do not borrow the same text twice at once.
  Result<CachedStatement> cached(std::string_view sql);

  /// The single integer a one-row query returns (PRAGMA user_version, COUNT(*), ...).
  Result<int64_t> queryInt(std::string_view sql);
  /// PRAGMA quick_check (quick = true) or integrity_check: "ok", or the problems found, one a line.
  Result<std::string> checkIntegrity(bool quick);

  /// Rows changed by the last INSERT, UPDATE or DELETE.
  int64_t changes() const;
  /// Rowid of the last successful INSERT.
  int64_t lastInsertRowid() const;

  const std::string& path() const { return path_; }

 private:
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  void close();
  Error failure(int rc, std::string_view what) const;

  sqlite3* db_ = nullptr;
  std::string path_;
  std::unordered_map<std::string, std::unique_ptr<Statement>> cache_;
};

/// BEGIN IMMEDIATE ... COMMIT. Rolls back on destruction unless commit() succeeded.
/// Transactions do not nest.
class Transaction {
 public:
  /// Starts a write transaction (takes the write lock now, so commit never fails with BUSY
  /// half-way through).
  static Result<Transaction> begin(Database& db);

  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  /// COMMIT; durable when this returns ok. After a failed commit the destructor rolls back.
  Result<void> commit();

 private:
  explicit Transaction(Database& db) : db_(&db) {}
  Database* db_;  // null once committed or moved from
};

/// One schema step: `sql` takes the file from `version - 1` to `version`.
struct Migration {
  int version;
  std::string_view sql;
};

/// Brings the file to the last of `steps` (ascending, contiguous from 1): each step newer than
/// PRAGMA user_version runs in its own transaction together with its user_version bump, so a
/// failed step leaves the file at the previous version. INVALID_STATE when the file's version is
/// newer than the last step (written by a newer build). Returns the version the file is at.
Result<int> migrate(Database& db, std::span<const Migration> steps);

}  // namespace swipc::sync::sql
