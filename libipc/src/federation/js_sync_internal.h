// The insides of JetStreamSync (js_sync.h), shared by its two files: js_worker.cpp (the worker,
// fetch and watch threads and the JetStream operations they run) and js_sync.cpp (the loop's
// half: the event object, the mirror's answers, start and stop). Not for anyone else.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "core/log.h"
#include "federation/js_queue.h"
#include "federation/js_sync.h"

namespace swipc::federation {

namespace jsdetail {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

/// How often the mirror's watch is made anew (see runWatcher).
constexpr milliseconds RESYNC{5000};

inline int64_t nowMs() { return sync::wallNow().time_since_epoch().count(); }
inline int64_t nowNs() {
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

}  // namespace jsdetail

using jsdetail::KvChange;
using jsdetail::JsEvent;
using jsdetail::SteadyClock;
using jsdetail::nowMs;
using jsdetail::nowNs;
using jsdetail::RESYNC;
using std::chrono::milliseconds;

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
  size_t pendingRegisters = 0;                         // registerTag calls not answered yet

  void apply(const std::string& h, const JsRecord& rec, uint64_t rev) {
    auto& m = records[h];
    if (rev < m.rev) return;  // the watch already brought something newer
    m.rec = rec;
    m.rev = rev;
  }
  void change(const KvChange& c);
  void forgetEntry(const std::string& h, const std::string& key) {
    if (auto it = entryKeys.find(h); it != entryKeys.end()) {
      it->second.erase(key);
      if (it->second.empty()) entryKeys.erase(it);
    }
  }
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
    uint64_t givenMax = 0;            // the highest seq among the entries it was given
    std::vector<JsEntry> undeleted;   // entries done whose delete failed: the settle retries them
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
  /// `left`: the event's entries not done (seq and key): what stays queued, or what goes with
  /// the tag when it gave up. Entries registered while it ran made it `refire`.
  void settle(uint64_t id, sync::SyncOutcome outcome, uint64_t progress, std::vector<JsEntry> left);
  /// Deletes an entry event `id` marked done; a failure is kept for its settle to retry.
  void entryDone(uint64_t id, const JsEntry& entry);
  void registerTag(const std::string& tag, const std::optional<Value>& data, Done done);
};

}  // namespace swipc::federation
