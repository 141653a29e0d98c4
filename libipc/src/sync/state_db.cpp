#include "sync/state_db.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/unique_fd.h"

namespace swipc::sync {

namespace {

constexpr const char* DATABASE_FILE = "state.db";

// Schema history. Never edit a step that has shipped: add the next one.
constexpr sql::Migration MIGRATIONS[] = {
    {1, R"sql(
      CREATE TABLE oneshot (
        tag             TEXT PRIMARY KEY NOT NULL,
        ord             INTEGER NOT NULL UNIQUE,
        state           TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'waiting')),
        attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        refire          INTEGER NOT NULL DEFAULT 0 CHECK (refire IN (0, 1))
      );
      CREATE TABLE entry (
        seq  INTEGER PRIMARY KEY AUTOINCREMENT,
        tag  TEXT NOT NULL,
        data BLOB NOT NULL
      );
      CREATE INDEX entry_by_tag ON entry (tag, seq);
      CREATE TABLE periodic (
        tag             TEXT PRIMARY KEY NOT NULL,
        ord             INTEGER NOT NULL UNIQUE,
        state           TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'waiting')),
        attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        min_interval_ms INTEGER NOT NULL CHECK (min_interval_ms >= 0),
        last_fire_ms    INTEGER NOT NULL
      );
    )sql"},
    // Background Fetch (DESIGN §15). A registration lives until its completion event settled;
    // `ord` orders them and names their body directory (fetch/<ord>/).
    {2, R"sql(
      CREATE TABLE fetch_registration (
        id               TEXT PRIMARY KEY NOT NULL,
        ord              INTEGER NOT NULL UNIQUE,
        title            TEXT NOT NULL DEFAULT '',
        download_total   INTEGER NOT NULL DEFAULT 0 CHECK (download_total >= 0),
        upload_total     INTEGER NOT NULL DEFAULT 0 CHECK (upload_total >= 0),
        downloaded_floor INTEGER NOT NULL DEFAULT 0 CHECK (downloaded_floor >= 0),
        result           TEXT NOT NULL DEFAULT '' CHECK (result IN ('', 'success', 'failure')),
        failure_reason   TEXT NOT NULL DEFAULT ''
      );
      CREATE TABLE fetch_request (
        reg_ord          INTEGER NOT NULL,
        idx              INTEGER NOT NULL,
        url              TEXT NOT NULL,
        method           TEXT NOT NULL,
        headers          TEXT NOT NULL,
        body             BLOB NOT NULL,
        status           INTEGER NOT NULL DEFAULT 0,
        response_headers TEXT NOT NULL DEFAULT '[]',
        validator        TEXT NOT NULL DEFAULT '',
        complete         INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1)),
        PRIMARY KEY (reg_ord, idx)
      );
    )sql"},
};


/// Evaluates a Result<void> expression; returns its error from the enclosing function.
#define STATE_TRY(expr)                           \
  do {                                            \
    if (auto r_ = (expr); !r_) return r_.error(); \
  } while (0)

}  // namespace

Result<void> makeDirectories(const std::filesystem::path& dir) {
  std::filesystem::path partial;
  for (const auto& part : dir) {
    partial /= part;
    if (::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) {
      return makeError(Errc::INVALID_STATE, "cannot create " + partial.string() + ": " + std::strerror(errno));
    }
  }
  return {};
}

namespace {

/// The directory is there (created when missing) and we may create files in it.
Result<void> prepareDirectory(const std::filesystem::path& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return makeError(Errc::INVALID_STATE, std::string("cannot stat: ") + std::strerror(errno));
    STATE_TRY(makeDirectories(dir));
    if (::stat(dir.c_str(), &st) != 0) return makeError(Errc::INVALID_STATE, std::string("cannot stat: ") + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) return makeError(Errc::INVALID_STATE, "not a directory");
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return makeError(Errc::INVALID_STATE, std::string("not writable (") + std::strerror(errno) + ")");
  }
  return {};
}

/// The database file exists and is writable; a new one is created 0600 (its -wal and -shm
/// files inherit its mode).
Result<void> prepareFile(const std::filesystem::path& file) {
  UniqueFd fd(::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) {
    return makeError(Errc::INVALID_STATE, file.filename().string() + " is not writable (" + std::strerror(errno) + ")");
  }
  return {};
}

Error inDir(const std::filesystem::path& dir, const Error& e, std::string_view what = {}) {
  std::string message = "state dir " + dir.string() + ": ";
  if (!what.empty()) {
    message += what;
    message += ": ";
  }
  return makeError(e.code, message + e.message);
}

}  // namespace

std::filesystem::path stateDatabasePath(const std::filesystem::path& stateDir) { return stateDir / DATABASE_FILE; }

Result<sql::Database> openStateDatabase(const std::filesystem::path& stateDir) {
  if (auto r = prepareDirectory(stateDir); !r) return inDir(stateDir, r.error());
  const std::filesystem::path file = stateDatabasePath(stateDir);
  if (auto r = prepareFile(file); !r) return inDir(stateDir, r.error());

  auto db = sql::Database::open(file.string());
  if (!db) {
    const bool corrupt = db.error().code == Errc::INVALID_STATE;
    return inDir(stateDir, db.error(), corrupt ? "database is corrupt" : "cannot open database");
  }
  auto check = db->checkIntegrity(/*quick=*/true);
  if (!check) return inDir(stateDir, check.error(), "database is corrupt");
  if (*check != "ok") {
    return inDir(stateDir, makeError(Errc::INVALID_STATE, *check), "database is corrupt");
  }
  if (auto version = sql::migrate(*db, MIGRATIONS); !version) {
    const bool newer = version.error().code == Errc::INVALID_STATE;
    return inDir(stateDir, version.error(), newer ? "" : "cannot write database");
  }
  return std::move(*db);
}

}  // namespace swipc::sync
