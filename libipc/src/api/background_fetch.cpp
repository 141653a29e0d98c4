// The page side of swipc/background_fetch.h: BackgroundFetchManager and
// BackgroundFetchRegistration over the page's PageFetch feature (libipc/src/fetch/page_fetch.h),
// made on first use; BackgroundFetchState::toValue. (BodyFile, which the daemon's fetch layer
// makes too, lives in libipc/src/fetch/body_file.cpp.)
#include "swipc/background_fetch.h"

#include <memory>
#include <optional>

#include "fetch/page_fetch.h"
#include "page/feature.h"
#include "swipc/client.h"

namespace swipc {

namespace {

fetch::PageFetch& pageFetch(Client& client) { return client.pageFeatures().get<fetch::PageFetch>(); }

/// Runs `client`'s loop until `start(done)` has answered or the deadline passes.
template <typename T, typename Start>
Result<T> waitFor(Client& client, Deadline deadline, Start&& start) {
  std::optional<Result<T>> answer;
  start([&answer](Result<T> r) { answer = std::move(r); });
  if (!answer) client.runUntil([&] { return answer.has_value(); }, deadline);
  if (!answer) return makeError(Errc::TIMEOUT, "the daemon did not answer in time");
  return std::move(*answer);
}

/// The same, stepping the page through its fetch feature (a registration holds no Client).
template <typename T, typename Start>
Result<T> waitFor(fetch::PageFetch& fetch, Deadline deadline, Start&& start) {
  std::optional<Result<T>> answer;
  start([&answer](Result<T> r) { answer = std::move(r); });
  if (!answer) fetch.runUntil([&] { return answer.has_value(); }, deadline);
  if (!answer) return makeError(Errc::TIMEOUT, "the daemon did not answer in time");
  return std::move(*answer);
}

Error closedClient() { return makeError(Errc::DISCONNECTED, "the client of this registration is closed"); }

}  // namespace

// ------------------------------------------------------------------------------------------------ state

Value BackgroundFetchState::toValue() const {
  return Value::map({{"id", id},
                     {"uploadTotal", static_cast<int64_t>(uploadTotal)},
                     {"uploaded", static_cast<int64_t>(uploaded)},
                     {"downloadTotal", static_cast<int64_t>(downloadTotal)},
                     {"downloaded", static_cast<int64_t>(downloaded)},
                     {"result", result},
                     {"failureReason", failureReason},
                     {"recordsAvailable", recordsAvailable}});
}

// ------------------------------------------------------------------------------------------------ registration

const BackgroundFetchState& BackgroundFetchRegistration::state() const { return s_->state; }

void BackgroundFetchRegistration::onProgress(std::function<void(const BackgroundFetchState&)> fn) {
  s_->onProgress.push_back(fn);
  if (s_->final && !s_->finalHandled) {
    // The final event came before any callback was there to see it: this one gets it now.
    s_->finalHandled = true;
    fn(s_->state);
  }
}

void BackgroundFetchRegistration::abort(std::function<void(Result<bool>)> done) {
  fetch::PageFetch* f = *s_->owner;
  if (!f) return done(closedClient());
  f->abort(s_->state.id, std::move(done));
}

Result<bool> BackgroundFetchRegistration::abort(Deadline deadline) {
  fetch::PageFetch* f = *s_->owner;
  if (!f) return closedClient();
  return waitFor<bool>(*f, deadline, [&](auto done) { f->abort(s_->state.id, std::move(done)); });
}

void BackgroundFetchRegistration::match(const std::string& url,
                                        std::function<void(Result<std::vector<BackgroundFetchRecord>>)> done) {
  fetch::PageFetch* f = *s_->owner;
  if (!f) return done(closedClient());
  f->match(s_->state.id, url, std::move(done));
}

void BackgroundFetchRegistration::matchAll(std::function<void(Result<std::vector<BackgroundFetchRecord>>)> done) {
  fetch::PageFetch* f = *s_->owner;
  if (!f) return done(closedClient());
  f->match(s_->state.id, std::nullopt, std::move(done));
}

Result<std::vector<BackgroundFetchRecord>> BackgroundFetchRegistration::match(const std::string& url,
                                                                              Deadline deadline) {
  fetch::PageFetch* f = *s_->owner;
  if (!f) return closedClient();
  return waitFor<std::vector<BackgroundFetchRecord>>(
      *f, deadline, [&](auto done) { f->match(s_->state.id, url, std::move(done)); });
}

Result<std::vector<BackgroundFetchRecord>> BackgroundFetchRegistration::matchAll(Deadline deadline) {
  fetch::PageFetch* f = *s_->owner;
  if (!f) return closedClient();
  return waitFor<std::vector<BackgroundFetchRecord>>(
      *f, deadline, [&](auto done) { f->match(s_->state.id, std::nullopt, std::move(done)); });
}

// ------------------------------------------------------------------------------------------------ manager

void BackgroundFetchManager::fetch(const std::string& id, std::vector<BackgroundFetchRequest> requests,
                                   BackgroundFetchOptions options,
                                   std::function<void(Result<BackgroundFetchRegistration>)> done) {
  pageFetch(*client_).fetch(id, requests, options, [done = std::move(done)](Result<fetch::PageFetch::SharedPtr> r) {
    if (!r) return done(r.error());
    if (!*r) return done(makeError(Errc::PROTOCOL_VIOLATION, "the daemon answered fetch without a registration"));
    done(BackgroundFetchRegistration(std::move(*r)));
  });
}

void BackgroundFetchManager::get(const std::string& id,
                                 std::function<void(Result<std::optional<BackgroundFetchRegistration>>)> done) {
  pageFetch(*client_).get(id, [done = std::move(done)](Result<fetch::PageFetch::SharedPtr> r) {
    if (!r) return done(r.error());
    if (!*r) return done(std::optional<BackgroundFetchRegistration>());
    done(std::optional<BackgroundFetchRegistration>(BackgroundFetchRegistration(std::move(*r))));
  });
}

void BackgroundFetchManager::getIds(std::function<void(Result<std::vector<std::string>>)> done) {
  pageFetch(*client_).getIds(std::move(done));
}

Result<BackgroundFetchRegistration> BackgroundFetchManager::fetch(const std::string& id,
                                                                  std::vector<BackgroundFetchRequest> requests,
                                                                  BackgroundFetchOptions options, Deadline deadline) {
  return waitFor<BackgroundFetchRegistration>(*client_, deadline, [&](auto done) {
    fetch(id, std::move(requests), std::move(options), std::move(done));
  });
}

Result<std::optional<BackgroundFetchRegistration>> BackgroundFetchManager::get(const std::string& id,
                                                                               Deadline deadline) {
  return waitFor<std::optional<BackgroundFetchRegistration>>(*client_, deadline,
                                                             [&](auto done) { get(id, std::move(done)); });
}

Result<std::vector<std::string>> BackgroundFetchManager::getIds(Deadline deadline) {
  return waitFor<std::vector<std::string>>(*client_, deadline, [&](auto done) { getIds(std::move(done)); });
}

}  // namespace swipc
