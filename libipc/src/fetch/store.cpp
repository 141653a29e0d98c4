#include "fetch/store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "common/thread_name.h"
#include "sync/state_db.h"

namespace swipc::fetch {

namespace sql = sync::sql;

namespace {

#define FETCH_TRY(expr)                           \
  do {                                            \
    if (auto r_ = (expr); !r_) return r_.error(); \
  } while (0)

/// Runs `body` in a write transaction and commits it.
template <typename Body>
Result<void> inTransaction(sql::Database& db, Body&& body) {
  auto tx = sql::Transaction::begin(db);
  if (!tx) return tx.error();
  FETCH_TRY(body());
  return tx->commit();
}

}  // namespace

std::string encodeHeaders(const HttpHeaders& headers) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& [name, value] : headers) j.push_back({name, value});
  // Header bytes need not be UTF-8: replace what is not, rather than fail the commit.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

HttpHeaders decodeHeaders(const std::string& text) {
  HttpHeaders out;
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return out;
  for (const auto& h : j) {
    if (h.is_array() && h.size() == 2 && h[0].is_string() && h[1].is_string())
      out.emplace_back(h[0].get<std::string>(), h[1].get<std::string>());
  }
  return out;
}

Result<std::unique_ptr<FetchStore>> FetchStore::open(const std::filesystem::path& stateDir) {
  auto db = sync::openStateDatabase(stateDir);
  if (!db) return db.error();
  const std::filesystem::path dir = stateDir / "fetch";
  if (auto r = sync::makeDirectories(dir); !r) return makeError(r.error().code, "state dir " + stateDir.string() + ": " + r.error().message);
  // Progress (responses, completions, results, deletions) is committed without an fsync: in WAL
  // mode a commit survives the daemon's kill -9 either way, and what a power cut could take back
  // only makes a request download again. create() is acknowledged to a page: it alone waits for
  // the disk (DESIGN §11). An fsync per response on the loop cost other pages ~10 ms stalls.
  if (auto r = db->exec("PRAGMA synchronous = NORMAL"); !r) return r.error();
  return std::unique_ptr<FetchStore>(new FetchStore(std::move(*db), dir));
}

FetchStore::FetchStore(sync::sql::Database db, std::filesystem::path dir)
    : db_(std::move(db)), dir_(std::move(dir)), janitor_([this] {
        nameThisThread("fetch-janitor");
        janitor();
      }) {}

FetchStore::~FetchStore() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  janitor_.join();
}

void FetchStore::janitor() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !trash_.empty(); });
    if (trash_.empty()) return;  // stopping, nothing left
    std::filesystem::path p = std::move(trash_.front());
    trash_.pop_front();
    lock.unlock();
    std::error_code ec;
    std::filesystem::remove_all(p, ec);
    lock.lock();
  }
}

Result<std::vector<StoredRegistration>> FetchStore::loadAll() {
  std::vector<StoredRegistration> out;
  {
    auto stmt = db_.cached(
        "SELECT id, ord, title, download_total, upload_total, downloaded_floor, result, failure_reason "
        "FROM fetch_registration ORDER BY ord");
    if (!stmt) return stmt.error();
    for (;;) {
      auto row = (*stmt)->step();
      if (!row) return row.error();
      if (!*row) break;
      StoredRegistration r;
      r.id = (*stmt)->columnText(0);
      r.ord = (*stmt)->columnInt(1);
      r.title = (*stmt)->columnText(2);
      r.downloadTotal = static_cast<uint64_t>((*stmt)->columnInt(3));
      r.uploadTotal = static_cast<uint64_t>((*stmt)->columnInt(4));
      r.downloadedFloor = static_cast<uint64_t>((*stmt)->columnInt(5));
      r.result = (*stmt)->columnText(6);
      r.failureReason = (*stmt)->columnText(7);
      out.push_back(std::move(r));
    }
  }
  for (auto& r : out) {
    auto stmt = db_.cached(
        "SELECT idx, url, method, headers, body, status, response_headers, validator, complete "
        "FROM fetch_request WHERE reg_ord = ?1 ORDER BY idx");
    if (!stmt) return stmt.error();
    FETCH_TRY((*stmt)->bindInt(1, r.ord));
    for (;;) {
      auto row = (*stmt)->step();
      if (!row) return row.error();
      if (!*row) break;
      StoredRequest q;
      q.idx = static_cast<uint32_t>((*stmt)->columnInt(0));
      q.url = (*stmt)->columnText(1);
      q.method = (*stmt)->columnText(2);
      q.headers = decodeHeaders((*stmt)->columnText(3));
      q.body = (*stmt)->columnBlob(4);
      q.status = static_cast<int>((*stmt)->columnInt(5));
      q.responseHeaders = decodeHeaders((*stmt)->columnText(6));
      q.validator = (*stmt)->columnText(7);
      q.complete = (*stmt)->columnInt(8) != 0;
      r.requests.push_back(std::move(q));
    }
  }
  return out;
}

Result<void> FetchStore::create(StoredRegistration& reg) {
  // Durable before the page's ok: this commit alone waits for the disk.
  FETCH_TRY(db_.exec("PRAGMA synchronous = FULL"));
  auto committed = createCommitted(reg);
  FETCH_TRY(db_.exec("PRAGMA synchronous = NORMAL"));
  return committed;
}

Result<void> FetchStore::createCommitted(StoredRegistration& reg) {
  return inTransaction(db_, [&]() -> Result<void> {
    {
      auto exists = db_.cached("SELECT COUNT(*) FROM fetch_registration WHERE id = ?1");
      if (!exists) return exists.error();
      FETCH_TRY((*exists)->bindText(1, reg.id));
      auto row = (*exists)->step();
      if (!row) return row.error();
      if ((*exists)->columnInt(0) != 0) return makeError(Errc::TYPE, "a background fetch with id '" + reg.id + "' exists");
    }
    auto next = db_.queryInt("SELECT COALESCE(MAX(ord), 0) + 1 FROM fetch_registration");
    if (!next) return next.error();
    reg.ord = *next;
    {
      auto ins = db_.cached(
          "INSERT INTO fetch_registration (id, ord, title, download_total, upload_total) VALUES (?1, ?2, ?3, ?4, ?5)");
      if (!ins) return ins.error();
      FETCH_TRY((*ins)->bindText(1, reg.id));
      FETCH_TRY((*ins)->bindInt(2, reg.ord));
      FETCH_TRY((*ins)->bindText(3, reg.title));
      FETCH_TRY((*ins)->bindInt(4, static_cast<int64_t>(reg.downloadTotal)));
      FETCH_TRY((*ins)->bindInt(5, static_cast<int64_t>(reg.uploadTotal)));
      FETCH_TRY((*ins)->run());
    }
    for (const auto& q : reg.requests) {
      auto ins = db_.cached(
          "INSERT INTO fetch_request (reg_ord, idx, url, method, headers, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
      if (!ins) return ins.error();
      FETCH_TRY((*ins)->bindInt(1, reg.ord));
      FETCH_TRY((*ins)->bindInt(2, q.idx));
      FETCH_TRY((*ins)->bindText(3, q.url));
      FETCH_TRY((*ins)->bindText(4, q.method));
      FETCH_TRY((*ins)->bindText(5, encodeHeaders(q.headers)));
      FETCH_TRY((*ins)->bindBlob(6, q.body));
      FETCH_TRY((*ins)->run());
    }
    return {};
  });
}

Result<void> FetchStore::setResponse(int64_t ord, uint32_t idx, int status, const HttpHeaders& headers,
                                     const std::string& validator) {
  return inTransaction(db_, [&]() -> Result<void> {
    auto up = db_.cached(
        "UPDATE fetch_request SET status = ?3, response_headers = ?4, validator = ?5 WHERE reg_ord = ?1 AND idx = ?2");
    if (!up) return up.error();
    FETCH_TRY((*up)->bindInt(1, ord));
    FETCH_TRY((*up)->bindInt(2, idx));
    FETCH_TRY((*up)->bindInt(3, status));
    FETCH_TRY((*up)->bindText(4, encodeHeaders(headers)));
    FETCH_TRY((*up)->bindText(5, validator));
    return (*up)->run();
  });
}

Result<void> FetchStore::setComplete(int64_t ord, uint32_t idx) {
  return inTransaction(db_, [&]() -> Result<void> {
    auto up = db_.cached("UPDATE fetch_request SET complete = 1 WHERE reg_ord = ?1 AND idx = ?2");
    if (!up) return up.error();
    FETCH_TRY((*up)->bindInt(1, ord));
    FETCH_TRY((*up)->bindInt(2, idx));
    return (*up)->run();
  });
}

Result<void> FetchStore::raiseFloor(int64_t ord, uint64_t floor) {
  return inTransaction(db_, [&]() -> Result<void> {
    auto up = db_.cached("UPDATE fetch_registration SET downloaded_floor = MAX(downloaded_floor, ?2) WHERE ord = ?1");
    if (!up) return up.error();
    FETCH_TRY((*up)->bindInt(1, ord));
    FETCH_TRY((*up)->bindInt(2, static_cast<int64_t>(floor)));
    return (*up)->run();
  });
}

Result<void> FetchStore::setResult(int64_t ord, const std::string& result, const std::string& failureReason) {
  return inTransaction(db_, [&]() -> Result<void> {
    auto up = db_.cached("UPDATE fetch_registration SET result = ?2, failure_reason = ?3 WHERE ord = ?1");
    if (!up) return up.error();
    FETCH_TRY((*up)->bindInt(1, ord));
    FETCH_TRY((*up)->bindText(2, result));
    FETCH_TRY((*up)->bindText(3, failureReason));
    return (*up)->run();
  });
}

Result<void> FetchStore::erase(int64_t ord) {
  FETCH_TRY(inTransaction(db_, [&]() -> Result<void> {
    for (const char* text : {"DELETE FROM fetch_request WHERE reg_ord = ?1", "DELETE FROM fetch_registration WHERE ord = ?1"}) {
      auto del = db_.cached(text);
      if (!del) return del.error();
      FETCH_TRY((*del)->bindInt(1, ord));
      FETCH_TRY((*del)->run());
    }
    return {};
  }));
  // Renamed now (the ord may be reused at once), removed by the janitor. A crash before it is
  // done leaves a .trash-* directory that the next open's removeOrphanBodies() removes.
  std::error_code ec;
  const auto from = dir_ / std::to_string(ord);
  const auto to = dir_ / (".trash-" + std::to_string(::getpid()) + "-" + std::to_string(trashed_++));
  std::filesystem::rename(from, to, ec);
  if (ec) return {};  // no body directory (nothing was stored)
  {
    std::lock_guard lock(mu_);
    trash_.push_back(to);
  }
  cv_.notify_one();
  return {};
}

std::filesystem::path FetchStore::bodyPath(int64_t ord, uint32_t idx) const {
  return dir_ / std::to_string(ord) / (std::to_string(idx) + ".body");
}

Result<void> FetchStore::makeBodyDir(int64_t ord) const {
  const auto dir = dir_ / std::to_string(ord);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return makeError(Errc::SYSTEM, "cannot create " + dir.string() + ": " + std::strerror(errno));
  }
  return {};
}

void FetchStore::removeOrphanBodies(const std::vector<StoredRegistration>& live) {
  std::set<std::string> keep;
  for (const auto& r : live) keep.insert(std::to_string(r.ord));
  std::error_code ec;
  {
    std::lock_guard lock(mu_);
    for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
      if (keep.count(entry.path().filename().string()) == 0) trash_.push_back(entry.path());
    }
  }
  cv_.notify_one();
}

}  // namespace swipc::fetch
