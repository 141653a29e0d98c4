// Multi-process: kill -9 of sw_daemon at seeded random points of the Background Sync lifecycle
// (issue 15; DESIGN §11, §14), 100 runs in all (25 per kill point, $SWIPC_SYNC_CRASH_RUNS per
// test overrides; $SWIPC_SYNC_CRASH_SEED fixes the first seed, every failure prints its own).
//
// Each run: a daemon (manual connectivity, small timings) on a fresh state dir; a page registers
// one-shot tags of the reference service worker (plain, slow:MS:, flaky:N:, fail:, part:1:) with
// entries, and in one case a periodic tag; the daemon is killed after a register's ok, during an
// event, between attempts or during a periodic event (and, one run in three, once more at a random
// moment after the restart); it restarts on the same dirs, offline, so that a fresh observer page
// is on `sync-log` before anything fires; then it goes online and runs until nothing is left.
//
// What is checked is exactly what §14 promises, against a model of the state machine:
//  * every `sync-log` report fits the model: SYNC attempt n = failed attempts + 1, lastChance iff
//    n = max, entries = exactly the entries not yet done, in registration order (so an entry
//    marked done is never handed out again and none goes missing); SYNC_DONE outcome as the tag's
//    prefix dictates; one SYNC_DONE per SYNC;
//  * across a kill the model allows only what a kill may legitimately cause: reports posted just
//    before it may be lost (so whole attempts may have run unseen, never while offline); the event
//    in flight is not counted and runs again, keeping whatever done marks it made; an event whose
//    SYNC_DONE was seen may also be unrecorded and run again, but the done marks its handler made
//    before it settled stay. The restarted daemon's SYNC_STATE (state, failed attempts, waiting
//    entries) and getTags must match one of those histories; an acknowledged tag or entry missing
//    from it, a counted failure lost, or a done entry back is a failure;
//  * at chosen kill points the history is known exactly: a tag registered offline is there with
//    all its acknowledged entries; a slow: event killed well before it could settle comes back
//    pending with the attempt uncounted; a tag killed between attempts keeps its failed attempts;
//  * after the last restart everything is observed: each tag completes, or reaches its final
//    failure after its last chance, exactly as the model says, and SYNC_STATE ends empty;
//  * periodic: the tag survives every kill, never fires at registration, fires no sooner than its
//    interval after the last fire, attempt 1 (it never fails), and keeps firing after restarts;
//  * state.db passes PRAGMA integrity_check at the end of every run.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "process.h"
#include "sqlite_check.h"
#include "stamped_page.h"
#include "test_scope.h"

namespace swipc::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

constexpr int MAX_ATTEMPTS = 3;
constexpr milliseconds REPORT_TIMEOUT{5000};

long long msBetween(TestClock::time_point a, TestClock::time_point b) {
  return std::chrono::duration_cast<milliseconds>(b - a).count();
}
milliseconds lowerBound(milliseconds d) { return d - std::max(milliseconds{15}, d / 5); }

using Page = StampedPage;

// ------------------------------------------------------------------------------------------------ the model

/// The reference service worker's tag prefixes (DESIGN §14).
enum class Kind { PLAIN, SLOW, FLAKY, FAIL, PART };

struct TagSpec {
  std::string tag;
  Kind kind = Kind::PLAIN;
  int param = 0;  // SLOW: milliseconds; FLAKY: N; PART: K
};

/// How the reference SW ends attempt `attempt` when given `given` entries: resolves or rejects,
/// and how many entries (the first ones) it marked done.
struct Settle {
  bool success;
  int marks;
};
Settle predict(const TagSpec& t, int attempt, int given) {
  switch (t.kind) {
    case Kind::PLAIN:
    case Kind::SLOW: return {true, given};
    case Kind::FLAKY: return attempt <= t.param ? Settle{false, 0} : Settle{true, given};
    case Kind::FAIL: return {false, 0};
    case Kind::PART: return given <= t.param ? Settle{true, given} : Settle{false, t.param};
  }
  return {false, 0};
}

/// One possibility of what the daemon holds for a one-shot tag. Entries are removed only from the
/// front (each event is given every waiting entry and marks a prefix of them), so the waiting
/// entries are always entries[consumed, len).
struct St {
  enum Phase { ABSENT, LIVE, GONE };
  Phase phase = ABSENT;
  int attempts = 0;  // failed attempts recorded
  int consumed = 0;  // entries done
  int len = 0;       // entries registered
  int firing = 0;    // attempt of the event in flight, 0 when none
  // The last event seen for the tag in this life of the daemon, and the state before it: a kill
  // may leave that event unrecorded.
  bool touched = false;
  int preAttempts = 0;
  int preConsumed = 0;
  bool registrable = false;  // ABSENT: its register op is in flight and may yet take effect

  auto key() const {
    return std::tuple(phase, attempts, consumed, len, firing, touched, preAttempts, preConsumed, registrable);
  }
  bool operator==(const St& o) const { return key() == o.key(); }
  std::string str() const {
    std::ostringstream s;
    s << (phase == ABSENT ? "absent" : phase == LIVE ? "live" : "gone") << "(failed=" << attempts
      << " done=" << consumed << " len=" << len;
    if (firing) s << " firing=" << firing;
    if (registrable) s << " registrable";
    s << ")";
    return s.str();
  }
};

/// The state after attempt attempts+1 of `s` settled as the reference SW settles it.
St settled(const TagSpec& spec, St s) {
  const int n = s.attempts + 1;
  const Settle p = predict(spec, n, s.len - s.consumed);
  s.firing = 0;
  s.consumed += p.marks;
  if (p.success) {
    if (s.consumed == s.len) s.phase = St::GONE;
    else s.attempts = 0;  // entries left: it fires again
  } else {
    s.attempts = n;
    if (n >= MAX_ATTEMPTS) s.phase = St::GONE;
  }
  return s;
}

void addUnique(std::vector<St>& v, const St& s) {
  if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
}

/// Every state the daemon may have recorded starting from `s` (no event in flight) when events
/// ran unseen: any number of whole attempts (none while offline), then possibly one interrupted
/// attempt whose done marks (a prefix of what it would mark) stay while its failure is not counted.
void walk(const TagSpec& spec, St s, bool online, std::vector<St>& out) {
  s.firing = 0;
  s.touched = false;
  s.registrable = false;
  for (int guard = 0; guard < 64; ++guard) {
    addUnique(out, s);
    if (s.phase != St::LIVE || !online) return;
    const Settle p = predict(spec, s.attempts + 1, s.len - s.consumed);
    for (int j = 1; j <= p.marks; ++j) {
      St t = s;
      t.consumed += j;
      addUnique(out, t);
    }
    s = settled(spec, s);
  }
}

struct TagModel {
  TagSpec spec;
  int order = 0;              // index of its first register op
  std::vector<json> entries;  // the data of every register op sent for it, in order
  std::vector<St> cands;      // what the daemon may hold; never empty while the run is right

  json waiting(const St& s) const {
    json a = json::array();
    for (int i = s.consumed; i < s.len; ++i) a.push_back(entries[static_cast<size_t>(i)]);
    return a;
  }
  bool terminal() const {
    return std::all_of(cands.begin(), cands.end(), [](const St& s) { return s.phase != St::LIVE; });
  }
  std::string candsStr() const {
    std::string s;
    for (const auto& c : cands) s += c.str() + " ";
    return s;
  }
};

/// What the daemon may hold for `m` after a kill, given the reports seen before it: reports
/// posted just before the kill may be lost, so unseen whole attempts may have run (none when the
/// daemon was offline all along), and the last event may be unrecorded.
void afterKill(TagModel& m, bool online) {
  std::vector<St> next;
  for (const St& c : m.cands) {
    if (c.phase == St::ABSENT) {
      addUnique(next, St{});  // never registered
      if (c.registrable) {
        St l = c;
        l.phase = St::LIVE;
        walk(m.spec, l, online, next);
      }
    } else if (c.touched && c.firing) {
      // Its event was in flight: uncounted; done marks it made may stay (walk's variants).
      St base = c;
      base.attempts = c.preAttempts;
      base.consumed = c.preConsumed;
      walk(m.spec, base, online, next);
    } else if (c.touched) {
      // Its last event settled (SYNC_DONE seen), so the handler's done marks were made; the
      // daemon may still have died before it recorded the outcome: uncounted, marks kept.
      walk(m.spec, c, online, next);
      St unrecorded = c;
      unrecorded.phase = St::LIVE;
      unrecorded.attempts = c.preAttempts;
      walk(m.spec, unrecorded, online, next);
    } else {
      walk(m.spec, c, online, next);
    }
  }
  m.cands = std::move(next);
}

// ------------------------------------------------------------------------------------------------ one run

enum class KillPoint { AFTER_REGISTER_OK, DURING_EVENT, BETWEEN_ATTEMPTS, DURING_PERIODIC_EVENT };

const char* name(KillPoint k) {
  switch (k) {
    case KillPoint::AFTER_REGISTER_OK: return "after-register-ok";
    case KillPoint::DURING_EVENT: return "during-event";
    case KillPoint::BETWEEN_ATTEMPTS: return "between-attempts";
    case KillPoint::DURING_PERIODIC_EVENT: return "during-periodic-event";
  }
  return "?";
}

struct PeriodicSpec {
  std::string tag;
  int intervalMs = 200;
  TestClock::time_point sentAt;
};

/// A register op: which tag, and its data if it carries one.
struct Op {
  size_t tag;
  std::optional<json> data;
};

class CrashRun {
 public:
  CrashRun(uint64_t seed, KillPoint point, std::string scope)
      : rng_(seed), point_(point), scope_(std::move(scope)) {
    retryMs_ = point == KillPoint::BETWEEN_ATTEMPTS ? 150 : 40;
    trace_ << "kill point " << name(point) << ", seed " << seed << "\n";
  }

  /// "" when every promise held; else what broke, then the run's history.
  std::string run() {
    body();
    stopDaemon();
    if (error_.empty()) {
      const std::string db = state_.path() + "/state.db";
      const std::string ic = integrityCheck(db);
      if (ic != "ok") fail("state.db integrity_check: " + ic);
    }
    if (error_.empty()) return "";
    return error_ + "\n--- history ---\n" + trace_.str();
  }

 private:
  // ---------------------------------------------------------------------------------------------- scenario

  void body() {
    if (!startDaemon(/*offline=*/true) || !attachObserver()) return;
    page_ = std::make_unique<Page>(runtime_.path(), scope_);
    if (!page_->attached()) return void(fail("registering page did not attach"));

    switch (point_) {
      case KillPoint::AFTER_REGISTER_OK: killAfterRegisterOk(); break;
      case KillPoint::DURING_EVENT: killDuringEvent(); break;
      case KillPoint::BETWEEN_ATTEMPTS: killBetweenAttempts(); break;
      case KillPoint::DURING_PERIODIC_EVENT: killDuringPeriodicEvent(); break;
    }
    if (!error_.empty()) return;
    if (!restart()) return;
    if (coin(3)) {  // one run in three: once more, at a random moment after going online
      sleepMs(uniform(0, 150));
      trace_ << "second kill at a random moment\n";
      if (!killDaemon() || !restart()) return;
    }
    finish();
  }

  /// Registered op by op; the kill comes right after the ok of a random op, with the next op
  /// possibly in flight. Half the runs stay offline (then the recovered state is known exactly);
  /// half go online first, so events run while registering (then each tag is one op: a tag
  /// registered while its own event runs would refire, a rule the conformance tests cover).
  void killAfterRegisterOk() {
    const bool online = coin(2);
    trace_ << "registering while " << (online ? "online" : "offline") << "\n";
    const int n = uniform(2, 5);
    for (int i = 0; i < n; ++i) addTag(randomTag(i), online ? uniform(0, 1) : -1);
    std::vector<Op> ops = makeOps(/*onePerTag=*/online);
    const size_t acked = static_cast<size_t>(uniform(1, static_cast<int>(ops.size())));
    const bool inflight = acked < ops.size() && coin(2);
    if (online && !setOnline(true)) return;
    online1_ = online;
    for (size_t i = 0; i < acked; ++i)
      if (!registerOp(ops[i])) return;
    if (inflight) {
      sendOp(ops[acked]);
      trace_ << "in flight: " << opStr(ops[acked]) << "\n";
    }
    ops.resize(acked + (inflight ? 1 : 0));
    buildModels(ops, acked);
    if (!killDaemon()) return;
    // Offline the whole time: nothing may have fired, every acknowledged tag and entry is there.
    if (!online) knownOffline_ = true;
  }

  /// A slow: tag's event is killed at a random moment well before it can settle.
  void killDuringEvent() {
    const int ms = uniform(150, 250);
    subject_ = addTag({"slow:" + std::to_string(ms) + ":s", Kind::SLOW, ms}, uniform(0, 2));
    for (int i = 0, n = uniform(1, 3); i < n; ++i) addTag(randomTag(static_cast<int>(i)), uniform(0, 2));
    if (!registerAllOffline() || !setOnline(true)) return;
    online1_ = true;
    auto fire = observer_->take([&](const json& j) { return isReportOf(j, "SYNC", tags_[subject_].spec.tag); });
    if (!fire) return void(fail("the slow tag never fired"));
    sleepMs(uniform(0, ms - 100));
    const auto killAt = TestClock::now();
    if (!killDaemon()) return;
    const long long elapsed = msBetween(fire->at, killAt);
    trace_ << "killed " << elapsed << " ms after the slow event was seen starting\n";
    // The event cannot have settled (unless the observer saw it start 80 ms late): it comes back
    // pending with the attempt uncounted.
    if (elapsed < ms - 80) {
      expectSubjectAt_ = fire->j["data"].value("attempt", 0) - 1;
      expectSubjectWhy_ = "a slow: event killed before it settled must leave its attempt uncounted";
    }
  }

  /// A fail: / flaky:2: tag is killed while it waits for attempt n + 1.
  void killBetweenAttempts() {
    const bool fails = coin(2);
    subject_ = addTag(fails ? TagSpec{"fail:s", Kind::FAIL, 0} : TagSpec{"flaky:2:s", Kind::FLAKY, 2}, uniform(0, 2));
    for (int i = 0, n = uniform(1, 2); i < n; ++i) addTag(randomTag(static_cast<int>(i)), uniform(0, 2));
    if (!registerAllOffline() || !setOnline(true)) return;
    online1_ = true;
    const int target = uniform(1, 2);
    std::optional<Stamped> done;
    for (int n = 1; n <= target; ++n) {
      done = observer_->take([&](const json& j) { return isReportOf(j, "SYNC_DONE", tags_[subject_].spec.tag); });
      if (!done) return void(fail("no SYNC_DONE for attempt " + std::to_string(n) + " of the subject"));
    }
    const int delay = retryMs_ << (target - 1);  // retry × 2^(n-1)
    sleepMs(uniform(20, delay - 60));
    const auto killAt = TestClock::now();
    if (!killDaemon()) return;
    const long long elapsed = msBetween(done->at, killAt);
    trace_ << "killed " << elapsed << " ms after failure " << target << " (retry due after " << delay << " ms)\n";
    // Unless the observer saw the failure 50 ms late, attempt n + 1 cannot have started.
    if (done->j["data"].value("outcome", "") == "failure" && elapsed < delay - 50) {
      expectSubjectAt_ = target;
      expectSubjectWhy_ = "a tag killed between attempts must keep its failed attempts";
    }
  }

  /// A periodic event (slow:, if the reference SW's periodic handler honours the prefix) is
  /// killed at a random moment; one-shot tags run beside it.
  void killDuringPeriodicEvent() {
    const int ms = uniform(80, 160);
    periodic_ = PeriodicSpec{"slow:" + std::to_string(ms) + ":per", 200, TestClock::now()};
    auto r = page_->request({{"op", "periodicSync.register"}, {"tag", periodic_->tag}, {"minInterval", periodic_->intervalMs}});
    if (!r || r->value("event", "") != "ok") return void(fail("periodicSync.register: " + (r ? r->dump() : "no answer")));
    for (int i = 0, n = uniform(1, 2); i < n; ++i) addTag(randomTag(static_cast<int>(i)), uniform(0, 2));
    if (!registerAllOffline() || !setOnline(true)) return;
    online1_ = true;
    auto fire = observer_->take([&](const json& j) { return isReportOf(j, "PERIODIC_SYNC", periodic_->tag); });
    if (!fire) return void(fail("the periodic tag never fired"));
    sleepMs(uniform(0, ms - 40));
    if (!killDaemon()) return;
    trace_ << "killed " << msBetween(fire->at, TestClock::now()) << " ms after the periodic event was seen\n";
  }

  // ---------------------------------------------------------------------------------------------- tags and ops

  TagSpec randomTag(int i) {
    const std::string id = "t" + std::to_string(i);
    switch (uniform(0, 4)) {
      case 0: return {"plain-" + id, Kind::PLAIN, 0};
      case 1: {
        const int ms = uniform(40, 120);
        return {"slow:" + std::to_string(ms) + ":" + id, Kind::SLOW, ms};
      }
      case 2: {
        const int n = uniform(1, 2);
        return {"flaky:" + std::to_string(n) + ":" + id, Kind::FLAKY, n};
      }
      case 3: return {"fail:" + id, Kind::FAIL, 0};
      default: return {"part:1:" + id, Kind::PART, 1};
    }
  }

  /// Adds a tag that will get `entries` entries (part: at least one; -1: random).
  size_t addTag(TagSpec spec, int entries) {
    if (entries < 0) entries = uniform(spec.kind == Kind::PART ? 1 : 0, 3);
    if (spec.kind == Kind::PART && entries == 0) entries = 1;
    TagModel m;
    m.spec = std::move(spec);
    planned_.push_back(entries);
    tags_.push_back(std::move(m));
    return tags_.size() - 1;
  }

  /// Register ops for every tag: one per entry (one without data for a tag without entries),
  /// shuffled; or exactly one per tag in tag order.
  std::vector<Op> makeOps(bool onePerTag) {
    std::vector<Op> ops;
    for (size_t t = 0; t < tags_.size(); ++t) {
      const int n = onePerTag ? std::min(planned_[t], 1) : planned_[t];
      if (n == 0) ops.push_back({t, std::nullopt});
      for (int e = 0; e < n; ++e) ops.push_back({t, json{{"t", static_cast<int>(t)}, {"e", e}}});
    }
    if (!onePerTag) std::shuffle(ops.begin(), ops.end(), rng_);
    return ops;
  }

  std::string opStr(const Op& op) const {
    return tags_[op.tag].spec.tag + (op.data ? " " + op.data->dump() : std::string(" (no data)"));
  }

  json opJson(const Op& op) const {
    json j = {{"op", "sync.register"}, {"tag", tags_[op.tag].spec.tag}};
    if (op.data) j["data"] = *op.data;
    return j;
  }
  void sendOp(const Op& op) { page_->sendWithId(opJson(op)); }
  bool registerOp(const Op& op) {
    auto r = page_->request(opJson(op));
    trace_ << "register " << opStr(op) << " -> " << (r ? r->dump() : "no answer") << "\n";
    if (!r || r->value("event", "") != "ok") return fail("sync.register was not acknowledged");
    return true;
  }

  /// All ops registered (and acknowledged) while offline; the models start from them.
  bool registerAllOffline() {
    std::vector<Op> ops = makeOps(false);
    for (const auto& op : ops)
      if (!registerOp(op)) return false;
    buildModels(ops, ops.size());
    return true;
  }

  /// The models from the ops sent: the first `acked` were acknowledged, any after may have taken
  /// effect or not.
  void buildModels(const std::vector<Op>& ops, size_t acked) {
    std::vector<TagModel> used;
    std::vector<size_t> remap(tags_.size(), SIZE_MAX);
    for (size_t i = 0; i < ops.size(); ++i) {
      const size_t t = ops[i].tag;
      if (remap[t] == SIZE_MAX) {
        remap[t] = used.size();
        TagModel m;
        m.spec = tags_[t].spec;
        m.order = static_cast<int>(i);
        used.push_back(std::move(m));
      }
      TagModel& m = used[remap[t]];
      if (ops[i].data) m.entries.push_back(*ops[i].data);
    }
    for (size_t u = 0; u < used.size(); ++u) {
      TagModel& m = used[u];
      int ackedEntries = 0;
      bool anyAcked = false;
      bool anyInFlight = false;
      for (size_t i = 0; i < ops.size(); ++i) {
        if (remap[ops[i].tag] != u) continue;
        (i < acked ? anyAcked : anyInFlight) = true;
        if (i < acked && ops[i].data) ++ackedEntries;
      }
      St s;
      s.len = static_cast<int>(m.entries.size());
      if (anyAcked) {
        s.phase = St::LIVE;
        s.len = ackedEntries;
        m.cands.push_back(s);
        if (anyInFlight && ackedEntries < static_cast<int>(m.entries.size())) {
          s.len = ackedEntries + 1;  // the op in flight added its entry
          m.cands.push_back(s);
        }
      } else {
        s.phase = St::ABSENT;
        s.registrable = true;
        m.cands.push_back(s);
      }
      trace_ << "model " << m.spec.tag << " entries=" << json(m.entries).dump() << " start " << m.candsStr() << "\n";
    }
    if (subject_ != SIZE_MAX) subject_ = remap[subject_];
    tags_ = std::move(used);
  }

  // ---------------------------------------------------------------------------------------------- daemon lives

  bool startDaemon(bool offline) {
    std::vector<std::string> args{"--state-dir",         state_.path(),
                                  "--connectivity",      "manual",
                                  "--sync-max-attempts", std::to_string(MAX_ATTEMPTS),
                                  "--sync-retry-ms",     std::to_string(retryMs_),
                                  "--sync-retry-factor", "2",
                                  "--sync-timeout-ms",   "5000",
                                  "--periodic-min-interval-ms", "100"};
    if (offline) args.push_back("--offline");
    daemon_ = std::make_unique<Daemon>(runtime_.path(), scope_, args);
    if (!daemon_->waitReady(10s)) return fail("sw_daemon did not start:\n" + daemon_->log());
    ++life_;
    online_ = false;
    periodicFiring_ = false;
    lastPeriodicFire_.reset();
    periodicDoneThisLife_ = 0;
    trace_ << "--- daemon life " << life_ << " (pid " << daemon_->pid() << ")\n";
    return true;
  }

  /// A fresh observer page on sync-log (the daemon is offline, so nothing fired yet).
  bool attachObserver() {
    observer_ = std::make_unique<Page>(runtime_.path(), scope_);
    fed_ = 0;
    if (!observer_->attached()) return fail("observer did not attach");
    auto r = observer_->request({{"op", "bc.open"}, {"bc", "log"}, {"name", "sync-log"}});
    if (!r || r->value("event", "") != "ok") return fail("bc.open sync-log: " + (r ? r->dump() : "no answer"));
    return true;
  }

  bool setOnline(bool online) {
    json reply = observer_->messageSW({{"type", "SET_ONLINE"}, {"online", online}});
    if (reply != json{{"online", online}}) return fail("SET_ONLINE answered " + reply.dump());
    online_ = online_ || online;
    return true;
  }

  /// kill -9, then what the observer still read, then which histories the kill allows.
  bool killDaemon() {
    daemon_->process().signal(SIGKILL);
    if (daemon_->process().waitExitCode(5s) != -SIGKILL) return fail("daemon did not die of SIGKILL");
    page_.reset();
    // The observer may still read reports the daemon posted before it died; it has seen the end
    // once it reports losing its controller.
    observer_->take([](const json& j) { return j.value("event", "") == "controllerchange"; }, 2s);
    feed();
    observer_.reset();
    if (!error_.empty()) return false;
    const bool online = online_ || (life_ == 1 && online1_);
    for (auto& m : tags_) afterKill(m, online);
    return true;
  }

  /// Starts the daemon again on the same dirs, offline; checks what it recovered; goes online.
  bool restart() {
    if (!startDaemon(/*offline=*/true) || !attachObserver()) return false;
    json state = observer_->messageSW({{"type", "SYNC_STATE"}});
    if (!state.is_object() || !state.contains("tags") || !state["tags"].is_array())
      return fail("SYNC_STATE answered " + state.dump());
    trace_ << "recovered SYNC_STATE " << state.dump() << "\n";
    json listed = json::array();
    int lastOrder = -1;
    for (const auto& e : state["tags"]) {
      const std::string tag = e.value("tag", "");
      listed.push_back(tag);
      auto* m = model(tag);
      if (!m) return fail("SYNC_STATE lists a tag nobody registered: " + e.dump());
      if (m->order <= lastOrder) return fail("SYNC_STATE is not in registration order");
      lastOrder = m->order;
      const std::string st = e.value("state", "");
      if (st != "pending" && st != "waiting") return fail("after a restart a tag is pending or waiting: " + e.dump());
      if (e.value("attempts", -1) == 0 && st != "pending") return fail("a tag without failures waits: " + e.dump());
    }
    json tags = observer_->tags("sync.getTags");
    if (tags != listed) return fail("sync.getTags " + tags.dump() + " differs from SYNC_STATE " + listed.dump());

    for (size_t t = 0; t < tags_.size(); ++t) {
      TagModel& m = tags_[t];
      json e;
      for (const auto& x : state["tags"])
        if (x.value("tag", "") == m.spec.tag) e = x;
      std::vector<St> keep;
      for (const St& c : m.cands) {
        const bool match = e.is_null() ? c.phase != St::LIVE
                                       : c.phase == St::LIVE && c.attempts == e.value("attempts", -1) &&
                                             c.len - c.consumed == e.value("entries", -1);
        if (match) addUnique(keep, c);
      }
      if (knownOffline_) {  // killed offline right after register oks: nothing may have changed
        std::vector<St> strict;
        for (const St& c : keep)
          if (c.phase != St::LIVE || (c.attempts == 0 && c.consumed == 0)) strict.push_back(c);
        keep = strict;
      }
      if (keep.empty())
        return fail("after the restart '" + m.spec.tag + "' is " + (e.is_null() ? "missing" : e.dump()) +
                    ", but the state machine allows only: " + m.candsStr());
      m.cands = std::move(keep);
      if (t == subject_ && expectSubjectAt_ >= 0) {
        if (e.is_null() || e.value("attempts", -1) != expectSubjectAt_)
          return fail(expectSubjectWhy_ + ": expected " + std::to_string(expectSubjectAt_) +
                      " failed attempts for '" + m.spec.tag + "', SYNC_STATE says " + e.dump());
      }
    }
    knownOffline_ = false;
    expectSubjectAt_ = -1;
    if (periodic_) {
      json p = observer_->tags("periodicSync.getTags");
      if (p != json::array({periodic_->tag})) return fail("periodic tag lost by the kill: periodicSync.getTags " + p.dump());
    }
    return setOnline(true);
  }

  /// The last life: everything runs to its end while the observer sees every report.
  void finish() {
    const auto deadline = TestClock::now() + 20s;
    for (;;) {
      feed();
      if (!error_.empty()) return;
      const bool done = std::all_of(tags_.begin(), tags_.end(), [](const TagModel& m) { return m.terminal(); }) &&
                        (!periodic_ || periodicDoneThisLife_ > 0);
      if (done) break;
      if (!observer_->waitMoreThan(fed_, deadline)) {
        std::string open;
        for (const auto& m : tags_)
          if (!m.terminal()) open += " '" + m.spec.tag + "' " + m.candsStr();
        if (periodic_ && periodicDoneThisLife_ == 0) open += " periodic '" + periodic_->tag + "' did not fire";
        return void(fail("not finished 20 s after the last restart:" + open));
      }
    }
    json state;
    const bool empty = eventually(
        [&] {
          state = observer_->messageSW({{"type", "SYNC_STATE"}});
          return state.is_object() && state.value("tags", json()) == json::array();
        },
        5s);
    if (!empty) return void(fail("every tag finished but SYNC_STATE still says " + state.dump()));
    json tags = observer_->tags("sync.getTags");
    if (tags != json::array()) return void(fail("every tag finished but sync.getTags says " + tags.dump()));
  }

  void stopDaemon() {
    observer_.reset();
    page_.reset();
    if (!daemon_ || !daemon_->process().running()) return;
    daemon_->process().signal(SIGTERM);
    if (!daemon_->process().waitExit(5s)) {
      daemon_->process().signal(SIGKILL);
      daemon_->process().waitExit(5s);
    }
  }

  // ---------------------------------------------------------------------------------------------- reports

  /// Feeds every observer line not fed yet to the models.
  void feed() {
    if (!observer_) return;
    for (const auto& l : observer_->linesFrom(fed_)) {
      ++fed_;
      if (!error_.empty()) return;
      if (l.j.value("event", "") == "bc.lapped") return void(fail("the observer was lapped: " + l.j.dump()));
      if (!Page::isReport(l.j)) continue;
      const json& d = l.j["data"];
      trace_ << "  [" << life_ << "] " << d.dump() << "\n";
      const std::string type = d.value("type", "");
      if (type == "PERIODIC_SYNC" || type == "PERIODIC_SYNC_DONE") {
        periodicReport(d, l.at);
      } else if (type == "SYNC" || type == "SYNC_DONE") {
        oneShotReport(d);
      }
    }
  }

  void oneShotReport(const json& d) {
    const std::string type = d.value("type", "");
    TagModel* m = model(d.value("tag", ""));
    if (!m) return void(fail("report for a tag nobody registered: " + d.dump()));
    const int n = d.value("attempt", 0);
    std::vector<St> next;
    if (type == "SYNC") {
      if (!d.contains("lastChance") || d["lastChance"] != (n == MAX_ATTEMPTS))
        return void(fail("lastChance must be true exactly on attempt " + std::to_string(MAX_ATTEMPTS) + ": " + d.dump()));
      for (St s : m->cands) {
        if (s.phase == St::ABSENT && s.registrable) {
          s.phase = St::LIVE;
          s.registrable = false;
        }
        if (s.phase != St::LIVE || s.firing || s.attempts + 1 != n) continue;
        if (d.value("entries", json()) != m->waiting(s)) continue;
        s.preAttempts = s.attempts;
        s.preConsumed = s.consumed;
        s.touched = true;
        s.firing = n;
        addUnique(next, s);
      }
    } else {
      for (const St& s : m->cands) {
        if (s.phase != St::LIVE || s.firing != n) continue;
        const Settle p = predict(m->spec, n, s.len - s.consumed);
        if (d.value("outcome", "") != (p.success ? "success" : "failure")) continue;
        addUnique(next, settled(m->spec, s));
      }
    }
    if (next.empty()) {
      std::string want;
      for (const St& s : m->cands)
        if (s.phase == St::LIVE)
          want += s.firing ? " SYNC_DONE of attempt " + std::to_string(s.firing)
                           : " SYNC attempt " + std::to_string(s.attempts + 1) + " entries " + m->waiting(s).dump();
      return void(fail("report does not fit the state machine: " + d.dump() + "; expected one of:" +
                       (want.empty() ? std::string(" nothing (the tag is finished)") : want) + " [" + m->candsStr() + "]"));
    }
    m->cands = std::move(next);
  }

  void periodicReport(const json& d, TestClock::time_point at) {
    if (!periodic_ || d.value("tag", "") != periodic_->tag) return void(fail("periodic report for an unknown tag: " + d.dump()));
    if (d.value("type", "") == "PERIODIC_SYNC") {
      if (d.value("attempt", 0) != 1 || d.value("lastChance", true) != false)
        return void(fail("a periodic tag that never fails fires with attempt 1, lastChance false: " + d.dump()));
      if (periodicFiring_) return void(fail("periodic fire before the previous one settled: " + d.dump()));
      if (life_ == 1 && !lastPeriodicFire_ && msBetween(periodic_->sentAt, at) < periodic_->intervalMs - 5)
        return void(fail("periodic tag fired " + std::to_string(msBetween(periodic_->sentAt, at)) +
                         " ms after registration, before its interval"));
      if (lastPeriodicFire_ && msBetween(*lastPeriodicFire_, at) < lowerBound(milliseconds(periodic_->intervalMs)).count())
        return void(fail("periodic tag fired " + std::to_string(msBetween(*lastPeriodicFire_, at)) +
                         " ms after its last fire"));
      lastPeriodicFire_ = at;
      periodicFiring_ = true;
    } else {
      if (!periodicFiring_ || d.value("attempt", 0) != 1 || d.value("outcome", "") != "success")
        return void(fail("unexpected periodic report: " + d.dump()));
      periodicFiring_ = false;
      ++periodicDoneThisLife_;
    }
  }

  // ---------------------------------------------------------------------------------------------- small things

  static bool isReportOf(const json& j, const std::string& type, const std::string& tag) {
    return Page::isReport(j) && j["data"].value("type", "") == type && j["data"].value("tag", "") == tag;
  }
  TagModel* model(const std::string& tag) {
    for (auto& m : tags_)
      if (m.spec.tag == tag) return &m;
    return nullptr;
  }
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, std::max(lo, hi))(rng_); }
  bool coin(int oneIn) { return uniform(1, oneIn) == 1; }
  /// Picks the moment of a kill (not a synchronisation: every check waits for its event).
  void sleepMs(int ms) { std::this_thread::sleep_for(milliseconds(ms)); }
  bool fail(const std::string& what) {
    if (error_.empty()) error_ = what;
    return false;
  }

  std::mt19937_64 rng_;
  KillPoint point_;
  std::string scope_;
  int retryMs_;
  TempDir runtime_;
  TempDir state_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<Page> observer_;
  std::unique_ptr<Page> page_;
  std::vector<TagModel> tags_;
  std::vector<int> planned_;
  size_t subject_ = SIZE_MAX;
  int expectSubjectAt_ = -1;
  std::string expectSubjectWhy_;
  bool knownOffline_ = false;
  std::optional<PeriodicSpec> periodic_;
  bool periodicFiring_ = false;
  std::optional<TestClock::time_point> lastPeriodicFire_;
  int periodicDoneThisLife_ = 0;
  int life_ = 0;
  bool online_ = false;
  bool online1_ = false;
  size_t fed_ = 0;
  std::string error_;
  std::ostringstream trace_;
};

// ------------------------------------------------------------------------------------------------ tests

/// Runs $SWIPC_SYNC_CRASH_RUNS (default 25) seeded runs of one kill point; stops after 3 failures.
void runMany(KillPoint point) {
  const char* runsEnv = std::getenv("SWIPC_SYNC_CRASH_RUNS");
  const char* seedEnv = std::getenv("SWIPC_SYNC_CRASH_SEED");
  const int runs = runsEnv ? std::atoi(runsEnv) : 25;
  const uint64_t base = seedEnv ? std::strtoull(seedEnv, nullptr, 0) : std::random_device{}();
  ::testing::Test::RecordProperty("seed", std::to_string(base));
  std::printf("[ seeds    ] %s: runs %d from seed %llu\n", name(point), runs, static_cast<unsigned long long>(base));
  int failures = 0;
  for (int i = 0; i < runs && failures < 3; ++i) {
    const uint64_t seed = base + static_cast<uint64_t>(i);
    CrashRun run(seed, point, testScope());
    const std::string error = run.run();
    if (!error.empty()) {
      ++failures;
      ADD_FAILURE() << "run " << i << " (" << name(point) << ") failed; rerun it with SWIPC_SYNC_CRASH_SEED=" << seed
                    << " SWIPC_SYNC_CRASH_RUNS=1\n"
                    << error;
    }
  }
}

TEST(SyncCrashTest, KillAfterRegisterOkLosesNoAcknowledgedTagOrEntry) { runMany(KillPoint::AFTER_REGISTER_OK); }

TEST(SyncCrashTest, KillDuringAnEventLeavesTheAttemptUncountedAndNoDoneEntryComesBack) {
  runMany(KillPoint::DURING_EVENT);
}

TEST(SyncCrashTest, KillBetweenAttemptsKeepsFailedAttemptsAndDoneEntries) { runMany(KillPoint::BETWEEN_ATTEMPTS); }

TEST(SyncCrashTest, KillDuringAPeriodicEventKeepsThePeriodicTag) { runMany(KillPoint::DURING_PERIODIC_EVENT); }

}  // namespace
}  // namespace swipc::testing
