#include "sync/sync_feature.h"

#include "core/log.h"
#include "core/user_code.h"
#include "wire/value_codec.h"

namespace swipc::sync {

namespace {

Error notStarted() { return makeError(Errc::INVALID_STATE, "Background Sync is not running (the daemon is not listening)"); }

/// swipc::SyncEvent over the scheduler's event: what service-worker code holds.
class Event final : public swipc::SyncEvent {
 public:
  explicit Event(sync::SyncEvent e) : e_(std::move(e)) {
    entries_.reserve(e_.entries.size());
    for (auto& entry : e_.entries) entries_.push_back(swipc::SyncEntry{entry.seq, std::move(entry.data)});
  }
  const std::string& tag() const override { return e_.tag; }
  uint32_t attempt() const override { return static_cast<uint32_t>(e_.attempt); }
  bool lastChance() const override { return e_.lastChance; }
  bool periodic() const override { return e_.periodic; }
  const std::vector<swipc::SyncEntry>& entries() const override { return entries_; }
  Result<void> done(uint64_t seq) override { return e_.completion->entryDone(seq); }
  void resolve() override { e_.completion->resolve(); }
  void reject(const std::string& reason) override { e_.completion->reject(reason); }
  bool settled() const override { return e_.completion->settled(); }
  bool aborted() const override { return e_.completion->aborted(); }
  void onAbort(std::function<void()> fn) override {
    e_.completion->onAbort([fn = std::move(fn)] { core::callUser("a sync event's abort handler", fn); });
  }

 private:
  sync::SyncEvent e_;
  std::vector<swipc::SyncEntry> entries_;
};

}  // namespace

SyncFeature::~SyncFeature() { stop(); }

Result<void> SyncFeature::start(daemon::FeatureHost& host) {
  auto dir = host.stateDir();
  if (!dir) return dir.error();
  auto store = SyncStore::open(*dir);
  if (!store) return store.error();
  auto scheduler = SyncScheduler::create(host.loop(), **store, options_.scheduling);
  if (!scheduler) return scheduler.error();
  SyncScheduler* s = scheduler->get();
  auto connectivity = Connectivity::create(host.loop(), options_.connectivity, options_.startOffline,
                                           [this, s](bool online) {
                                             s->setOnline(online);
                                             if (backend_) backend_->setOnline(online);
                                           });
  if (!connectivity) return connectivity.error();
  host_ = &host;
  store_ = std::move(*store);
  scheduler_ = std::move(*scheduler);
  connectivity_ = std::move(*connectivity);
  scheduler_->setHandler([this](sync::SyncEvent e) { deliver(std::move(e)); });
  scheduler_->setOnline(connectivity_->online());
  if (backend_) {
    if (auto r = backend_->start(host.loop(), options_.scheduling, [this](SyncEventPtr e) { hand(false, e); }); !r) {
      stop();
      return r.error();
    }
    backend_->setOnline(connectivity_->online());
  }
  host.handle(schema::Envelope::SYNC_CALL,
              [this](daemon::ClientRecord& c, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>&) {
                return onCall(c, env);
              });
  core::log().info("background sync: state={} connectivity={} online={}{}{}", store_->databasePath().string(),
                   connectivityModeName(connectivity_->mode()), connectivity_->online(),
                   backend_ ? " one-shot tags in " : "", backend_ ? backend_->describe() : "");
  return {};
}

void SyncFeature::stop() {
  if (scheduler_) stopped_ = counters();
  if (backend_) backend_->stop();
  connectivity_.reset();
  scheduler_.reset();  // outstanding events become inert
  store_.reset();
  host_ = nullptr;
}

void SyncFeature::deliver(sync::SyncEvent e) {
  const bool periodic = e.periodic;
  hand(periodic, std::make_shared<Event>(std::move(e)));
}

void SyncFeature::hand(bool periodic, const SyncEventPtr& event) {
  const Handler& handler = periodic ? onPeriodic_ : onSync_;
  if (!handler) {
    // No service-worker code for it: the web resolves an event nobody waits on.
    event->resolve();
    return;
  }
  bool threw = true;
  core::callUser(periodic ? "the periodicsync handler" : "the sync handler", [&] {
    handler(event);
    threw = false;
  });
  if (threw && !event->settled()) event->reject("the handler threw");
}

bool SyncFeature::onCall(daemon::ClientRecord& c, schema::Envelope::Reader env) {
  auto call = env.getSyncCall();
  const uint64_t callId = call.getCallId();
  std::optional<Result<std::vector<std::string>>> tags;
  Result<void> done;
  switch (call.which()) {
    case schema::SyncCall::REGISTER: {
      auto r = call.getRegister();
      std::optional<Value> data;
      if (r.getHasData()) {
        auto v = wire::readValue(r.getData());
        if (!v) {
          done = v.error();
          break;
        }
        data = std::move(*v);
      }
      std::string tag(r.getTag().cStr(), r.getTag().size());
      if (backend_ && scheduler_) {
        if (auto ok = checkTag(tag); !ok) {
          done = ok.error();
          break;
        }
        // Committed over the network: answered when the backend says so (if the page is still here).
        backend_->registerTag(tag, data, [this, client = c.id, callId](Result<void> result) {
          answer(client, callId, result, std::nullopt);
        });
        return true;
      }
      done = registerTag(tag, data);
      break;
    }
    case schema::SyncCall::GET_TAGS: tags = getTags(); break;
    case schema::SyncCall::PERIODIC_REGISTER: {
      auto r = call.getPeriodicRegister();
      done = registerPeriodic(std::string(r.getTag().cStr(), r.getTag().size()),
                              std::chrono::milliseconds(std::min<uint64_t>(r.getMinIntervalMs(), INT64_MAX / 2)));
      break;
    }
    case schema::SyncCall::PERIODIC_GET_TAGS: tags = getPeriodicTags(); break;
    case schema::SyncCall::PERIODIC_UNREGISTER: {
      auto t = call.getPeriodicUnregister();
      done = unregisterPeriodic(std::string(t.cStr(), t.size()));
      break;
    }
    default: done = makeError(Errc::TYPE, "unknown Background Sync call"); break;
  }
  if (tags && !*tags) done = tags->error();
  answer(c.id, callId, done, tags);
  return true;
}

void SyncFeature::answer(const ClientId& client, uint64_t callId, const Result<void>& done,
                         const std::optional<Result<std::vector<std::string>>>& tags) {
  if (!host_) return;
  daemon::ClientRecord* c = host_->clients().findAlive(client);
  if (!c) return;  // it went away before the answer: its page said Disconnected
  host_->outbound().sendSimple(*c, [&](schema::Envelope::Builder e) {
    auto result = e.initSyncResult();
    result.setCallId(callId);
    if (!done) {
      auto err = result.initError();
      err.setName(std::string(errorName(done.error().code)));
      err.setMessage(done.error().message);
    } else if (tags) {
      auto list = result.initTags(static_cast<unsigned>((*tags)->size()));
      for (unsigned i = 0; i < list.size(); ++i) list.set(i, (**tags)[i]);
    } else {
      result.setDone();
    }
  });
}

Result<void> SyncFeature::registerTag(const std::string& tag, const std::optional<Value>& data) {
  if (!scheduler_) return notStarted();
  if (!backend_) return scheduler_->registerTag(tag, data);
  if (auto ok = checkTag(tag); !ok) return ok.error();
  backend_->registerTag(tag, data, [this, tag](Result<void> r) {
    if (r) return;
    ++backendErrors_;
    core::log().error("background sync: service-worker registration of '{}' not committed: {}", tag, r.error().describe());
  });
  return {};
}

Result<std::vector<std::string>> SyncFeature::getTags() const {
  if (!scheduler_) return notStarted();
  if (backend_) return backend_->tags();
  return scheduler_->getTags();
}

Result<void> SyncFeature::registerPeriodic(const std::string& tag, std::chrono::milliseconds minInterval) {
  if (!scheduler_) return notStarted();
  return scheduler_->registerPeriodic(tag, minInterval);
}

Result<void> SyncFeature::unregisterPeriodic(const std::string& tag) {
  if (!scheduler_) return notStarted();
  return scheduler_->unregisterPeriodic(tag);
}

Result<std::vector<std::string>> SyncFeature::getPeriodicTags() const {
  if (!scheduler_) return notStarted();
  return scheduler_->getPeriodicTags();
}

Result<void> SyncFeature::setOnline(bool online) {
  if (!connectivity_) return notStarted();
  return connectivity_->setOnline(online);
}

bool SyncFeature::online() const { return connectivity_ && connectivity_->online(); }

std::vector<SyncTagState> SyncFeature::state() {
  std::vector<SyncTagState> out;
  if (!scheduler_) return out;
  if (backend_) return backend_->state();
  auto snapshot = scheduler_->state();
  if (!snapshot) {
    core::log().warn("background sync: state unavailable: {}", snapshot.error().describe());
    return out;
  }
  const WallTime now = wallNow();
  for (const auto& t : *snapshot) {
    SyncTagState s;
    s.tag = t.tag;
    s.state = std::string(tagStateName(t.state));
    s.attempts = static_cast<uint32_t>(t.attempts);
    s.entries = t.entries;
    if (t.nextAttempt && *t.nextAttempt > now) s.nextAttemptMs = (*t.nextAttempt - now).count();
    out.push_back(std::move(s));
  }
  return out;
}

SyncCounters SyncFeature::counters() const {
  if (!scheduler_) return stopped_;
  SyncCounters c = scheduler_->counters();
  c.storeErrors += backendErrors_;
  if (backend_) {
    const SyncCounters b = backend_->counters();
    c.fired += b.fired;
    c.succeeded += b.succeeded;
    c.failed += b.failed;
    c.timedOut += b.timedOut;
    c.gaveUp += b.gaveUp;
    c.droppedEntries += b.droppedEntries;
    c.storeErrors += b.storeErrors;
  }
  return c;
}

}  // namespace swipc::sync
