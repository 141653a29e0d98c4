#include "sync/store.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <kj/exception.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "common/unique_fd.h"
#include "sync/state_db.h"
#include "value.capnp.h"
#include "wire/limits.h"
#include "wire/value_codec.h"

namespace swipc::sync {

namespace {

using std::chrono::milliseconds;

/// The statements that differ only by table, per kind. Column order of SELECTs: tag, ord,
/// state, attempts, next_attempt_ms, then refire (one-shot) or min_interval_ms, last_fire_ms.
struct KindSql {
  const char* selectAll;
  const char* selectOne;
  const char* replace;
  const char* erase;
  const char* nextOrder;
  const char* setFiring;
};

constexpr KindSql ONE_SHOT_SQL{
    "SELECT tag, ord, state, attempts, next_attempt_ms, refire FROM oneshot ORDER BY ord",
    "SELECT tag, ord, state, attempts, next_attempt_ms, refire FROM oneshot WHERE tag = ?1",
    "REPLACE INTO oneshot (tag, ord, state, attempts, next_attempt_ms, refire) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    "DELETE FROM oneshot WHERE tag = ?1",
    "SELECT COALESCE(MAX(ord), 0) + 1 FROM oneshot",
    "UPDATE oneshot SET state = 'firing' WHERE tag = ?1",
};

constexpr KindSql PERIODIC_SQL{
    "SELECT tag, ord, state, attempts, next_attempt_ms, min_interval_ms, last_fire_ms FROM periodic ORDER BY ord",
    "SELECT tag, ord, state, attempts, next_attempt_ms, min_interval_ms, last_fire_ms FROM periodic WHERE tag = ?1",
    "REPLACE INTO periodic (tag, ord, state, attempts, next_attempt_ms, min_interval_ms, last_fire_ms) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    "DELETE FROM periodic WHERE tag = ?1",
    "SELECT COALESCE(MAX(ord), 0) + 1 FROM periodic",
    "UPDATE periodic SET state = 'firing' WHERE tag = ?1",
};

const KindSql& sqlFor(SyncKind kind) { return kind == SyncKind::ONE_SHOT ? ONE_SHOT_SQL : PERIODIC_SQL; }

/// Evaluates a Result<void> expression; returns its error from the enclosing function.
#define SYNC_TRY(expr)                  \
  do {                                  \
    if (auto r_ = (expr); !r_) return r_.error(); \
  } while (0)

Result<TagState> parseState(const std::string& text) {
  if (text == "pending") return TagState::PENDING;
  if (text == "firing") return TagState::FIRING;
  if (text == "waiting") return TagState::WAITING;
  return makeError(Errc::INVALID_STATE, "unknown registration state '" + text + "'");
}

WallTime fromMs(int64_t ms) { return WallTime(milliseconds(ms)); }
int64_t toMs(WallTime t) { return t.time_since_epoch().count(); }

Result<SyncRecord> readRecord(SyncKind kind, const sql::Statement& row) {
  SyncRecord rec;
  rec.kind = kind;
  rec.tag = row.columnText(0);
  rec.order = row.columnInt(1);
  auto state = parseState(row.columnText(2));
  if (!state) return state.error();
  rec.state = *state;
  rec.attempts = static_cast<int>(row.columnInt(3));
  rec.nextAttempt = fromMs(row.columnInt(4));
  if (kind == SyncKind::ONE_SHOT) {
    rec.refire = row.columnInt(5) != 0;
  } else {
    rec.minInterval = milliseconds(row.columnInt(5));
    rec.lastFire = fromMs(row.columnInt(6));
  }
  return rec;
}

}  // namespace

// Entry data is stored as a single-segment Cap'n Proto message of schemas/value.capnp: the
// same encoding the wire uses, so bytes, 64-bit ints and floats (NaN payloads, -0.0) round-trip.
std::vector<uint8_t> encodeValue(const Value& value) {
  capnp::MallocMessageBuilder message;
  wire::writeValue(value, message.initRoot<schema::Value>());
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

Result<Value> decodeValue(const std::vector<uint8_t>& bytes) {
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0) {
    return makeError(Errc::DATA_CLONE, "stored entry is not a whole number of words");
  }
  auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  try {
    capnp::FlatArrayMessageReader reader(words, wire::readerOptions(bytes.size()));
    return wire::readValue(reader.getRoot<schema::Value>());
  } catch (const kj::Exception& e) {
    return makeError(Errc::DATA_CLONE, std::string("stored entry is malformed: ") + e.getDescription().cStr());
  }
}


WallTime wallNow() { return std::chrono::time_point_cast<milliseconds>(std::chrono::system_clock::now()); }

std::string_view tagStateName(TagState state) {
  switch (state) {
    case TagState::PENDING: return "pending";
    case TagState::FIRING: return "firing";
    case TagState::WAITING: return "waiting";
  }
  return "?";
}

milliseconds retryDelay(const RetryPolicy& policy, int failedAttempts) {
  SWIPC_REQUIRE(failedAttempts >= 1, "retryDelay of attempt " + std::to_string(failedAttempts));
  constexpr double YEAR_MS = 365.0 * 24 * 3600 * 1000;
  const double ms = static_cast<double>(policy.retry.count()) * std::pow(policy.factor, failedAttempts - 1);
  return milliseconds(static_cast<int64_t>(std::min(ms, YEAR_MS)));
}

// ---- open ----

Result<std::unique_ptr<SyncStore>> SyncStore::open(const std::filesystem::path& stateDir) {
  auto db = openStateDatabase(stateDir);
  if (!db) return db.error();
  std::unique_ptr<SyncStore> store(new SyncStore(std::move(*db), stateDatabasePath(stateDir)));
  if (auto r = store->recoverInterruptedEvents(); !r) {
    return makeError(r.error().code, "state dir " + stateDir.string() + ": cannot write database: " + r.error().message);
  }
  return store;
}

SyncStore::~SyncStore() = default;

Result<void> SyncStore::recoverInterruptedEvents() {
  auto tx = sql::Transaction::begin(db_);
  if (!tx) return tx.error();
  // The interrupted attempt is not counted (as in Chromium); a re-registration made during it
  // asked for a fresh start.
  SYNC_TRY(db_.exec("UPDATE oneshot SET state = 'pending', next_attempt_ms = 0, refire = 0, "
                    "attempts = CASE refire WHEN 1 THEN 0 ELSE attempts END WHERE state = 'firing'"));
  SYNC_TRY(db_.exec("UPDATE periodic SET state = 'pending' WHERE state = 'firing'"));
  return tx->commit();
}

// ---- private helpers (each runs inside the caller's transaction when it has one) ----

Result<std::optional<SyncRecord>> SyncStore::find(SyncKind kind, std::string_view tag) {
  auto stmt = db_.cached(sqlFor(kind).selectOne);
  if (!stmt) return stmt.error();
  SYNC_TRY((*stmt)->bindText(1, tag));
  auto row = (*stmt)->step();
  if (!row) return row.error();
  if (!*row) return std::optional<SyncRecord>();
  auto rec = readRecord(kind, **stmt);
  if (!rec) return rec.error();
  return std::optional<SyncRecord>(std::move(*rec));
}

Result<int64_t> SyncStore::nextOrder(SyncKind kind) { return db_.queryInt(sqlFor(kind).nextOrder); }

Result<uint64_t> SyncStore::countEntries(std::string_view tag) {
  auto stmt = db_.cached("SELECT COUNT(*) FROM entry WHERE tag = ?1");
  if (!stmt) return stmt.error();
  SYNC_TRY((*stmt)->bindText(1, tag));
  auto row = (*stmt)->step();
  if (!row) return row.error();
  return static_cast<uint64_t>((*stmt)->columnInt(0));
}

Result<uint64_t> SyncStore::dropEntries(std::string_view tag) {
  auto stmt = db_.cached("DELETE FROM entry WHERE tag = ?1");
  if (!stmt) return stmt.error();
  SYNC_TRY((*stmt)->bindText(1, tag));
  SYNC_TRY((*stmt)->run());
  return static_cast<uint64_t>(db_.changes());
}

Result<void> SyncStore::write(const SyncRecord& rec) {
  auto stmt = db_.cached(sqlFor(rec.kind).replace);
  if (!stmt) return stmt.error();
  sql::Statement& s = **stmt;
  SYNC_TRY(s.bindText(1, rec.tag));
  SYNC_TRY(s.bindInt(2, rec.order));
  SYNC_TRY(s.bindText(3, tagStateName(rec.state)));
  SYNC_TRY(s.bindInt(4, rec.attempts));
  SYNC_TRY(s.bindInt(5, toMs(rec.nextAttempt)));
  if (rec.kind == SyncKind::ONE_SHOT) {
    SYNC_TRY(s.bindInt(6, rec.refire ? 1 : 0));
  } else {
    SYNC_TRY(s.bindInt(6, rec.minInterval.count()));
    SYNC_TRY(s.bindInt(7, toMs(rec.lastFire)));
  }
  return s.run();
}

Result<void> SyncStore::erase(SyncKind kind, std::string_view tag) {
  auto stmt = db_.cached(sqlFor(kind).erase);
  if (!stmt) return stmt.error();
  SYNC_TRY((*stmt)->bindText(1, tag));
  return (*stmt)->run();
}

// ---- queries ----

Result<std::vector<SyncRecord>> SyncStore::load(SyncKind kind) {
  auto stmt = db_.cached(sqlFor(kind).selectAll);
  if (!stmt) return stmt.error();
  std::vector<SyncRecord> out;
  for (;;) {
    auto row = (*stmt)->step();
    if (!row) return row.error();
    if (!*row) break;
    auto rec = readRecord(kind, **stmt);
    if (!rec) return rec.error();
    out.push_back(std::move(*rec));
  }
  return out;
}

Result<std::vector<SyncEntry>> SyncStore::entries(std::string_view tag) {
  auto stmt = db_.cached("SELECT seq, data FROM entry WHERE tag = ?1 ORDER BY seq");
  if (!stmt) return stmt.error();
  SYNC_TRY((*stmt)->bindText(1, tag));
  std::vector<SyncEntry> out;
  for (;;) {
    auto row = (*stmt)->step();
    if (!row) return row.error();
    if (!*row) break;
    const auto seq = static_cast<uint64_t>((*stmt)->columnInt(0));
    auto data = decodeValue((*stmt)->columnBlob(1));
    if (!data) return makeError(data.error().code, "entry " + std::to_string(seq) + ": " + data.error().message);
    out.push_back(SyncEntry{seq, std::move(*data)});
  }
  return out;
}

Result<std::vector<std::pair<std::string, uint64_t>>> SyncStore::entryCounts() {
  auto stmt = db_.cached("SELECT tag, COUNT(*) FROM entry GROUP BY tag");
  if (!stmt) return stmt.error();
  std::vector<std::pair<std::string, uint64_t>> out;
  for (;;) {
    auto row = (*stmt)->step();
    if (!row) return row.error();
    if (!*row) break;
    out.emplace_back((*stmt)->columnText(0), static_cast<uint64_t>((*stmt)->columnInt(1)));
  }
  return out;
}

Result<std::string> SyncStore::integrityCheck() { return db_.checkIntegrity(/*quick=*/false); }

// ---- mutations: one commit each ----

Result<SyncRecord> SyncStore::registerOneShot(std::string_view tag, const std::optional<Value>& data) {
  auto tx = sql::Transaction::begin(db_);
  if (!tx) return tx.error();
  auto existing = find(SyncKind::ONE_SHOT, tag);
  if (!existing) return existing.error();
  SyncRecord rec;
  if (*existing) {
    rec = std::move(**existing);
    switch (rec.state) {
      case TagState::PENDING: break;  // coalesces: still one event
      case TagState::WAITING:         // coalesces, and the retry wait ends now
        rec.state = TagState::PENDING;
        rec.nextAttempt = WallTime{};
        break;
      case TagState::FIRING: rec.refire = true; break;
    }
  } else {
    auto order = nextOrder(SyncKind::ONE_SHOT);
    if (!order) return order.error();
    rec.kind = SyncKind::ONE_SHOT;
    rec.tag = std::string(tag);
    rec.order = *order;
  }
  SYNC_TRY(write(rec));
  if (data) {
    auto stmt = db_.cached("INSERT INTO entry (tag, data) VALUES (?1, ?2)");
    if (!stmt) return stmt.error();
    SYNC_TRY((*stmt)->bindText(1, tag));
    SYNC_TRY((*stmt)->bindBlob(2, encodeValue(*data)));
    SYNC_TRY((*stmt)->run());
  }
  SYNC_TRY(tx->commit());
  return rec;
}

Result<SyncRecord> SyncStore::registerPeriodic(std::string_view tag, milliseconds minInterval, WallTime now) {
  SWIPC_REQUIRE(minInterval.count() >= 0, "negative minInterval");
  auto tx = sql::Transaction::begin(db_);
  if (!tx) return tx.error();
  auto existing = find(SyncKind::PERIODIC, tag);
  if (!existing) return existing.error();
  SyncRecord rec;
  if (*existing) {
    rec = std::move(**existing);
  } else {
    auto order = nextOrder(SyncKind::PERIODIC);
    if (!order) return order.error();
    rec.kind = SyncKind::PERIODIC;
    rec.tag = std::string(tag);
    rec.order = *order;
    rec.state = TagState::WAITING;  // never fires at registration
    rec.lastFire = now;
  }
  rec.minInterval = minInterval;
  SYNC_TRY(write(rec));
  SYNC_TRY(tx->commit());
  return rec;
}

Result<bool> SyncStore::unregisterPeriodic(std::string_view tag) {
  auto tx = sql::Transaction::begin(db_);
  if (!tx) return tx.error();
  SYNC_TRY(erase(SyncKind::PERIODIC, tag));
  const bool existed = db_.changes() > 0;
  SYNC_TRY(tx->commit());
  return existed;
}

Result<void> SyncStore::markFiring(SyncKind kind, std::span<const std::string> tags) {
  if (tags.empty()) return {};
  auto tx = sql::Transaction::begin(db_);
  if (!tx) return tx.error();
  auto stmt = db_.cached(sqlFor(kind).setFiring);
  if (!stmt) return stmt.error();
  for (const auto& tag : tags) {
    (*stmt)->reset();
    SYNC_TRY((*stmt)->bindText(1, tag));
    SYNC_TRY((*stmt)->run());
  }
  return tx->commit();
}

Result<SettleResult> SyncStore::settle(SyncKind kind, std::string_view tag, const Settlement& how,
                                       const RetryPolicy& policy, WallTime now) {
  auto tx = sql::Transaction::begin(db_);
  if (!tx) return tx.error();
  auto result = applySettle(kind, tag, how, policy, now);
  if (!result) return result.error();
  SYNC_TRY(tx->commit());
  return result;
}

Result<std::vector<Result<SettleResult>>> SyncStore::settleAll(std::span<const SettleRequest> requests,
                                                               const RetryPolicy& policy, WallTime now) {
  auto tx = sql::Transaction::begin(db_);
  if (!tx) return tx.error();
  std::vector<Result<SettleResult>> results;
  results.reserve(requests.size());
  for (const auto& request : requests) {
    auto result = applySettle(request.kind, request.tag, request.how, policy, now);
    // NOT_FOUND / INVALID_STATE are found before anything is written: that request alone fails.
    // Anything else (the disk) fails the batch; the destructor of `tx` rolls it all back.
    if (!result && result.error().code != Errc::NOT_FOUND && result.error().code != Errc::INVALID_STATE) {
      return result.error();
    }
    results.push_back(std::move(result));
  }
  SYNC_TRY(tx->commit());
  return results;
}

Result<SettleResult> SyncStore::applySettle(SyncKind kind, std::string_view tag, const Settlement& how,
                                            const RetryPolicy& policy, WallTime now) {
  auto found = find(kind, tag);
  if (!found) return found.error();
  if (!*found) return makeError(Errc::NOT_FOUND, "no registration '" + std::string(tag) + "'");
  SyncRecord rec = std::move(**found);
  if (rec.state != TagState::FIRING) {
    return makeError(Errc::INVALID_STATE, "'" + rec.tag + "' is " + std::string(tagStateName(rec.state)) + ", not firing");
  }
  const int attempt = rec.attempts + 1;
  SettleResult result;

  auto fireAgain = [&] {
    result.after = AfterSettle::FIRE_AGAIN;
    rec.state = TagState::PENDING;
    rec.attempts = 0;
    rec.refire = false;
    rec.nextAttempt = WallTime{};
  };
  auto retryAt = [&](int failed, milliseconds delay) {
    result.after = AfterSettle::RETRY;
    rec.state = TagState::WAITING;
    rec.attempts = failed;
    rec.nextAttempt = now + delay;
  };
  auto nextPeriod = [&](AfterSettle after) {
    result.after = after;
    rec.state = TagState::WAITING;
    rec.attempts = 0;
    rec.nextAttempt = WallTime{};
    rec.lastFire = now;
  };

  if (kind == SyncKind::PERIODIC) {
    if (how.success) {
      nextPeriod(AfterSettle::NEXT_PERIOD);
    } else if (attempt >= policy.maxAttempts) {
      nextPeriod(AfterSettle::GAVE_UP);
    } else {
      retryAt(attempt, retryDelay(policy, attempt));
    }
  } else if (rec.refire) {
    fireAgain();
  } else if (how.success) {
    auto left = countEntries(tag);
    if (!left) return left.error();
    if (*left == 0) {
      result.after = AfterSettle::REMOVED;
    } else if (how.entriesDone > 0) {
      fireAgain();
    } else {
      retryAt(0, policy.retry);
    }
  } else if (attempt >= policy.maxAttempts) {
    auto dropped = dropEntries(tag);
    if (!dropped) return dropped.error();
    result.after = AfterSettle::GAVE_UP;
    result.droppedEntries = *dropped;
  } else {
    retryAt(attempt, retryDelay(policy, attempt));
  }

  const bool removed = result.after == AfterSettle::REMOVED ||
                       (kind == SyncKind::ONE_SHOT && result.after == AfterSettle::GAVE_UP);
  if (removed) {
    SYNC_TRY(erase(kind, tag));
  } else {
    SYNC_TRY(write(rec));
    result.record = std::move(rec);
  }
  return result;
}

Result<bool> SyncStore::entryDone(uint64_t seq) {
  auto stmt = db_.cached("DELETE FROM entry WHERE seq = ?1");
  if (!stmt) return stmt.error();
  SYNC_TRY((*stmt)->bindInt(1, static_cast<int64_t>(seq)));
  SYNC_TRY((*stmt)->run());  // autocommit: durable when run() returns
  return db_.changes() > 0;
}

#undef SYNC_TRY

}  // namespace swipc::sync
