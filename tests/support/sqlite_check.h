// The state database check the Background Sync tests run after each test: PRAGMA integrity_check
// through the SQLite C API (the test targets link SQLite::SQLite3).
#pragma once

#include <sqlite3.h>

#include <string>

namespace swipc::testing {

/// `PRAGMA integrity_check` of an SQLite file through the C API: "ok", or what went wrong.
inline std::string integrityCheck(const std::string& dbPath) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(dbPath.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    std::string e = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return "cannot open " + dbPath + ": " + e;
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt* st = nullptr;
  std::string out;
  if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr) != SQLITE_OK) {
    out = std::string("prepare: ") + sqlite3_errmsg(db);
  } else {
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      if (!out.empty()) out += "; ";
      const unsigned char* t = sqlite3_column_text(st, 0);
      out += t ? reinterpret_cast<const char*>(t) : "(null)";
    }
    if (rc != SQLITE_DONE) out += std::string(" step: ") + sqlite3_errmsg(db);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

}  // namespace swipc::testing
