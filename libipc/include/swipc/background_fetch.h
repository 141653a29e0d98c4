// Background Fetch (DESIGN §15): a page hands long downloads to the service worker. The daemon
// downloads (libcurl, on its own event loop), stores the bodies under its state dir, tells every
// page that follows the registration how far it got, goes on when every page has closed, resumes
// after a crash, and tells service-worker code when it succeeded, failed or was aborted.
//
// Page side:
//   auto reg = client.backgroundFetch().fetch("episode-42", {"https://example.org/ep42.mp3"},
//                                             {.downloadTotal = 60'000'000});
//   reg->onProgress([](const swipc::BackgroundFetchState& s) { draw(s.downloaded, s.downloadTotal); });
//   ... later: auto records = reg->matchAll(deadlineIn(2s));   // bodies as read-only fds
// Daemon side:
//   sw.onBackgroundFetchSuccess([](swipc::BackgroundFetchEventPtr e) {
//     for (auto& r : *e->matchAll()) store(r.url, r.body->readAll());
//   });   // the event settles when the last copy of `e` is dropped (or at e->settle())
//
// Threading: as for Client and ServiceWorker: everything on the loop thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "swipc/error.h"
#include "swipc/types.h"
#include "swipc/value.h"

namespace swipc {

class Client;

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

/// One request of a fetch. A plain URL converts: fetch(id, {"http://...", "http://..."}).
struct BackgroundFetchRequest {
  BackgroundFetchRequest() = default;
  BackgroundFetchRequest(std::string u) : url(std::move(u)) {}  // NOLINT: implicit, as the web's string form
  BackgroundFetchRequest(const char* u) : url(u) {}              // NOLINT
  std::string url;
  std::string method;  // empty: GET
  HttpHeaders headers;
  std::vector<uint8_t> body;  // counts towards uploadTotal
};

struct BackgroundFetchOptions {
  uint64_t downloadTotal = 0;  // 0: not given; else the download fails once more is stored
  std::string title;
};

/// BackgroundFetchRegistration's fields (R in DESIGN §15).
struct BackgroundFetchState {
  std::string id;
  uint64_t uploadTotal = 0, uploaded = 0, downloadTotal = 0, downloaded = 0;
  std::string result;         // "" while active, then "success" | "failure"
  std::string failureReason;  // "" | aborted | bad-status | fetch-error | quota-exceeded | download-total-exceeded
  bool recordsAvailable = true;
  /// {"id","uploadTotal",...} as page_client prints it.
  Value toValue() const;
};

/// A stored response body: a read-only fd of its own (not shared with the daemon's offset).
class BodyFile {
 public:
  explicit BodyFile(int fd) : fd_(fd) {}
  ~BodyFile();
  BodyFile(const BodyFile&) = delete;
  BodyFile& operator=(const BodyFile&) = delete;
  int fd() const { return fd_; }
  /// fstat size.
  uint64_t size() const;
  /// The whole body (pread from 0); SystemError on a read failure.
  Result<std::vector<uint8_t>> readAll() const;
  /// Lowercase hex SHA-256 of the whole body, read in chunks (memory stays small).
  Result<std::string> sha256() const;

 private:
  int fd_;
};

/// A record: the request's URL and, once its response arrived, status and headers; once the
/// request finished, its body.
struct BackgroundFetchRecord {
  std::string url;
  bool complete = false;
  int status = 0;
  HttpHeaders headers;
  uint64_t size = 0;                       // body bytes stored (so far)
  std::shared_ptr<const BodyFile> body;    // set when complete
};

// ---- page side ----------------------------------------------------------------------------

/// A page's handle on one registration; copies share it. Its state() follows the progress events
/// the daemon sends (while the page is attached), up to the final one.
class BackgroundFetchRegistration {
 public:
  struct Shared;  // internal
  explicit BackgroundFetchRegistration(std::shared_ptr<Shared> s) : s_(std::move(s)) {}

  const BackgroundFetchState& state() const;
  const std::string& id() const { return state().id; }
  /// Runs on every progress event for this registration (the final one included). Added after
  /// the final event arrived and before any callback saw it, it runs at once with that state.
  void onProgress(std::function<void(const BackgroundFetchState&)> fn);
  /// true when it was active (the download stops; result failure/aborted), else false.
  void abort(std::function<void(Result<bool>)> done);
  Result<bool> abort(Deadline deadline);
  /// Records for `url` (exact match; [] when none) / every record in request order.
  /// InvalidStateError once the service worker's completion event settled.
  void match(const std::string& url, std::function<void(Result<std::vector<BackgroundFetchRecord>>)> done);
  void matchAll(std::function<void(Result<std::vector<BackgroundFetchRecord>>)> done);
  Result<std::vector<BackgroundFetchRecord>> match(const std::string& url, Deadline deadline);
  Result<std::vector<BackgroundFetchRecord>> matchAll(Deadline deadline);

 private:
  std::shared_ptr<Shared> s_;
};

/// registration.backgroundFetch of a page. Errors: TypeError (empty id or request list, bad URL,
/// scheme not http/https, id already active), QuotaExceededError (downloadTotal over the
/// daemon's --fetch-quota-bytes), Disconnected, QueueFull.
class BackgroundFetchManager {
 public:
  explicit BackgroundFetchManager(Client& client) : client_(&client) {}
  void fetch(const std::string& id, std::vector<BackgroundFetchRequest> requests, BackgroundFetchOptions options,
             std::function<void(Result<BackgroundFetchRegistration>)> done);
  /// nullopt for an id that is unknown or whose completion event has settled. Also follows its
  /// progress from now on.
  void get(const std::string& id, std::function<void(Result<std::optional<BackgroundFetchRegistration>>)> done);
  void getIds(std::function<void(Result<std::vector<std::string>>)> done);
  /// Blocking forms: run the client's loop (its callbacks may run) until answered or deadline.
  Result<BackgroundFetchRegistration> fetch(const std::string& id, std::vector<BackgroundFetchRequest> requests,
                                            BackgroundFetchOptions options = {}, Deadline deadline = NO_DEADLINE);
  Result<std::optional<BackgroundFetchRegistration>> get(const std::string& id, Deadline deadline);
  Result<std::vector<std::string>> getIds(Deadline deadline);

 private:
  Client* client_;
};

// ---- daemon side --------------------------------------------------------------------------

/// backgroundfetchsuccess / backgroundfetchfail / backgroundfetchabort. The records are there
/// until the event settles: at settle(), or when the last copy of the event pointer is dropped
/// (keep it to work on asynchronously). Then the bodies are deleted and get(id) is null.
class BackgroundFetchEvent {
 public:
  virtual ~BackgroundFetchEvent() = default;
  /// "backgroundfetchsuccess" | "backgroundfetchfail" | "backgroundfetchabort"
  virtual const std::string& type() const = 0;
  virtual const BackgroundFetchState& registration() const = 0;
  virtual Result<std::vector<BackgroundFetchRecord>> matchAll() const = 0;
  virtual Result<std::vector<BackgroundFetchRecord>> match(const std::string& url) const = 0;
  virtual void settle() = 0;
  virtual bool settled() const = 0;
};
using BackgroundFetchEventPtr = std::shared_ptr<BackgroundFetchEvent>;

/// The daemon's Background Fetch settings (sw_daemon flags).
struct BackgroundFetchSettings {
  int maxConnections = 6;                          // --fetch-max-connections
  uint64_t quotaBytes = 10ull << 30;               // --fetch-quota-bytes
  std::chrono::milliseconds progressInterval{100}; // --fetch-progress-ms
  /// Waits before each retry of a refused/reset GET (then fetch-error).
  std::vector<std::chrono::milliseconds> retryDelays{std::chrono::seconds(1), std::chrono::seconds(2),
                                                     std::chrono::seconds(4), std::chrono::seconds(8),
                                                     std::chrono::seconds(16)};
};

}  // namespace swipc
