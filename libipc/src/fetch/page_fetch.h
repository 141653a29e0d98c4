// PageFetch: Background Fetch on the page (a PageFeature, page/feature.h; DESIGN §15). It sends
// the page's fetchCall envelopes (schemas/fetch.capnp), hands each fetchResult to the call that
// waits for it through the page's delivery queue, and keeps, per registration the page follows,
// the state every handle on it shares (BackgroundFetchRegistration::Shared), which the daemon's
// fetchProgress envelopes update.
//
//   fetch(id) / get(id) ──fetchCall──► daemon       (the daemon records this page as a follower)
//        ◄──fetchResult(registration)── answer      → Shared made or updated, followed
//        ◄──fetchProgress── ... ──fetchProgress(result != "")   → state, then onProgress callbacks;
//                                                                 the final one ends following
//   daemon restarts ─► reattached(): get(id) again for every followed id (the new daemon resumes
//                      unfinished fetches from its database and records the page again)
//
// Following: an id is followed from the answer of a fetch or get that carries its registration
// until its final event (result not empty), which is delivered once; progress for an id not
// followed, or after the final event, is ignored. The Shared state is held (with its
// callbacks) while followed, and by the handles after.
//
// Records: match/matchAll answers name each finished body by a token; the read-only fd came just
// before, in a Control.fileFd datagram, and is taken from the connection when the answer is read
// (before the answer is queued for the caller). A named fd that never came fails the call with
// ProtocolViolation.
//
// Calls the daemon cannot answer any more (it went away first) end with Disconnected.
//
// @concurrent: single-threaded (the page's loop thread).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fetch.capnp.h"
#include "page/feature.h"
#include "swipc/background_fetch.h"
#include "swipc/error.h"

namespace swipc::fetch {
class PageFetch;
}

namespace swipc {

/// What every handle on one registration shares: the latest state and the progress callbacks.
/// Made and updated by fetch::PageFetch; read by BackgroundFetchRegistration.
struct BackgroundFetchRegistration::Shared {
  BackgroundFetchState state;
  /// The final progress event (result not empty) was delivered, or the registration was already
  /// complete when the page got it: no callback runs any more.
  bool final = false;
  /// The final event reached at least one onProgress callback. While false after `final`, a
  /// callback added now is given the final state once (it came before the page could add one,
  /// e.g. inside the blocking fetch() that made the registration).
  bool finalHandled = false;
  std::vector<std::function<void(const BackgroundFetchState&)>> onProgress;
  /// The page's fetch feature while the page lives (nullptr after it closed).
  std::shared_ptr<fetch::PageFetch*> owner;
};

}  // namespace swipc

namespace swipc::fetch {

class PageFetch final : public page::PageFeature {
 public:
  using Shared = BackgroundFetchRegistration::Shared;
  using SharedPtr = std::shared_ptr<Shared>;
  /// fetch: the registration; get: the registration, or nullptr for none (unknown or settled).
  using RegistrationDone = std::function<void(Result<SharedPtr>)>;
  using IdsDone = std::function<void(Result<std::vector<std::string>>)>;
  using BoolDone = std::function<void(Result<bool>)>;
  using RecordsDone = std::function<void(Result<std::vector<BackgroundFetchRecord>>)>;

  explicit PageFetch(page::PageContext& ctx);
  ~PageFetch() override;

  /// backgroundFetch.fetch: the answer's registration, followed from then on.
  void fetch(const std::string& id, const std::vector<BackgroundFetchRequest>& requests,
             const BackgroundFetchOptions& options, RegistrationDone done);
  /// backgroundFetch.get: as fetch's answer (the same Shared as the handles already held for an
  /// id followed now), or nullptr.
  void get(const std::string& id, RegistrationDone done);
  void getIds(IdsDone done);
  /// registration.abort(): true when it was active.
  void abort(const std::string& id, BoolDone done);
  /// registration.match(url) (url given) / matchAll() (nullopt).
  void match(const std::string& id, const std::optional<std::string>& url, RecordsDone done);

  /// Runs the page's loop (its callbacks may run) until `done()` or the deadline; returns done().
  /// What the blocking forms of the registration's calls wait with.
  bool runUntil(const std::function<bool()>& done, Deadline deadline);

  /// The Shared state of `id` while it is followed, else nullptr.
  SharedPtr followed(const std::string& id) const;
  /// Calls sent, not yet answered.
  size_t pendingCalls() const { return pending_.size(); }

  void reattached() override;
  void detaching() override;
  void closing() override;

 private:
  /// What the answer of one call is handed to: the error, or the result's reader (valid during
  /// the call only: read what is needed, then queue the caller).
  using Answer = std::function<void(Result<schema::FetchResult::Reader>)>;
  void call(const std::function<void(schema::FetchCall::Builder)>& fill, Answer answer);
  void onResult(schema::FetchResult::Reader result);
  void onProgress(schema::FetchRegistration::Reader registration);
  /// The answer that makes or updates the followed state of a registration (fetch, get).
  Answer registrationAnswer(RegistrationDone done);
  /// The Shared state for the registration in an answer: the followed one updated, or a new one
  /// (followed unless already complete). A followed one whose answer shows it complete gets its
  /// final event from this answer (the daemon that would have sent it may be gone).
  SharedPtr adopt(schema::FetchRegistration::Reader registration);
  /// Sets the state of `shared`; for a final one (result not empty) marks it final, stops
  /// following it and queues its callbacks; otherwise queues them when `notify`.
  void update(const SharedPtr& shared, BackgroundFetchState state, bool notify);
  /// Takes the fds that the records of `result` name from the connection (each exactly once,
  /// even when nobody waits for them).
  Result<std::vector<BackgroundFetchRecord>> takeRecords(capnp::List<schema::FetchRecord>::Reader records);

  page::PageContext& ctx_;
  std::shared_ptr<PageFetch*> self_;  // Shared::owner: cleared when the page closes
  uint64_t nextCall_ = 1;
  std::map<uint64_t, Answer> pending_;
  std::map<std::string, SharedPtr> followed_;
};

/// The state a FetchRegistration carries.
BackgroundFetchState stateOf(schema::FetchRegistration::Reader r);
/// A FetchError as the library's Error (an unknown name: ProtocolViolation, the name in the
/// message).
Error reported(schema::FetchError::Reader e);

}  // namespace swipc::fetch
