// FetchStore: Background Fetch's durable state in the scope's state database (sync/state_db.h)
// and its body files under <stateDir>/fetch/<ord>/<idx>.
//
// What is committed, and when (so a daemon killed at any point resumes correctly):
//   create()         the registration and its requests, before the page's ok (synchronous=FULL:
//                    on disk; every later commit is synchronous=NORMAL: it survives a kill -9,
//                    and a power cut can only make some bytes download again)
//   setResponse()    a request's status, headers and validator (ETag / Last-Modified) once its
//                    response arrived: what If-Range needs to resume it
//   setComplete()    a request whose body is whole on disk
//   raiseFloor()     the least `downloaded` a page may be shown again (pages never see it go down,
//                    also when a resume restarts a body from 0)
//   setResult()      success / failure and the reason: the completion event is due
//   erase()          the completion event settled: rows and files go
// Body bytes themselves are not in the database: the file's length is how far a body got
// (a kill -9 does not lose what write() returned for).
//
// @concurrent: single-threaded (the daemon's loop).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>
#include <optional>
#include <string>
#include <vector>

#include "swipc/background_fetch.h"
#include "swipc/error.h"
#include "sync/sqlite.h"

namespace swipc::fetch {

struct StoredRequest {
  uint32_t idx = 0;
  std::string url;
  std::string method;
  HttpHeaders headers;
  std::vector<uint8_t> body;
  int status = 0;  // 0: no response yet
  HttpHeaders responseHeaders;
  std::string validator;  // If-Range value for a resume ("" = cannot resume: restart from 0)
  bool complete = false;
};

struct StoredRegistration {
  std::string id;
  int64_t ord = 0;
  std::string title;
  uint64_t downloadTotal = 0;
  uint64_t uploadTotal = 0;
  uint64_t downloadedFloor = 0;
  std::string result;
  std::string failureReason;
  std::vector<StoredRequest> requests;
};

class FetchStore {
 public:
  /// Opens the state database and makes <stateDir>/fetch (0700). Named errors as openStateDatabase.
  static Result<std::unique_ptr<FetchStore>> open(const std::filesystem::path& stateDir);
  ~FetchStore();

  /// Every registration, in creation order, with its requests in request order.
  Result<std::vector<StoredRegistration>> loadAll();
  /// Commits a new registration (its ord is set here); TYPE when the id exists.
  Result<void> create(StoredRegistration& reg);
  Result<void> setResponse(int64_t ord, uint32_t idx, int status, const HttpHeaders& headers,
                           const std::string& validator);
  Result<void> setComplete(int64_t ord, uint32_t idx);
  Result<void> raiseFloor(int64_t ord, uint64_t floor);
  Result<void> setResult(int64_t ord, const std::string& result, const std::string& failureReason);
  /// Deletes the rows, then the body files. The files are renamed out of the way at once and
  /// unlinked by a background thread: freeing a 1 GiB file's blocks takes the file system tens
  /// of milliseconds, which the daemon's loop must not wait for.
  Result<void> erase(int64_t ord);

  /// Where request `idx` of registration `ord` stores its body (the directory is made on demand).
  std::filesystem::path bodyPath(int64_t ord, uint32_t idx) const;
  Result<void> makeBodyDir(int64_t ord) const;
  /// Body files of registrations the database no longer has (a crash between erase's commit and
  /// the unlink, or before the janitor was done): handed to the janitor at open.
  void removeOrphanBodies(const std::vector<StoredRegistration>& live);

 private:
  FetchStore(sync::sql::Database db, std::filesystem::path dir);
  void janitor();
  Result<void> createCommitted(StoredRegistration& reg);

  sync::sql::Database db_;
  std::filesystem::path dir_;  // <stateDir>/fetch
  uint64_t trashed_ = 0;
  // The janitor thread: removes what erase() renamed away (joined in the destructor).
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::filesystem::path> trash_;
  bool stopping_ = false;
  std::thread janitor_;
};

/// JSON text of headers ([[name, value], ...]) and back.
std::string encodeHeaders(const HttpHeaders& headers);
HttpHeaders decodeHeaders(const std::string& text);

}  // namespace swipc::fetch
