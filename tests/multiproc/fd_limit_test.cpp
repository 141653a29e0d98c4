// The daemon's file descriptors per client (issue 17, "Scale"; daemon/fd_budget.h), with real
// sw_daemon and page_client processes and the daemon's RLIMIT_NOFILE set by prlimit(1) before
// exec:
//  - at start the soft limit is raised to the hard one (/proc/PID/limits) and logged;
//  - past a quarter of the limit an idle client costs the daemon one fd (its socket; wakes go as
//    socket datagrams), and those clients still talk (messageSW round trips);
//  - a Hello that would eat into the fd reserve is refused by name (QuotaExceededError, "file
//    descriptor limit"), counted (rejectedClients, fdLimitRefused) and logged once per burst,
//    while the clients attached before keep working.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "process.h"
#include "test_scope.h"

namespace swipc::testing {
namespace {

using nlohmann::json;

/// A script that starts sw_daemon under `prlimit --nofile=SOFT:HARD` (exec: same pid).
std::string limitedDaemon(const TempDir& dir, unsigned soft, unsigned hard) {
  const std::string path = dir.path() + "/sw_daemon_limited";
  std::ofstream f(path);
  f << "#!/bin/sh\nexec prlimit --nofile=" << soft << ":" << hard << " -- '" << swDaemonPath() << "' \"$@\"\n";
  f.close();
  ::chmod(path.c_str(), 0755);
  return path;
}

/// "Max open files" soft and hard from /proc/PID/limits.
std::optional<std::pair<long, long>> openFileLimits(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("Max open files", 0) != 0) continue;
    std::istringstream in(line.substr(std::string("Max open files").size()));
    long soft = 0, hard = 0;
    if (in >> soft >> hard) return std::make_pair(soft, hard);
  }
  return std::nullopt;
}

std::vector<std::string> pageArgv(Scope& s) {
  return {pageClientPath(), "--scope", s.name(), "--runtime-dir", s.runtimeDir(), "--log-level", "warn", "script"};
}

/// True when the page answers a messageSW round trip (the reference SW's GET_VERSION).
bool answers(ScriptClient& p) {
  auto r = p.call({{"op", "messageSW"}, {"data", {{"type", "GET_VERSION"}}}, {"timeoutMs", 10000}}, 15s);
  return r && (*r)["event"] == "ok";
}

size_t countOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(FdLimitTest, SoftLimitIsRaisedToTheHardLimitAndLogged) {
  TempDir bin;
  ScopeOptions o;
  o.swDaemon = limitedDaemon(bin, 256, 4096);
  Scope s(o);
  auto lim = openFileLimits(s.daemon().pid());
  ASSERT_TRUE(lim);
  EXPECT_EQ(lim->first, 4096);
  EXPECT_EQ(lim->second, 4096);
  EXPECT_TRUE(eventually([&] { return s.daemon().log().find("file descriptor limit 4096 (soft was 256") != std::string::npos; }))
      << s.daemon().log();
}

TEST(FdLimitTest, IdleClientsPastAQuarterOfTheLimitCostOneFdEach) {
  // 512 fds: clients have their own wake fds (3 fds) while at most 128 are in use, socket wakes
  // (1 fd) past that; the reserve (80) ends it at 432.
  TempDir bin;
  ScopeOptions o;
  o.swDaemon = limitedDaemon(bin, 512, 512);
  Scope s(o);
  const pid_t daemon = s.daemon().pid();
  // Fill the first quarter with clients that have their own wake fds.
  // (The daemon may hold an fd or two for a moment besides, e.g. a connection not yet welcomed:
  // counts are compared once it is idle again.)
  const int start = openFdCount(daemon);
  std::vector<ScriptClient*> early;
  while (openFdCount(daemon) <= 512 / 4) {
    early.push_back(&s.page());
    ASSERT_LT(early.size(), 200u) << "the daemon's fds do not grow with clients";
  }
  const auto earlyCount = static_cast<int>(early.size());
  EXPECT_TRUE(eventually([&] { return openFdCount(daemon) - start <= 3 * earlyCount; }))
      << openFdCount(daemon) - start << " fds for " << earlyCount << " clients with their own wake fds";
  // Past it: N more idle clients, each one fd (its socket).
  const int N = 40;
  const int base = openFdCount(daemon);
  std::vector<ScriptClient*> late;
  for (int i = 0; i < N; ++i) late.push_back(&s.page());
  int added = 0;
  EXPECT_TRUE(eventually([&] {
    added = openFdCount(daemon) - base;
    return added <= N;
  })) << added << " fds for " << N << " clients with socket wakes: one each (the socket) was expected";
  EXPECT_LE(added, 2 * N) << "at most 2 fds per idle client";
  EXPECT_GE(added, N - 4) << "each client holds its socket";
  // Both kinds talk: a round trip each way through the rings, woken by pipe/eventfd or datagram.
  EXPECT_TRUE(answers(*early.front()));
  EXPECT_TRUE(answers(*late.front()));
  EXPECT_TRUE(answers(*late.back()));
}

TEST(FdLimitTest, HelloThatWouldEatIntoTheReserveIsRefusedByName) {
  // 192 fds: reserve 64 + 192/32 = 70, so clients are admitted while fewer than 122 are in use.
  TempDir bin;
  ScopeOptions o;
  o.swDaemon = limitedDaemon(bin, 192, 192);
  Scope s(o);
  const pid_t daemon = s.daemon().pid();
  std::vector<ScriptClient*> attached;
  ScriptClient* refused = nullptr;
  for (int i = 0; i < 200 && !refused; ++i) {
    ScriptClient& p = s.scriptPage(pageArgv(s));
    if (p.waitEvent("attached", 20s)) {
      attached.push_back(&p);
    } else {
      refused = &p;
    }
  }
  ASSERT_NE(refused, nullptr) << "no page was refused; daemon fds: " << openFdCount(daemon);
  ASSERT_GE(attached.size(), 20u) << "refused too early";
  EXPECT_LE(openFdCount(daemon), 192 - 64) << "the reserve is intact";
  ASSERT_TRUE(refused->process().waitExitCode(10s).has_value());
  const std::string why = refused->process().stderrText();
  EXPECT_NE(why.find("QuotaExceededError"), std::string::npos) << why;
  EXPECT_NE(why.find("file descriptor limit"), std::string::npos) << why;

  // More refusals in the same burst: counted, but the log has one line for them all.
  for (int i = 0; i < 3; ++i) {
    ScriptClient& p = s.scriptPage(pageArgv(s));
    ASSERT_TRUE(p.process().waitExitCode(20s).has_value()) << "page " << i << " was admitted";
    EXPECT_NE(p.process().stderrText().find("file descriptor limit"), std::string::npos);
  }
  auto counters = readCounters(s.daemon());
  ASSERT_TRUE(counters);
  EXPECT_EQ((*counters)["fdLimitRefused"], 4) << counters->dump();
  EXPECT_GE((*counters)["rejectedClients"], 4) << counters->dump();
  const std::string log = s.daemon().log();
  EXPECT_EQ(countOf(log, "near its file descriptor limit"), 1u) << log;

  // The clients attached before still work, the first and the last.
  EXPECT_TRUE(answers(*attached.front()));
  EXPECT_TRUE(answers(*attached.back()));
}

}  // namespace
}  // namespace swipc::testing
