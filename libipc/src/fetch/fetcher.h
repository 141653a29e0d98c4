// Fetcher: the Background Fetch state machine (DESIGN §15) on the daemon's loop, below the
// messaging: registrations, their requests' transfers (CurlMulti), body files, retries, resume
// after a restart, quotas, results, and when progress is due. It knows nothing of clients; the
// feature (fetch_feature.h) turns its hooks into envelopes and service-worker events.
//
//   fetch()  -> active: every request runs (at most --fetch-max-connections at once)
//     a request: response (status, headers, validator committed) -> body streamed to its file
//                -> complete (committed) | connection refused/reset on a GET: retried after
//                1, 2, 4, 8, 16 s, resuming with Range/If-Range | else fetch-error
//   every request finished -> result committed (success, or failure: fetch-error / bad-status)
//   abort(), quota or downloadTotal passed -> everything stops, result committed at once
//   result committed -> hooks.completed(id): the completion event is due
//   settled(id) -> rows and files deleted; the id is free again
//
// After a restart, create() resumes every registration without a result (each unfinished body
// from its file's length) and reports every one with a result as completed again (its event
// never settled).
//
// @concurrent: single-threaded (the daemon's loop).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/event_loop.h"
#include "fetch/curl_multi.h"
#include "fetch/store.h"
#include "swipc/background_fetch.h"

namespace swipc::fetch {

/// Requests in one fetch, and registrations at once (active or awaiting their event): past
/// either, fetch() is QuotaExceededError.
inline constexpr size_t MAX_FETCH_REQUESTS = 1000;
inline constexpr size_t MAX_REGISTRATIONS = 1000;

/// A record as match/matchAll give it; `bodyPath` is set once the request finished.
struct RecordInfo {
  std::string url;
  bool complete = false;
  int status = 0;
  HttpHeaders headers;
  uint64_t size = 0;
  std::filesystem::path bodyPath;
};

struct FetchCounters {
  uint64_t started = 0, succeeded = 0, failed = 0, aborted = 0, resumed = 0, retries = 0;
  uint64_t bytesDownloaded = 0;
};

class Fetcher {
 public:
  struct Hooks {
    /// Progress is due for a registration (rate-limited), or its final state (`final`).
    std::function<void(const BackgroundFetchState&, bool final)> progress;
    /// The result is committed: the completion event is due.
    std::function<void(const std::string& id)> completed;
  };

  /// Loads the store and resumes what is unfinished (completed hooks for registrations that
  /// already have a result run from the loop, after create() returned).
  static Result<std::unique_ptr<Fetcher>> create(core::EventLoop& loop, FetchStore& store,
                                                 const BackgroundFetchSettings& settings, Hooks hooks);
  ~Fetcher();
  Fetcher(const Fetcher&) = delete;
  Fetcher& operator=(const Fetcher&) = delete;

  /// Validates, commits and starts a registration. TYPE / QUOTA_EXCEEDED as in DESIGN §15.
  Result<BackgroundFetchState> fetch(const std::string& id, const std::vector<BackgroundFetchRequest>& requests,
                                     const BackgroundFetchOptions& options);
  /// A registration that exists (active, or awaiting its completion event's settle).
  std::optional<BackgroundFetchState> get(const std::string& id) const;
  /// Active registrations (no result yet), in creation order.
  std::vector<std::string> activeIds() const;
  /// Every registration, in creation order (swctl fetches).
  std::vector<BackgroundFetchState> all() const;
  /// true when it was active.
  bool abort(const std::string& id);
  /// Records of `id` (all, or those whose URL is `url`), in request order. NOT_FOUND for an id
  /// never seen; INVALID_STATE once its completion event settled.
  Result<std::vector<RecordInfo>> records(const std::string& id, const std::optional<std::string>& url) const;
  /// The completion event settled: forget the registration and delete its bodies.
  void settled(const std::string& id);

  FetchCounters counters() const { return counters_; }

 private:
  struct Request;
  struct Registration;
  class Sink;

  Fetcher(core::EventLoop& loop, FetchStore& store, const BackgroundFetchSettings& settings, Hooks hooks);
  Result<void> resumeAll();
  void startRequest(Registration& reg, Request& req);
  bool onResponse(Registration& reg, Request& req, int status, const HttpHeaders& headers);
  bool onBody(Registration& reg, Request& req, std::span<const uint8_t> bytes);
  void onDone(Registration& reg, Request& req, const TransferOutcome& outcome);
  void requestFinished(Registration& reg, Request& req, const std::string& failure);
  /// Truncates a request's body to 0 (a restart), keeping the shown `downloaded` from going down.
  bool restartBody(Registration& reg, Request& req);
  void maybeFinish(Registration& reg);
  /// Stops everything of `reg` and commits its result (failure, `reason`).
  void failNow(Registration& reg, const std::string& reason);
  void commitResult(Registration& reg, const std::string& result, const std::string& reason);
  void stopTransfers(Registration& reg);
  void progressChanged(Registration& reg);
  void sendProgress(Registration& reg);
  BackgroundFetchState stateOf(const Registration& reg) const;
  Registration* find(const std::string& id) const;

  core::EventLoop& loop_;
  FetchStore& store_;
  BackgroundFetchSettings settings_;
  Hooks hooks_;
  std::unique_ptr<CurlMulti> curl_;
  std::vector<std::unique_ptr<Registration>> regs_;  // creation order
  std::set<std::string> settledIds_;                  // recently settled (match -> InvalidStateError)
  uint64_t storedBytes_ = 0;                          // every body file, all registrations
  FetchCounters counters_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace swipc::fetch
