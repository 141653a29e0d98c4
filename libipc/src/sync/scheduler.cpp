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
  if (settlePassTimer_ != 0) loop_.cancelTimer(settlePassTimer_);
  // Settles not yet committed are dropped: the file says firing, which the next start turns
  // into pending with the attempt uncounted (as after a kill mid-event).
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
  // Settles made but not yet committed (the pass is queued on the loop) are what the tags'
  // states already are to service-worker code: commit them first, so a SYNC_DONE already
  // reported is never followed by a state that still says firing.
  if (!settling_.empty()) {
    if (settlePassTimer_ != 0) loop_.cancelTimer(settlePassTimer_);
    settlePassTimer_ = 0;
    settlePass();
  }
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
  reg->eventId = 0;  // from here on a second settle of this event is stale
  clearTimer(*reg);
  if (completion) {
    completion->settled_ = true;
    completion->aborted_ = outcome == SyncOutcome::TIMEOUT;
  }
  // The registration stays `firing` (in memory and on disk) until the settle pass commits: a
  // daemon killed before that leaves this attempt uncounted, as any kill mid-event does.
  settling_.push_back(PendingSettle{kind, tag, reg->record.attempts + 1, outcome, std::string(reason),
                                    entriesDone, std::move(completion)});
  if (settlePassTimer_ == 0) {
    settlePassTimer_ = loop_.addTimer(Clock::now(), [this] {
      settlePassTimer_ = 0;
      settlePass();
    });
  }
}

void SyncScheduler::settlePass() {
  std::vector<PendingSettle> batch = std::move(settling_);
  settling_.clear();
  // A registration removed or replaced meanwhile (periodic unregister, register again) is not
  // settled: the event it belonged to is gone.
  std::erase_if(batch, [this](const PendingSettle& p) {
    const Registration* reg = registry(p.kind).find(p.tag);
    return reg == nullptr || reg->record.state != TagState::FIRING || reg->completion != nullptr;
  });
  if (batch.empty()) return;
  std::vector<SettleRequest> requests;
  requests.reserve(batch.size());
  for (const auto& p : batch) {
    requests.push_back(SettleRequest{p.kind, p.tag, Settlement{p.outcome == SyncOutcome::SUCCESS, p.entriesDone}});
  }
  auto results = store_.settleAll(requests, options_.retry, wallNow());
  for (size_t i = 0; i < batch.size(); ++i) {
    PendingSettle& p = batch[i];
    if (!results) {
      applySettleFailure(p, results.error());
    } else if (!(*results)[i]) {
      applySettleFailure(p, (*results)[i].error());
    } else {
      applySettled(p, *(*results)[i]);
    }
  }
  // State is updated and durable: now the callbacks, in settle order.
  for (auto& p : batch) {
    if (p.completion && p.outcome == SyncOutcome::TIMEOUT) {
      auto handlers = std::move(p.completion->abortHandlers_);
      for (auto& fn : handlers) fn();
    }
    if (settledHook_) settledHook_(SettledEvent{p.tag, p.attempt, p.kind == SyncKind::PERIODIC, p.outcome});
  }
}

void SyncScheduler::applySettleFailure(const PendingSettle& p, const Error& error) {
  if (error.code == Errc::NOT_FOUND || error.code == Errc::INVALID_STATE) {
    core::log().debug("sync: settle of '{}' is stale: {}", p.tag, error.describe());
    return;
  }
  // The file still says firing, which a restart turns into pending. Here: wait one retry
  // period before trying again, rather than spinning on a failing disk.
  storeError("settling '" + p.tag + "'", error);
  Registration* reg = registry(p.kind).find(p.tag);
  if (reg == nullptr) return;
  reg->record.state = TagState::WAITING;
  reg->timer = loop_.addTimer(Clock::now() + options_.retry.retry, [this, kind = p.kind, tag = p.tag] {
    if (Registration* r = registry(kind).find(tag)) r->timer = 0;
    becomePending(kind, tag);
  });
}

void SyncScheduler::applySettled(const PendingSettle& p, SettleResult& result) {
  if (p.outcome == SyncOutcome::SUCCESS) {
    ++counters_.succeeded;
  } else {
    ++counters_.failed;
    if (p.outcome == SyncOutcome::TIMEOUT) ++counters_.timedOut;
    core::log().info("sync: {} '{}' attempt {} failed: {}", kindName(p.kind), p.tag, p.attempt, p.reason);
  }
  if (result.after == AfterSettle::GAVE_UP && p.kind == SyncKind::ONE_SHOT) {
    ++counters_.gaveUp;
    counters_.droppedEntries += result.droppedEntries;
    core::log().warn("sync: '{}' failed its last chance (attempt {}); dropped it with {} entries not done",
                     p.tag, p.attempt, result.droppedEntries);
  }
  if (!result.record) {
    registry(p.kind).erase(p.tag);
    return;
  }
  Registration* reg = registry(p.kind).find(p.tag);
  reg->record = std::move(*result.record);
  if (reg->record.state == TagState::PENDING) {
    scheduleFirePass();
  } else {
    armWaiting(*reg);
  }
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
