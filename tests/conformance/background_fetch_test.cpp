// Conformance: DESIGN §15 Background Fetch, one rule per test, black box: real sw_daemon
// processes running the reference service worker (its BGFETCH reports on BroadcastChannel
// `bgfetch-log` and to every window client), page_client `script` pages (the bgfetch.* ops and
// bgfetch.progress events), the `page_client fetch` subcommand, and real HTTP origins on
// 127.0.0.1 (tests/support/http_fixture.h): HttpTestServer for throttled bodies, status codes,
// resets and its request log; Debian's nginx for an independent Range / If-Range / ETag.
//
// Every daemon gets its own --runtime-dir and --state-dir, retry waits of 50..250 ms and a 50 ms
// progress interval, so nothing waits long. Nothing sleeps: tests wait for an event with a
// deadline, and "nothing more arrives" is a bounded window followed by a positive check (an answer
// that travels the same connection after anything sent before it). Time is only ever asserted as
// a lower bound. After each test the daemon is stopped and <state-dir>/state.db must pass
// `PRAGMA integrity_check`.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "http_fixture.h"
#include "process.h"
#include "sqlite_check.h"
#include "stamped_page.h"
#include "test_scope.h"

namespace swipc::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

/// How long a download's final event or report is waited for (the slowest download here is ~5 s).
constexpr milliseconds FINAL_TIMEOUT{30000};
/// How long a progress event that should come is waited for.
constexpr milliseconds EVENT_TIMEOUT{10000};
/// A negative window: nothing may arrive within it (always followed by a positive check).
constexpr milliseconds QUIET{500};
/// The daemon's progress interval in these tests (--fetch-progress-ms).
constexpr int PROGRESS_MS = 50;

long long msBetween(TestClock::time_point a, TestClock::time_point b) {
  return std::chrono::duration_cast<milliseconds>(b - a).count();
}

bool isOk(const std::optional<json>& r) { return r && r->value("event", "") == "ok"; }
std::string show(const std::optional<json>& r) { return r ? r->dump() : std::string("no answer"); }
std::string errorName(const std::optional<json>& r) {
  return r && r->value("event", "") == "error" ? r->value("name", "") : std::string();
}

bool isProgress(const json& j, const std::string& fetchId) {
  return j.value("event", "") == "bgfetch.progress" && j.value("fetchId", "") == fetchId;
}
bool isFinal(const json& j, const std::string& fetchId) {
  return isProgress(j, fetchId) && !j.value("result", "").empty();
}
/// A BGFETCH report of the reference SW for `fetchId` delivered on `bgfetch-log` (object "log").
bool isLogReport(const json& j, const std::string& fetchId) {
  return j.value("event", "") == "bc.message" && j.value("bc", "") == "log" && j.contains("data") &&
         j["data"].is_object() && j["data"].value("type", "") == "BGFETCH" && j["data"].value("id", "") == fetchId;
}
/// The same report posted to a window client.
bool isWindowReport(const json& j, const std::string& fetchId) {
  return j.value("event", "") == "message" && j.contains("data") && j["data"].is_object() &&
         j["data"].value("type", "") == "BGFETCH" && j["data"].value("id", "") == fetchId;
}

/// R's fields (DESIGN §15) of a registration or a progress event, without the event's own keys.
json fieldsOfR(const json& j) {
  json out = json::object();
  for (const char* k : {"id", "uploadTotal", "uploaded", "downloadTotal", "downloaded", "result", "failureReason",
                        "recordsAvailable"})
    if (j.contains(k)) out[k] = j[k];
  return out;
}

/// A script page with the Background Fetch ops and the `bgfetch-log` observer (object "log").
class Page : public StampedPage {
 public:
  using StampedPage::StampedPage;

  /// Joins BroadcastChannel `bgfetch-log` as object "log"; true once the join is in effect.
  bool openLog() { return isOk(request({{"op", "bc.open"}, {"bc", "log"}, {"name", "bgfetch-log"}})); }
  /// Lets the SW's client messages (the window copy of each BGFETCH report) through.
  void startMessages() { send({{"op", "startMessages"}}); }

  std::optional<json> fetch(const std::string& fetchId, const json& requests,
                            std::optional<uint64_t> downloadTotal = std::nullopt) {
    json op = {{"op", "bgfetch.fetch"}, {"fetchId", fetchId}, {"requests", requests}};
    if (downloadTotal) op["downloadTotal"] = *downloadTotal;
    return request(op);
  }
  std::optional<json> get(const std::string& fetchId) { return request({{"op", "bgfetch.get"}, {"fetchId", fetchId}}); }
  /// getIds' list (null json when the op failed).
  json ids() {
    auto r = request({{"op", "bgfetch.getIds"}});
    return isOk(r) && r->contains("ids") ? (*r)["ids"] : json();
  }
  bool idListed(const std::string& fetchId) {
    json l = ids();
    return l.is_array() && std::find(l.begin(), l.end(), json(fetchId)) != l.end();
  }
  std::optional<json> abort(const std::string& fetchId) { return request({{"op", "bgfetch.abort"}, {"fetchId", fetchId}}); }
  std::optional<json> match(const std::string& fetchId, const std::optional<std::string>& url = std::nullopt) {
    json op = {{"op", "bgfetch.match"}, {"fetchId", fetchId}};
    if (url) op["url"] = *url;
    return request(op);
  }
  /// matchAll's records (null json when it failed).
  json records(const std::string& fetchId) {
    auto r = match(fetchId);
    return isOk(r) && r->contains("records") ? (*r)["records"] : json();
  }

  /// The next progress event for `fetchId` (final or not) not taken yet.
  std::optional<Stamped> nextProgress(const std::string& fetchId, milliseconds timeout = EVENT_TIMEOUT) {
    return take([&](const json& j) { return isProgress(j, fetchId); }, timeout);
  }
  /// The final event for `fetchId`, not taken yet.
  std::optional<Stamped> finalEvent(const std::string& fetchId, milliseconds timeout = FINAL_TIMEOUT) {
    return take([&](const json& j) { return isFinal(j, fetchId); }, timeout);
  }
  /// The next `bgfetch-log` report for `fetchId` (its data).
  std::optional<json> report(const std::string& fetchId, milliseconds timeout = FINAL_TIMEOUT) {
    auto r = take([&](const json& j) { return isLogReport(j, fetchId); }, timeout);
    if (!r) return std::nullopt;
    return r->j["data"];
  }
  /// Waits for the first progress event of `fetchId` whose `downloaded` reaches `bytes`.
  std::optional<Stamped> progressReaching(const std::string& fetchId, uint64_t bytes, milliseconds timeout = FINAL_TIMEOUT) {
    return take([&](const json& j) { return isProgress(j, fetchId) && j.value("downloaded", uint64_t{0}) >= bytes; },
                timeout);
  }
  /// Takes every progress event for `fetchId` read so far; how many there were.
  size_t drainProgress(const std::string& fetchId) {
    size_t n = 0;
    while (take([&](const json& j) { return isProgress(j, fetchId); }, milliseconds{0})) ++n;
    return n;
  }
  /// Every progress event for `fetchId` so far, in arrival order.
  std::vector<json> progressEvents(const std::string& fetchId) const {
    std::vector<json> out;
    for (const auto& l : lines())
      if (isProgress(l.j, fetchId)) out.push_back(l.j);
    return out;
  }
  /// Every bgfetch.progress event so far, of any id.
  size_t anyProgressCount() const {
    size_t n = 0;
    for (const auto& l : lines())
      if (l.j.value("event", "") == "bgfetch.progress") ++n;
    return n;
  }
};

/// The record of `url` in a BGFETCH report's (or a match answer's) records; null json if absent.
json recordOf(const json& records, const std::string& url) {
  if (!records.is_array()) return json();
  for (const auto& r : records)
    if (r.is_object() && r.value("url", "") == url) return r;
  return json();
}

/// A report must say `event` with `result` / `failureReason`.
::testing::AssertionResult reportIs(const std::optional<json>& r, const std::string& event, const std::string& result,
                                    const std::string& reason) {
  if (!r) return ::testing::AssertionFailure() << "no BGFETCH report";
  const json want = {{"event", event}, {"result", result}, {"failureReason", reason}};
  for (auto& [k, v] : want.items())
    if (!r->contains(k) || (*r)[k] != v)
      return ::testing::AssertionFailure() << "report " << r->dump() << ": \"" << k << "\" should be " << v.dump();
  return ::testing::AssertionSuccess();
}

/// A record (report or match) must be the complete body of `url` with this status, size and hash.
::testing::AssertionResult recordIs(const json& records, const std::string& url, int status, uint64_t size,
                                    const std::string& sha) {
  json r = recordOf(records, url);
  if (!r.is_object()) return ::testing::AssertionFailure() << "no record for " << url << " in " << records.dump();
  if (r.value("status", -1) != status) return ::testing::AssertionFailure() << "status of " << r.dump();
  if (r.value("size", uint64_t{0}) != size) return ::testing::AssertionFailure() << "size of " << r.dump() << " != " << size;
  if (!r.contains("sha256") || r["sha256"] != json(sha))
    return ::testing::AssertionFailure() << "sha256 of " << r.dump() << " != " << sha;
  return ::testing::AssertionSuccess();
}

/// `downloaded` of every event must be at least the one before (and at least `floor`).
::testing::AssertionResult neverDecreases(const std::vector<json>& events, uint64_t floor = 0) {
  uint64_t last = floor;
  for (const auto& e : events) {
    uint64_t d = e.value("downloaded", uint64_t{0});
    if (d < last) return ::testing::AssertionFailure() << "downloaded went from " << last << " to " << d << " in " << e.dump();
    last = d;
  }
  return ::testing::AssertionSuccess();
}

/// Regular files under `dir` (recursively); 0 when it does not exist.
size_t filesUnder(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return 0;
  size_t n = 0;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != std::filesystem::end(it);
       it.increment(ec))
    if (it->is_regular_file(ec)) ++n;
  return n;
}

/// Requests in an HttpTestServer log whose path is `path`, oldest first.
std::vector<json> requestsFor(const std::vector<json>& log, const std::string& path) {
  std::vector<json> out;
  for (const auto& r : log)
    if (r.value("path", "") == path) out.push_back(r);
  return out;
}

/// A port on 127.0.0.1 where nothing listens: bound (so nobody takes it) but never listen()ed, so
/// every connect() to it is refused for as long as this object lives.
class ClosedPort {
 public:
  ClosedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("ClosedPort: bind failed");
    port_ = ntohs(a.sin_port);
  }
  ~ClosedPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  ClosedPort(const ClosedPort&) = delete;
  ClosedPort& operator=(const ClosedPort&) = delete;
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

/// sw_daemon's options as name → value.
using Flags = std::map<std::string, std::string>;

/// What a page_client run printed and how it ended.
struct CliRun {
  std::optional<int> code;  // nullopt: did not exit in time
  std::vector<json> out;    // stdout lines that parsed as JSON
  std::string err;
};

class BackgroundFetchTest : public ::testing::Test {
 protected:
  void TearDown() override {
    pages_.clear();
    stopDaemon();
    const std::string db = stateDir + "/state.db";
    if (std::filesystem::exists(db)) {
      EXPECT_EQ(integrityCheck(db), "ok") << "state database after the test";
    } else if (dbExpected_) {
      ADD_FAILURE() << "no " << db << " after a daemon with --state-dir ran";
    }
  }

  /// Starts sw_daemon with the small default timings and `overrides` on top.
  bool startDaemon(const Flags& overrides = {}) {
    flags_ = {{"--fetch-retry-ms", "50,100,150,200,250"}, {"--fetch-progress-ms", std::to_string(PROGRESS_MS)}};
    for (const auto& [k, v] : overrides) flags_[k] = v;
    return launch();
  }
  /// Starts the daemon again on the same runtime and state dirs with the same flags; the pages
  /// stay (they re-attach by themselves).
  bool restartDaemon() { return launch(); }
  /// kill -9 of the daemon; true once it is dead.
  bool killDaemon() {
    daemon->process().signal(SIGKILL);
    return daemon->process().waitExitCode(5s) == -SIGKILL;
  }

  /// A page that attached, controlled.
  Page* page() {
    pages_.push_back(std::make_unique<Page>(dir.path(), scope));
    Page* p = pages_.back().get();
    EXPECT_TRUE(p->attached(true)) << "page did not attach";
    return p;
  }
  /// A page joined to `bgfetch-log` that lets the SW's messages through; it never calls fetch or
  /// get unless the test does.
  Page* observer() {
    Page* p = page();
    EXPECT_TRUE(p->openLog()) << "bc.open bgfetch-log failed";
    p->startMessages();
    return p;
  }
  /// Ends a page gracefully ({"op":"exit"}); true once it exited with 0.
  bool exitPage(Page* p) {
    p->send({{"op", "exit"}});
    return p->process().waitExitCode(10s) == 0;
  }

  /// page_client with `args` after the global options (runtime dir `runtimeDir`, default ours).
  CliRun runPageClient(const std::vector<std::string>& args, const std::string& runtimeDir = "") {
    std::vector<std::string> argv{pageClientPath(), "--scope", scope, "--runtime-dir",
                                  runtimeDir.empty() ? dir.path() : runtimeDir};
    argv.insert(argv.end(), args.begin(), args.end());
    ChildProcess::Options o;
    o.pipeStdout = true;
    ChildProcess p(argv, o);
    CliRun run;
    // Read while it runs (no pipe fills), until end of output or the deadline.
    const auto deadline = TestClock::now() + FINAL_TIMEOUT;
    while (TestClock::now() < deadline) {
      const auto t0 = TestClock::now();
      auto line = p.readLine(200ms);
      if (line) {
        auto j = json::parse(*line, nullptr, false);
        if (!j.is_discarded()) run.out.push_back(std::move(j));
        continue;
      }
      if (TestClock::now() - t0 < 150ms) break;  // returned before its timeout: end of output
    }
    run.code = p.waitExitCode(10s);
    run.err = p.stderrText();
    return run;
  }

  /// Waits until `p`'s get of `fetchId` answers null (its completion event has settled).
  bool waitSettled(Page& p, const std::string& fetchId, milliseconds timeout = EVENT_TIMEOUT) {
    return eventually(
        [&] {
          auto r = p.get(fetchId);
          return isOk(r) && r->contains("registration") && (*r)["registration"].is_null();
        },
        timeout);
  }

  TempDir dir;
  TempDir stateTmp;
  std::string stateDir = stateTmp.path();
  std::string scope = testScope();
  std::unique_ptr<Daemon> daemon;

 private:
  bool launch() {
    std::vector<std::string> args{"--state-dir", stateDir};
    for (const auto& [k, v] : flags_) {
      args.push_back(k);
      args.push_back(v);
    }
    daemon = std::make_unique<Daemon>(dir.path(), scope, args);
    const bool ready = daemon->waitReady(20s);
    EXPECT_TRUE(ready) << "sw_daemon did not start:\n" << daemon->log();
    dbExpected_ = dbExpected_ || ready;
    return ready;
  }
  void stopDaemon() {
    if (!daemon || !daemon->process().running()) return;
    daemon->process().signal(SIGTERM);
    if (!daemon->process().waitExit(5s)) {
      daemon->process().signal(SIGKILL);
      daemon->process().waitExit(5s);
    }
  }

  Flags flags_;
  bool dbExpected_ = false;
  std::vector<std::unique_ptr<Page>> pages_;
};

// ------------------------------------------------------------------------------------------------ fetch()

TEST_F(BackgroundFetchTest, FetchAnswersItsRegistrationWithUploadTotalTheSumOfBodySizes) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* p = observer();
  const std::string postBody = "hello, background fetch";
  const std::string putBody = "0123456789";
  const std::string bytesBody("\x00\x01\x02\xff", 4);  // {"$bytes": base64}
  const json requests =
      json::array({http.url("/gen/3000?seed=1"),
                   {{"url", http.url("/echo-post")}, {"method", "POST"}, {"body", postBody}},
                   {{"url", http.url("/echo-put")}, {"method", "PUT"}, {"body", putBody}},
                   {{"url", http.url("/echo-bytes")}, {"method", "POST"}, {"body", {{"$bytes", "AAEC/w=="}}}}});
  const uint64_t uploadTotal = postBody.size() + putBody.size() + bytesBody.size();
  auto r = p->fetch("upload", requests, 50000);
  ASSERT_TRUE(isOk(r)) << show(r);
  ASSERT_TRUE(r->contains("registration")) << r->dump();
  const json& reg = (*r)["registration"];
  EXPECT_EQ(reg.value("id", ""), "upload");
  EXPECT_EQ(reg.value("uploadTotal", uint64_t{0}), uploadTotal) << reg.dump();
  EXPECT_EQ(reg.value("downloadTotal", uint64_t{0}), 50000u) << reg.dump();
  EXPECT_EQ(reg.value("result", "?"), "") << reg.dump();
  EXPECT_EQ(reg.value("failureReason", "?"), "") << reg.dump();
  EXPECT_EQ(reg.value("recordsAvailable", false), true) << reg.dump();
  for (const char* k : {"uploaded", "downloaded"}) EXPECT_TRUE(reg.contains(k)) << k << " missing: " << reg.dump();

  auto fin = p->finalEvent("upload");
  ASSERT_TRUE(fin) << "no final event";
  EXPECT_EQ(fin->j.value("result", ""), "success") << fin->j.dump();
  EXPECT_EQ(fin->j.value("uploadTotal", uint64_t{0}), uploadTotal) << fin->j.dump();
  EXPECT_EQ(fin->j.value("uploaded", uint64_t{0}), uploadTotal) << fin->j.dump();
  // The bodies reached the origin byte for byte, with their methods.
  auto log = http.waitForRequests(4);
  auto post = requestsFor(log, "/echo-post");
  auto put = requestsFor(log, "/echo-put");
  auto bytes = requestsFor(log, "/echo-bytes");
  ASSERT_EQ(post.size(), 1u);
  ASSERT_EQ(put.size(), 1u);
  ASSERT_EQ(bytes.size(), 1u);
  EXPECT_EQ(bytes[0].value("requestBodySha256", ""), sha256Hex(bytesBody));
  EXPECT_EQ(post[0].value("method", ""), "POST");
  EXPECT_EQ(post[0].value("requestBodySha256", ""), sha256Hex(postBody));
  EXPECT_EQ(put[0].value("method", ""), "PUT");
  EXPECT_EQ(put[0].value("requestBodyBytes", uint64_t{0}), putBody.size());
  EXPECT_TRUE(reportIs(p->report("upload"), "success", "success", ""));
}

TEST_F(BackgroundFetchTest, FetchRejectsAnInvalidIdRequestListOrUrlWithTypeError) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* p = page();
  const std::string good = http.url("/gen/10");
  struct Case {
    const char* what;
    std::string id;
    json requests;
  };
  const std::vector<Case> cases{
      {"empty id", "", json::array({good})},
      {"empty request list", "no-requests", json::array()},
      {"not a URL", "bad-url", json::array({"not a url at all"})},
      {"relative URL", "relative", json::array({"/gen/10"})},
      {"ftp scheme", "ftp", json::array({"ftp://127.0.0.1/file"})},
      {"file scheme", "file", json::array({"file:///etc/hostname"})},
      {"one bad URL among good ones", "mixed", json::array({good, "gopher://127.0.0.1/x"})},
  };
  for (const auto& c : cases) {
    auto r = p->fetch(c.id, c.requests);
    EXPECT_EQ(errorName(r), "TypeError") << c.what << ": " << show(r);
  }
  // Nothing was registered and no request left the daemon.
  EXPECT_EQ(p->ids(), json::array());
  EXPECT_TRUE(http.requests().empty()) << http.requests().size() << " request(s) reached the origin";
}

TEST_F(BackgroundFetchTest, FetchWithTheIdOfAnActiveFetchIsTypeErrorAndTheIdIsFreeAgainOnceSettled) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* p = observer();
  const std::string slow = http.url("/gen/300000?rate=150000");
  ASSERT_TRUE(isOk(p->fetch("dup", json::array({slow}))));
  auto again = p->fetch("dup", json::array({http.url("/gen/10")}));
  EXPECT_EQ(errorName(again), "TypeError") << show(again);
  EXPECT_EQ(p->ids(), json::array({"dup"}));
  // The first goes on, untouched by the refused second.
  EXPECT_TRUE(reportIs(p->report("dup"), "success", "success", ""));
  ASSERT_TRUE(waitSettled(*p, "dup"));
  auto third = p->fetch("dup", json::array({http.url("/gen/10")}));
  EXPECT_TRUE(isOk(third)) << show(third);
  EXPECT_TRUE(reportIs(p->report("dup"), "success", "success", ""));
}

TEST_F(BackgroundFetchTest, DownloadTotalAboveTheFetchQuotaIsQuotaExceededError) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon({{"--fetch-quota-bytes", "100000"}}));
  Page* p = observer();
  auto over = p->fetch("over", json::array({http.url("/gen/1000")}), 100001);
  EXPECT_EQ(errorName(over), "QuotaExceededError") << show(over);
  EXPECT_EQ(p->ids(), json::array());
  // Exactly the quota is allowed.
  auto at = p->fetch("at", json::array({http.url("/gen/1000")}), 100000);
  EXPECT_TRUE(isOk(at)) << show(at);
  EXPECT_TRUE(reportIs(p->report("at"), "success", "success", ""));
}

// ------------------------------------------------------------------------------------------------ progress

TEST_F(BackgroundFetchTest, ProgressNeverDecreasesAndEndsWithExactlyOneFinalEvent) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* p = page();
  constexpr uint64_t SIZE = 400000;
  ASSERT_TRUE(isOk(p->fetch("progress", json::array({http.url("/gen/400000?rate=200000")}))));
  auto fin = p->finalEvent("progress");
  ASSERT_TRUE(fin) << "no final event";
  EXPECT_EQ(fin->j.value("result", ""), "success") << fin->j.dump();
  EXPECT_EQ(fin->j.value("failureReason", "?"), "") << fin->j.dump();
  EXPECT_EQ(fin->j.value("downloaded", uint64_t{0}), SIZE) << fin->j.dump();

  // Nothing after the final event: a quiet window, then an answer that travels behind anything
  // the daemon sent before it. (The events before the final one were read before it.)
  p->drainProgress("progress");
  auto late = p->nextProgress("progress", QUIET);
  EXPECT_FALSE(late) << "event after the final one: " << late->j.dump();
  EXPECT_EQ(p->ids(), json::array());
  auto events = p->progressEvents("progress");
  ASSERT_FALSE(events.empty());
  EXPECT_TRUE(isFinal(events.back(), "progress")) << "an event came after the final one: " << events.back().dump();
  EXPECT_EQ(std::count_if(events.begin(), events.end(), [](const json& e) { return isFinal(e, "progress"); }), 1);
  // A 2 s throttled body: several intermediate events, each with R's fields, none final.
  EXPECT_GE(events.size(), 4u) << "too few progress events for a 2 s download";
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i].value("result", "?"), "") << events[i].dump();
    EXPECT_EQ(events[i].value("id", ""), "progress") << events[i].dump();
  }
  EXPECT_TRUE(neverDecreases(events));
}

TEST_F(BackgroundFetchTest, ProgressEventsComeAtMostOncePerProgressInterval) {
  HttpTestServer http;
  constexpr int INTERVAL_MS = 400;
  ASSERT_TRUE(startDaemon({{"--fetch-progress-ms", std::to_string(INTERVAL_MS)}}));
  Page* p = page();
  // The server writes a piece every 50 ms: unlimited, that would be ~40 events.
  const auto t0 = TestClock::now();
  ASSERT_TRUE(isOk(p->fetch("paced", json::array({http.url("/gen/400000?rate=200000")}))));
  auto fin = p->finalEvent("paced");
  ASSERT_TRUE(fin) << "no final event";
  EXPECT_EQ(fin->j.value("result", ""), "success") << fin->j.dump();
  auto events = p->progressEvents("paced");
  ASSERT_GE(events.size(), 2u);
  const size_t intermediate = events.size() - 1;
  // The daemon's span of intermediate events lies inside [t0, final seen]: n events need
  // (n - 1) intervals.
  const long long span = msBetween(t0, fin->at);
  EXPECT_LE(static_cast<long long>(intermediate), span / INTERVAL_MS + 1)
      << intermediate << " intermediate events in " << span << " ms at one per " << INTERVAL_MS << " ms";
  EXPECT_GE(intermediate, 2u) << "a " << span << " ms download should show progress";
}

TEST_F(BackgroundFetchTest, APageThatCalledGetSeesTheSameFinalEventAsTheFetchingPageAndOthersSeeNone) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* fetcher = page();
  Page* follower = page();
  Page* bystander = page();
  ASSERT_TRUE(isOk(fetcher->fetch("shared", json::array({http.url("/gen/300000?rate=150000")}))));
  auto got = follower->get("shared");
  ASSERT_TRUE(isOk(got)) << show(got);
  ASSERT_TRUE((*got)["registration"].is_object()) << got->dump();
  EXPECT_EQ((*got)["registration"].value("result", "?"), "") << "finished before the follower joined: " << got->dump();
  EXPECT_TRUE(bystander->idListed("shared"));  // getIds does not follow

  auto a = fetcher->finalEvent("shared");
  auto b = follower->finalEvent("shared");
  ASSERT_TRUE(a) << "fetching page: no final event";
  ASSERT_TRUE(b) << "following page: no final event";
  EXPECT_EQ(a->j.value("result", ""), "success") << a->j.dump();
  EXPECT_EQ(fieldsOfR(a->j), fieldsOfR(b->j));
  EXPECT_EQ(fieldsOfR(a->j).size(), 8u) << a->j.dump();
  EXPECT_TRUE(neverDecreases(follower->progressEvents("shared"), (*got)["registration"].value("downloaded", uint64_t{0})));

  // The bystander did neither: a quiet window, then its own answer behind anything sent before.
  auto stray = bystander->take([](const json& j) { return j.value("event", "") == "bgfetch.progress"; }, QUIET);
  EXPECT_FALSE(stray) << stray->j.dump();
  EXPECT_TRUE(bystander->ids().is_array());
  EXPECT_EQ(bystander->anyProgressCount(), 0u);
  // And neither follower gets anything after its final event.
  EXPECT_TRUE(fetcher->ids().is_array());
  EXPECT_TRUE(follower->ids().is_array());
  EXPECT_TRUE(isFinal(fetcher->progressEvents("shared").back(), "shared"));
  EXPECT_TRUE(isFinal(follower->progressEvents("shared").back(), "shared"));
}

// ------------------------------------------------------------------------------------------------ pages gone

TEST_F(BackgroundFetchTest, DownloadCompletesAfterEveryPageExitedAndTheServiceWorkerIsTold) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  constexpr uint64_t SIZE = 800000;
  const std::string url = http.url("/gen/800000?seed=7&rate=200000");
  {
    Page* p = page();
    ASSERT_TRUE(isOk(p->fetch("orphan", json::array({url}))));
    ASSERT_TRUE(p->progressReaching("orphan", 1)) << "no progress before the page left";
    ASSERT_TRUE(exitPage(p));
  }
  // No page is attached now.
  EXPECT_TRUE(eventually(
      [&] {
        auto c = readCounters(*daemon);
        return c && c->value("clients", -1) == 0;
      },
      10s))
      << "a client is still attached";
  // A fresh observer that never calls fetch or get, joined while the download still runs.
  Page* o = observer();
  ASSERT_TRUE(o->idListed("orphan")) << "the download ended before the observer joined (machine too slow?)";
  auto rep = o->report("orphan");
  ASSERT_TRUE(reportIs(rep, "success", "success", ""));
  EXPECT_EQ(rep->value("downloaded", uint64_t{0}), SIZE) << rep->dump();
  EXPECT_TRUE(recordIs((*rep)["records"], url, 200, SIZE, generatedBodySha256(SIZE, 7)));
  // The window copy of the report.
  auto win = o->take([](const json& j) { return isWindowReport(j, "orphan"); }, EVENT_TIMEOUT);
  ASSERT_TRUE(win) << "no BGFETCH message to the window client";
  EXPECT_EQ(win->j["data"], *rep);
  // Settled: gone from get and getIds, its bodies deleted.
  EXPECT_TRUE(waitSettled(*o, "orphan"));
  EXPECT_EQ(o->ids(), json::array());
  EXPECT_TRUE(eventually([&] { return filesUnder(stateDir + "/fetch") == 0; }))
      << filesUnder(stateDir + "/fetch") << " file(s) left under " << stateDir << "/fetch";
  // The observer never followed it.
  EXPECT_EQ(o->anyProgressCount(), 0u);
}

// A 1 GiB body streams to disk: the daemon's memory stays flat while it downloads (issue 16), and
// it keeps answering other pages meanwhile (how fast is fetch_bench's business, not a test's).
TEST_F(BackgroundFetchTest, OneGibDownloadKeepsTheDaemonsMemoryFlat) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon({{"--fetch-progress-ms", "200"}}));
  constexpr uint64_t SIZE = uint64_t{1} << 30;
  const std::string url = http.url("/gen/1073741824?seed=11");
  Page* o = observer();
  Page* p = page();
  const long before = rssKiB(daemon->pid());
  ASSERT_TRUE(isOk(p->fetch("big", json::array({url}))));
  long peak = before;
  uint64_t seen = 0;
  int answered = 0;
  for (;;) {
    auto ev = p->take([](const json& j) { return isProgress(j, "big"); }, 120s);
    ASSERT_TRUE(ev) << "no progress (stuck at " << seen << " bytes)";
    peak = std::max(peak, rssKiB(daemon->pid()));
    seen = ev->j.value("downloaded", uint64_t{0});
    if (!ev->j.value("result", std::string()).empty()) break;
    // Another page's messageSW is answered while the download runs.
    if (o->messageSW({{"type", "ECHO"}, {"n", answered}}) == json({{"type", "ECHO"}, {"n", answered}})) ++answered;
  }
  EXPECT_EQ(seen, SIZE);
  EXPECT_GT(answered, 0) << "no messageSW was answered during the download";
  auto rep = o->report("big", 120s);
  ASSERT_TRUE(reportIs(rep, "success", "success", ""));
  EXPECT_TRUE(recordIs((*rep)["records"], url, 200, SIZE, generatedBodySha256(SIZE, 11)));
  if (rssFiguresHold()) {
    EXPECT_LT(peak - before, 48 * 1024) << "daemon RSS grew from " << before << " KiB to " << peak << " KiB";
  }
  EXPECT_TRUE(waitSettled(*o, "big", 60s));
}

// ------------------------------------------------------------------------------------------------ records

TEST_F(BackgroundFetchTest, MatchAllListsRecordsInRequestOrderWithBodiesOnlyOnceComplete) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* p = observer();
  // Request order is not URL order; the last one is slow so the fetch stays active.
  const std::string c = http.url("/gen/2000?seed=3");
  const std::string a = http.url("/gen/1000?seed=1");
  const std::string b = http.url("/gen/400000?seed=2&rate=100000");
  ASSERT_TRUE(isOk(p->fetch("records", json::array({c, a, b}))));

  // While running: the quick ones complete with their bodies, the slow one listed without.
  json recs;
  ASSERT_TRUE(eventually(
      [&] {
        recs = p->records("records");
        return recs.is_array() && recs.size() == 3 && recs[0].value("complete", false) && recs[1].value("complete", false);
      },
      EVENT_TIMEOUT))
      << recs.dump();
  EXPECT_EQ(recs[0].value("url", ""), c);
  EXPECT_EQ(recs[1].value("url", ""), a);
  EXPECT_EQ(recs[2].value("url", ""), b);
  EXPECT_TRUE(recordIs(recs, c, 200, 2000, generatedBodySha256(2000, 3)));
  EXPECT_TRUE(recordIs(recs, a, 200, 1000, generatedBodySha256(1000, 1)));
  EXPECT_EQ(recs[2].value("complete", true), false) << recs[2].dump();
  EXPECT_TRUE(recs[2].contains("sha256") && recs[2]["sha256"].is_null()) << "a running request has no body: " << recs[2].dump();
  EXPECT_TRUE(p->idListed("records")) << "the fetch should still be active";

  // match(url): that record only; an unmatched URL: [].
  auto one = p->match("records", a);
  ASSERT_TRUE(isOk(one)) << show(one);
  ASSERT_EQ((*one)["records"].size(), 1u) << one->dump();
  EXPECT_TRUE(recordIs((*one)["records"], a, 200, 1000, generatedBodySha256(1000, 1)));
  auto none = p->match("records", http.url("/not-requested"));
  ASSERT_TRUE(isOk(none)) << show(none);
  EXPECT_EQ((*none)["records"], json::array());

  // The SW's records after success: every one complete, in request order.
  auto rep = p->report("records");
  ASSERT_TRUE(reportIs(rep, "success", "success", ""));
  const json& r = (*rep)["records"];
  ASSERT_EQ(r.size(), 3u) << rep->dump();
  EXPECT_EQ(r[0].value("url", ""), c);
  EXPECT_EQ(r[1].value("url", ""), a);
  EXPECT_EQ(r[2].value("url", ""), b);
  EXPECT_TRUE(recordIs(r, b, 200, 400000, generatedBodySha256(400000, 2)));

  // After the completion event settled, the page's registration has no records any more.
  ASSERT_TRUE(waitSettled(*p, "records"));
  auto after = p->match("records");
  EXPECT_EQ(errorName(after), "InvalidStateError") << show(after);
  auto afterUrl = p->match("records", a);
  EXPECT_EQ(errorName(afterUrl), "InvalidStateError") << show(afterUrl);
}

TEST_F(BackgroundFetchTest, MatchOfAnUnknownIdIsNotFoundError) {
  ASSERT_TRUE(startDaemon());
  Page* p = page();
  auto r = p->match("never-registered");
  EXPECT_EQ(errorName(r), "NotFoundError") << show(r);
  auto u = p->match("never-registered", std::string("http://127.0.0.1:1/x"));
  EXPECT_EQ(errorName(u), "NotFoundError") << show(u);
}

TEST_F(BackgroundFetchTest, GetOfAnUnknownIdIsNull) {
  ASSERT_TRUE(startDaemon());
  Page* p = page();
  auto r = p->get("never-registered");
  ASSERT_TRUE(isOk(r)) << show(r);
  EXPECT_TRUE(r->contains("registration") && (*r)["registration"].is_null()) << r->dump();
}

// ------------------------------------------------------------------------------------------------ failures

TEST_F(BackgroundFetchTest, NonSuccessStatusFailsWithBadStatusWhileTheOtherRequestsComplete) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* p = observer();
  const std::string missing = http.url("/status/404");
  const std::string slow = http.url("/gen/200000?seed=4&rate=100000");
  ASSERT_TRUE(isOk(p->fetch("missing", json::array({missing, slow}))));
  // The 404 is in long before the slow body: the fetch is still active with it exposed.
  json recs;
  const bool seen404 = eventually(
      [&] {
        recs = p->records("missing");
        return recs.is_array() && !recs.empty() && recs[0].value("complete", false);
      },
      EVENT_TIMEOUT);
  if (seen404 && p->idListed("missing")) {
    EXPECT_TRUE(recordIs(recs, missing, 404, 11, sha256Hex("status 404\n")));
  }
  auto fin = p->finalEvent("missing");
  ASSERT_TRUE(fin);
  EXPECT_EQ(fin->j.value("result", ""), "failure") << fin->j.dump();
  EXPECT_EQ(fin->j.value("failureReason", ""), "bad-status") << fin->j.dump();
  auto rep = p->report("missing");
  ASSERT_TRUE(reportIs(rep, "fail", "failure", "bad-status"));
  EXPECT_TRUE(recordIs((*rep)["records"], missing, 404, 11, sha256Hex("status 404\n")));
  EXPECT_TRUE(recordIs((*rep)["records"], slow, 200, 200000, generatedBodySha256(200000, 4)));
}

TEST_F(BackgroundFetchTest, StoringMoreThanDownloadTotalFailsWithDownloadTotalExceededAndStopsEverything) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* p = observer();
  const std::string one = http.url("/gen/400000?seed=1&rate=100000");
  const std::string two = http.url("/gen/400000?seed=2&rate=100000");
  ASSERT_TRUE(isOk(p->fetch("total", json::array({one, two}), 100000)));
  auto fin = p->finalEvent("total");
  ASSERT_TRUE(fin);
  EXPECT_EQ(fin->j.value("result", ""), "failure") << fin->j.dump();
  EXPECT_EQ(fin->j.value("failureReason", ""), "download-total-exceeded") << fin->j.dump();
  EXPECT_GT(fin->j.value("downloaded", uint64_t{0}), 100000u) << fin->j.dump();
  auto rep = p->report("total");
  ASSERT_TRUE(reportIs(rep, "fail", "failure", "download-total-exceeded"));
  // Everything stopped: neither body was read to its end.
  auto log = http.waitForRequests(2, 10s);
  ASSERT_EQ(log.size(), 2u);
  for (const auto& r : log) EXPECT_LT(r.value("bodyBytes", uint64_t{0}), 400000u) << r.dump();
  for (const auto& r : (*rep)["records"]) EXPECT_LT(r.value("size", uint64_t{0}), 400000u) << r.dump();
}

TEST_F(BackgroundFetchTest, BodyPassingTheFetchQuotaFailsWithQuotaExceeded) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon({{"--fetch-quota-bytes", "100000"}}));
  Page* p = observer();
  ASSERT_TRUE(isOk(p->fetch("quota", json::array({http.url("/gen/300000?rate=300000")}))));
  auto fin = p->finalEvent("quota");
  ASSERT_TRUE(fin);
  EXPECT_EQ(fin->j.value("result", ""), "failure") << fin->j.dump();
  EXPECT_EQ(fin->j.value("failureReason", ""), "quota-exceeded") << fin->j.dump();
  EXPECT_LE(fin->j.value("downloaded", uint64_t{0}), 100000u) << "stored past the quota: " << fin->j.dump();
  EXPECT_TRUE(reportIs(p->report("quota"), "fail", "failure", "quota-exceeded"));
}

TEST_F(BackgroundFetchTest, FetchQuotaCountsTheBytesOfAllFetches) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon({{"--fetch-quota-bytes", "100000"}}));
  Page* p = observer();
  // Each fits the quota alone; together they do not.
  ASSERT_TRUE(isOk(p->fetch("q1", json::array({http.url("/gen/80000?seed=1&rate=40000")}))));
  ASSERT_TRUE(isOk(p->fetch("q2", json::array({http.url("/gen/80000?seed=2&rate=40000")}))));
  auto r1 = p->report("q1");
  auto r2 = p->report("q2");
  ASSERT_TRUE(r1 && r2);
  const int quotaFailures = (r1->value("failureReason", "") == "quota-exceeded") +
                            (r2->value("failureReason", "") == "quota-exceeded");
  EXPECT_GE(quotaFailures, 1) << r1->dump() << "\n" << r2->dump();
}

TEST_F(BackgroundFetchTest, AbortOfAnActiveFetchIsTrueThenFalse) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* p = observer();
  ASSERT_TRUE(isOk(p->fetch("abort", json::array({http.url("/gen/1000000?rate=100000")}))));
  ASSERT_TRUE(p->progressReaching("abort", 1));
  auto first = p->abort("abort");
  ASSERT_TRUE(isOk(first)) << show(first);
  EXPECT_EQ((*first)["aborted"], true) << first->dump();
  auto fin = p->finalEvent("abort");
  ASSERT_TRUE(fin);
  EXPECT_EQ(fin->j.value("result", ""), "failure") << fin->j.dump();
  EXPECT_EQ(fin->j.value("failureReason", ""), "aborted") << fin->j.dump();
  EXPECT_LT(fin->j.value("downloaded", uint64_t{0}), 1000000u) << fin->j.dump();
  auto second = p->abort("abort");
  ASSERT_TRUE(isOk(second)) << show(second);
  EXPECT_EQ((*second)["aborted"], false) << second->dump();
  auto rep = p->report("abort");
  EXPECT_TRUE(reportIs(rep, "abort", "failure", "aborted"));
  // The transfer stopped: the origin did not send the whole body.
  auto log = http.waitForRequests(1, 10s);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_LT(log[0].value("bodyBytes", uint64_t{0}), 1000000u) << log[0].dump();
  // Once settled, a page that never held it aborts nothing either.
  ASSERT_TRUE(waitSettled(*p, "abort"));
  Page* other = page();
  auto third = other->abort("abort");
  ASSERT_TRUE(isOk(third)) << show(third);
  EXPECT_EQ((*third)["aborted"], false);
}

// ------------------------------------------------------------------------------------------------ network failures

TEST_F(BackgroundFetchTest, ResetConnectionsAreRetriedWithRangeAndIfRange) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* p = observer();
  constexpr uint64_t SIZE = 200000;
  const std::string url = http.url("/gen/200000?seed=5&resetTimes=2&key=reset-range&resetAfter=1000");
  ASSERT_TRUE(isOk(p->fetch("reset", json::array({url}))));
  auto rep = p->report("reset");
  ASSERT_TRUE(reportIs(rep, "success", "success", ""));
  EXPECT_TRUE(recordIs((*rep)["records"], url, 200, SIZE, generatedBodySha256(SIZE, 5)));
  auto log = http.waitForRequests(3);
  ASSERT_GE(log.size(), 3u);
  EXPECT_TRUE(log[0].value("reset", false)) << log[0].dump();
  EXPECT_EQ(log[0].value("range", "?"), "") << log[0].dump();
  EXPECT_TRUE(log[1].value("reset", false)) << log[1].dump();
  // After the first reset the daemon held bytes: the later requests ask for the rest only, under
  // the ETag it saw.
  for (size_t i = 1; i < log.size(); ++i) {
    const std::string range = log[i].value("range", "");
    EXPECT_EQ(range.rfind("bytes=", 0), 0u) << log[i].dump();
    EXPECT_NE(range, "bytes=0-") << log[i].dump();
    EXPECT_EQ(range.back(), '-') << log[i].dump();
    EXPECT_EQ(log[i].value("ifRange", ""), "\"gen-200000-5\"") << log[i].dump();
  }
  EXPECT_EQ(log.back().value("status", 0), 206) << log.back().dump();
  EXPECT_FALSE(log.back().value("reset", true)) << log.back().dump();
}

TEST_F(BackgroundFetchTest, RetryAnsweredWithTheWholeBodyRestartsItFromZero) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* p = page();
  ASSERT_TRUE(p->openLog());
  constexpr uint64_t SIZE = 200000;
  // The first answer resets after 50000 bytes; the retry's Range is ignored (a 200).
  const std::string url = http.url("/gen/200000?seed=15&resetTimes=1&key=reset-200&resetAfter=50000&ignoreRange=1");
  ASSERT_TRUE(isOk(p->fetch("restart", json::array({url}))));
  auto fin = p->finalEvent("restart");
  ASSERT_TRUE(fin);
  EXPECT_EQ(fin->j.value("result", ""), "success") << fin->j.dump();
  EXPECT_EQ(fin->j.value("downloaded", uint64_t{0}), SIZE) << fin->j.dump();
  EXPECT_TRUE(neverDecreases(p->progressEvents("restart")));
  auto rep = p->report("restart");
  ASSERT_TRUE(reportIs(rep, "success", "success", ""));
  EXPECT_TRUE(recordIs((*rep)["records"], url, 200, SIZE, generatedBodySha256(SIZE, 15)));
  auto log = http.waitForRequests(2);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_TRUE(log[0].value("reset", false)) << log[0].dump();
  EXPECT_EQ(log[1].value("range", ""), "bytes=50000-") << log[1].dump();
  EXPECT_EQ(log[1].value("status", 0), 200) << log[1].dump();
  EXPECT_EQ(log[1].value("bodyBytes", uint64_t{0}), SIZE) << log[1].dump();
}

TEST_F(BackgroundFetchTest, ConnectionsResetBeforeTheHeadersAreRetried) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* p = observer();
  constexpr uint64_t SIZE = 50000;
  const std::string url = http.url("/gen/50000?seed=6&closeBeforeHeadersTimes=2&key=close-early");
  ASSERT_TRUE(isOk(p->fetch("close", json::array({url}))));
  auto rep = p->report("close");
  ASSERT_TRUE(reportIs(rep, "success", "success", ""));
  EXPECT_TRUE(recordIs((*rep)["records"], url, 200, SIZE, generatedBodySha256(SIZE, 6)));
  auto log = http.waitForRequests(3);
  ASSERT_EQ(log.size(), 3u);
  EXPECT_TRUE(log[0].value("reset", false));
  EXPECT_TRUE(log[1].value("reset", false));
  EXPECT_EQ(log[2].value("status", 0), 200) << log[2].dump();
  EXPECT_EQ(log[2].value("bodyBytes", uint64_t{0}), SIZE) << log[2].dump();
}

TEST_F(BackgroundFetchTest, RefusedConnectionsFailWithFetchErrorAfterEveryRetryWait) {
  ClosedPort closed;
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* p = observer();
  const std::string down = closed.url("/file");
  const std::string fine = http.url("/gen/5000?seed=8");
  const auto t0 = TestClock::now();
  ASSERT_TRUE(isOk(p->fetch("refused", json::array({down, fine}))));
  auto fin = p->finalEvent("refused");
  ASSERT_TRUE(fin);
  EXPECT_EQ(fin->j.value("result", ""), "failure") << fin->j.dump();
  EXPECT_EQ(fin->j.value("failureReason", ""), "fetch-error") << fin->j.dump();
  // Retried after 50, 100, 150, 200 and 250 ms before giving up.
  EXPECT_GE(msBetween(t0, fin->at), 750 - 20);
  auto rep = p->report("refused");
  ASSERT_TRUE(reportIs(rep, "fail", "failure", "fetch-error"));
  // The other request was not held back by the failing one.
  EXPECT_TRUE(recordIs((*rep)["records"], fine, 200, 5000, generatedBodySha256(5000, 8)));
}

TEST_F(BackgroundFetchTest, RedirectsAreFollowed) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* p = observer();
  const std::string url = http.url("/start?redirect=/gen/4000");
  ASSERT_TRUE(isOk(p->fetch("redirect", json::array({url}))));
  auto rep = p->report("redirect");
  ASSERT_TRUE(reportIs(rep, "success", "success", ""));
  EXPECT_TRUE(recordIs((*rep)["records"], url, 200, 4000, generatedBodySha256(4000)));
}

TEST_F(BackgroundFetchTest, AtMostFetchMaxConnectionsTransfersRunAtOnce) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon({{"--fetch-max-connections", "1"}}));
  Page* p = observer();
  const std::string one = http.url("/gen/150000?seed=1&rate=100000");
  const std::string two = http.url("/gen/150000?seed=2&rate=100000");
  ASSERT_TRUE(isOk(p->fetch("serial", json::array({one, two}))));
  // Sample the records until the fetch ends: a record with a response but no end is running.
  int samples = 0, sawOneRunning = 0;
  while (p->idListed("serial")) {
    json recs = p->records("serial");
    if (!recs.is_array()) break;  // settled meanwhile
    ++samples;
    int running = 0;
    for (const auto& r : recs)
      if (r.value("status", 0) != 0 && !r.value("complete", false)) ++running;
    EXPECT_LE(running, 1) << recs.dump();
    if (running == 1) ++sawOneRunning;
    if (running > 1) break;
  }
  EXPECT_GE(sawOneRunning, 2) << "in " << samples << " samples";
  auto rep = p->report("serial");
  ASSERT_TRUE(reportIs(rep, "success", "success", ""));
  EXPECT_TRUE(recordIs((*rep)["records"], two, 200, 150000, generatedBodySha256(150000, 2)));
}

// ------------------------------------------------------------------------------------------------ resume after kill -9

class BackgroundFetchResumeTest : public BackgroundFetchTest {
 protected:
  /// Fetches `url` (`size` bytes) from a page, kill -9s the daemon once that page saw at least
  /// half of it, restarts the daemon and follows the fetch to its end: the page's progress never
  /// goes below what it saw before the kill, a page that calls get after the restart sees no less
  /// either, and a new `bgfetch-log` observer gets the success report with `sha`.
  void killAtHalfAndResume(const std::string& url, uint64_t size, const std::string& sha) {
    ASSERT_TRUE(startDaemon());
    Page* p = page();
    ASSERT_TRUE(isOk(p->fetch("resume", json::array({url}))));
    auto half = p->progressReaching("resume", size / 2);
    ASSERT_TRUE(half) << "never saw half of the body";
    ASSERT_EQ(half->j.value("result", "?"), "") << "finished before the kill: " << half->j.dump();
    const size_t linesBeforeKill = p->lines().size();
    ASSERT_TRUE(killDaemon());
    uint64_t seenBeforeKill = 0;
    for (const auto& e : p->progressEvents("resume")) seenBeforeKill = std::max(seenBeforeKill, e.value("downloaded", uint64_t{0}));
    ASSERT_LT(seenBeforeKill, size);

    ASSERT_TRUE(restartDaemon());
    Page* o = observer();
    ASSERT_TRUE(o->idListed("resume")) << "the fetch was not resumed, or ended before the observer joined; daemon log:\n"
                                       << daemon->log();
    // A page that follows from now on starts no lower than what was shown before the kill.
    Page* q = page();
    auto got = q->get("resume");
    ASSERT_TRUE(isOk(got)) << show(got);
    ASSERT_TRUE((*got)["registration"].is_object()) << got->dump();
    EXPECT_GE((*got)["registration"].value("downloaded", uint64_t{0}), seenBeforeKill) << got->dump();

    auto rep = o->report("resume");
    ASSERT_TRUE(reportIs(rep, "success", "success", ""));
    EXPECT_TRUE(recordIs((*rep)["records"], url, 200, size, sha));
    EXPECT_GE(rep->value("downloaded", uint64_t{0}), size) << rep->dump();

    // The page that started it re-attached by itself and followed it to the end.
    auto fin = p->finalEvent("resume");
    ASSERT_TRUE(fin) << "the fetching page got no final event after the restart";
    EXPECT_EQ(fin->j.value("result", ""), "success") << fin->j.dump();
    std::vector<json> after;
    for (const auto& l : p->linesFrom(linesBeforeKill))
      if (isProgress(l.j, "resume")) after.push_back(l.j);
    EXPECT_TRUE(neverDecreases(after, seenBeforeKill));
    EXPECT_TRUE(neverDecreases(q->progressEvents("resume"), (*got)["registration"].value("downloaded", uint64_t{0})));
  }
};

TEST_F(BackgroundFetchResumeTest, DaemonKilledAtHalfResumesWithRangeAndIfRange) {
  HttpTestServer http;
  constexpr uint64_t SIZE = 1200000;
  const std::string url = http.url("/gen/1200000?seed=11&rate=200000");
  killAtHalfAndResume(url, SIZE, generatedBodySha256(SIZE, 11));
  if (HasFatalFailure()) return;
  auto log = http.requests();
  ASSERT_GE(log.size(), 2u);
  EXPECT_EQ(log[0].value("range", "?"), "");
  const json& resumed = log.back();
  const std::string range = resumed.value("range", "");
  ASSERT_EQ(range.rfind("bytes=", 0), 0u) << resumed.dump();
  const uint64_t from = std::stoull(range.substr(6));
  EXPECT_GE(from, SIZE / 2) << resumed.dump();
  EXPECT_EQ(resumed.value("ifRange", ""), "\"gen-1200000-11\"") << resumed.dump();
  EXPECT_EQ(resumed.value("status", 0), 206) << resumed.dump();
  EXPECT_EQ(resumed.value("bodyBytes", uint64_t{0}), SIZE - from) << resumed.dump();
}

TEST_F(BackgroundFetchResumeTest, DaemonKilledAtHalfRestartsFromZeroWhenTheServerIgnoresRange) {
  HttpTestServer http;
  constexpr uint64_t SIZE = 1200000;
  const std::string url = http.url("/gen/1200000?seed=12&rate=200000&ignoreRange=1");
  killAtHalfAndResume(url, SIZE, generatedBodySha256(SIZE, 12));
  if (HasFatalFailure()) return;
  auto log = http.requests();
  ASSERT_GE(log.size(), 2u);
  const json& again = log.back();
  EXPECT_EQ(again.value("status", 0), 200) << again.dump();
  EXPECT_EQ(again.value("bodyBytes", uint64_t{0}), SIZE) << again.dump();
}

TEST_F(BackgroundFetchResumeTest, DaemonKilledAtHalfRestartsFromZeroWithoutValidators) {
  HttpTestServer http;
  constexpr uint64_t SIZE = 1200000;
  const std::string url = http.url("/gen/1200000?seed=13&rate=200000&noValidators=1");
  killAtHalfAndResume(url, SIZE, generatedBodySha256(SIZE, 13));
  if (HasFatalFailure()) return;
  auto log = http.requests();
  ASSERT_GE(log.size(), 2u);
  const json& again = log.back();
  // Nothing to make a range safe with: no Range at all, the whole body again.
  EXPECT_EQ(again.value("range", "?"), "") << again.dump();
  EXPECT_EQ(again.value("status", 0), 200) << again.dump();
  EXPECT_EQ(again.value("bodyBytes", uint64_t{0}), SIZE) << again.dump();
}

TEST_F(BackgroundFetchResumeTest, DaemonKilledAtHalfResumesAgainstNginx) {
  if (!nginxAvailable()) GTEST_SKIP() << nginxPath() << " is not installed";
  NginxServer nginx;
  constexpr uint64_t SIZE = 2000000;
  const std::string sha = nginx.writeRandomFile("episode.bin", SIZE, 21);
  // limit_rate sends its first second at once, then paces: ~4 s to half, ~4 s after the restart.
  const std::string url = nginx.url("/episode.bin?rate=200000");
  killAtHalfAndResume(url, SIZE, sha);
  if (HasFatalFailure()) return;
  // nginx logs each request once it ends: the resumed one is a 206.
  EXPECT_TRUE(eventually([&] { return nginx.accessLog().find("\" 206 ") != std::string::npos; }))
      << nginx.accessLog();
}

// ------------------------------------------------------------------------------------------------ page_client fetch

TEST_F(BackgroundFetchTest, FetchSubcommandPrintsTheFinalRegistrationAndExitsZero) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  auto run = runPageClient({"fetch", "cli-ok", http.url("/gen/100000?rate=200000")});
  ASSERT_EQ(run.code, 0) << run.err;
  ASSERT_EQ(run.out.size(), 1u) << "stdout should be one JSON line; stderr:\n" << run.err;
  const json& r = run.out[0];
  EXPECT_EQ(r.value("id", ""), "cli-ok") << r.dump();
  EXPECT_EQ(r.value("result", ""), "success") << r.dump();
  EXPECT_EQ(r.value("failureReason", "?"), "") << r.dump();
  EXPECT_EQ(r.value("downloaded", uint64_t{0}), 100000u) << r.dump();
  EXPECT_EQ(fieldsOfR(r).size(), 8u) << r.dump();
}

TEST_F(BackgroundFetchTest, FetchSubcommandExitsOneOnABadStatus) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  auto run = runPageClient({"fetch", "cli-404", http.url("/status/404")});
  ASSERT_EQ(run.code, 1) << run.err;
  ASSERT_EQ(run.out.size(), 1u) << run.err;
  EXPECT_EQ(run.out[0].value("result", ""), "failure") << run.out[0].dump();
  EXPECT_EQ(run.out[0].value("failureReason", ""), "bad-status") << run.out[0].dump();
}

TEST_F(BackgroundFetchTest, FetchSubcommandExitsTwoWithoutADaemon) {
  TempDir empty;
  auto run = runPageClient({"fetch", "cli-none", "http://127.0.0.1:1/x"}, empty.path());
  EXPECT_EQ(run.code, 2) << run.err;
  EXPECT_TRUE(run.out.empty());
  EXPECT_FALSE(run.err.empty()) << "no error line on stderr";
}

TEST_F(BackgroundFetchTest, FetchSubcommandDetachedExitsOnceRegisteredAndTheFetchCompletes) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  Page* o = observer();
  constexpr uint64_t SIZE = 400000;
  const std::string url = http.url("/gen/400000?seed=14&rate=200000");
  auto run = runPageClient({"fetch", "cli-detach", url, "--detach"});
  ASSERT_EQ(run.code, 0) << run.err;
  ASSERT_EQ(run.out.size(), 1u) << run.err;
  EXPECT_EQ(run.out[0].value("id", ""), "cli-detach") << run.out[0].dump();
  EXPECT_EQ(run.out[0].value("result", "?"), "") << "the first registration is the active one: " << run.out[0].dump();
  auto rep = o->report("cli-detach");
  ASSERT_TRUE(reportIs(rep, "success", "success", ""));
  EXPECT_TRUE(recordIs((*rep)["records"], url, 200, SIZE, generatedBodySha256(SIZE, 14)));
}

TEST_F(BackgroundFetchTest, FetchSubcommandWithDownloadTotalTooSmallExitsOne) {
  HttpTestServer http;
  ASSERT_TRUE(startDaemon());
  auto run = runPageClient({"fetch", "cli-total", http.url("/gen/100000"), "--download-total", "1000"});
  ASSERT_EQ(run.code, 1) << run.err;
  ASSERT_EQ(run.out.size(), 1u) << run.err;
  EXPECT_EQ(run.out[0].value("failureReason", ""), "download-total-exceeded") << run.out[0].dump();
  EXPECT_EQ(run.out[0].value("downloadTotal", uint64_t{0}), 1000u) << run.out[0].dump();
}

}  // namespace
}  // namespace swipc::testing
