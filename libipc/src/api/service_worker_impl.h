// ServiceWorker::Impl: what the daemon side is made of (one module per concern, daemon/) and
// how it is wired; shared by the files of the api layer that implement swipc::ServiceWorker
// (service_worker.cpp) and its Clients API (clients.cpp).
#pragma once


#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <system_error>
#include <vector>

#include "common/sys_error.h"
#include "core/connection.h"
#include "core/event_loop.h"
#include "core/identity.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/user_code.h"
#include "daemon/attach_server.h"
#include "daemon/broadcast_feature.h"
#include "daemon/client_table.h"
#include "daemon/clients_api.h"
#include "daemon/dispatch.h"
#include "daemon/feature.h"
#include "daemon/inspector.h"
#include "daemon/messages.h"
#include "daemon/outbound.h"
#include "daemon/port_service.h"
#include "daemon/window_opener.h"
#include "fetch/fetch_feature.h"
#ifdef SWIPC_HAVE_FEDERATION
#include "federation/federation_feature.h"
#include "federation/js_sync.h"
#endif
#include "sync/sync_feature.h"
#include "swipc/json.h"


namespace swipc {

class ServiceWorker::Impl final : public daemon::FeatureHost {
 public:
  Impl(ServiceWorker* owner, ServiceWorkerOptions o);
  ~Impl() override {
    shutdown("daemon object destroyed");
    ports_.endLocalPorts();
  }

  Result<void> listen();
  Result<void> run();
  void stop() {
    stopRequested_ = true;
    loop_->wake();
  }
  /// One turn of the loop until `until`, then (spinning) a look at every client's ring.
  void dispatchOnce(Deadline until);
  /// Drains every client whose connection says `ready` (hasIncoming, armAndCheck); true if any was.
  bool drainWhere(bool (core::Connection::*ready)());
  /// The counters, with the port router's figures.
  Counters snapshot() const;
  /// listen() has succeeded at least once: the loop may be posted to and dispatched.
  bool served() const { return served_; }

  // ---- daemon::FeatureHost
  core::EventLoop& loop() override { return *loop_; }
  daemon::ClientTable& clients() override { return clients_; }
  daemon::Outbound& outbound() override { return outbound_; }
  void handle(schema::Envelope::Which kind, daemon::Dispatch::Handler handler,
              daemon::Dispatch::PlainHandler plain) override;
  void onDetach(daemon::ClientTable::DetachHook hook) override {
    featureHooks_.push_back(clients_.onDetach(std::move(hook)));
  }
  Result<std::string> stateDir() override;
  const ServiceWorkerOptions& options() const override { return opts_; }
  Counters& counters() override { return counters_; }
  const TypeRegistry& types() const override { return types_; }
  void markActive() override { dispatch_.markActive(); }

 private:
  // The front door reaches the modules directly.
  friend class swipc::ServiceWorker;
  friend class swipc::Clients;
  friend class swipc::ClientHandle;

  ServiceWorkerOptions opts_;
  Counters counters_;
  TypeRegistry types_;
  std::unique_ptr<core::EventLoop> loop_;
  daemon::ClientTable clients_;
  daemon::Outbound outbound_;
  daemon::Dispatch dispatch_;
  daemon::ClientsApi api_;
  daemon::PortService ports_;
  daemon::Messages messages_;
  daemon::AttachServer attach_;
  daemon::WindowOpener opener_;
  daemon::BroadcastFeature broadcast_;
  sync::SyncFeature sync_;
  fetch::FetchFeature fetch_;
  daemon::Inspector inspector_;
  std::unique_ptr<daemon::Feature> federation_;  // --nats only (DESIGN §16)
#ifdef SWIPC_HAVE_FEDERATION
  federation::FederationFeature* fed_ = nullptr;  // the same, typed (remote clients)
#endif
  std::vector<daemon::Feature*> features_;
  std::function<void(const ClientHandle&)> onAttached_;

  /// A client passed the handshake: into the table, watched, announced.
  void admit(std::unique_ptr<daemon::ClientRecord> record, const core::HelloInfo& hello);
  Result<void> startFeatures();
  /// Stops the first `started` features (last first) and forgets what every feature registered.
  void stopFeatures(size_t started);
  void onSignal();
  void logCounters();
  void shutdown(const std::string& reason);

  core::ScopePaths paths_;
  UniqueFd lockFd_;
  UniqueFd inheritedListen_;  // opts.listenFd (socket activation) until listen() serves it
  UniqueFd signalFd_;
  core::EventLoop::WatchId signalWatch_ = 0;
  sigset_t oldMask_{};
  bool listening_ = false;
  bool served_ = false;
  std::atomic<bool> stopRequested_{false};  // stop() and signals may come from any thread
  std::vector<schema::Envelope::Which> featureKinds_;
  std::vector<daemon::ClientTable::HookId> featureHooks_;
  std::string stateDir_;
};


}  // namespace swipc
