#include "sync/sqlite.h"

#include <sqlite3.h>

#include <utility>

namespace swipc::sync::sql {

namespace {

/// The error kind by what the caller should do: a damaged file is a state problem, the rest
/// is the system's.
Errc errcFor(int rc) {
  switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return Errc::INVALID_STATE;
    default: return Errc::SYSTEM;
  }
}

Error sqliteError(sqlite3* db, int rc, std::string_view what) {
  std::string message(what);
  message += ": ";
  message += db != nullptr && sqlite3_errcode(db) == rc ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return makeError(errcFor(rc), std::move(message));
}

}  // namespace

// ---- Statement ----

Statement::Statement(Statement&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), stmt_(std::exchange(other.stmt_, nullptr)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    sqlite3_finalize(stmt_);
    db_ = std::exchange(other.db_, nullptr);
    stmt_ = std::exchange(other.stmt_, nullptr);
  }
  return *this;
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Error Statement::failure(int rc, std::string_view what) const {
  std::string context(what);
  if (const char* sql = sqlite3_sql(stmt_)) {
    context += " [";
    context += sql;
    context += "]";
  }
  return sqliteError(db_, rc, context);
}

Result<void> Statement::bindInt(int index, int64_t value) {
  const int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK) return failure(rc, "bind");
  return {};
}

Result<void> Statement::bindDouble(int index, double value) {
  const int rc = sqlite3_bind_double(stmt_, index, value);
  if (rc != SQLITE_OK) return failure(rc, "bind");
  return {};
}

Result<void> Statement::bindText(int index, std::string_view text) {
  const int rc = sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK) return failure(rc, "bind");
  return {};
}

Result<void> Statement::bindBlob(int index, std::span<const uint8_t> bytes) {
  static const uint8_t EMPTY = 0;  // a non-null pointer, so SQLite stores a blob and not NULL
  const void* data = bytes.empty() ? &EMPTY : bytes.data();
  const int rc = sqlite3_bind_blob64(stmt_, index, data, bytes.size(), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) return failure(rc, "bind");
  return {};
}

Result<void> Statement::bindNull(int index) {
  const int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK) return failure(rc, "bind");
  return {};
}

Result<bool> Statement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return failure(rc, "step");
}

Result<void> Statement::run() {
  for (;;) {
    auto row = step();
    if (!row) return row.error();
    if (!*row) return {};
  }
}

void Statement::reset() {
  sqlite3_reset(stmt_);  // repeats the last step's error, which step() already reported
  sqlite3_clear_bindings(stmt_);
}

int64_t Statement::columnInt(int column) const { return sqlite3_column_int64(stmt_, column); }

double Statement::columnDouble(int column) const { return sqlite3_column_double(stmt_, column); }

std::string Statement::columnText(int column) const {
  const auto* text = sqlite3_column_text(stmt_, column);
  const int n = sqlite3_column_bytes(stmt_, column);  // after the text call, as SQLite requires
  return text == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(n));
}

std::vector<uint8_t> Statement::columnBlob(int column) const {
  const auto* data = static_cast<const uint8_t*>(sqlite3_column_blob(stmt_, column));
  const int n = sqlite3_column_bytes(stmt_, column);
  return data == nullptr ? std::vector<uint8_t>() : std::vector<uint8_t>(data, data + n);
}

bool Statement::columnIsNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

// ---- Database ----

Result<Database> Database::open(const std::string& path, const OpenOptions& options) {
  sqlite3* handle = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  const int rc = sqlite3_open_v2(path.c_str(), &handle, flags, nullptr);
  Database db(handle, path);  // owns the handle even when opening failed
  if (rc != SQLITE_OK) return sqliteError(handle, rc, "open " + path);
  sqlite3_extended_result_codes(handle, 1);
  sqlite3_busy_timeout(handle, static_cast<int>(options.busyTimeout.count()));

  // The first read of the file: a file that is not a database fails here.
  auto mode = db.prepare("PRAGMA journal_mode=WAL");
  if (!mode) return mode.error();
  auto row = mode->step();
  if (!row) return row.error();
  if (!*row || mode->columnText(0) != "wal") {
    return makeError(Errc::SYSTEM, "open " + path + ": the file system refused WAL mode");
  }
  if (auto r = db.exec("PRAGMA synchronous=FULL"); !r) return r.error();
  return db;
}

Database::Database(Database&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), path_(std::move(other.path_)), cache_(std::move(other.cache_)) {}

Database& Database::operator=(Database&& other) noexcept {
  if (this != &other) {
    close();
    db_ = std::exchange(other.db_, nullptr);
    path_ = std::move(other.path_);
    cache_ = std::move(other.cache_);
  }
  return *this;
}

Database::~Database() { close(); }

void Database::close() {
  cache_.clear();  // finalize before close: sqlite3_close refuses while statements live
  if (db_ != nullptr) sqlite3_close(db_);
  db_ = nullptr;
}

Error Database::failure(int rc, std::string_view what) const { return sqliteError(db_, rc, what); }

Result<void> Database::exec(std::string_view sql) {
  const std::string text(sql);
  const int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return failure(rc, text);
  return {};
}

Result<Statement> Database::prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return failure(rc, "prepare [" + std::string(sql) + "]");
  }
  return Statement(db_, stmt);
}

Result<CachedStatement> Database::cached(std::string_view sql) {
  std::string key(sql);
  auto it = cache_.find(key);
  if (it == cache_.end()) {
    auto stmt = prepare(sql);
    if (!stmt) return stmt.error();
    it = cache_.emplace(std::move(key), std::make_unique<Statement>(std::move(*stmt))).first;
  }
  return CachedStatement(it->second.get());
}

Result<int64_t> Database::queryInt(std::string_view sql) {
  auto stmt = prepare(sql);
  if (!stmt) return stmt.error();
  auto row = stmt->step();
  if (!row) return row.error();
  if (!*row) return makeError(Errc::SYSTEM, "no row from [" + std::string(sql) + "]");
  return stmt->columnInt(0);
}

Result<std::string> Database::checkIntegrity(bool quick) {
  auto stmt = prepare(quick ? "PRAGMA quick_check" : "PRAGMA integrity_check");
  if (!stmt) return stmt.error();
  std::string report;
  for (;;) {
    auto row = stmt->step();
    if (!row) return row.error();
    if (!*row) break;
    if (!report.empty()) report += '\n';
    report += stmt->columnText(0);
  }
  return report;
}

int64_t Database::changes() const { return sqlite3_changes64(db_); }

int64_t Database::lastInsertRowid() const { return sqlite3_last_insert_rowid(db_); }

// ---- Transaction ----

Result<Transaction> Transaction::begin(Database& db) {
  if (auto r = db.exec("BEGIN IMMEDIATE"); !r) return r.error();
  return Transaction(db);
}

Transaction::Transaction(Transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}

Transaction::~Transaction() {
  if (db_ != nullptr) (void)db_->exec("ROLLBACK");  // nothing more to do if even that fails
}

Result<void> Transaction::commit() {
  SWIPC_REQUIRE(db_ != nullptr, "commit() on a transaction that is already over");
  if (auto r = db_->exec("COMMIT"); !r) return r.error();
  db_ = nullptr;
  return {};
}

// ---- migrations ----

Result<int> migrate(Database& db, std::span<const Migration> steps) {
  auto current = db.queryInt("PRAGMA user_version");
  if (!current) return current.error();
  const int latest = steps.empty() ? 0 : steps.back().version;
  if (*current > latest) {
    return makeError(Errc::INVALID_STATE, db.path() + ": schema version " + std::to_string(*current) +
                                              " is newer than this build's " + std::to_string(latest));
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    const Migration& step = steps[i];
    SWIPC_REQUIRE(step.version == static_cast<int>(i) + 1, "migrations must be numbered 1, 2, 3, ...");
    if (step.version <= *current) continue;
    auto tx = Transaction::begin(db);  // takes the write lock
    if (!tx) return tx.error();
    // Read again under the lock: another process (a daemon starting beside us on the same state
    // dir) may have run this step since we looked.
    auto now = db.queryInt("PRAGMA user_version");
    if (!now) return now.error();
    if (step.version <= *now) continue;
    if (auto r = db.exec(step.sql); !r) return r.error();
    if (auto r = db.exec("PRAGMA user_version=" + std::to_string(step.version)); !r) return r.error();
    if (auto r = tx->commit(); !r) return r.error();
  }
  return latest;
}

}  // namespace swipc::sync::sql
