// swipc::ServiceWorker: the front door of the daemon side. The machinery is in daemon/, one
// module per concern; ServiceWorker::Impl builds them, wires them together, and runs the loop
// (signals, the spin phase, a graceful stop).
#include "swipc/service_worker.h"

#include "api/service_worker_impl.h"

namespace swipc {

namespace {

std::unique_ptr<core::EventLoop> makeLoop() {
  auto loop = core::EventLoop::create();
  if (!loop) throw std::system_error(errno, std::generic_category(), "swipc::ServiceWorker: " + loop.error().describe());
  return std::move(*loop);
}

sync::FeatureOptions syncOptions(const BackgroundSyncOptions& o) {
  sync::FeatureOptions f;
  f.scheduling.retry = sync::RetryPolicy{o.maxAttempts, o.retry, o.retryFactor};
  f.scheduling.timeout = o.timeout;
  f.scheduling.periodicMinInterval = o.periodicMinInterval;
  using C = BackgroundSyncOptions::Connectivity;
  f.connectivity = o.connectivity == C::ALWAYS   ? sync::ConnectivityMode::ALWAYS
                   : o.connectivity == C::MANUAL ? sync::ConnectivityMode::MANUAL
                                                 : sync::ConnectivityMode::AUTO;
  f.startOffline = o.startOffline;
  return f;
}

/// swctl sync's tags: {"tag","state","attempts","entries","nextAttemptMs"} each.
Value syncTagsValue(const std::vector<SyncTagState>& tags) {
  Value::List out;
  for (const auto& t : tags)
    out.push_back(Value::map({{"tag", t.tag},
                              {"state", t.state},
                              {"attempts", t.attempts},
                              {"entries", static_cast<int64_t>(t.entries)},
                              {"nextAttemptMs", t.nextAttemptMs}}));
  return out;
}

}  // namespace


ServiceWorker::Impl::Impl(ServiceWorker* owner, ServiceWorkerOptions o)
    : opts_(std::move(o)),
      loop_(makeLoop()),
      clients_(*loop_, counters_),
      outbound_(clients_, counters_, *loop_, opts_),
      dispatch_(clients_, outbound_, *loop_, opts_.spin.count() > 0),
      api_(owner, clients_, outbound_, counters_),
      ports_(clients_, outbound_, *loop_, types_, opts_),
      messages_(clients_, outbound_, api_, ports_, counters_, types_),
      attach_(clients_, *loop_, counters_, opts_),
      opener_(*loop_, counters_, opts_),
      broadcast_(daemon::BroadcastHub::Config{opts_.bcRingBytes, opts_.maxMessageBytes, opts_.maxChannels,
                                                 opts_.maxChannelsPerClient}, types_, counters_),
      sync_(syncOptions(opts_.sync)),
      fetch_(opts_.fetch),
      inspector_(api_, [this]() -> const daemon::BroadcastHub& { return broadcast_.hub(); },
                 [this]() -> const daemon::PortRouter& { return ports_.router(); }, opts_.version,
                 {.counters = [this] { return snapshot().toValue(); },
                  .syncTags = [this] { return syncTagsValue(sync_.state()); },
                  .fetches = [this] {
                    Value::List out;
                    for (const auto& r : fetch_.registrations()) out.push_back(r.toValue());
                    return Value(std::move(out));
                  }}) {
  api_.registerWith(dispatch_);
  ports_.registerWith(dispatch_);
  messages_.registerWith(dispatch_);
  attach_.onAdmit([this](std::unique_ptr<daemon::ClientRecord> r, const core::HelloInfo& h) { admit(std::move(r), h); });
  attach_.onInspect([this](std::string_view command) { return inspector_.answer(command); });
  inheritedListen_.reset(std::exchange(opts_.listenFd, -1));
  features_.push_back(&broadcast_);
  features_.push_back(&sync_);
  features_.push_back(&fetch_);
#ifdef SWIPC_HAVE_FEDERATION
  if (!opts_.federation.natsServers.empty()) {
    if (opts_.federation.node.empty()) opts_.federation.node = federation::defaultNodeName();
    // The hub behind the service worker's BroadcastChannel objects is the daemon's BroadcastHub.
    federation::FederationFeature::LocalClients local;
    local.matchAll = [this](const MatchAllOptions& o) { return api_.matchAll(o); };
    local.get = [this](const ClientId& id) { return api_.get(id); };
    local.post = [this](const ClientId& id, const Value& data) -> Result<void> {
      core::OutgoingPayload p;
      p.value = &data;
      TransferList none;
      auto r = messages_.postToClient(id, p, none);
      if (!r) return r.error();
      return {};
    };
    auto fed = std::make_unique<federation::FederationFeature>(
        std::static_pointer_cast<daemon::BroadcastHub>(broadcast_.localHub()), std::move(local));
    fed_ = fed.get();
    federation_ = std::move(fed);
    // One-shot Background Sync lives in JetStream, shared by every node of the scope.
    sync_.useBackend(std::make_unique<federation::JetStreamSync>(federation::JetStreamSync::Config{
        opts_.federation.natsServers, opts_.scope, opts_.federation.node}));
    features_.push_back(federation_.get());
  }
#endif
}

// ------------------------------------------------------------------------------------------------ setup

Result<void> ServiceWorker::Impl::listen() {
  if (listening_) return {};
  if (!opts_.federation.natsServers.empty() && !federation_)
    return makeError(Errc::INVALID_STATE, "this build has no federation (--nats): built without libnats (SWIPC_FEDERATION=OFF)");
  auto paths = core::scopePaths(opts_.runtimeDir, opts_.scope);
  if (!paths) return paths.error();
  paths_ = *paths;
  opener_.setRuntimeDir(paths_.dir.substr(0, paths_.dir.size() - opts_.scope.size() - 1));
  // DESIGN §3: a runtime dir not ours (or writable by others) and a symlinked lock are refused.
  if (auto r = core::ensureScopeDirs(paths_, opts_.allowGroup ? 0750 : 0700); !r) return r.error();
  auto lock = core::openLockFile(paths_.lock);
  if (!lock) return lock.error();
  lockFd_ = std::move(*lock);
  if (::flock(lockFd_.get(), LOCK_EX | LOCK_NB) == -1) {
    auto err = errno == EWOULDBLOCK ? makeError(Errc::ALREADY_RUNNING, "another sw_daemon already serves scope '" +
                                                                           opts_.scope + "' (" + paths_.lock +
                                                                           " is locked)")
                                    : sysError("flock " + paths_.lock);
    lockFd_.reset();
    return err;
  }
  // Signals are ours before the socket accepts anyone: a client that signals the daemon right
  // after it could attach must not kill it (SIGUSR1's default action) or skip the graceful stop.
  if (opts_.handleSignals && !signalFd_) {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGUSR1);
    ::pthread_sigmask(SIG_BLOCK, &mask, &oldMask_);
    signalFd_.reset(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!signalFd_) {
      ::pthread_sigmask(SIG_SETMASK, &oldMask_, nullptr);
      return sysError("signalfd");
    }
    auto w = loop_->watch(signalFd_.get(), EPOLLIN, [this](uint32_t) { onSignal(); });
    if (!w) return w.error();
    signalWatch_ = *w;
  }
  if (auto r = startFeatures(); !r) return r;
  if (auto r = attach_.start(paths_.socket, core::randomU64(), std::move(inheritedListen_)); !r) {
    stopFeatures(features_.size());
    return r;
  }
  ::signal(SIGPIPE, SIG_IGN);
  listening_ = true;
  served_ = true;
  core::log().info("listening scope={} socket={} version={} max_message_bytes={} ring_bytes={}", opts_.scope,
                   paths_.socket, opts_.version, opts_.maxMessageBytes, opts_.ringBytes);
  return {};
}

Result<void> ServiceWorker::Impl::startFeatures() {
  for (size_t i = 0; i < features_.size(); ++i) {
    if (auto r = features_[i]->start(*this); !r) {
      core::log().error("feature {} did not start: {}", features_[i]->name(), r.error().describe());
      stopFeatures(i + 1);  // the one that failed too: it may have started half
      return r;
    }
  }
  return {};
}

void ServiceWorker::Impl::stopFeatures(size_t started) {
  for (size_t i = started; i-- > 0;) features_[i]->stop();
  for (auto kind : featureKinds_) dispatch_.remove(kind);
  for (auto hook : featureHooks_) clients_.removeDetachHook(hook);
  featureKinds_.clear();
  featureHooks_.clear();
}

void ServiceWorker::Impl::handle(schema::Envelope::Which kind, daemon::Dispatch::Handler handler,
                                 daemon::Dispatch::PlainHandler plain) {
  SWIPC_REQUIRE(!dispatch_.handles(kind), "envelope kind " + std::to_string(static_cast<unsigned>(kind)) +
                                              " already has a handler");
  dispatch_.handle(kind, std::move(handler));
  if (plain) dispatch_.handlePlain(kind, plain);
  featureKinds_.push_back(kind);
}

Result<std::string> ServiceWorker::Impl::stateDir() {
  if (stateDir_.empty()) {
    std::string dir = opts_.stateDir;
    if (dir.empty()) {
      if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x)
        dir = std::string(x) + "/swipc/" + opts_.scope;
      else if (const char* h = std::getenv("HOME"); h && *h)
        dir = std::string(h) + "/.local/state/swipc/" + opts_.scope;
      else
        return makeError(Errc::INVALID_STATE, "no state directory: set --state-dir, $XDG_STATE_HOME or $HOME");
    }
    if (auto r = core::ensurePrivateDir(dir); !r) return r.error();
    stateDir_ = dir;
  }
  return stateDir_;
}

void ServiceWorker::Impl::onSignal() {
  signalfd_siginfo si;
  while (::read(signalFd_.get(), &si, sizeof si) == sizeof si) {
    if (si.ssi_signo == SIGUSR1) {
      logCounters();
    } else {
      core::log().info("signal {}: stopping gracefully", si.ssi_signo);
      stopRequested_ = true;
    }
  }
}

void ServiceWorker::Impl::logCounters() {
  core::log().info("counters clients={} {}", clients_.size(), toJsonText(snapshot().toValue()));
}

// ------------------------------------------------------------------------------------------------ attach

void ServiceWorker::Impl::admit(std::unique_ptr<daemon::ClientRecord> record, const core::HelloInfo& hello) {
  const bool opened = opener_.expects(hello.openToken);
  if (opened && record->type == ClientType::WINDOW) record->frameType = FrameType::AUXILIARY;
  if (auto w = dispatch_.connect(*record); !w) {
    core::log().error("cannot watch client fds: {}", w.error().describe());
    return;
  }
  daemon::ClientRecord& c = clients_.insert(std::move(record));
  ++counters_.attached;
  core::log().info("attached client={} pid={} type={} controlled={} url={} resumed={}", c.id.toString(), c.pid,
                   clientTypeName(c.type), c.controlled, c.url, hello.resumeToken.has_value());
  if (onAttached_) core::callUser("onClientAttached", [&] { onAttached_(api_.handleFor(c)); });
  if (opened) opener_.finish(hello.openToken, api_.handleFor(c), "attached");
}

// ------------------------------------------------------------------------------------------------ loop

bool ServiceWorker::Impl::drainWhere(bool (core::Connection::*ready)()) {
  bool any = false;
  clients_.forEachAlive([&](daemon::ClientRecord& c) {
    if (c.conn && ((*c.conn).*ready)()) {
      dispatch_.drain(c);
      any = true;
    }
  });
  if (any) dispatch_.markActive();
  return any;
}

void ServiceWorker::Impl::dispatchOnce(Deadline until) {
  loop_->runOnce(until);
  if (opts_.spin.count() > 0) drainWhere(&core::Connection::hasIncoming);
}

Result<void> ServiceWorker::Impl::run() {
  if (auto r = listen(); !r) return r;
  while (!stopRequested_) {
    if (opts_.spin.count() > 0 && Clock::now() - dispatch_.lastActivity() < opts_.spin) {
      dispatchOnce(Clock::now());  // busy phase: poll fds and rings without sleeping
      continue;
    }
    // About to sleep: ask every client to ring again, then catch what raced with that.
    if (opts_.spin.count() > 0 && drainWhere(&core::Connection::armAndCheck)) continue;
    dispatchOnce(NO_DEADLINE);
  }
  shutdown("daemon stopping");
  stopRequested_ = false;
  return {};
}

void ServiceWorker::Impl::shutdown(const std::string& reason) {
  if (!listening_) return;
  std::vector<daemon::ClientRecord*> all;
  clients_.forEachAlive([&](daemon::ClientRecord& c) { all.push_back(&c); });
  for (auto* c : all) clients_.detach(*c, reason, /*goodbye=*/true);
  attach_.stop();
  opener_.stop();  // spawned pages live on; they re-attach to the next daemon
  stopFeatures(features_.size());
  clients_.clear();
  lockFd_.reset();  // releases the flock
  if (signalFd_) {
    loop_->unwatch(signalWatch_);
    signalFd_.reset();
    ::pthread_sigmask(SIG_SETMASK, &oldMask_, nullptr);
  }
  listening_ = false;
  core::log().info("stopped: {} {}", reason, toJsonText(snapshot().toValue()));
}

Counters ServiceWorker::Impl::snapshot() const {
  Counters c = counters_;
  const auto& ps = ports_.router().stats();
  c.portMessagesRouted = ps.routed;
  c.portsTransferred = ps.transferred;
  c.portsClosed = ps.closed;
  c.portMessagesDropped = ps.dropped;
  c.portsOpen = ports_.router().size();
  c.portQuotaRefused = ps.quotaRefused;
  const sync::SyncCounters sc = sync_.counters();
  c.syncFired = sc.fired;
  c.syncSucceeded = sc.succeeded;
  c.syncFailed = sc.failed;
  c.syncTimedOut = sc.timedOut;
  c.syncGaveUp = sc.gaveUp;
  c.syncDroppedEntries = sc.droppedEntries;
  const fetch::FetchCounters fc = fetch_.counters();
  c.fetchStarted = fc.started;
  c.fetchSucceeded = fc.succeeded;
  c.fetchFailed = fc.failed;
  c.fetchAborted = fc.aborted;
  c.fetchResumed = fc.resumed;
  c.fetchRetries = fc.retries;
  c.fetchBytes = fc.bytesDownloaded;
  return c;
}

// ------------------------------------------------------------------------------------------------ public

ServiceWorker::ServiceWorker(ServiceWorkerOptions opts)
    : impl_(std::make_unique<Impl>(this, std::move(opts))), clients_(this) {}
std::shared_ptr<detail::BroadcastHub> ServiceWorker::broadcastHub() { return impl_->broadcast_.localHub(); }
ServiceWorker::~ServiceWorker() = default;
Result<void> ServiceWorker::listen() { return impl_->listen(); }
Result<void> ServiceWorker::run() { return impl_->run(); }
void ServiceWorker::stop() { impl_->stop(); }
void ServiceWorker::post(std::function<void()> fn) {
  SWIPC_REQUIRE(impl_->served(), "post() before listen()");
  impl_->loop_->post(std::move(fn));
}
void ServiceWorker::wake() {
  if (impl_->served()) impl_->loop_->wake();
}
int ServiceWorker::fd() const { return impl_->served() ? impl_->loop_->fd() : -1; }
void ServiceWorker::dispatch() {
  if (impl_->served()) impl_->dispatchOnce(Clock::now());
}
void ServiceWorker::onMessage(std::function<void(ExtendableMessageEvent&)> fn) { impl_->messages_.onMessage(std::move(fn)); }
void ServiceWorker::onMessageError(std::function<void(const MessageErrorEvent&, const ClientHandle&)> fn) {
  impl_->messages_.onMessageError(std::move(fn));
}
void ServiceWorker::onUndelivered(std::function<void(const ClientId&, MessageSeq, const Error&)> fn) {
  impl_->outbound_.onUndelivered(std::move(fn));
}
void ServiceWorker::onClientAttached(std::function<void(const ClientHandle&)> fn) { impl_->onAttached_ = std::move(fn); }
void ServiceWorker::onClientDetached(std::function<void(const ClientId&, const std::string&)> fn) {
  impl_->clients_.onDetached(std::move(fn));
}
TypeRegistry& ServiceWorker::types() { return impl_->types_; }
void ServiceWorker::onSync(std::function<void(SyncEventPtr)> fn) { impl_->sync_.onSync(std::move(fn)); }
void ServiceWorker::onPeriodicSync(std::function<void(SyncEventPtr)> fn) { impl_->sync_.onPeriodicSync(std::move(fn)); }
Result<void> ServiceWorker::registerSync(const std::string& tag, std::optional<Value> data) {
  return impl_->sync_.registerTag(tag, data);
}
Result<std::vector<std::string>> ServiceWorker::syncTags() const { return impl_->sync_.getTags(); }
std::vector<SyncTagState> ServiceWorker::syncState() const { return impl_->sync_.state(); }
Result<void> ServiceWorker::setOnline(bool online) { return impl_->sync_.setOnline(online); }
bool ServiceWorker::online() const { return impl_->sync_.online(); }
void ServiceWorker::onBackgroundFetchSuccess(std::function<void(BackgroundFetchEventPtr)> fn) {
  impl_->fetch_.onSuccess(std::move(fn));
}
void ServiceWorker::onBackgroundFetchFail(std::function<void(BackgroundFetchEventPtr)> fn) {
  impl_->fetch_.onFail(std::move(fn));
}
void ServiceWorker::onBackgroundFetchAbort(std::function<void(BackgroundFetchEventPtr)> fn) {
  impl_->fetch_.onAbort(std::move(fn));
}
std::vector<BackgroundFetchState> ServiceWorker::backgroundFetches() const { return impl_->fetch_.registrations(); }
ServiceWorker::TimerId ServiceWorker::setTimeout(std::chrono::milliseconds delay, std::function<void()> fn) {
  return impl_->loop_->addTimer(deadlineIn(delay), [fn = std::move(fn)] { core::callUser("a setTimeout callback", fn); });
}
void ServiceWorker::clearTimeout(TimerId id) { impl_->loop_->cancelTimer(id); }
Clients& ServiceWorker::clients() { return clients_; }
const Clients& ServiceWorker::clients() const { return clients_; }

Value Counters::toValue() const {
  return Value::map({{"attached", int64_t(attached)},
                     {"detached", int64_t(detached)},
                     {"attachTimeouts", int64_t(attachTimeouts)},
                     {"versionMismatches", int64_t(versionMismatches)},
                     {"rejectedClients", int64_t(rejectedClients)},
                     {"uidQuotaRefused", int64_t(uidQuotaRefused)},
                     {"fdLimitRefused", int64_t(fdLimitRefused)},
                     {"protocolViolations", int64_t(protocolViolations)},
                     {"messagesIn", int64_t(messagesIn)},
                     {"messagesOut", int64_t(messagesOut)},
                     {"messageErrors", int64_t(messageErrors)},
                     {"queueFull", int64_t(queueFull)},
                     {"unresponsive", int64_t(unresponsive)},
                     {"undelivered", int64_t(undelivered)},
                     {"oversize", int64_t(oversize)},
                     {"repliesDropped", int64_t(repliesDropped)},
                     {"windowsOpened", int64_t(windowsOpened)},
                     {"openWindowFailures", int64_t(openWindowFailures)},
                     {"claimed", int64_t(claimed)},
                     {"broadcastsPosted", int64_t(broadcastsPosted)},
                     {"channelsOpen", int64_t(channelsOpen)},
                     {"portMessagesRouted", int64_t(portMessagesRouted)},
                     {"portsTransferred", int64_t(portsTransferred)},
                     {"portsClosed", int64_t(portsClosed)},
                     {"portMessagesDropped", int64_t(portMessagesDropped)},
                     {"portsOpen", int64_t(portsOpen)},
                     {"syncFired", int64_t(syncFired)},
                     {"syncSucceeded", int64_t(syncSucceeded)},
                     {"syncFailed", int64_t(syncFailed)},
                     {"syncTimedOut", int64_t(syncTimedOut)},
                     {"syncGaveUp", int64_t(syncGaveUp)},
                     {"syncDroppedEntries", int64_t(syncDroppedEntries)},
                     {"fetchStarted", int64_t(fetchStarted)},
                     {"fetchSucceeded", int64_t(fetchSucceeded)},
                     {"fetchFailed", int64_t(fetchFailed)},
                     {"fetchAborted", int64_t(fetchAborted)},
                     {"fetchResumed", int64_t(fetchResumed)},
                     {"fetchRetries", int64_t(fetchRetries)},
                     {"fetchBytes", int64_t(fetchBytes)},
                     {"channelQuotaRefused", int64_t(channelQuotaRefused)},
                     {"unresponsiveDisconnects", int64_t(unresponsiveDisconnects)},
                     {"openWindowRefused", int64_t(openWindowRefused)},
                     {"portQuotaRefused", int64_t(portQuotaRefused)},
                     {"federationPostsOut", int64_t(federationPostsOut)},
                     {"federationPostsIn", int64_t(federationPostsIn)},
                     {"federationNotSent", int64_t(federationNotSent)},
                     {"federationMissed", int64_t(federationMissed)},
                     {"federationRejected", int64_t(federationRejected)},
                     {"federationDisconnects", int64_t(federationDisconnects)},
                     {"federationBundled", int64_t(federationBundled)},
                     {"federationLocalOnly", int64_t(federationLocalOnly)},
                     {"federationRequestsOut", int64_t(federationRequestsOut)},
                     {"federationRequestsIn", int64_t(federationRequestsIn)},
                     {"federationTimeouts", int64_t(federationTimeouts)}});
}

}  // namespace swipc
