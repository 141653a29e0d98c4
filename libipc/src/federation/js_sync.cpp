#include "federation/js_sync.h"

#include "common/thread_name.h"
#include "core/user_code.h"
#include "federation/js_sync_internal.h"

namespace swipc::federation {

// ------------------------------------------------------------------------------------------------ the event

namespace jsdetail {

/// One event as service-worker code holds it. Settles go to the worker; the timeout is a timer
/// on the loop, as for a local event.
class JsEvent final : public SyncEvent {
 public:
  JsEvent(std::weak_ptr<JetStreamSync::Side> side, uint64_t id, std::string tag, int attempt, bool lastChance,
          std::vector<JsEntry> entries)
      : side_(std::move(side)), id_(id), tag_(std::move(tag)), attempt_(attempt), lastChance_(lastChance) {
    for (auto& e : entries) {
      keys_[e.seq] = e.key;
      entries_.push_back(SyncEntry{e.seq, std::move(e.data)});
    }
  }

  const std::string& tag() const override { return tag_; }
  uint32_t attempt() const override { return static_cast<uint32_t>(attempt_); }
  bool lastChance() const override { return lastChance_; }
  bool periodic() const override { return false; }
  const std::vector<SyncEntry>& entries() const override { return entries_; }
  Result<void> done(uint64_t seq) override;
  void resolve() override { settle(sync::SyncOutcome::SUCCESS); }
  void reject(const std::string&) override { settle(sync::SyncOutcome::FAILURE); }
  bool settled() const override { return settled_; }
  bool aborted() const override { return aborted_; }
  void onAbort(std::function<void()> fn) override {
    if (settled_ && !aborted_) return;
    if (aborted_) {
      core::callUser("a sync event's abort handler", fn);
      return;
    }
    abortHandlers_.push_back(std::move(fn));
  }

  void setTimer(core::EventLoop::TimerId id) { timer_ = id; }
  void settle(sync::SyncOutcome outcome);
  void timeout();
  /// The backend stopped: cancel the timer, settle nothing more.
  void detach(JetStreamSync::Side& side) {
    if (timer_ != 0) side.loop->cancelTimer(timer_);
    timer_ = 0;
    side_.reset();
    abortHandlers_.clear();  // they may hold the event
  }

 private:
  std::weak_ptr<JetStreamSync::Side> side_;
  uint64_t id_;
  std::string tag_;
  int attempt_;
  bool lastChance_;
  std::vector<SyncEntry> entries_;
  std::map<uint64_t, std::string> keys_;  // seq -> KV key, until done
  uint64_t progress_ = 0;
  bool settled_ = false;
  bool aborted_ = false;
  core::EventLoop::TimerId timer_ = 0;
  std::vector<std::function<void()>> abortHandlers_;
};

}  // namespace jsdetail

void JetStreamSync::Side::fire(uint64_t id, std::string tag, int attempt, std::vector<JsEntry> entries) {
  ++counters.fired;
  auto event = std::make_shared<JsEvent>(weak_from_this(), id, std::move(tag), attempt,
                                         attempt >= options.retry.maxAttempts, std::move(entries));
  // The timer holds the event until it settles or times out (service-worker code may drop it).
  event->setTimer(loop->addTimer(Clock::now() + options.timeout, [event] { event->timeout(); }));
  events[id] = event;
  handler(event);  // SyncFeature::hand: the service worker's handler, guarded as for local events
}

Result<void> JsEvent::done(uint64_t seq) {
  auto it = keys_.find(seq);
  if (it == keys_.end()) {
    if (std::any_of(entries_.begin(), entries_.end(), [seq](const SyncEntry& e) { return e.seq == seq; })) return {};
    return makeError(Errc::NOT_FOUND, "entry " + std::to_string(seq) + " was not given to this sync event");
  }
  auto side = side_.lock();
  if (!side) return makeError(Errc::INVALID_STATE, "Background Sync has stopped");
  // Queued before this event's settle: the worker deletes it first.
  JsEntry entry;
  entry.seq = seq;
  entry.key = it->second;
  side->forgetEntry(tagKey(tag_), entry.key);
  side->shared->enqueue([shared = side->shared, id = id_, entry = std::move(entry)] { shared->entryDone(id, entry); },
                        milliseconds(0), true);
  keys_.erase(it);
  ++progress_;
  return {};
}

void JsEvent::settle(sync::SyncOutcome outcome) {
  if (settled_) return;
  settled_ = true;
  abortHandlers_.clear();  // they may hold the event: no cycle past the settle
  auto side = side_.lock();
  if (!side) return;
  side->events.erase(id_);
  if (timer_ != 0 && outcome != sync::SyncOutcome::TIMEOUT) side->loop->cancelTimer(timer_);
  timer_ = 0;
  switch (outcome) {
    case sync::SyncOutcome::SUCCESS: ++side->counters.succeeded; break;
    case sync::SyncOutcome::FAILURE: ++side->counters.failed; break;
    case sync::SyncOutcome::TIMEOUT:
      ++side->counters.failed;
      ++side->counters.timedOut;
      break;
  }
  std::vector<JsEntry> left;
  for (const auto& [seq, key] : keys_) {
    left.emplace_back();
    left.back().seq = seq;
    left.back().key = key;
  }
  side->shared->enqueue([shared = side->shared, id = id_, outcome, progress = progress_, left = std::move(left)] {
    shared->settle(id, outcome, progress, left);
  }, milliseconds(0), true);
}

void JsEvent::timeout() {
  if (settled_) return;
  timer_ = 0;
  aborted_ = true;
  auto handlers = std::move(abortHandlers_);
  settle(sync::SyncOutcome::TIMEOUT);
  for (auto& fn : handlers) core::callUser("a sync event's abort handler", fn);
}

// ------------------------------------------------------------------------------------------------ JetStreamSync

JetStreamSync::JetStreamSync(Config config) : config_(std::move(config)) {}

JetStreamSync::~JetStreamSync() { stop(); }

Result<void> JetStreamSync::start(core::EventLoop& loop, const sync::SyncOptions& options, Handler handler) {
  stop();
  JsQueue::Config qc;
  qc.servers = config_.servers;
  qc.scope = config_.scope;
  qc.node = config_.node;
  qc.ackWait = 2 * options.timeout;
  shared_ = std::make_unique<Shared>(std::move(qc));
  side_ = std::make_shared<Side>();
  side_->shared = shared_.get();
  side_->loop = &loop;
  side_->options = options;
  side_->handler = std::move(handler);
  shared_->loop = &loop;
  shared_->options = options;
  shared_->node = config_.node;
  shared_->side = side_;
  Shared* s = shared_.get();
  s->worker = std::thread([s] {
    nameThisThread("sync-js-worker");
    s->runWorker();
  });
  s->fetcher = std::thread([s] {
    nameThisThread("sync-js-fetch");
    s->runFetcher();
  });
  s->watcher = std::thread([s] {
    nameThisThread("sync-js-watch");
    s->runWatcher();
  });
  return {};
}

void JetStreamSync::stop() {
  if (!shared_) return;
  stopped_ = counters();
  {
    std::lock_guard lock(shared_->mu);
    shared_->stopping = true;
  }
  shared_->cv.notify_all();
  for (std::thread* t : {&shared_->fetcher, &shared_->watcher, &shared_->worker})
    if (t->joinable()) t->join();
  // Events still held by service-worker code become inert; their timers go.
  for (auto& [id, weak] : side_->events)
    if (auto e = weak.lock()) e->detach(*side_);
  side_.reset();
  shared_.reset();
}

void JetStreamSync::registerTag(const std::string& tag, const std::optional<Value>& data, Done done) {
  if (!shared_) {
    done(makeError(Errc::INVALID_STATE, "Background Sync is not running"));
    return;
  }
  // A page can register faster than JetStream commits: what waits here is bounded.
  if (side_->pendingRegisters >= MAX_PENDING_REGISTERS) {
    done(makeError(Errc::QUEUE_FULL, std::to_string(MAX_PENDING_REGISTERS) +
                                         " registrations already wait for JetStream: try again later"));
    return;
  }
  ++side_->pendingRegisters;
  // The answer runs on the loop only while the Side is alive (Shared::toLoop), so the raw pointer holds.
  Done counted = [side = side_.get(), done = std::move(done)](Result<void> r) {
    --side->pendingRegisters;
    done(std::move(r));
  };
  shared_->enqueue([s = shared_.get(), tag, data, counted = std::move(counted)]() mutable {
    s->registerTag(tag, data, std::move(counted));
  });
}

std::vector<std::string> JetStreamSync::tags() const {
  std::vector<std::pair<int64_t, std::string>> live;
  if (side_)
    for (const auto& [h, m] : side_->records)
      if (m.rec.live()) live.emplace_back(m.rec.order, m.rec.tag);
  std::sort(live.begin(), live.end());
  std::vector<std::string> out;
  for (auto& [order, tag] : live) out.push_back(std::move(tag));
  return out;
}

std::vector<SyncTagState> JetStreamSync::state() const {
  std::vector<std::pair<int64_t, SyncTagState>> rows;
  if (!side_) return {};
  const int64_t now = nowMs();
  for (const auto& [h, m] : side_->records) {
    if (!m.rec.live()) continue;
    SyncTagState s;
    s.tag = m.rec.tag;
    s.state = m.rec.state;
    s.attempts = static_cast<uint32_t>(m.rec.attempts);
    if (auto it = side_->entryKeys.find(h); it != side_->entryKeys.end()) s.entries = it->second.size();
    if (m.rec.state == "waiting" && m.rec.nextMs > now) s.nextAttemptMs = m.rec.nextMs - now;
    rows.emplace_back(m.rec.order, std::move(s));
  }
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<SyncTagState> out;
  for (auto& [order, s] : rows) out.push_back(std::move(s));
  return out;
}

void JetStreamSync::setOnline(bool online) {
  if (!shared_) return;
  shared_->online = online;
  shared_->cv.notify_all();
}

sync::SyncCounters JetStreamSync::counters() const { return side_ ? side_->counters : stopped_; }

std::string JetStreamSync::describe() const {
  JsQueue::Config qc;
  qc.scope = config_.scope;
  JsQueue names(qc);
  return "JetStream (stream " + names.stream() + ", bucket " + names.bucket() + ", node " + config_.node + ")";
}

}  // namespace swipc::federation
