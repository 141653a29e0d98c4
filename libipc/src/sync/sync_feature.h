// SyncFeature: Background Sync in the daemon, as a Feature (daemon/feature.h). It owns the
// durable store (state.db in the scope's state dir), the scheduler (the §14 state machine on the
// daemon's loop) and connectivity; it answers the pages' syncCall envelopes (schemas/sync.capnp)
// after each change is committed, and hands events to service-worker code as swipc::SyncEvent.
//
// Service-worker code may install its handlers and read the options before start(); everything
// that needs the store (register, getTags, state, setOnline) needs the feature started.
//
// @concurrent: single-threaded; the daemon's loop thread.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/feature.h"
#include "swipc/sync.h"
#include "sync/backend.h"
#include "sync/connectivity.h"
#include "sync/scheduler.h"
#include "sync/store.h"

namespace swipc::sync {

struct FeatureOptions {
  SyncOptions scheduling;
  ConnectivityMode connectivity = ConnectivityMode::AUTO;
  bool startOffline = false;  // manual mode: start offline (--offline)
};

class SyncFeature final : public daemon::Feature {
 public:
  using Handler = std::function<void(SyncEventPtr)>;

  explicit SyncFeature(FeatureOptions options) : options_(std::move(options)) {}
  ~SyncFeature() override;

  std::string_view name() const override { return "background-sync"; }
  /// Opens the store (a named error, with the path, when the state dir is unwritable or the
  /// database corrupt), loads the registrations, starts connectivity, takes syncCall envelopes.
  Result<void> start(daemon::FeatureHost& host) override;
  void stop() override;

  /// Keeps one-shot registrations in `backend` instead of state.db (--nats: JetStream, DESIGN
  /// §16). Before start(); periodic sync stays local.
  void useBackend(std::unique_ptr<OneShotBackend> backend) { backend_ = std::move(backend); }

  void onSync(Handler fn) { onSync_ = std::move(fn); }
  void onPeriodicSync(Handler fn) { onPeriodic_ = std::move(fn); }

  /// Service-worker code's registration.sync / periodicSync (InvalidStateError before start()).
  /// With a backend, registerTag returns once the registration is on its way (a failure to
  /// commit it is logged and counted as a store error).
  Result<void> registerTag(const std::string& tag, const std::optional<Value>& data);
  Result<std::vector<std::string>> getTags() const;
  Result<void> registerPeriodic(const std::string& tag, std::chrono::milliseconds minInterval);
  Result<void> unregisterPeriodic(const std::string& tag);
  Result<std::vector<std::string>> getPeriodicTags() const;
  /// Manual connectivity: InvalidStateError in the other modes or before start().
  Result<void> setOnline(bool online);
  bool online() const;
  /// The one-shot tags (SYNC_STATE, swctl sync).
  std::vector<SyncTagState> state();
  /// Counters for SIGUSR1 / the inspector (the last run's after stop()).
  SyncCounters counters() const;

 private:
  /// Handles one syncCall envelope from a page; always true (a refused call is answered).
  bool onCall(daemon::ClientRecord& c, schema::Envelope::Reader env);
  void deliver(SyncEvent event);
  /// Runs the service worker's handler for `event` (resolves it when there is none).
  void hand(bool periodic, const SyncEventPtr& event);
  /// Answers a page's syncCall.
  void answer(const ClientId& client, uint64_t callId, const Result<void>& done,
              const std::optional<Result<std::vector<std::string>>>& tags);

  FeatureOptions options_;
  daemon::FeatureHost* host_ = nullptr;
  std::unique_ptr<SyncStore> store_;
  std::unique_ptr<SyncScheduler> scheduler_;
  std::unique_ptr<Connectivity> connectivity_;
  std::unique_ptr<OneShotBackend> backend_;
  uint64_t backendErrors_ = 0;  // SW-code registrations the backend did not commit
  Handler onSync_;
  Handler onPeriodic_;
  SyncCounters stopped_;  // the counters of the scheduler stop() ended
};

}  // namespace swipc::sync
