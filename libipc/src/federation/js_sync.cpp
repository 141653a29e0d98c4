#include "federation/js_sync.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "core/log.h"
#include "core/user_code.h"
#include "federation/js_queue.h"

namespace swipc::federation {

namespace {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

/// How often the mirror's watch is made anew (see runWatcher).
constexpr milliseconds RESYNC{5000};

int64_t nowMs() { return sync::wallNow().time_since_epoch().count(); }
int64_t nowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class JsEvent;

/// A change of the bucket, as the watch thread saw it.
struct KvChange {
  std::string key;
  bool put = true;  // else deleted / purged
  uint64_t rev = 0;
  std::string value;
};

}  // namespace

// ------------------------------------------------------------------------------------------------ loop side

/// The loop thread's half: what the mirror knows, the counters, the handler, the events.
struct JetStreamSync::Side : std::enable_shared_from_this<JetStreamSync::Side> {
  Shared* shared = nullptr;
  core::EventLoop* loop = nullptr;
  sync::SyncOptions options;
  Handler handler;
  struct Mirrored {
    JsRecord rec;
    uint64_t rev = 0;
  };
  std::map<std::string, Mirrored> records;                 // by h
  std::map<std::string, std::set<std::string>> entryKeys;  // by h
  sync::SyncCounters counters;
  std::map<uint64_t, std::weak_ptr<JsEvent>> events;  // unsettled, by id

  void apply(const std::string& h, const JsRecord& rec, uint64_t rev) {
    auto& m = records[h];
    if (rev < m.rev) return;  // the watch already brought something newer
    m.rec = rec;
    m.rev = rev;
  }
  void change(const KvChange& c);
  void fire(uint64_t id, std::string tag, int attempt, std::vector<JsEntry> entries);
};

// ------------------------------------------------------------------------------------------------ threads

struct JetStreamSync::Shared {
  explicit Shared(JsQueue::Config c) : q(std::move(c)) {}

  JsQueue q;
  core::EventLoop* loop = nullptr;
  sync::SyncOptions options;
  std::string node;
  std::weak_ptr<Side> side;  // locked on the loop thread only

  std::mutex mu;
  std::condition_variable cv;
  /// A job of the worker. At stop, `drain` jobs (settles, entries done) still run, for a
  /// bounded time, so that work done is not handed out again; the others run `drop` instead.
  struct Job {
    std::function<void()> run;
    bool drain = false;
    std::function<void()> drop;
  };
  std::multimap<SteadyClock::time_point, Job> jobs;  // by due time
  bool stopping = false;
  std::atomic<bool> opened{false};
  std::atomic<bool> online{false};
  std::atomic<int> inFlight{0};  // tokens taken and not finished
  std::thread worker, fetcher, watcher;

  /// Worker only: the events this node runs.
  struct Firing {
    natsMsg* msg = nullptr;
    std::string h;
    uint64_t gen = 0;
    uint64_t token = 0;
    uint64_t delivery = 0;
    int settleTries = 0;
  };
  std::map<uint64_t, Firing> firing;
  uint64_t nextEvent = 1;

  void enqueue(std::function<void()> job, milliseconds delay = milliseconds(0), bool drain = false) {
    {
      std::lock_guard lock(mu);
      jobs.emplace(SteadyClock::now() + delay, Job{std::move(job), drain, nullptr});
    }
    cv.notify_all();
  }
  milliseconds ackWait() const { return 2 * options.timeout; }
  /// Runs `fn` with the loop's half on the loop thread, unless it is gone by then.
  void toLoop(std::function<void(Side&)> fn) {
    loop->post([w = side, fn = std::move(fn)] {
      if (auto s = w.lock()) fn(*s);
    });
  }
  void tokenFinished() {
    inFlight.fetch_sub(1);
    cv.notify_all();
  }

  void runWorker();
  void runFetcher();
  void runWatcher();
  void takeToken(natsMsg* msg, SteadyClock::time_point fetched);
  /// Tells JetStream event `id` is still running (every ack wait / 3 while it is).
  void keepAlive(uint64_t id);
  void settle(uint64_t id, sync::SyncOutcome outcome, uint64_t progress);
  void registerTag(const std::string& tag, const std::optional<Value>& data, Done done);
};

void JetStreamSync::Shared::runWorker() {
  bool warned = false;
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu);
      if (stopping) break;
      if (!opened.load()) {
        lock.unlock();
        auto r = q.open();
        lock.lock();
        if (r) {
          opened = true;
          core::log().info("background sync: JetStream ready: stream {} and bucket {} (replicas {}), node {}", q.stream(),
                           q.bucket(), q.replicas(), node);
          cv.notify_all();
        } else {
          if (!warned) core::log().warn("background sync: JetStream not ready yet ({}): retrying", r.error().describe());
          warned = true;
        }
      }
      if (!jobs.empty() && jobs.begin()->first <= SteadyClock::now()) {
        job = std::move(jobs.begin()->second);
        jobs.erase(jobs.begin());
      } else {
        auto until = SteadyClock::now() + (opened.load() ? milliseconds(1000) : milliseconds(500));
        if (!jobs.empty()) until = std::min(until, jobs.begin()->first);
        cv.wait_until(lock, until);
        continue;
      }
    }
    job.run();
  }
  // Stopping. Settles and entries done still go to JetStream (for up to 3 s), so that nothing
  // finished runs again; tokens taken but not started go back; then the events still running
  // here go back at once (another node takes them over; the interrupted attempt does not count).
  // Other jobs are dropped: their callers hear nothing more (the loop's half is gone).
  const auto deadline = SteadyClock::now() + milliseconds(3000);
  for (;;) {
    Job job;
    {
      std::lock_guard lock(mu);
      if (jobs.empty()) break;
      job = std::move(jobs.begin()->second);
      jobs.erase(jobs.begin());
    }
    if (job.drain && opened.load() && SteadyClock::now() < deadline) {
      job.run();
    } else if (job.drop) {
      job.drop();
    }
  }
  for (auto& [id, f] : firing) {
    if (opened.load()) natsMsg_Nak(f.msg, nullptr);
    natsMsg_Destroy(f.msg);
  }
  firing.clear();
}

void JetStreamSync::Shared::runFetcher() {
  std::unique_lock lock(mu);
  while (!stopping) {
    const int room = MAX_IN_FLIGHT - inFlight.load();
    if (!opened.load() || !online.load() || room <= 0) {
      cv.wait_for(lock, milliseconds(250));
      continue;
    }
    lock.unlock();
    auto msgs = q.fetch(std::min(room, 8), milliseconds(500));
    lock.lock();
    if (!msgs) {
      core::log().debug("background sync: fetch: {}", msgs.error().describe());
      cv.wait_for(lock, milliseconds(500));
      continue;
    }
    const auto fetched = SteadyClock::now();
    for (natsMsg* m : *msgs) {
      inFlight.fetch_add(1);
      jobs.emplace(fetched, Job{[this, m, fetched] { takeToken(m, fetched); }, false, [this, m] {
                                  if (opened.load()) natsMsg_Nak(m, nullptr);
                                  natsMsg_Destroy(m);
                                  tokenFinished();
                                }});
    }
    if (!msgs->empty()) cv.notify_all();
  }
}

void JetStreamSync::Shared::runWatcher() {
  std::unique_lock lock(mu);
  while (!stopping) {
    if (!opened.load()) {
      cv.wait_for(lock, milliseconds(250));
      continue;
    }
    lock.unlock();
    kvWatchOptions wo;
    kvWatchOptions_Init(&wo);
    kvWatcher* w = nullptr;
    natsStatus s = kvStore_WatchAll(&w, q.kv(), &wo);
    if (s == NATS_OK) {
      // A watch begins with the last value of every key (tombstones and purge markers included),
      // so applying it again by revision is harmless: the watch is made anew every RESYNC, which
      // repairs the mirror even if the watch's consumer missed something under load.
      const auto until = SteadyClock::now() + RESYNC;
      std::vector<KvChange> batch;
      auto flush = [&] {
        if (batch.empty()) return;
        toLoop([b = std::move(batch)](Side& side) {
          for (const auto& c : b) side.change(c);
        });
        batch.clear();
      };
      for (;;) {
        {
          std::lock_guard g(mu);
          if (stopping) break;
        }
        if (SteadyClock::now() >= until) break;
        kvEntry* e = nullptr;
        s = kvWatcher_Next(&e, w, 250);
        if (s == NATS_TIMEOUT) {
          flush();
          continue;
        }
        if (s != NATS_OK) break;
        if (!e) {  // the initial values are in
          flush();
          continue;
        }
        KvChange c;
        c.key = kvEntry_Key(e);
        c.put = kvEntry_Operation(e) == kvOp_Put;
        c.rev = kvEntry_Revision(e);
        if (c.put) c.value.assign(static_cast<const char*>(kvEntry_Value(e)), kvEntry_ValueLen(e));
        kvEntry_Destroy(e);
        batch.push_back(std::move(c));
        if (batch.size() >= 256) flush();
      }
      flush();
      kvWatcher_Destroy(w);
    }
    lock.lock();
    if (!stopping && s != NATS_OK && s != NATS_TIMEOUT) {
      core::log().debug("background sync: watch of {} ended ({}): again", q.bucket(), natsStatus_GetText(s));
      cv.wait_for(lock, milliseconds(500));
    }
  }
}

void JetStreamSync::Side::change(const KvChange& c) {
  if (c.key.rfind("t.", 0) == 0) {
    const std::string h = c.key.substr(2);
    if (!c.put) {
      records.erase(h);
      return;
    }
    auto rec = JsRecord::parse(c.value.data(), static_cast<int>(c.value.size()));
    if (!rec) {
      core::log().warn("background sync: {}: {} (ignored)", c.key, rec.error().describe());
      return;
    }
    apply(h, *rec, c.rev);
  } else if (c.key.rfind("e.", 0) == 0 && c.key.size() > 35) {
    const std::string h = c.key.substr(2, 32);
    if (c.put) {
      entryKeys[h].insert(c.key);
    } else if (auto it = entryKeys.find(h); it != entryKeys.end()) {
      it->second.erase(c.key);
      if (it->second.empty()) entryKeys.erase(it);
    }
  }
}

// ------------------------------------------------------------------------------------------------ the worker's operations

void JetStreamSync::Shared::registerTag(const std::string& tag, const std::optional<Value>& data, Done done) {
  auto answer = [this, &done](Result<void> r, std::string h = {}, std::optional<JsRecord> rec = {}, uint64_t rev = 0,
                              std::string entryKey = {}) {
    toLoop([done = std::move(done), r = std::move(r), h, rec, rev, entryKey](Side& side) {
      if (rec) side.apply(h, *rec, rev);
      if (!entryKey.empty()) side.entryKeys[h].insert(entryKey);
      done(r);
    });
  };
  if (!opened.load())
    return answer(makeError(Errc::DISCONNECTED, "JetStream is not reachable (with --nats, Background Sync "
                                                "registrations are kept there): not registered"));
  const std::string h = tagKey(tag);
  std::string entryKey;
  if (data) {
    auto entry = q.addEntry(h, *data);
    if (!entry) return answer(entry.error());
    entryKey = entry->key;
  }
  for (int tries = 0; tries < 20; ++tries) {
    auto got = q.get(h);
    if (!got) return answer(got.error());
    JsRecord rec;
    uint64_t rev = 0;
    if (*got) std::tie(rec, rev) = **got;
    JsRecord next = rec;
    bool token = true;
    if (!*got || !rec.live()) {
      next = JsRecord{};
      next.tag = tag;
      next.order = nowNs();
      next.gen = *got ? rec.gen + 1 : 1;
    } else if (rec.state == "pending") {
      return answer(Result<void>{}, h, rec, rev, entryKey);  // coalesced: its token is on its way
    } else if (rec.state == "waiting") {
      next.state = "pending";  // at once: a new generation, the delayed token is void
      next.nextMs = 0;
      next.gen = rec.gen + 1;
    } else {  // firing: fires again once that event settles
      if (rec.refire) return answer(Result<void>{}, h, rec, rev, entryKey);
      next.refire = true;
      token = false;
    }
    if (token) {
      if (auto p = q.publishToken(h, next.gen); !p) return answer(p.error());
    }
    auto put = q.put(h, next, *got ? rev : 0);
    if (!put) return answer(put.error());
    if (*put) return answer(Result<void>{}, h, next, **put, entryKey);
  }
  answer(makeError(Errc::SYSTEM, "the registration of '" + tag + "' kept changing under us (20 tries)"));
}

void JetStreamSync::Shared::takeToken(natsMsg* msg, SteadyClock::time_point fetched) {
  auto drop = [&](bool term) {
    if (term) natsMsg_Term(msg, nullptr);
    natsMsg_Destroy(msg);
    tokenFinished();
  };
  auto later = [&](int64_t delayMs) {
    natsMsg_NakWithDelay(msg, std::max<int64_t>(delayMs, 0), nullptr);
    natsMsg_Destroy(msg);
    tokenFinished();
  };
  // A token that waited here for half its ack wait may be another node's by now: not ours to
  // claim (it comes back, to us or to another node).
  if (SteadyClock::now() - fetched > ackWait() / 2) return drop(false);
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, msg) != NATS_OK) return drop(true);
  const uint64_t streamSeq = meta->Sequence.Stream;
  const uint64_t delivery = meta->NumDelivered;
  jsMsgMetaData_Destroy(meta);
  auto tok = parseToken(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
  if (!tok) {
    core::log().warn("background sync: message {} in {} is not a token (dropped)", streamSeq, q.stream());
    return drop(true);
  }
  for (int tries = 0; tries < 20; ++tries) {
    auto got = q.get(tok->h);
    if (!got && got.error().code == Errc::INVALID_STATE) {  // not a registration we can read
      core::log().error("background sync: token {}: {} (token dropped)", streamSeq, got.error().describe());
      return drop(true);
    }
    if (!got) {
      core::log().warn("background sync: token {}: {} (again in 1 s)", streamSeq, got.error().describe());
      return later(1000);
    }
    if (!*got || (*got)->first.gen < tok->gen) {
      // Its publisher writes the registration right after publishing: wait for it a while
      // (40 deliveries, about 10 s), then the token is void (the write lost a race, or its
      // node died in between).
      return delivery < 40 ? later(250) : drop(true);
    }
    auto [rec, rev] = **got;
    if (!rec.live() || rec.gen != tok->gen) return drop(true);  // an earlier generation's token
    JsRecord next = rec;
    if (rec.state == "firing") {
      if (rec.token != streamSeq) return drop(true);  // a duplicate of the token it runs under
      for (auto& [id, f] : firing) {
        if (f.token == streamSeq) {  // ours, still running: keep the newest delivery to settle
          natsMsg_Destroy(f.msg);
          f.msg = msg;
          tokenFinished();
          return;
        }
      }
      if (delivery <= rec.delivery) return drop(false);  // a delivery older than the claim
      core::log().warn("background sync: tag '{}' was firing on node {} and did not settle within the ack wait: "
                       "taking it over (attempt {} again)",
                       rec.tag, rec.node, rec.refire ? 1 : rec.attempts + 1);
      if (rec.refire) {  // registered again meanwhile: a fresh start, as a local restart does
        next.attempts = 0;
        next.refire = false;
      }
    } else if (rec.state == "waiting" && rec.nextMs > nowMs() + 20) {
      return later(rec.nextMs - nowMs());
    }
    next.state = "firing";
    next.node = node;
    next.token = streamSeq;
    next.delivery = delivery;
    auto put = q.put(tok->h, next, rev);
    if (!put) {
      core::log().warn("background sync: tag '{}': {} (again in 1 s)", rec.tag, put.error().describe());
      return later(1000);
    }
    if (!*put) continue;  // changed meanwhile: look again
    auto entries = q.entries(tok->h);
    if (!entries) {
      // It is ours (firing under this token): its redelivery takes it over.
      core::log().warn("background sync: tag '{}': {} (again in 1 s)", rec.tag, entries.error().describe());
      return later(1000);
    }
    // Entries of an earlier life of the tag, dropped with it (a purge that did not happen).
    std::erase_if(*entries, [&](const JsEntry& e) {
      if (e.seq > next.floor) return false;
      (void)q.purgeEntry(e.key);
      return true;
    });
    const uint64_t id = nextEvent++;
    firing[id] = Firing{msg, tok->h, next.gen, streamSeq, delivery, 0};
    core::log().info("background sync: firing '{}' here (attempt {}, {} entries, token {})", rec.tag,
                     next.attempts + 1, entries->size(), streamSeq);
    enqueue([this, id] { keepAlive(id); }, ackWait() / 3);
    toLoop([id, tag = rec.tag, attempt = next.attempts + 1, h = tok->h, next, rev2 = **put,
            e = std::move(*entries)](Side& side) mutable {
      side.apply(h, next, rev2);
      side.fire(id, std::move(tag), attempt, std::move(e));
    });
    return;
  }
  later(0);
}

void JetStreamSync::Shared::keepAlive(uint64_t id) {
  auto it = firing.find(id);
  if (it == firing.end()) return;  // settled
  if (natsStatus s = natsMsg_InProgress(it->second.msg, nullptr); s != NATS_OK)
    core::log().warn("background sync: event {}: telling JetStream it is in progress: {}", id, natsStatus_GetText(s));
  enqueue([this, id] { keepAlive(id); }, ackWait() / 3);
}

void JetStreamSync::Shared::settle(uint64_t id, sync::SyncOutcome outcome, uint64_t progress) {
  auto it = firing.find(id);
  if (it == firing.end()) return;
  Firing& f = it->second;
  auto finish = [&] {
    natsMsg_Destroy(f.msg);
    firing.erase(it);
    tokenFinished();
  };
  auto again = [&](const Error& e) {
    // JetStream did not answer: try again shortly, for about the ack wait; after that the token
    // has gone to another node anyway.
    const int maxTries = static_cast<int>(std::max<int64_t>(2 * options.timeout.count() / 1000, 5));
    if (++f.settleTries > maxTries) {
      core::log().error("background sync: event {} could not be settled ({}): left to the ack wait", id, e.describe());
      return finish();
    }
    core::log().warn("background sync: settling event {}: {} (again in 1 s)", id, e.describe());
    enqueue([this, id, outcome, progress] { settle(id, outcome, progress); }, milliseconds(1000), true);
  };
  for (int tries = 0; tries < 20; ++tries) {
    auto got = q.get(f.h);
    if (!got) return again(got.error());
    if (!*got || !(*got)->first.live() || (*got)->first.gen != f.gen || (*got)->first.token != f.token ||
        (*got)->first.delivery != f.delivery) {
      core::log().warn("background sync: event {} settled after another node took its tag over (ignored)", id);
      return finish();
    }
    auto [rec, rev] = **got;
    JsRecord next = rec;
    next.node.clear();
    next.token = 0;
    next.delivery = 0;
    enum class Then { ACK, NAK_NOW, NAK_LATER } then = Then::ACK;
    int64_t delayMs = 0;
    std::vector<JsEntry> drop;
    if (rec.refire) {
      next.state = "pending";
      next.attempts = 0;
      next.refire = false;
      next.nextMs = 0;
      next.gen = rec.gen + 1;
      if (auto p = q.publishToken(f.h, next.gen); !p) return again(p.error());
    } else if (outcome == sync::SyncOutcome::SUCCESS) {
      auto left = q.entries(f.h, true);
      if (!left) return again(left.error());
      if (left->empty()) {
        next.state = "removed";
        next.attempts = 0;
      } else if (progress > 0) {
        next.state = "pending";
        next.attempts = 0;
        then = Then::NAK_NOW;
      } else {  // it ignored its entries: no hot loop
        next.state = "waiting";
        delayMs = options.retry.retry.count();
        next.nextMs = nowMs() + delayMs;
        then = Then::NAK_LATER;
      }
    } else {
      const int n = rec.attempts + 1;
      if (n < options.retry.maxAttempts) {
        next.state = "waiting";
        next.attempts = n;
        delayMs = sync::retryDelay(options.retry, n).count();
        next.nextMs = nowMs() + delayMs;
        then = Then::NAK_LATER;
      } else {
        auto left = q.entries(f.h, true);
        if (!left) return again(left.error());
        drop = std::move(*left);
        next.state = "removed";
        next.attempts = n;
        for (const auto& e : drop) next.floor = std::max(next.floor, e.seq);
      }
    }
    auto put = q.put(f.h, next, rev);
    if (!put) return again(put.error());
    if (!*put) continue;  // registered again meanwhile: look again
    for (const auto& e : drop) {
      if (auto p = q.purgeEntry(e.key); !p) core::log().warn("background sync: {}", p.error().describe());
    }
    natsStatus s = then == Then::ACK       ? natsMsg_AckSync(f.msg, nullptr, nullptr)
                   : then == Then::NAK_NOW ? natsMsg_Nak(f.msg, nullptr)
                                           : natsMsg_NakWithDelay(f.msg, delayMs, nullptr);
    if (s != NATS_OK)
      core::log().warn("background sync: tag '{}': acknowledging its token: {} (the ack wait brings it back)", rec.tag,
                       natsStatus_GetText(s));
    const bool gaveUp = !rec.refire && outcome != sync::SyncOutcome::SUCCESS && next.state == "removed";
    if (gaveUp)
      core::log().warn("background sync: tag '{}' failed its last chance (attempt {}): removed with {} entries", rec.tag,
                       next.attempts, drop.size());
    toLoop([h = f.h, next, rev2 = **put, gaveUp, dropped = drop.size()](Side& side) {
      side.apply(h, next, rev2);
      if (gaveUp) {
        ++side.counters.gaveUp;
        side.counters.droppedEntries += dropped;
      }
    });
    return finish();
  }
  again(makeError(Errc::SYSTEM, "the registration kept changing (20 tries)"));
}

// ------------------------------------------------------------------------------------------------ the event

namespace {

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

}  // namespace

void JetStreamSync::Side::fire(uint64_t id, std::string tag, int attempt, std::vector<JsEntry> entries) {
  ++counters.fired;
  auto event = std::make_shared<JsEvent>(weak_from_this(), id, std::move(tag), attempt,
                                         attempt >= options.retry.maxAttempts, std::move(entries));
  // The timer holds the event until it settles or times out (service-worker code may drop it).
  event->setTimer(loop->addTimer(Clock::now() + options.timeout, [event] { event->timeout(); }));
  events[id] = event;
  if (!handler) {  // no service-worker code for it: resolved, as on the web
    event->resolve();
    return;
  }
  bool threw = true;
  core::callUser("the sync handler", [&] {
    handler(event);
    threw = false;
  });
  if (threw && !event->settled()) event->reject("the handler threw");
}

Result<void> JsEvent::done(uint64_t seq) {
  auto it = keys_.find(seq);
  if (it == keys_.end()) {
    if (std::any_of(entries_.begin(), entries_.end(), [seq](const SyncEntry& e) { return e.seq == seq; })) return {};
    return makeError(Errc::NOT_FOUND, "entry " + std::to_string(seq) + " was not given to this sync event");
  }
  auto side = side_.lock();
  if (!side) return makeError(Errc::INVALID_STATE, "Background Sync has stopped");
  // Queued before this event's settle: the worker purges it first.
  side->shared->enqueue([shared = side->shared, key = it->second] {
    if (auto r = shared->q.purgeEntry(key); !r) core::log().warn("background sync: entry done: {}", r.error().describe());
  }, milliseconds(0), true);
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
  side->shared->enqueue([shared = side->shared, id = id_, outcome, progress = progress_] {
    shared->settle(id, outcome, progress);
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
  s->worker = std::thread([s] { s->runWorker(); });
  s->fetcher = std::thread([s] { s->runFetcher(); });
  s->watcher = std::thread([s] { s->runWatcher(); });
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
  shared_->enqueue([s = shared_.get(), tag, data, done = std::move(done)]() mutable {
    s->registerTag(tag, data, std::move(done));
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
