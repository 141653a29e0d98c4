// Quotas against a real sw_daemon (issue 14, findings 3, 4 and 7; DESIGN §4 backpressure): one
// client that floods or stops reading can only hurt itself.
//   - acks for a client that never reads its down ring stay bounded: it is disconnected as
//     unresponsive once its backlog would pass twice its bound, and the daemon's RSS stays flat
//     (finding 3: 9 MiB -> 1.2 GiB before);
//   - the service worker's replies to it are bounded in bytes, not only in messages, and the
//     memory goes back when it leaves (finding 3: 150 x 4 MiB ECHO -> 489 MiB before);
//   - a page stopped with SIGSTOP while its backlog is full is disconnected after
//     --unresponsive-ms and what it held is reclaimed;
//   - BroadcastChannel names and objects are bounded per client and per scope, with
//     QuotaExceededError to the one asking (finding 4: 25,000 names used up every daemon fd);
//   - clients.openWindow starts at most --max-open-windows pages at once (finding 7: one
//     process per request, no cap).
// The flooding page here is the test process itself, on the library; the daemon is a real one.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <sstream>

#include "process.h"
#include "swipc/broadcast_channel.h"
#include "swipc/client.h"
#include "test_scope.h"

namespace swipc::testing {
namespace {

using namespace std::chrono_literals;

constexpr long MIB_KIB = 1024;

class QuotaTest : public ::testing::Test {
 protected:
  void startDaemon(std::vector<std::string> extraArgs) {
    daemon = std::make_unique<Daemon>(dir.path(), scope, std::move(extraArgs));
    ASSERT_TRUE(daemon->waitReady()) << daemon->log();
  }
  Client connect() {
    ClientOptions opts;
    opts.scope = scope;
    opts.runtimeDir = dir.path();
    opts.reconnect = false;  // a disconnection must show, not be papered over
    auto c = Client::connect(opts);
    EXPECT_TRUE(c.ok()) << c.error().describe();
    return std::move(*c);
  }
  int64_t counter(const std::string& name) {
    auto c = readCounters(*daemon);
    EXPECT_TRUE(c.has_value()) << "no counters from the daemon";
    return c && c->contains(name) ? c->at(name).get<int64_t>() : -1;
  }
  bool eventuallyCounter(const std::string& name, int64_t atLeast, std::chrono::milliseconds timeout = 10s) {
    return eventually([&] { return counter(name) >= atLeast; }, timeout);
  }

  /// A raw client that misbehaves in `mode` (tests/support/hostile_client.cpp).
  ChildProcess startHostile(const std::string& mode, std::vector<std::string> extra) {
    std::vector<std::string> argv{hostileClientPath(), "--runtime-dir", dir.path(), "--scope", scope, "--mode", mode};
    argv.insert(argv.end(), extra.begin(), extra.end());
    ChildProcess::Options o;
    o.pipeStdout = true;
    return ChildProcess(argv, o);
  }
  struct HostileRun {
    std::vector<std::string> lines;
    bool said(const std::string& prefix) const {
      for (const auto& l : lines)
        if (l.rfind(prefix, 0) == 0) return true;
      return false;
    }
    std::string text() const {
      std::string t;
      for (const auto& l : lines) t += l + "\n";
      return t;
    }
  };
  /// Everything a hostile_client printed until it exited (or `timeout`).
  static HostileRun finishHostile(ChildProcess& p, std::chrono::milliseconds timeout) {
    HostileRun run;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (auto line = p.readLine(std::chrono::duration_cast<std::chrono::milliseconds>(
               deadline - std::chrono::steady_clock::now()))) {
      run.lines.push_back(*line);
    }
    (void)p.waitExitCode(5s);
    return run;
  }
  /// The daemon's log without its counter lines (readCounters asks for many).
  std::string quietLog() const {
    std::istringstream in(daemon->log());
    std::string out, line;
    while (std::getline(in, line))
      if (line.find(" counters ") == std::string::npos) out += line + "\n";
    return out;
  }

  TempDir dir;
  std::string scope = testScope();
  std::unique_ptr<Daemon> daemon;
};

/// The pids of `pid`'s children (/proc/PID/task/PID/children).
std::vector<pid_t> childrenOf(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  pid_t p;
  while (f >> p) out.push_back(p);
  return out;
}

TEST_F(QuotaTest, AcksForAClientThatNeverReadsStayBoundedAndItIsDisconnected) {
  startDaemon({"--unresponsive-ms", "60000"});  // the hard bound decides here, not the timer
  const long before = rssKiB(daemon->pid());
  // 300,000 posts asking for an ack, and never a look at the down ring: held, those acks would be
  // well over 100 MiB of daemon memory.
  auto flooder = startHostile("ack-flood", {"--count", "300000", "--linger-ms", "10000"});
  auto run = finishHostile(flooder, 60s);
  EXPECT_TRUE(run.said("disconnected")) << run.text();
  ASSERT_TRUE(eventuallyCounter("unresponsiveDisconnects", 1)) << quietLog();
  const long growthKiB = rssKiB(daemon->pid()) - before;
  if (rssFiguresHold())
    EXPECT_LT(growthKiB, 64 * MIB_KIB) << "daemon RSS grew " << growthKiB / 1024 << " MiB under the ack flood";
  EXPECT_NE(daemon->log().find("disconnected as unresponsive"), std::string::npos) << quietLog();
  EXPECT_GT(counter("undelivered"), 0) << "its backlog is reported undelivered";
  RecordProperty("daemonGrowthKiB", static_cast<int>(growthKiB));

  // Everyone else is served as before.
  Client other = connect();
  auto v = other.messageSW(Value::map({{"type", "GET_VERSION"}}), 5000ms);
  EXPECT_TRUE(v.ok()) << v.error().describe();
}

TEST_F(QuotaTest, RepliesToAClientThatNeverReadsAreBoundedInBytesAndTheMemoryGoesBack) {
  startDaemon({"--max-backlog-bytes", std::to_string(16 << 20), "--unresponsive-ms", "60000"});
  const long before = rssKiB(daemon->pid());
  // 150 ECHO posts of 4 MiB: the replies past 16 MiB are refused to the service worker
  // (QueueFull), not held (489 MiB before).
  auto flooder = startHostile("echo-flood", {"--count", "150", "--pad", std::to_string(4 << 20), "--linger-ms", "60000"});
  std::optional<std::string> line;
  while ((line = flooder.readLine(60s)) && line->rfind("flooded", 0) != 0) {
  }
  ASSERT_TRUE(line && *line == "flooded 150") << (line ? *line : "(nothing)");
  ASSERT_TRUE(eventuallyCounter("queueFull", 100, 30s)) << quietLog();
  const long growthKiB = rssKiB(daemon->pid()) - before;
  if (rssFiguresHold())
    EXPECT_LT(growthKiB, 64 * MIB_KIB) << "daemon RSS grew " << growthKiB / 1024 << " MiB under 150 x 4 MiB ECHO";
  RecordProperty("daemonGrowthKiB", static_cast<int>(growthKiB));
  // The flooder leaves: what the daemon held for it goes back to the system.
  flooder.signal(SIGKILL);
  ASSERT_TRUE(eventuallyCounter("detached", 1)) << quietLog();
  if (rssFiguresHold())
    EXPECT_TRUE(eventually([&] { return rssKiB(daemon->pid()) - before < 32 * MIB_KIB; }, 10s))
      << "daemon RSS stayed " << (rssKiB(daemon->pid()) - before) / 1024 << " MiB above its start after the client left";
}

TEST_F(QuotaTest, StoppedPageWithAFullBacklogIsDisconnectedAfterTheUnresponsiveTimeout) {
  startDaemon({"--max-backlog", "64", "--unresponsive-ms", "300"});
  ScriptClient page(dir.path(), scope);
  const std::string victim = page.clientId();
  ASSERT_FALSE(victim.empty());
  Client sender = connect();
  const int fdsWithVictim = openFdCount(daemon->pid());
  page.process().signal(SIGSTOP);

  const Value postTo = Value::map({{"type", "POST_TO"},
                                   {"id", victim},
                                   {"data", Bytes{std::vector<uint8_t>(8192, 1)}}});
  // Fill its ring and then its backlog, until the service worker is refused (delivered: false).
  bool refused = false;
  for (int i = 0; i < 2000 && !refused; ++i) {
    auto r = sender.messageSW(postTo, 5000ms);
    ASSERT_TRUE(r.ok()) << r.error().describe();
    refused = (*r)["delivered"].isBool() && !(*r)["delivered"].asBool();
  }
  ASSERT_TRUE(refused) << "the stopped page's backlog never filled";
  ASSERT_TRUE(eventuallyCounter("unresponsiveDisconnects", 1, 10s)) << quietLog();
  EXPECT_GE(counter("undelivered"), 64) << "what it held is reported undelivered";
  EXPECT_TRUE(eventually([&] { return openFdCount(daemon->pid()) < fdsWithVictim; }, 5s))
      << "the stopped page's fds were not reclaimed";
  page.process().signal(SIGKILL);
}

TEST_F(QuotaTest, BroadcastChannelObjectsAndNamesAreBoundedWithQuotaExceededError) {
  startDaemon({"--max-channels-per-client", "100", "--max-channels", "150"});
  const int fdsBefore = openFdCount(daemon->pid());

  Client a = connect();
  std::vector<Error> refusedA;
  a.onUndelivered([&](MessageSeq, const Error& e) { refusedA.push_back(e); });
  int joinedA = 0;
  int joinRefusedA = 0;
  std::vector<BroadcastChannel> objectsA;
  for (int i = 0; i < 120; ++i) {
    objectsA.emplace_back(a, "a-" + std::to_string(i));
    objectsA.back().onJoined([&] { ++joinedA; });
    objectsA.back().onJoinRefused([&](const Error& e) {
      EXPECT_EQ(e.code, Errc::QUOTA_EXCEEDED) << e.describe();
      ++joinRefusedA;
    });
  }
  ASSERT_TRUE(a.runUntil([&] { return joinedA + joinRefusedA >= 120; }, deadlineIn(10s)));
  EXPECT_EQ(joinedA, 100);
  EXPECT_EQ(joinRefusedA, 20) << "each refused object is told";
  ASSERT_EQ(refusedA.size(), 20u);
  for (const auto& e : refusedA) EXPECT_EQ(e.code, Errc::QUOTA_EXCEEDED) << e.describe();
  EXPECT_FALSE(objectsA[119].postMessage(Value("x")).ok()) << "a refused object is closed";

  // The reference service worker keeps channels of its own open (count-channel, ...); nothing
  // was closed yet, so the channels ever opened are its own plus a's 100.
  const size_t swChannels = static_cast<size_t>(counter("channelsOpen")) - 100;
  ASSERT_LT(swChannels, 50u);
  // The scope's bound: 100 + swChannels names exist; b may add the rest up to 150, not 60.
  Client b = connect();
  std::vector<Error> refusedB;
  b.onUndelivered([&](MessageSeq, const Error& e) { refusedB.push_back(e); });
  int joinedB = 0;
  std::vector<BroadcastChannel> objectsB;
  for (int i = 0; i < 60; ++i) {
    objectsB.emplace_back(b, "b-" + std::to_string(i));
    objectsB.back().onJoined([&] { ++joinedB; });
  }
  ASSERT_TRUE(b.runUntil([&] { return joinedB + refusedB.size() >= 60; }, deadlineIn(10s)));
  EXPECT_EQ(static_cast<size_t>(joinedB), 50 - swChannels);
  EXPECT_EQ(refusedB.size(), 10 + swChannels);
  EXPECT_EQ(counter("channelQuotaRefused"), static_cast<int64_t>(30 + swChannels));
  EXPECT_LE(openFdCount(daemon->pid()) - fdsBefore, 150 + 16) << "channel fds past the scope's bound";

  // An existing name is still open to anyone, and works.
  BroadcastChannel late(b, "a-0");
  bool lateJoined = false;
  late.onJoined([&] { lateJoined = true; });
  ASSERT_TRUE(b.runUntil([&] { return lateJoined; }, deadlineIn(5s)));
  std::optional<Value> got;
  late.onMessage([&](const MessageEvent& e) { got = e.data; });
  ASSERT_TRUE(objectsA[0].postMessage(Value("hello")).ok());
  ASSERT_TRUE(b.runUntil([&] { return got.has_value(); }, deadlineIn(5s)));
  EXPECT_EQ(got->textOr(""), "hello");
}

TEST_F(QuotaTest, PageClientBcOpenPastTheQuotaAnswersQuotaExceededError) {
  startDaemon({"--max-channels-per-client", "2"});
  ScriptClient page(dir.path(), scope);
  for (int i = 1; i <= 3; ++i)
    page.send({{"op", "bc.open"}, {"id", i}, {"bc", "b" + std::to_string(i)}, {"name", "n" + std::to_string(i)}});
  auto first = page.waitResult(1);
  auto second = page.waitResult(2);
  auto third = page.waitResult(3);
  ASSERT_TRUE(first && second && third) << "a bc.open got no answer";
  EXPECT_EQ((*first)["event"], "ok");
  EXPECT_EQ((*second)["event"], "ok");
  EXPECT_EQ((*third)["event"], "error");
  EXPECT_EQ((*third)["name"], "QuotaExceededError") << third->dump();
}

TEST_F(QuotaTest, OpenWindowStartsAtMostTheCapAtOnce) {
  startDaemon({"--max-open-windows", "4", "--window-command", "sleep 30", "--open-window-timeout-ms", "20000"});
  Client page = connect();
  int nulls = 0;
  for (int i = 0; i < 40; ++i) {
    page.messageSWAsync(Value::map({{"type", "OPEN_WINDOW"}, {"url", "app://w/" + std::to_string(i)}}),
                        [&](Result<Value> r) {
                          if (r.ok() && r->isNull()) ++nulls;
                        });
  }
  ASSERT_TRUE(page.runUntil([&] { return nulls >= 36; }, deadlineIn(10s))) << nulls << " refused\n" << quietLog();
  const auto children = childrenOf(daemon->pid());
  EXPECT_EQ(children.size(), 4u) << "pages being started";
  EXPECT_EQ(counter("openWindowRefused"), 36);
  for (pid_t p : children) ::kill(p, SIGKILL);  // reaped by the daemon's pidfd watch
}

}  // namespace
}  // namespace swipc::testing
