// FetchFeature: Background Fetch in the daemon, as a Feature (daemon/feature.h). It owns the
// store (the scope's state database plus fetch/ bodies) and the Fetcher (the downloads on the
// daemon's loop), answers the pages' fetchCall envelopes (schemas/fetch.capnp), sends progress
// to every page that called fetch or get for an id, passes record bodies as read-only fds, and
// hands the completion events to service-worker code as swipc::BackgroundFetchEvent.
//
// Progress: a page follows an id from its fetch or get call until the final event (sent to it
// once) or until it detaches; a page that re-attaches calls get again (the page library does).
//
// @concurrent: single-threaded; the daemon's loop thread.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "daemon/feature.h"
#include "fetch/fetcher.h"
#include "fetch/store.h"
#include "swipc/background_fetch.h"

namespace swipc::fetch {

class FetchFeature final : public daemon::Feature {
 public:
  using Handler = std::function<void(BackgroundFetchEventPtr)>;

  explicit FetchFeature(BackgroundFetchSettings settings) : settings_(std::move(settings)) {}
  ~FetchFeature() override;

  std::string_view name() const override { return "background-fetch"; }
  /// Opens the store (named error when the state dir is unusable), resumes unfinished fetches,
  /// takes fetchCall envelopes.
  Result<void> start(daemon::FeatureHost& host) override;
  void stop() override;

  void onSuccess(Handler fn) { onSuccess_ = std::move(fn); }
  void onFail(Handler fn) { onFail_ = std::move(fn); }
  void onAbort(Handler fn) { onAbort_ = std::move(fn); }

  /// Every registration (active or awaiting its completion event), in creation order.
  std::vector<BackgroundFetchState> registrations() const;
  FetchCounters counters() const;

  /// Internal (the completion event): records with their bodies opened read-only.
  Result<std::vector<BackgroundFetchRecord>> openRecords(const std::string& id, const std::optional<std::string>& url) const;
  /// Internal: the completion event of `id` settled.
  void eventSettled(const std::string& id);

 private:
  bool onCall(daemon::ClientRecord& c, schema::Envelope::Reader env);
  void progress(const BackgroundFetchState& state, bool final);
  void completed(const std::string& id);
  /// Passes `path` read-only to client `c`; its token, or 0 when it could not be passed.
  uint64_t passBody(daemon::ClientRecord& c, const std::filesystem::path& path);

  BackgroundFetchSettings settings_;
  daemon::FeatureHost* host_ = nullptr;
  std::unique_ptr<FetchStore> store_;
  std::unique_ptr<Fetcher> fetcher_;
  std::map<std::string, std::set<ClientId>> followers_;  // id -> pages to send its progress
  std::set<std::string> eventsOut_;                      // ids whose completion event is with SW code
  uint64_t nextToken_ = 1;
  FetchCounters stopped_;
  std::shared_ptr<FetchFeature*> self_ = std::make_shared<FetchFeature*>(this);
  Handler onSuccess_, onFail_, onAbort_;
};

}  // namespace swipc::fetch
