// sync_bench: Background Sync through the public client API against a bare SQLite commit measured
// in the same run (DESIGN §10, issue 15).
//
//   sync_bench [--daemon PATH] [--registrations N] [--tags N] [--log-level L]
//
// Results (value / baseline = ratio; aim in brackets):
//   sync_register_latency            p50/p99 of client.sync().registerTag() until its ok (the
//                                    daemon commits first) vs one bare SQLite insert + commit in
//                                    WAL with synchronous=FULL                          [p50 <= 1.5]
//   sync_register_throughput_data    entries/s, registrations with data pipelined (each its own
//                                    commit) vs bare inserts + commits per second
//   sync_online_first_event_Ntags    ms from SET_ONLINE to the first `sync` event with N pending
//                                    tags                                                 [—]
//   sync_online_all_fired_Ntags      ms from SET_ONLINE until all N tags have fired      [<= 1000]
//
// The daemon runs with --connectivity manual --offline while tags are registered, so nothing fires
// during the registration phases.
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "baseline.h"
#include "daemon_process.h"
#include "swipc/broadcast_channel.h"
#include "swipc/client.h"
#include "swipc/log.h"
#include "swipc/sync.h"

namespace sb = swipc::bench;
using namespace std::chrono_literals;

namespace {

constexpr const char* SCOPE = "syncbench";

void check(int rc, sqlite3* db, const char* what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
    throw std::runtime_error(std::string(what) + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
}

/// The baseline: one row inserted and committed per call, WAL, synchronous=FULL, in a fresh file
/// on the same file system as the daemon's state dir (/tmp).
class BareCommit {
 public:
  BareCommit() {
    char tmpl[] = "/tmp/swipc-bench-sqlite.XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    check(sqlite3_open((dir_ + "/base.db").c_str(), &db_), db_, "open");
    check(sqlite3_exec(db_, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                            "CREATE TABLE t (id INTEGER PRIMARY KEY, tag TEXT, data BLOB);",
                       nullptr, nullptr, nullptr),
          db_, "schema");
    check(sqlite3_prepare_v2(db_, "INSERT INTO t (tag, data) VALUES (?1, ?2)", -1, &insert_, nullptr), db_, "prepare");
  }
  ~BareCommit() {
    sqlite3_finalize(insert_);
    sqlite3_close(db_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  void commitOne(int i) {
    check(sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), db_, "begin");
    const std::string tag = "tag-" + std::to_string(i);
    sqlite3_bind_text(insert_, 1, tag.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(insert_, 2, tag.data(), static_cast<int>(tag.size()), SQLITE_TRANSIENT);
    check(sqlite3_step(insert_), db_, "insert");
    sqlite3_reset(insert_);
    check(sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr), db_, "commit");
  }

 private:
  std::string dir_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
};

sb::Latency bareLatency(int n) {
  BareCommit base;
  std::vector<uint64_t> samples;
  for (int i = 0; i < n; ++i) {
    const uint64_t t0 = sb::nowNs();
    base.commitOne(i);
    samples.push_back(sb::nowNs() - t0);
  }
  return sb::summarize(samples);
}

double bareRate(int n) {
  BareCommit base;
  const uint64_t t0 = sb::nowNs();
  for (int i = 0; i < n; ++i) base.commitOne(i);
  return n / ((sb::nowNs() - t0) / 1e9);
}

/// Runs the client's loop until `done` or 60 s; throws on the deadline.
void runUntil(swipc::Client& client, const std::function<bool()>& done, const char* what) {
  if (!client.runUntil(done, swipc::deadlineIn(60s))) throw std::runtime_error(std::string("timed out: ") + what);
}

sb::Latency registerLatency(swipc::Client& client, int n) {
  std::vector<uint64_t> samples;
  for (int i = 0; i < n; ++i) {
    const uint64_t t0 = sb::nowNs();
    auto r = client.sync().registerTag("lat-" + std::to_string(i), std::nullopt, swipc::deadlineIn(10s));
    if (!r) throw std::runtime_error("register: " + r.error().describe());
    samples.push_back(sb::nowNs() - t0);
  }
  return sb::summarize(samples);
}

double registerRate(swipc::Client& client, int n) {
  int answered = 0;
  std::optional<swipc::Error> failure;
  const uint64_t t0 = sb::nowNs();
  for (int i = 0; i < n; ++i) {
    client.sync().registerTag("queue", swipc::Value(static_cast<int64_t>(i)), [&](swipc::Result<void> r) {
      ++answered;
      if (!r && !failure) failure = r.error();
    });
  }
  runUntil(client, [&] { return answered == n; }, "pipelined registrations");
  if (failure) throw std::runtime_error("register: " + failure->describe());
  return n / ((sb::nowNs() - t0) / 1e9);
}

/// Registers `n` tags (offline), then goes online and times the first and the last SYNC report.
void onlineToFire(swipc::Client& client, int n) {
  int answered = 0;
  for (int i = 0; i < n; ++i)
    client.sync().registerTag("fire-" + std::to_string(i), std::nullopt, [&](swipc::Result<void> r) {
      if (!r) throw std::runtime_error("register: " + r.error().describe());
      ++answered;
    });
  runUntil(client, [&] { return answered == n; }, "registering the tags");

  swipc::BroadcastChannel log(client, "sync-log");
  bool joined = false;
  uint64_t fired = 0;
  std::optional<uint64_t> firstNs, lastNs;
  log.onJoined([&] { joined = true; });
  log.onMessage([&](const swipc::MessageEvent& e) {
    if (e.data["type"].textOr("") != "SYNC") return;
    const uint64_t now = sb::nowNs();
    if (!firstNs) firstNs = now;
    if (++fired == static_cast<uint64_t>(n)) lastNs = now;
  });
  log.onLapped([&](uint64_t missed) {
    // The observer fell behind the ring; what it missed were SYNC/SYNC_DONE pairs: counted as
    // fired when they were SYNC reports (half of them), so "all fired" is approximate then.
    fired += missed / 2;
  });
  runUntil(client, [&] { return joined; }, "joining sync-log");
  const uint64_t t0 = sb::nowNs();
  auto r = client.messageSW(swipc::Value::map({{"type", "SET_ONLINE"}, {"online", true}}), 10s);
  if (!r) throw std::runtime_error("SET_ONLINE: " + r.error().describe());
  runUntil(client, [&] { return lastNs.has_value() || fired >= static_cast<uint64_t>(n); }, "all tags firing");
  if (!lastNs) lastNs = sb::nowNs();
  sb::emit("sync_bench", "sync_online_first_event_" + std::to_string(n) + "tags", (*firstNs - t0) / 1e6, "ms");
  sb::emit("sync_bench", "sync_online_all_fired_" + std::to_string(n) + "tags", (*lastNs - t0) / 1e6, "ms");
}

}  // namespace

int main(int argc, char** argv) {
  sb::Args args(argc, argv);
  try {
    (void)swipc::initLogging("sync_bench", args.getOr("log-level", "warn"));
    const std::string daemonPath = args.getOr("daemon", sb::defaultDaemonPath());
    const int registrations = static_cast<int>(args.getInt("registrations", 500));
    const int tags = static_cast<int>(args.getInt("tags", 10000));
    const std::vector<std::string> offline = {"--connectivity", "manual", "--offline", "--bc-ring-bytes",
                                              std::to_string(16 << 20)};
    {
      sb::DaemonProcess daemon(daemonPath, SCOPE, offline);
      swipc::Client client = sb::attachWithRetry(daemon, SCOPE);
      const sb::Latency base = bareLatency(registrations);
      const sb::Latency lat = registerLatency(client, registrations);
      sb::emit("sync_bench", "sync_register_latency_p50_vs_sqlite_commit", lat.p50Ns / 1e3, "us", base.p50Ns / 1e3);
      sb::emit("sync_bench", "sync_register_latency_p99_vs_sqlite_commit", lat.p99Ns / 1e3, "us", base.p99Ns / 1e3);
      const double baseRate = bareRate(registrations);
      const double rate = registerRate(client, registrations);
      sb::emit("sync_bench", "sync_register_throughput_data_vs_sqlite_commits", rate, "entries/s", baseRate);
    }
    {
      sb::DaemonProcess daemon(daemonPath, SCOPE, offline);
      swipc::Client client = sb::attachWithRetry(daemon, SCOPE);
      onlineToFire(client, tags);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sync_bench: %s\n", e.what());
    return 1;
  }
}
