// The scope's durable state database (DESIGN §11): one SQLite file, state.db, in the state dir,
// shared by the feature modules that keep durable state (Background Sync's tags and entries,
// Background Fetch's registrations and requests). Its schema history lives here, in one place,
// so PRAGMA user_version numbers one sequence of migrations for the whole file; each module
// opens its own connection with openStateDatabase() and touches only its own tables.
//
// @concurrent: a Database belongs to one thread; two connections (two modules, or two daemons
// racing at start) are safe: migrations run under the write lock.
#pragma once

#include <filesystem>

#include "swipc/error.h"
#include "sync/sqlite.h"

namespace swipc::sync {

/// <stateDir>/state.db
std::filesystem::path stateDatabasePath(const std::filesystem::path& stateDir);

/// Creates the state dir (0700, with its parents) when missing, opens state.db (0600), checks it
/// (quick_check) and brings it to the current schema. Errors name the dir and what is wrong:
/// INVALID_STATE for a dir or file that cannot be written, a corrupt database, or one written by
/// a newer build; SYSTEM for I/O failures.
Result<sql::Database> openStateDatabase(const std::filesystem::path& stateDir);

/// mkdir -p with mode 0700 for every directory it creates; INVALID_STATE naming the one that
/// could not be created.
Result<void> makeDirectories(const std::filesystem::path& dir);

}  // namespace swipc::sync
