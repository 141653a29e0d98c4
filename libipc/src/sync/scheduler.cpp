#include "sync/scheduler.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "core/log.h"

namespace swipc::sync {

namespace {

using std::chrono::milliseconds;

constexpr size_t MAX_TAG_BYTES = 10240;

/// Strict UTF-8: shortest forms only, no surrogates, nothing above U+10FFFF.
bool isValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto lead = static_cast<uint8_t>(s[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    size_t length;
    uint32_t cp;
    uint32_t smallest;
    if ((lead & 0xE0) == 0xC0) {
      length = 2, cp = lead & 0x1F, smallest = 0x80;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3, cp = lead & 0x0F, smallest = 0x800;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4, cp = lead & 0x07, smallest = 0x10000;
    } else {
      return false;  // a continuation byte or 0xF8..0xFF where a character should start
    }
    if (s.size() - i < length) return false;
    for (size_t k = 1; k < length; ++k) {
      const auto next = static_cast<uint8_t>(s[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (next & 0x3F);
    }
    if (cp < smallest || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += length;
  }
  return true;
}

const char* kindName(SyncKind kind) { return kind == SyncKind::ONE_SHOT ? "sync" : "periodicsync"; }

}  // namespace

Result<void> checkTag(std::string_view tag) {
  if (tag.empty() || tag.size() > MAX_TAG_BYTES) {
    return makeError(Errc::TYPE, "a tag is 1.." + std::to_string(MAX_TAG_BYTES) + " bytes, not " +
                                     std::to_string(tag.size()));
  }
  if (!isValidUtf8(tag)) return makeError(Errc::TYPE, "a tag must be valid UTF-8");
  return {};
}

std::string_view syncOutcomeName(SyncOutcome outcome) {
  switch (outcome) {
    case SyncOutcome::SUCCESS: return "success";
    case SyncOutcome::FAILURE: return "failure";
    case SyncOutcome::TIMEOUT: return "timeout";
  }
  return "?";
}

// ---- SyncCompletion ----

SyncCompletion::SyncCompletion(std::shared_ptr<Anchor> anchor, SyncKind kind, std::string tag, uint64_t eventId,
                               std::vector<uint64_t> seqs)
    : anchor_(std::move(anchor)), kind_(kind), tag_(std::move(tag)), eventId_(eventId), seqs_(std::move(seqs)) {}

void SyncCompletion::resolve() { settle(SyncOutcome::SUCCESS, {}); }

void SyncCompletion::reject(std::string_view reason) { settle(SyncOutcome::FAILURE, reason); }

void SyncCompletion::settle(SyncOutcome outcome, std::string_view reason) {
  if (settled_) return;  // the first settle wins; a late one (after the timeout) is ignored
  settled_ = true;
  if (SyncScheduler* scheduler = anchor_->scheduler) {
    scheduler->settle(kind_, tag_, eventId_, outcome, reason, entriesDone_);
  }
}

Result<void> SyncCompletion::entryDone(uint64_t seq) {
  SyncScheduler* scheduler = anchor_->scheduler;
  if (scheduler == nullptr) return makeError(Errc::INVALID_STATE, "the sync scheduler is gone");
  if (!std::binary_search(seqs_.begin(), seqs_.end(), seq)) {
    return makeError(Errc::NOT_FOUND, "entry " + std::to_string(seq) + " is not part of this event of '" + tag_ + "'");
  }
  auto deleted = scheduler->entryDone(seq);
  if (!deleted) return deleted.error();
  if (*deleted) ++entriesDone_;
  return {};
}

void SyncCompletion::onAbort(std::function<void()> fn) {
  if (aborted_) {
    fn();
  } else if (!settled_) {
    abortHandlers_.push_back(std::move(fn));
  }
}

// ---- Registry ----

SyncScheduler::Registration* SyncScheduler::Registry::find(std::string_view tag) {
  auto it = orderOf.find(std::string(tag));
  return it == orderOf.end() ? nullptr : &byOrder.at(it->second);
}

const SyncScheduler::Registration* SyncScheduler::Registry::find(std::string_view tag) const {
  auto it = orderOf.find(std::string(tag));
  return it == orderOf.end() ? nullptr : &byOrder.at(it->second);
}

SyncScheduler::Registration& SyncScheduler::Registry::put(SyncRecord record) {
  SWIPC_ASSERT(!orderOf.contains(record.tag), "registry already holds '" + record.tag + "'");
  const int64_t order = record.order;
  orderOf.emplace(record.tag, order);
  auto [it, inserted] = byOrder.emplace(order, Registration{std::move(record)});
  SWIPC_ASSERT(inserted, "two registrations with order " + std::to_string(order));
  return it->second;
}

void SyncScheduler::Registry::erase(std::string_view tag) {
  auto it = orderOf.find(std::string(tag));
  if (it == orderOf.end()) return;
  byOrder.erase(it->second);
  orderOf.erase(it);
}

std::vector<std::string> SyncScheduler::Registry::tags() const {
  std::vector<std::string> out;
  out.reserve(byOrder.size());
  for (const auto& [order, reg] : byOrder) out.push_back(reg.record.tag);
  return out;
}

// ---- SyncScheduler: lifecycle ----

SyncScheduler::SyncScheduler(core::EventLoop& loop, SyncStore& store, SyncOptions options)
    : loop_(loop),
      store_(store),
      options_(options),
      anchor_(std::make_shared<SyncCompletion::Anchor>(SyncCompletion::Anchor{this})) {}

Result<std::unique_ptr<SyncScheduler>> SyncScheduler::create(core::EventLoop& loop, SyncStore& store,
                                                             SyncOptions options) {
  SWIPC_REQUIRE(options.retry.maxAttempts >= 1, "maxAttempts must be at least 1");
  std::unique_ptr<SyncScheduler> scheduler(new SyncScheduler(loop, store, options));
  for (SyncKind kind : {SyncKind::ONE_SHOT, SyncKind::PERIODIC}) {
    auto records = store.load(kind);
    if (!records) return records.error();
    for (auto& record : *records) {
      Registration& reg = scheduler->registry(kind).put(std::move(record));
      if (reg.record.state == TagState::WAITING) {
        scheduler->armWaiting(reg);
      } else {
        scheduler->scheduleFirePass();  // store.open put interrupted events back to pending
      }
    }
  }
  return scheduler;
}

SyncScheduler::~SyncScheduler() {
  anchor_->scheduler = nullptr;  // outstanding completions become inert
  for (Registry* registry : {&oneShots_, &periodics_}) {
    for (auto& [order, reg] : registry->byOrder) clearTimer(reg);
  }
  if (firePassTimer_ != 0) loop_.cancelTimer(firePassTimer_);
}

void SyncScheduler::setHandler(Handler handler) {
  handler_ = std::move(handler);
  scheduleFirePass();
}

void SyncScheduler::setSettledHook(SettledHook hook) { settledHook_ = std::move(hook); }

void SyncScheduler::setOnline(bool online) {
  if (online == online_) return;
  online_ = online;
  core::log().info("sync: {}", online ? "online" : "offline");
  if (online_) scheduleFirePass();
}

// ---- registration ----

Result<void> SyncScheduler::registerTag(std::string_view tag, const std::optional<Value>& data) {
  if (auto r = checkTag(tag); !r) return r;
  auto record = store_.registerOneShot(tag, data);
  if (!record) return record.error();
  Registration* reg = oneShots_.find(tag);
  if (reg == nullptr) {
    reg = &oneShots_.put(std::move(*record));
  } else {
    if (reg->record.state == TagState::WAITING) clearTimer(*reg);  // coalesced: the wait is over
    reg->record = std::move(*record);                              // firing: now with refire
  }
  if (reg->record.state == TagState::PENDING) scheduleFirePass();
  return {};
}

std::vector<std::string> SyncScheduler::getTags() const { return oneShots_.tags(); }

Result<void> SyncScheduler::registerPeriodic(std::string_view tag, milliseconds minInterval) {
  if (auto r = checkTag(tag); !r) return r;
  if (minInterval.count() < 0) return makeError(Errc::TYPE, "minInterval must not be negative");
  auto record = store_.registerPeriodic(tag, minInterval, wallNow());
  if (!record) return record.error();
  Registration* reg = periodics_.find(tag);
  if (reg == nullptr) {
    armWaiting(periodics_.put(std::move(*record)));
  } else if (reg->record.state == TagState::FIRING) {
    reg->record.minInterval = minInterval;  // applies from the next period
  } else {
    clearTimer(*reg);
    reg->record = std::move(*record);
    armWaiting(*reg);  // the due time moves with the interval
  }
  return {};
}

Result<void> SyncScheduler::unregisterPeriodic(std::string_view tag) {
  auto existed = store_.unregisterPeriodic(tag);
  if (!existed) return existed.error();
  if (Registration* reg = periodics_.find(tag)) {
    clearTimer(*reg);
    periodics_.erase(tag);  // an event in flight runs on; its settle finds nothing and is ignored
  }
  return {};
}

std::vector<std::string> SyncScheduler::getPeriodicTags() const { return periodics_.tags(); }

Result<std::vector<TagSnapshot>> SyncScheduler::state() {
  auto counts = store_.entryCounts();
  if (!counts) return counts.error();
  std::unordered_map<std::string, uint64_t> entriesOf(counts->begin(), counts->end());
  std::vector<TagSnapshot> out;
  out.reserve(oneShots_.byOrder.size());
  for (const auto& [order, reg] : oneShots_.byOrder) {
    TagSnapshot snap;
    snap.tag = reg.record.tag;
    snap.state = reg.record.state;
    snap.attempts = reg.record.attempts;
    auto it = entriesOf.find(reg.record.tag);
    snap.entries = it == entriesOf.end() ? 0 : it->second;
    if (reg.record.state == TagState::WAITING) snap.nextAttempt = reg.record.nextAttempt;
    out.push_back(std::move(snap));
  }
  return out;
}

// ---- timers ----

void SyncScheduler::clearTimer(Registration& reg) {
  if (reg.timer != 0) loop_.cancelTimer(reg.timer);
  reg.timer = 0;
}

WallTime SyncScheduler::dueAt(const SyncRecord& record) const {
  if (record.kind == SyncKind::ONE_SHOT || record.attempts > 0) return record.nextAttempt;  // a retry
  return record.lastFire + std::max(record.minInterval, options_.periodicMinInterval);  // next period
}

void SyncScheduler::armWaiting(Registration& reg) {
  reg.record.state = TagState::WAITING;
  const milliseconds wait = dueAt(reg.record) - wallNow();
  if (wait.count() <= 0) {
    reg.record.state = TagState::PENDING;
    scheduleFirePass();
    return;
  }
  reg.timer = loop_.addTimer(Clock::now() + wait, [this, kind = reg.record.kind, tag = reg.record.tag] {
    if (Registration* r = registry(kind).find(tag)) r->timer = 0;
    becomePending(kind, tag);
  });
}

void SyncScheduler::becomePending(SyncKind kind, const std::string& tag) {
  Registration* reg = registry(kind).find(tag);
  if (reg == nullptr || reg->record.state != TagState::WAITING) return;
  // Memory only: the store's `waiting` with a past nextAttempt means the same after a restart.
  reg->record.state = TagState::PENDING;
  scheduleFirePass();
}

void SyncScheduler::scheduleFirePass() {
  if (firePassTimer_ != 0) return;
  firePassTimer_ = loop_.addTimer(Clock::now(), [this] {
    firePassTimer_ = 0;
    firePass();
  });
}

// ---- firing ----

void SyncScheduler::firePass() {
  if (!online_ || !handler_) return;
  fireBatch(SyncKind::ONE_SHOT);
  fireBatch(SyncKind::PERIODIC);
}

void SyncScheduler::fireBatch(SyncKind kind) {
  Registry& registry = this->registry(kind);
  std::vector<std::string> due;
  for (const auto& [order, reg] : registry.byOrder) {
    if (reg.record.state == TagState::PENDING) due.push_back(reg.record.tag);
  }
  if (due.empty()) return;
  if (auto r = store_.markFiring(kind, due); !r) return storeError("marking tags firing", r.error());
  // All firing before any handler runs, so a handler that registers a later tag of this batch
  // sees it firing (refire), as the store does.
  for (const auto& tag : due) registry.find(tag)->record.state = TagState::FIRING;
  for (const auto& tag : due) {
    Registration* reg = registry.find(tag);
    if (reg != nullptr && reg->record.state == TagState::FIRING && !reg->completion) dispatch(*reg);
  }
}

void SyncScheduler::dispatch(Registration& reg) {
  const SyncKind kind = reg.record.kind;
  const std::string tag = reg.record.tag;
  const uint64_t eventId = nextEventId_++;

  SyncEvent event;
  event.tag = tag;
  event.attempt = reg.record.attempts + 1;
  event.lastChance = event.attempt >= options_.retry.maxAttempts;
  event.periodic = kind == SyncKind::PERIODIC;
  if (kind == SyncKind::ONE_SHOT) {
    auto entries = store_.entries(tag);
    if (!entries) {
      storeError("reading the entries of '" + tag + "'", entries.error());
      reg.eventId = eventId;  // so settle() accepts this attempt: it fails without a handler
      return settle(kind, tag, eventId, SyncOutcome::FAILURE, entries.error().describe(), 0);
    }
    event.entries = std::move(*entries);
  }
  std::vector<uint64_t> seqs;
  seqs.reserve(event.entries.size());
  for (const auto& entry : event.entries) seqs.push_back(entry.seq);  // ascending: ORDER BY seq

  auto completion = std::shared_ptr<SyncCompletion>(new SyncCompletion(anchor_, kind, tag, eventId, std::move(seqs)));
  reg.eventId = eventId;
  reg.completion = completion;
  reg.timer = loop_.addTimer(Clock::now() + options_.timeout, [this, kind, tag, eventId] {
    Registration* r = registry(kind).find(tag);
    if (r == nullptr || r->eventId != eventId) return;
    r->timer = 0;
    settle(kind, tag, eventId, SyncOutcome::TIMEOUT, "timed out", r->completion->entriesDone_);
  });
  event.completion = completion;
  ++counters_.fired;
  core::log().debug("sync: {} '{}' attempt {}{} with {} entries", kindName(kind), tag, event.attempt,
                    event.lastChance ? " (last chance)" : "", event.entries.size());

  Handler handler = handler_;  // `reg` and handler_ may change under the call: use neither after
  try {
    handler(std::move(event));
  } catch (const std::exception& e) {
    completion->reject(std::string("handler threw: ") + e.what());
  } catch (...) {
    completion->reject("handler threw");
  }
}

void SyncScheduler::settle(SyncKind kind, const std::string& tag, uint64_t eventId, SyncOutcome outcome,
                           std::string_view reason, uint64_t entriesDone) {
  Registration* reg = registry(kind).find(tag);
  if (reg == nullptr || reg->eventId != eventId || reg->record.state != TagState::FIRING) return;  // stale
  std::shared_ptr<SyncCompletion> completion = std::move(reg->completion);
  reg->eventId = 0;
  clearTimer(*reg);
  const int attempt = reg->record.attempts + 1;
  const bool success = outcome == SyncOutcome::SUCCESS;
  if (completion) {
    completion->settled_ = true;
    completion->aborted_ = outcome == SyncOutcome::TIMEOUT;
  }

  auto result = store_.settle(kind, tag, Settlement{success, entriesDone}, options_.retry, wallNow());
  if (!result) {
    // The file still says firing, which a restart turns into pending. Here: wait one retry
    // period before trying again, rather than spinning on a failing disk.
    storeError("settling '" + tag + "'", result.error());
    reg->record.state = TagState::WAITING;
    reg->timer = loop_.addTimer(Clock::now() + options_.retry.retry, [this, kind, tag] {
      if (Registration* r = registry(kind).find(tag)) r->timer = 0;
      becomePending(kind, tag);
    });
  } else {
    if (success) {
      ++counters_.succeeded;
    } else {
      ++counters_.failed;
      if (outcome == SyncOutcome::TIMEOUT) ++counters_.timedOut;
      core::log().info("sync: {} '{}' attempt {} failed: {}", kindName(kind), tag, attempt, reason);
    }
    if (result->after == AfterSettle::GAVE_UP && kind == SyncKind::ONE_SHOT) {
      ++counters_.gaveUp;
      counters_.droppedEntries += result->droppedEntries;
      core::log().warn("sync: '{}' failed its last chance (attempt {}); dropped it with {} entries not done",
                       tag, attempt, result->droppedEntries);
    }
    if (!result->record) {
      registry(kind).erase(tag);
    } else {
      reg->record = std::move(*result->record);
      if (reg->record.state == TagState::PENDING) {
        scheduleFirePass();
      } else {
        armWaiting(*reg);
      }
    }
  }

  // State is updated: now the callbacks.
  if (completion && outcome == SyncOutcome::TIMEOUT) {
    auto handlers = std::move(completion->abortHandlers_);
    for (auto& fn : handlers) fn();
  }
  if (settledHook_) settledHook_(SettledEvent{tag, attempt, kind == SyncKind::PERIODIC, outcome});
}

Result<bool> SyncScheduler::entryDone(uint64_t seq) {
  auto deleted = store_.entryDone(seq);
  if (!deleted) storeError("marking entry " + std::to_string(seq) + " done", deleted.error());
  return deleted;
}

void SyncScheduler::storeError(std::string_view what, const Error& error) {
  ++counters_.storeErrors;
  core::log().error("sync: {}: {}", what, error.describe());
}

}  // namespace swipc::sync
