// The page side of swipc/sync.h: SyncManager and PeriodicSyncManager over the page's PageSync
// feature (libipc/src/sync/page_sync.h), made on first use.
#include "swipc/sync.h"

#include <optional>

#include "page/feature.h"
#include "swipc/client.h"
#include "sync/page_sync.h"

namespace swipc {

namespace {

sync::PageSync& pageSync(Client& client) { return client.pageFeatures().get<sync::PageSync>(); }

/// Runs `client`'s loop until `start(done)` has answered or the deadline passes.
template <typename T, typename Start>
Result<T> waitFor(Client& client, Deadline deadline, Start&& start) {
  std::optional<Result<T>> answer;
  start([&answer](Result<T> r) { answer = std::move(r); });
  if (!answer) client.runUntil([&] { return answer.has_value(); }, deadline);
  if (!answer) return makeError(Errc::TIMEOUT, "the daemon did not answer in time");
  return std::move(*answer);
}

}  // namespace

void SyncManager::registerTag(const std::string& tag, std::optional<Value> data, std::function<void(Result<void>)> done) {
  pageSync(*client_).registerTag(tag, data, std::move(done));
}

void SyncManager::getTags(std::function<void(Result<std::vector<std::string>>)> done) {
  pageSync(*client_).getTags(std::move(done));
}

Result<void> SyncManager::registerTag(const std::string& tag, std::optional<Value> data, Deadline deadline) {
  return waitFor<void>(*client_, deadline, [&](auto done) { registerTag(tag, std::move(data), std::move(done)); });
}

Result<std::vector<std::string>> SyncManager::getTags(Deadline deadline) {
  return waitFor<std::vector<std::string>>(*client_, deadline, [&](auto done) { getTags(std::move(done)); });
}

void PeriodicSyncManager::registerTag(const std::string& tag, std::chrono::milliseconds minInterval,
                                      std::function<void(Result<void>)> done) {
  pageSync(*client_).registerPeriodic(tag, minInterval, std::move(done));
}

void PeriodicSyncManager::unregister(const std::string& tag, std::function<void(Result<void>)> done) {
  pageSync(*client_).unregisterPeriodic(tag, std::move(done));
}

void PeriodicSyncManager::getTags(std::function<void(Result<std::vector<std::string>>)> done) {
  pageSync(*client_).getPeriodicTags(std::move(done));
}

Result<void> PeriodicSyncManager::registerTag(const std::string& tag, std::chrono::milliseconds minInterval,
                                              Deadline deadline) {
  return waitFor<void>(*client_, deadline, [&](auto done) { registerTag(tag, minInterval, std::move(done)); });
}

}  // namespace swipc
