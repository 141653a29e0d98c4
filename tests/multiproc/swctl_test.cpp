// swctl, the inspector (DESIGN §17), against a real sw_daemon and real page_client pages: each
// command's JSON, the tables, watch, and what an inspector must never do to the daemon (count as a
// client, be refused at --max-clients, stall the loop) or be allowed (another uid).
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "core/socket.h"
#include "envelope.capnp.h"
#include "http_fixture.h"
#include "process.h"
#include "test_scope.h"

namespace swipc::testing {
namespace {

using nlohmann::json;

std::string swctlPath() { return SWIPC_SWCTL_PATH; }

std::string readFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

/// One swctl run to its end.
struct ProgramRun {
  std::optional<int> exitCode;  // nullopt: killed at the deadline
  std::string out, err;
  std::string describe() const {
    return "exit=" + (exitCode ? std::to_string(*exitCode) : std::string("killed")) + "\nstdout: " + out +
           "\nstderr: " + err;
  }
  json parsed() const { return json::parse(out, nullptr, false); }
};

/// Runs argv (as uid `asUid` when set) until it exits or `timeout` passes (then SIGKILL).
ProgramRun runProgram(const std::vector<std::string>& argv, std::optional<uid_t> asUid = std::nullopt,
               std::chrono::milliseconds timeout = 10s) {
  TempDir files;
  const std::string outPath = files.path() + "/out", errPath = files.path() + "/err";
  pid_t pid = ::fork();
  if (pid == 0) {
    int out = ::open(outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int err = ::open(errPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0 || err < 0) ::_exit(120);
    ::dup2(out, 1);
    ::dup2(err, 2);
    if (asUid && (::setgroups(0, nullptr) != 0 || ::setresgid(*asUid, *asUid, *asUid) != 0 ||
                  ::setresuid(*asUid, *asUid, *asUid) != 0))
      ::_exit(121);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(122);
  }
  ProgramRun r;
  const auto deadline = TestClock::now() + timeout;
  int status = 0;
  for (;;) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      if (WIFEXITED(status)) r.exitCode = WEXITSTATUS(status);
      break;
    }
    if (TestClock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    ::usleep(2000);  // polling a child's exit; the deadline bounds the wait
  }
  r.out = readFile(outPath);
  r.err = readFile(errPath);
  return r;
}

class SwctlTest : public ::testing::Test {
 protected:
  void startDaemon(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--sw-version", "swctl-test-1", "--state-dir", state_.path()};
    args.insert(args.end(), extra.begin(), extra.end());
    daemon_.emplace(dir_.path(), scope_, args);
    ASSERT_TRUE(daemon_->waitReady()) << daemon_->log();
  }
  std::vector<std::string> swctlArgs(std::vector<std::string> rest) const {
    std::vector<std::string> argv{swctlPath(), "--scope", scope_, "--runtime-dir", dir_.path()};
    argv.insert(argv.end(), rest.begin(), rest.end());
    return argv;
  }
  ProgramRun swctl(std::vector<std::string> rest) { return runProgram(swctlArgs(std::move(rest))); }
  /// `swctl --json COMMAND`, which must succeed with one JSON object.
  json inspect(const std::string& command) {
    ProgramRun r = swctl({"--json", command});
    EXPECT_EQ(r.exitCode, std::optional<int>(0)) << r.describe();
    json j = r.parsed();
    EXPECT_TRUE(j.is_object()) << r.describe();
    return j;
  }
  /// A script page, attached (its first line read).
  ScriptClient& page(std::vector<std::string> args = {}) {
    pages_.push_back(std::make_unique<ScriptClient>(dir_.path(), scope_, std::move(args)));
    ScriptClient& p = *pages_.back();
    EXPECT_FALSE(p.clientId().empty()) << "page did not attach";
    return p;
  }
  /// Sends op (with id `id`) and expects its ok.
  json ok(ScriptClient& p, json op, int id) {
    op["id"] = id;
    p.send(op);
    auto r = p.waitResult(id, 10s);
    EXPECT_TRUE(r && (*r)["event"] == "ok") << (r ? r->dump() : "no result") << " for " << op.dump();
    return r ? *r : json();
  }

  TempDir dir_, state_;
  std::string scope_ = testScope();
  std::optional<Daemon> daemon_;
  std::vector<std::unique_ptr<ScriptClient>> pages_;
};

// ------------------------------------------------------------------------------------------------ status

TEST_F(SwctlTest, StatusNamesTheDaemonPidVersionAndCounters) {
  startDaemon();
  json j = inspect("status");
  EXPECT_EQ(j.value("pid", -1), daemon_->pid()) << j.dump();
  EXPECT_EQ(j.value("version", ""), "swctl-test-1") << j.dump();
  EXPECT_TRUE(j["uptimeMs"].is_number_integer()) << j.dump();
  ASSERT_TRUE(j["counters"].is_object()) << j.dump();
  EXPECT_TRUE(j["counters"].contains("messagesIn")) << j.dump();
  EXPECT_TRUE(j["counters"].contains("rejectedClients")) << j.dump();
}

TEST_F(SwctlTest, NoDaemonExitsTwoWithOneLine) {
  ProgramRun r = swctl({"status"});
  EXPECT_EQ(r.exitCode, std::optional<int>(2)) << r.describe();
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.describe();
  EXPECT_EQ(r.err.rfind("swctl: NoDaemon", 0), 0u) << r.describe();
  EXPECT_TRUE(r.out.empty()) << r.describe();
}

// ------------------------------------------------------------------------------------------------ clients

TEST_F(SwctlTest, ClientsAreListedInMatchAllOrderAndTheInspectorIsNotOne) {
  startDaemon();
  ScriptClient& a = page({"--url", "app://t/a", "--uncontrolled"});
  ScriptClient& b = page({"--url", "app://t/b"});
  ScriptClient& w = page({"--url", "app://t/w", "--type", "worker"});
  ok(b, {{"op", "setFocus"}, {"focused", true}}, 1);
  // matchAll order: focused windows (most recent first), other windows by creation, then workers.
  json j = inspect("clients");
  ASSERT_TRUE(j["clients"].is_array()) << j.dump();
  ASSERT_EQ(j["clients"].size(), 3u) << j.dump();
  const json& c = j["clients"];
  EXPECT_EQ(c[0]["id"], b.clientId());
  EXPECT_EQ(c[0]["url"], "app://t/b");
  EXPECT_EQ(c[0]["focused"], true);
  EXPECT_EQ(c[1]["id"], a.clientId());
  EXPECT_EQ(c[1]["controlled"], false);
  EXPECT_EQ(c[1]["type"], "window");
  EXPECT_EQ(c[2]["id"], w.clientId());
  EXPECT_EQ(c[2]["type"], "worker");
  EXPECT_EQ(c[2]["controlled"], true);
  EXPECT_EQ(c[2]["pid"], w.pid());
  for (const auto& x : c) {
    EXPECT_EQ(x["visibilityState"], "visible") << x.dump();
    EXPECT_EQ(x["backlogMessages"], 0) << x.dump();
    EXPECT_EQ(x["backlogBytes"], 0) << x.dump();
  }
  // The service worker's own matchAll does not see an inspector either.
  auto m = ok(b, {{"op", "messageSW"}, {"data", {{"type", "MATCH_ALL"}, {"options", {{"includeUncontrolled", true}, {"type", "all"}}}}}}, 2);
  EXPECT_EQ(m["data"]["clients"].size(), 3u) << m.dump();
  json status = inspect("status");
  EXPECT_EQ(status["counters"]["attached"], 3) << status.dump();
  EXPECT_EQ(status["counters"]["rejectedClients"], 0) << status.dump();
}

TEST_F(SwctlTest, ALongClientListComesWhole) {
  // 25 clients are more than an inline reply holds: the answer travels in a sealed memfd.
  startDaemon();
  for (int i = 0; i < 25; ++i) page({"--url", "app://t/page-with-a-longer-url-" + std::to_string(i)});
  json j = inspect("clients");
  ASSERT_EQ(j["clients"].size(), 25u) << j.dump().substr(0, 400);
  EXPECT_GT(j.dump().size(), 4096u);
}

TEST_F(SwctlTest, InspectorIsServedAtMaxClients) {
  startDaemon({"--max-clients", "2"});
  page();
  page();
  ProgramRun refused = runProgram({pageClientPath(), "--scope", scope_, "--runtime-dir", dir_.path(), "--timeout-ms", "3000",
                            "message-sw", R"({"type":"GET_VERSION"})"});
  EXPECT_NE(refused.exitCode, std::optional<int>(0)) << refused.describe();
  EXPECT_NE(refused.err.find("QuotaExceededError"), std::string::npos) << refused.describe();
  json j = inspect("clients");
  EXPECT_EQ(j["clients"].size(), 2u) << j.dump();
  json s = inspect("status");
  EXPECT_EQ(s["counters"]["rejectedClients"], 1) << s.dump();
}

// ------------------------------------------------------------------------------------------------ channels, ports

TEST_F(SwctlTest, ChannelsCountMembersAndPosts) {
  startDaemon();
  ScriptClient& a = page();
  ScriptClient& b = page();
  ok(a, {{"op", "bc.open"}, {"bc", "x"}, {"name", "news"}}, 1);
  ok(b, {{"op", "bc.open"}, {"bc", "y"}, {"name", "news"}}, 1);
  ok(a, {{"op", "bc.post"}, {"bc", "x"}, {"data", "hello"}}, 2);
  ASSERT_TRUE(b.waitEvent("bc.message"));
  json j = inspect("channels");
  ASSERT_TRUE(j["channels"].is_array()) << j.dump();
  const json* news = nullptr;
  for (const auto& c : j["channels"])
    if (c["name"] == "news") news = &c;
  ASSERT_NE(news, nullptr) << j.dump();
  EXPECT_EQ((*news)["members"], 2) << j.dump();
  EXPECT_EQ((*news)["posts"], 1) << j.dump();
  EXPECT_GT((*news)["ringFill"].get<double>(), 0.0) << j.dump();
  EXPECT_LE((*news)["ringFill"].get<double>(), 1.0) << j.dump();
  EXPECT_EQ((*news)["laps"], 0) << j.dump();
}

TEST_F(SwctlTest, ChannelsCountTheLapsTheirReadersReport) {
  // b is frozen while the service worker (asked by a) overruns a 4 KiB ring; once b runs again
  // it finds itself a lap behind (bc.lapped), tells the daemon, and the channel's laps says so.
  // The posts come from the service worker, whose objects never read the ring: b is the only
  // reader that can be lapped.
  startDaemon({"--bc-ring-bytes", "4096"});
  ScriptClient& a = page();
  ScriptClient& b = page();
  ok(b, {{"op", "bc.open"}, {"bc", "y"}, {"name", "news"}}, 1);
  auto newsOf = [&](const json& j) {
    for (const auto& c : j["channels"])
      if (c["name"] == "news") return c;
    return json();
  };
  b.process().signal(SIGSTOP);
  constexpr int POSTS = 100;  // ~13 KiB of records: three laps of the ring
  for (int i = 0; i < POSTS; ++i)
    ok(a, {{"op", "post"}, {"data", {{"type", "BROADCAST"}, {"channel", "news"}, {"data", std::string(100, 'a')}}}}, 1 + i);
  json j;
  ASSERT_TRUE(eventually([&] { return newsOf(j = inspect("channels")).value("posts", 0) == POSTS; }, 10s)) << j.dump();
  EXPECT_EQ(newsOf(j)["laps"], 0) << "nobody was lapped yet: " << j.dump();
  b.process().signal(SIGCONT);
  auto lapped = b.waitEvent("bc.lapped", 10s);
  ASSERT_TRUE(lapped) << "b never learned it was lapped";
  EXPECT_GT((*lapped).value("missed", 0), 0) << lapped->dump();
  EXPECT_TRUE(eventually([&] { return newsOf(j = inspect("channels")).value("laps", 0) == 1; }, 10s)) << j.dump();
}

TEST_F(SwctlTest, PortsCountsAPortTransferredToTheServiceWorker) {
  startDaemon();
  EXPECT_EQ(inspect("ports"), (json{{"open", 0}, {"inTransit", 0}}));
  ScriptClient& a = page();
  ok(a, {{"op", "startMessages"}}, 1);
  ok(a, {{"op", "channel.create"}, {"port1", "p1"}, {"port2", "p2"}}, 2);
  ok(a, {{"op", "port.start"}, {"port", "p1"}}, 3);
  ok(a, {{"op", "post"}, {"data", {{"type", "PORT_INITIALIZATION"}}}, {"transfer", json::array({"p2"})}}, 4);
  auto ready = a.waitFor([](const json& e) { return e.value("event", "") == "port.message"; }, 10s);
  ASSERT_TRUE(ready) << "no PORT_READY";
  json j = inspect("ports");
  EXPECT_EQ(j["open"], 2) << j.dump();
  EXPECT_TRUE(j["inTransit"].is_number_integer()) << j.dump();
}

// ------------------------------------------------------------------------------------------------ sync, fetches

TEST_F(SwctlTest, SyncListsAPendingTagWhileOffline) {
  startDaemon({"--connectivity", "manual", "--offline"});
  ScriptClient& a = page();
  ok(a, {{"op", "sync.register"}, {"tag", "outbox"}, {"data", {{"n", 1}}}}, 1);
  json j = inspect("sync");
  ASSERT_EQ(j["tags"].size(), 1u) << j.dump();
  EXPECT_EQ(j["tags"][0]["tag"], "outbox") << j.dump();
  EXPECT_EQ(j["tags"][0]["state"], "pending") << j.dump();
  EXPECT_EQ(j["tags"][0]["attempts"], 0) << j.dump();
  EXPECT_TRUE(j["tags"][0]["entries"].is_number_integer()) << j.dump();
  EXPECT_TRUE(j["tags"][0]["nextAttemptMs"].is_number_integer()) << j.dump();
}

TEST_F(SwctlTest, FetchesListsARunningDownload) {
  HttpTestServer http;
  startDaemon();
  ScriptClient& a = page();
  ok(a, {{"op", "bgfetch.fetch"}, {"fetchId", "slow"}, {"requests", json::array({http.url("/gen/4000000?rate=100000")})}}, 1);
  json j = inspect("fetches");
  ASSERT_EQ(j["fetches"].size(), 1u) << j.dump();
  const json& f = j["fetches"][0];
  EXPECT_EQ(f["id"], "slow") << j.dump();
  EXPECT_EQ(f["result"], "") << j.dump();
  EXPECT_EQ(f["failureReason"], "") << j.dump();
  for (const char* k : {"uploadTotal", "uploaded", "downloadTotal", "downloaded"})
    EXPECT_TRUE(f[k].is_number_integer()) << k << " in " << j.dump();
  EXPECT_TRUE(f["recordsAvailable"].is_boolean()) << j.dump();
  ok(a, {{"op", "bgfetch.abort"}, {"fetchId", "slow"}}, 2);
}

// ------------------------------------------------------------------------------------------------ the daemon's safety

TEST_F(SwctlTest, AnotherUidIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: another uid (nobody) plays the stranger";
  startDaemon();
  // Let the stranger reach the socket at all (the daemon made it ours only): its uid check must
  // be what refuses it.
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0711), 0);
  ASSERT_EQ(::chmod((dir_.path() + "/" + scope_).c_str(), 0711), 0);
  ASSERT_EQ(::chmod((dir_.path() + "/" + scope_ + "/daemon.sock").c_str(), 0666), 0);
  ProgramRun r = runProgram(swctlArgs({"--json", "clients"}), uid_t{65534});
  EXPECT_EQ(r.exitCode, std::optional<int>(1)) << r.describe();
  EXPECT_NE(r.err.find("InvalidAccessError"), std::string::npos) << r.describe();
  EXPECT_TRUE(r.out.empty()) << r.describe();
}

TEST_F(SwctlTest, InspectorsThatNeverReadDoNotStallClients) {
  startDaemon();
  ScriptClient& a = page();
  // 200 connections that ask and never read their answers, and 20 that never ask. (Those past
  // --max-pending-per-uid at one moment are refused: harmless too.)
  const std::string sock = dir_.path() + "/" + scope_ + "/daemon.sock";
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Control>().initInspect().setCommand("clients");
  auto words = capnp::messageToFlatArray(mb);
  std::vector<UniqueFd> silent;
  for (int i = 0; i < 220; ++i) {
    auto fd = core::connectSeqpacket(sock);
    ASSERT_TRUE(fd) << fd.error().describe();
    if (i < 200) core::sendDatagram(fd->get(), words.begin(), words.size() * sizeof(capnp::word));
    silent.push_back(std::move(*fd));
  }
  for (int i = 0; i < 20; ++i) {
    auto t0 = TestClock::now();
    auto r = ok(a, {{"op", "messageSW"}, {"data", {{"type", "GET_VERSION"}}}, {"timeoutMs", 2000}}, 100 + i);
    EXPECT_EQ(r["data"], "swctl-test-1") << r.dump();
    EXPECT_LT(msSince(t0), 1000) << "messageSW " << i;
  }
  json s = inspect("status");
  EXPECT_EQ(s["counters"]["attached"], 1) << s.dump();
}

// ------------------------------------------------------------------------------------------------ output

TEST_F(SwctlTest, TablesHaveAHeaderAndAlignedColumns) {
  startDaemon();
  page({"--url", "app://t/short"});
  page({"--url", "app://t/a-much-longer-url", "--type", "worker"});
  ProgramRun r = swctl({"clients"});
  ASSERT_EQ(r.exitCode, std::optional<int>(0)) << r.describe();
  std::vector<std::string> lines;
  std::istringstream in(r.out);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_EQ(lines[0].rfind("ID", 0), 0u) << r.out;
  // Every column starts at the same offset on every line.
  for (const char* col : {"PID", "TYPE", "CONTROLLED", "URL"}) {
    size_t at = lines[0].find(col);
    ASSERT_NE(at, std::string::npos) << col;
    for (size_t i = 1; i < lines.size(); ++i) {
      EXPECT_NE(lines[i][at], ' ') << col << " in\n" << r.out;
      EXPECT_EQ(lines[i][at - 1], ' ') << col << " in\n" << r.out;
    }
  }
  for (const char* cmd : {"status", "channels", "ports", "sync", "fetches"}) {
    ProgramRun t = swctl({cmd});
    EXPECT_EQ(t.exitCode, std::optional<int>(0)) << cmd << ": " << t.describe();
    EXPECT_FALSE(t.out.empty()) << cmd;
  }
}

TEST_F(SwctlTest, WatchPrintsSnapshotsUntilSigint) {
  startDaemon();
  page();
  ChildProcess::Options o;
  o.pipeStdout = true;
  ChildProcess watch(swctlArgs({"--interval-ms", "100", "watch"}), o);
  int snapshots = 0;
  while (snapshots < 2) {
    auto line = watch.readLine(5s);
    ASSERT_TRUE(line) << "watch printed " << snapshots << " snapshots; stderr: " << watch.stderrText();
    if (line->rfind("snapshot ", 0) == 0) {
      ++snapshots;
      EXPECT_NE(line->find("clients=1"), std::string::npos) << *line;
      EXPECT_NE(line->find("backlogBytes=0"), std::string::npos) << *line;
    }
  }
  watch.signal(SIGINT);
  EXPECT_EQ(watch.waitExitCode(5s), std::optional<int>(0)) << watch.stderrText();
}

}  // namespace
}  // namespace swipc::testing
