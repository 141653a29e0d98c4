#include "reference_sync.h"

#include <spdlog/spdlog.h>

#include <charconv>
#include <string_view>

#include "swipc/sync.h"

namespace swipc::daemon {

namespace {

/// What the tag's prefix asks of every attempt.
struct Behaviour {
  enum Kind { SUCCEED, FAIL, FLAKY, SLOW, HANG, PART } kind = SUCCEED;
  int64_t n = 0;  // FLAKY: attempts that reject; SLOW: ms; PART: entries done per attempt
};

/// "<prefix>N:" at the start of `tag` → N; nullopt when the tag does not have that shape.
std::optional<int64_t> numberAfter(std::string_view tag, std::string_view prefix) {
  if (tag.substr(0, prefix.size()) != prefix) return std::nullopt;
  std::string_view rest = tag.substr(prefix.size());
  int64_t n = 0;
  auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), n);
  if (ec != std::errc() || end == rest.data() || end == rest.data() + rest.size() || *end != ':' || n < 0)
    return std::nullopt;
  return n;
}

Behaviour behaviourOf(std::string_view tag) {
  if (tag.substr(0, 5) == "fail:") return {Behaviour::FAIL};
  if (tag.substr(0, 5) == "hang:") return {Behaviour::HANG};
  if (auto n = numberAfter(tag, "flaky:")) return {Behaviour::FLAKY, *n};
  if (auto n = numberAfter(tag, "slow:")) return {Behaviour::SLOW, *n};
  if (auto n = numberAfter(tag, "part:")) return {Behaviour::PART, *n};
  return {Behaviour::SUCCEED};
}

}  // namespace

struct ReferenceSync::State : std::enable_shared_from_this<ReferenceSync::State> {
  explicit State(ServiceWorker& s) : sw(s), log(s, "sync-log") {}
  ServiceWorker& sw;
  BroadcastChannel log;

  void report(const SyncEvent& e, const char* what, const char* outcome) {
    const std::string type = std::string(e.periodic() ? "PERIODIC_" : "") + what;
    Value v = Value::map({{"type", type}, {"tag", e.tag()}, {"attempt", static_cast<int64_t>(e.attempt())}});
    if (outcome) {
      v.set("outcome", std::string(outcome));
    } else {
      Value::List entries;
      for (const auto& entry : e.entries()) entries.push_back(entry.data);
      v.set("lastChance", e.lastChance());
      v.set("entries", Value(std::move(entries)));
    }
    if (auto r = log.postMessage(v); !r) spdlog::warn("sync-log post failed: {}", r.error().describe());
  }

  /// Marks up to `limit` of the event's entries done (all when limit < 0); how many remain.
  static size_t markDone(SyncEvent& e, int64_t limit) {
    size_t marked = 0;
    for (const auto& entry : e.entries()) {
      if (limit >= 0 && static_cast<int64_t>(marked) >= limit) break;
      if (auto r = e.done(entry.seq); !r) {
        spdlog::warn("sync tag={}: entry {} not marked done: {}", e.tag(), entry.seq, r.error().describe());
        break;
      }
      ++marked;
    }
    return e.entries().size() - marked;
  }

  void settle(const SyncEventPtr& e, bool ok, const std::string& reason = {}) {
    if (e->settled() || e->aborted()) return;  // a late settle: the daemon already counted it
    if (ok) {
      e->resolve();
    } else {
      e->reject(reason);
    }
    report(*e, "SYNC_DONE", ok ? "success" : "failure");
  }

  void onEvent(const SyncEventPtr& e) {
    report(*e, "SYNC", nullptr);
    std::weak_ptr<State> weak = weak_from_this();
    e->onAbort([weak, e] {
      if (auto s = weak.lock()) s->report(*e, "SYNC_DONE", "timeout");
    });
    const Behaviour b = behaviourOf(e->tag());
    switch (b.kind) {
      case Behaviour::SUCCEED:
        markDone(*e, -1);
        return settle(e, true);
      case Behaviour::FAIL: return settle(e, false, "fail: rejects every attempt");
      case Behaviour::FLAKY:
        if (static_cast<int64_t>(e->attempt()) <= b.n) return settle(e, false, "flaky: not yet");
        markDone(*e, -1);
        return settle(e, true);
      case Behaviour::PART: {
        const size_t left = markDone(*e, b.n);
        return settle(e, left == 0, "part: entries remain");
      }
      case Behaviour::HANG: return;  // never settles: the daemon times it out
      case Behaviour::SLOW:
        sw.setTimeout(std::chrono::milliseconds(b.n), [weak, e] {
          auto s = weak.lock();
          if (!s || e->settled() || e->aborted()) return;
          markDone(*e, -1);
          s->settle(e, true);
        });
        return;
    }
  }
};

ReferenceSync::ReferenceSync(ServiceWorker& sw) : state_(std::make_shared<State>(sw)) {
  std::weak_ptr<State> weak = state_;
  auto handler = [weak](SyncEventPtr e) {
    if (auto s = weak.lock()) s->onEvent(e);
  };
  sw.onSync(handler);
  sw.onPeriodicSync(handler);
}

ReferenceSync::~ReferenceSync() = default;

std::optional<Value> ReferenceSync::handleMessage(const Value& data) {
  const std::string type = data["type"].textOr("");
  ServiceWorker& sw = state_->sw;
  if (type == "SET_ONLINE") {
    const Value* online = data.find("online");
    if (!online || !online->isBool())
      return Value::map({{"error", Value::map({{"name", "TypeError"}, {"message", "SET_ONLINE needs a boolean online"}})}});
    if (auto r = sw.setOnline(online->asBool()); !r)
      return Value::map({{"error", Value::map({{"name", std::string(r.error().name())}, {"message", r.error().message}})}});
    return Value::map({{"online", sw.online()}});
  }
  if (type == "SYNC_STATE") {
    Value::List tags;
    for (const auto& t : sw.syncState())
      tags.push_back(Value::map({{"tag", t.tag},
                                 {"state", t.state},
                                 {"attempts", static_cast<int64_t>(t.attempts)},
                                 {"entries", static_cast<int64_t>(t.entries)}}));
    return Value::map({{"tags", Value(std::move(tags))}});
  }
  return std::nullopt;
}

}  // namespace swipc::daemon
