// Hostile peers against a real sw_daemon (DESIGN §4, §5, §8): a client that corrupts its ring,
// sends malformed or forbidden envelopes, plays with out-of-line fds or breaks the handshake is
// disconnected with ProtocolViolation (or the handshake's own error), alone: the daemon keeps
// running and keeps serving a well-behaved client. A client that only floods its doorbell is not
// a violation at all. A client that lies about MessagePort ownership (transfers or posts from a
// port it does not own, registers a pair over existing ids or with itself as peer, transfers the
// posting port itself or one port twice, ships messageSW's reply port, registered to stay) is a
// violation too (DESIGN §13: the daemon re-checks every transfer).
// So is one whose envelope passes the walk at receipt but not the reads that follow (lists of
// zero-sized elements claiming hundreds of millions of them, a pointer of the wrong kind): the
// daemon must not die of it.
// The misbehaviour itself lives in tests/support/hostile_client.cpp.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <filesystem>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "process.h"

namespace swipc::testing {
namespace {

using nlohmann::json;

constexpr const char* SW_VERSION = "hostile-test-sw-1";

/// What one hostile_client run printed, and how it ended.
struct HostileRun {
  std::vector<std::string> lines;
  std::optional<int> exitCode;
  std::string stderrText;

  /// The client id from the `attached <id>` line, or "".
  std::string attachedId() const {
    for (const auto& l : lines)
      if (l.rfind("attached ", 0) == 0) return l.substr(9);
    return {};
  }
  std::string lastLine() const { return lines.empty() ? std::string() : lines.back(); }
  std::string describe() const {
    std::string s = "hostile_client exit=" + (exitCode ? std::to_string(*exitCode) : std::string("none")) + "\n";
    for (const auto& l : lines) s += "  | " + l + "\n";
    return s + "stderr: " + stderrText;
  }
};

class HostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    startDaemon();
    ASSERT_TRUE(daemon_->waitReady()) << daemon_->log();
    good_.emplace(dir_.path(), SCOPE);
    ASSERT_FALSE(good_->clientId().empty()) << "the well-behaved client did not attach";
    expectGoodClientServed();
  }

  /// Starts sw_daemon; with `daemonFdLimit` set, under that soft RLIMIT_NOFILE (inherited
  /// through fork/exec; ours is put back at once).
  void startDaemon() {
    rlimit saved{};
    ::getrlimit(RLIMIT_NOFILE, &saved);
    if (daemonFdLimit_) {
      rlimit lowered = saved;
      lowered.rlim_cur = *daemonFdLimit_;
      ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);
    }
    daemon_.emplace(dir_.path(), SCOPE, std::vector<std::string>{"--sw-version", SW_VERSION});
    if (daemonFdLimit_) ::setrlimit(RLIMIT_NOFILE, &saved);
  }

  /// The well-behaved client's messageSW(GET_VERSION) resolves with the daemon's version.
  void expectGoodClientServed() {
    const int id = ++nextOpId_;
    good_->send({{"op", "messageSW"},
                 {"id", id},
                 {"data", json::object({{"type", "GET_VERSION"}})},
                 {"timeoutMs", 5000}});
    auto r = good_->waitResult(id, 10s);
    ASSERT_TRUE(r.has_value()) << "no answer to messageSW; daemon log:\n" << daemon_->log();
    EXPECT_EQ(r->value("event", ""), "ok") << r->dump();
    EXPECT_EQ(r->value("data", json()), json(SW_VERSION)) << r->dump();
  }

  ChildProcess startHostile(const std::string& mode, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{hostileClientPath(), "--runtime-dir", dir_.path(), "--scope", SCOPE, "--mode", mode};
    argv.insert(argv.end(), extra.begin(), extra.end());
    ChildProcess::Options o;
    o.pipeStdout = true;
    return ChildProcess(argv, o);
  }

  /// Reads the rest of a hostile_client's output and waits for it to exit.
  static HostileRun finish(ChildProcess& p, HostileRun run = {}, std::chrono::milliseconds timeout = 15s) {
    const auto deadline = TestClock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - TestClock::now());
      if (left.count() <= 0) break;
      auto line = p.readLine(left);
      if (!line) break;  // EOF (or the deadline)
      run.lines.push_back(*line);
    }
    run.exitCode = p.waitExitCode(5s);
    run.stderrText = p.stderrText();
    return run;
  }

  HostileRun runHostile(const std::string& mode, std::vector<std::string> extra = {}) {
    auto p = startHostile(mode, std::move(extra));
    return finish(p);
  }

  /// The daemon's log mentions `needle` (it writes asynchronously to our stderr file).
  bool logEventuallyContains(const std::string& needle) {
    return eventually([&] { return daemon_->log().find(needle) != std::string::npos; }, 5s);
  }

  static constexpr const char* SCOPE = "hostile";
  TempDir dir_;  // first: destroyed after the processes that use it
  std::optional<Daemon> daemon_;
  std::optional<ScriptClient> good_;
  std::optional<rlim_t> daemonFdLimit_;
  int nextOpId_ = 0;
};

// ------------------------------------------------------------------------------------------------
// Attached clients that break the data-plane protocol: each one is a violation.

struct ViolationCase {
  const char* testName;
  const char* mode;
  const char* reason = nullptr;  // when set, the daemon's log names it (the check that must catch it)
};

void PrintTo(const ViolationCase& c, std::ostream* os) { *os << c.mode; }

class HostileViolationTest : public HostileTest, public ::testing::WithParamInterface<ViolationCase> {};

TEST_P(HostileViolationTest, DisconnectsOnlyTheOffender) {
  auto run = runHostile(GetParam().mode);
  ASSERT_EQ(run.exitCode, 0) << run.describe();
  const std::string id = run.attachedId();
  ASSERT_FALSE(id.empty()) << run.describe();

  EXPECT_EQ(run.lastLine(), "disconnected ProtocolViolation") << run.describe() << "\ndaemon log:\n" << daemon_->log();
  EXPECT_TRUE(logEventuallyContains("protocol violation by client=" + id)) << daemon_->log();
  if (GetParam().reason) EXPECT_TRUE(logEventuallyContains(GetParam().reason)) << daemon_->log();
  EXPECT_TRUE(logEventuallyContains("detached client=" + id)) << daemon_->log();
  EXPECT_TRUE(daemon_->process().running()) << "the daemon died:\n" << daemon_->log();
  expectGoodClientServed();
}

INSTANTIATE_TEST_SUITE_P(
    Modes, HostileViolationTest,
    ::testing::Values(ViolationCase{"ScribbledUpRing", "scribble-random"},
                      ViolationCase{"TailPastCapacity", "tail-past"},
                      ViolationCase{"UnalignedTail", "tail-unaligned"},
                      ViolationCase{"RecordLongerThanQuarterRing", "bad-length"},
                      ViolationCase{"EmptyEnvelopeRecord", "empty-envelope"},
                      ViolationCase{"RecordCrossingRingEnd", "crossing-end"},
                      ViolationCase{"PadWithWrongLength", "bad-pad"},
                      ViolationCase{"UnknownRecordType", "bad-type"},
                      ViolationCase{"TornRecordPayload", "torn-record"},
                      ViolationCase{"WrongSchemaVersion", "bad-schema-version"},
                      ViolationCase{"ValueNestedTenThousandDeep", "huge-nesting"},
                      // Plain envelopes are checked as they are decoded, not walked at receipt.
                      ViolationCase{"ValueTextPastTheSegment", "malformed-value"},
                      ViolationCase{"ValueTextPastTheSegmentWithAPort", "malformed-value-with-port"},
                      ViolationCase{"ClientPostFromClient", "wrong-kind"},
                      ViolationCase{"ReplyFromClient", "wrong-kind-reply"},
                      ViolationCase{"UnsealedOutOfLineMemfd", "ool-unsealed"},
                      ViolationCase{"OutOfLineRecordWithoutFd", "ool-missing-fd"},
                      ViolationCase{"TooManyPendingOutOfLineFds", "ool-fd-hoard"},
                      // MessagePort ownership (DESIGN §13: the daemon re-checks every transfer).
                      ViolationCase{"TransferOfPortNeverOwned", "port-foreign-descriptor"},
                      ViolationCase{"PortPostFromPortTheServiceWorkerHolds", "port-post-not-owned"},
                      ViolationCase{"RegisterPairWithItselfAsPeer", "port-register-self-peer"},
                      ViolationCase{"RegisterAlreadyRegisteredPort", "port-register-existing-port"},
                      ViolationCase{"RegisterPairWithAlreadyRegisteredPeer", "port-register-existing-peer"},
                      ViolationCase{"PortPostTransferringThePostingPort", "port-post-transfers-itself"},
                      ViolationCase{"SamePortTwiceInOneTransferList", "port-transfer-twice"},
                      // Still registered and owned here, so only the silentPeer check objects.
                      ViolationCase{"ShipsTheReplyPortRegisteredToStay", "port-ship-silent",
                                    "registered to stay (silentPeer)"},
                      // A fast-lane post's port, ignored by the service worker, is dropped after
                      // the post: its close goes to the client's (full, head made impossible)
                      // down ring, breaks there and detaches the client in the drain loop.
                      ViolationCase{"DroppedPortsCloseWritesToACorruptDownRing", "port-drop-corrupt-down",
                                    "client corrupted its down ring"},
                      // Pointers the receipt walk (totalSize()) lets through but a reader access
                      // throws for: lists of zero-sized elements, whose "amplified read" capnp
                      // charges only when they are read, and pointers of the wrong kind. Whether
                      // the receipt checks or the handler's read catch them, it is a malformed
                      // message from this client, and the daemon carries on.
                      ViolationCase{"PortPostWithAmplifiedVoidListOfPorts", "amplified-port-list", "malformed message"},
                      ViolationCase{"RegisteredPortWithAmplifiedQueue", "amplified-queued-list", "malformed message"},
                      // The first port's queue makes the envelope not plain: only the walk sees
                      // it at receipt, and the port checks read the amplified queue.
                      ViolationCase{"RegisteredPortWithAmplifiedQueueAfterAQueuedOne",
                                    "amplified-queued-list-after-queue", "malformed message"},
                      ViolationCase{"BcJoinNameIsAStructPointer", "bc-join-name-is-struct", "malformed message"}),
    [](const ::testing::TestParamInfo<ViolationCase>& info) { return std::string(info.param.testName); });

// A post on a channel the offender joined properly, whose list Value claims 2^28 zero-sized
// elements: the daemon copies a client's broadcast payload into the channel ring (no Value
// decoder runs first: the reference service worker has no object on this channel), and that copy
// is the read that throws. The offender goes, the channel goes on: a member posting after it is
// heard, and nothing of the offender's reaches the members.
TEST_F(HostileTest, AmplifiedBroadcastValueDisconnectsOnlyTheOffender) {
  const std::string channel = "hostile-amplified";  // the channel hostile_client's mode joins
  int id = ++nextOpId_;
  good_->send({{"op", "bc.open"}, {"id", id}, {"bc", "a"}, {"name", channel}});
  auto r = good_->waitResult(id, 10s);
  ASSERT_TRUE(r && (*r)["event"] == "ok") << (r ? r->dump() : "timeout") << "\n" << daemon_->log();
  id = ++nextOpId_;
  good_->send({{"op", "bc.open"}, {"id", id}, {"bc", "b"}, {"name", channel}});
  r = good_->waitResult(id, 10s);
  ASSERT_TRUE(r && (*r)["event"] == "ok") << (r ? r->dump() : "timeout") << "\n" << daemon_->log();

  auto run = runHostile("amplified-bc-value");
  ASSERT_EQ(run.exitCode, 0) << run.describe();
  const std::string hostileId = run.attachedId();
  ASSERT_FALSE(hostileId.empty()) << run.describe();
  EXPECT_EQ(run.lines, (std::vector<std::string>{"attached " + hostileId, "bc-joined", "disconnected ProtocolViolation"}))
      << run.describe() << "\ndaemon log:\n" << daemon_->log();
  EXPECT_TRUE(logEventuallyContains("protocol violation by client=" + hostileId)) << daemon_->log();
  // Caught where it enters (the relay check of every BroadcastChannel post reads the value).
  EXPECT_TRUE(logEventuallyContains("malformed value")) << daemon_->log();
  EXPECT_TRUE(logEventuallyContains("detached client=" + hostileId)) << daemon_->log();
  EXPECT_TRUE(daemon_->process().running()) << "the daemon died:\n" << daemon_->log();
  expectGoodClientServed();

  id = ++nextOpId_;
  good_->send({{"op", "bc.post"}, {"id", id}, {"bc", "a"}, {"data", "after the offender"}});
  r = good_->waitResult(id, 10s);
  ASSERT_TRUE(r.has_value()) << daemon_->log();
  EXPECT_EQ(r->value("event", ""), "ok") << r->dump();
  auto m = good_->waitFor([](const json& j) { return j.value("event", "") == "bc.message" && j.value("bc", "") == "b"; },
                          10s);
  ASSERT_TRUE(m.has_value()) << "the channel went quiet after the offender; daemon log:\n" << daemon_->log();
  EXPECT_EQ((*m)["data"], json("after the offender")) << m->dump();
}

// ------------------------------------------------------------------------------------------------
// The handshake.

TEST_F(HostileTest, ProtocolVersionMismatchIsRefused) {
  auto run = runHostile("version-mismatch");
  ASSERT_EQ(run.exitCode, 0) << run.describe();
  EXPECT_EQ(run.lines, (std::vector<std::string>{"refused VersionMismatch", "disconnected hangup"}))
      << run.describe();
  EXPECT_TRUE(logEventuallyContains("attach refused")) << daemon_->log();
  EXPECT_TRUE(daemon_->process().running()) << daemon_->log();
  expectGoodClientServed();
}

TEST_F(HostileTest, GarbageHelloIsRefusedAsViolation) {
  auto run = runHostile("garbage-hello");
  ASSERT_EQ(run.exitCode, 0) << run.describe();
  EXPECT_EQ(run.lines, (std::vector<std::string>{"disconnected ProtocolViolation"})) << run.describe();
  EXPECT_TRUE(logEventuallyContains("attach refused")) << daemon_->log();
  EXPECT_TRUE(daemon_->process().running()) << daemon_->log();
  expectGoodClientServed();
}

TEST_F(HostileTest, SilentClientIsDroppedAfterAttachTimeout) {
  auto p = startHostile("no-hello");
  // While the silent connection is pending, everyone else is served.
  expectGoodClientServed();
  auto run = finish(p);
  ASSERT_EQ(run.exitCode, 0) << run.describe();
  EXPECT_EQ(run.lines, (std::vector<std::string>{"disconnected AttachTimeout"})) << run.describe();
  EXPECT_TRUE(logEventuallyContains("attach timeout")) << daemon_->log();
  EXPECT_TRUE(daemon_->process().running()) << daemon_->log();
  expectGoodClientServed();
}

// ------------------------------------------------------------------------------------------------
// Wake floods cost CPU, nothing else.

TEST_F(HostileTest, DoorbellFloodIsNotAViolation) {
  auto p = startHostile("flood-wakes", {"--linger-ms", "1000"});
  HostileRun run;
  for (auto line = p.readLine(10s); line; line = p.readLine(10s)) {
    run.lines.push_back(*line);
    if (line->rfind("flooding ", 0) == 0) break;
  }
  ASSERT_FALSE(run.attachedId().empty()) << run.describe();
  // The well-behaved client is served while (or right after) the flood goes on.
  expectGoodClientServed();
  run = finish(p, std::move(run), 60s);  // a million syscalls: slow on a loaded machine
  ASSERT_EQ(run.exitCode, 0) << run.describe();
  const std::vector<std::string> tail(run.lines.end() - std::min<size_t>(run.lines.size(), 3), run.lines.end());
  EXPECT_EQ(tail, (std::vector<std::string>{"flooded 1000000", std::string("reply ") + SW_VERSION, "still-connected"}))
      << run.describe() << "\ndaemon log:\n" << daemon_->log();
  EXPECT_EQ(daemon_->log().find("protocol violation"), std::string::npos) << daemon_->log();
  EXPECT_TRUE(daemon_->process().running()) << daemon_->log();
  expectGoodClientServed();
}

// ------------------------------------------------------------------------------------------------
// The raw port protocol the violation cases bend, spoken honestly, is served (so that each
// violation case shows the lie, not a mistake in the hostile client's framing).

TEST_F(HostileTest, HonestRawPortTrafficIsServed) {
  auto run = runHostile("port-honest", {"--linger-ms", "300"});
  ASSERT_EQ(run.exitCode, 0) << run.describe();
  ASSERT_FALSE(run.attachedId().empty()) << run.describe();
  const std::vector<std::string> tail(run.lines.begin() + 1, run.lines.end());
  EXPECT_EQ(tail, (std::vector<std::string>{"port-ready", std::string("reply ") + SW_VERSION, "still-connected"}))
      << run.describe() << "\ndaemon log:\n" << daemon_->log();
  EXPECT_EQ(daemon_->log().find("protocol violation"), std::string::npos) << daemon_->log();
  expectGoodClientServed();
}

TEST_F(HostileTest, PortPostFromUnknownPortIsDroppedNotAViolation) {
  auto run = runHostile("port-post-unknown", {"--linger-ms", "300"});
  ASSERT_EQ(run.exitCode, 0) << run.describe();
  const std::vector<std::string> tail(run.lines.begin() + 1, run.lines.end());
  EXPECT_EQ(tail, (std::vector<std::string>{std::string("reply ") + SW_VERSION, "still-connected"}))
      << run.describe() << "\ndaemon log:\n" << daemon_->log();
  EXPECT_EQ(daemon_->log().find("protocol violation"), std::string::npos) << daemon_->log();
  expectGoodClientServed();
}

// ------------------------------------------------------------------------------------------------
// Out-of-line fds a client sends ahead of their records are held by the daemon. Below the
// per-client cap that is legal, but the fds must not be able to exhaust the daemon's fd table
// (on many systems the default soft RLIMIT_NOFILE, 1024, is below that per-client cap).

class HostileFdLimitTest : public HostileTest {
 protected:
  static constexpr rlim_t DAEMON_FD_LIMIT = 256;
  void SetUp() override {
    daemonFdLimit_ = DAEMON_FD_LIMIT;
    HostileTest::SetUp();
  }

  /// Free fd slots the daemon has under its limit (inherited fds above the limit take none).
  int daemonFreeFds() const {
    int used = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(daemon_->pid()) + "/fd"))
      if (std::stol(e.path().filename().string()) < static_cast<long>(DAEMON_FD_LIMIT)) ++used;
    return static_cast<int>(DAEMON_FD_LIMIT) - used;
  }

  /// A hostile client that attaches (socket + doorbell: two of the daemon's fds) and then leaves
  /// the daemon `leaveFree` free fds by sending out-of-line notices it never follows up.
  ChildProcess startHoarder(int leaveFree, HostileRun& run) {
    const int hoard = daemonFreeFds() - 2 - leaveFree;
    EXPECT_GT(hoard, 0);
    auto p = startHostile("ool-fd-hoard", {"--fds", std::to_string(hoard), "--linger-ms", "10000"});
    for (auto line = p.readLine(10s); line; line = p.readLine(10s)) {
      run.lines.push_back(*line);
      if (line->rfind("sent-fds ", 0) == 0 || line->rfind("disconnected ", 0) == 0) break;
    }
    EXPECT_EQ(run.lastLine(), "sent-fds " + std::to_string(hoard)) << run.describe();
    return p;
  }
};

// The daemon holds at most core::OOL_RECEIVER_LIMIT (64) unclaimed out-of-line fds per client
// and raises its soft fd limit to the hard limit, so one client cannot exhaust its fd table.

TEST_F(HostileFdLimitTest, HoarderPastThePerClientCapIsDisconnected) {
  auto p = startHostile("ool-fd-hoard", {"--fds", "100", "--linger-ms", "5000"});
  HostileRun run;
  for (auto line = p.readLine(10s); line; line = p.readLine(10s)) {
    run.lines.push_back(*line);
    if (line->rfind("disconnected ", 0) == 0 || line == std::string("still-connected")) break;
  }
  EXPECT_EQ(run.lastLine(), "disconnected ProtocolViolation") << run.describe() << "\n" << daemon_->log();
  ScriptClient late(dir_.path(), SCOPE);
  EXPECT_FALSE(late.clientId().empty()) << daemon_->log();
  EXPECT_TRUE(daemon_->process().running()) << daemon_->log();
  expectGoodClientServed();
}

TEST_F(HostileFdLimitTest, OutOfLineSenderIsServedWhileAnotherHoardsBelowTheCap) {
  auto hoarder = startHostile("ool-fd-hoard", {"--fds", "60", "--linger-ms", "10000"});
  for (auto line = hoarder.readLine(10s); line; line = hoarder.readLine(10s))
    if (line->rfind("sent-fds ", 0) == 0 || line->rfind("disconnected ", 0) == 0) break;
  // 40,000 bytes: over a ring record's limit, so the post travels out of line (one fd).
  const std::string big(40'000, 'x');
  good_->send({{"op", "messageSW"},
               {"id", "big"},
               {"data", json::object({{"type", "ECHO"}, {"s", big}})},
               {"timeoutMs", 5000}});
  auto r = good_->waitResult("big", 10s);
  ASSERT_TRUE(r.has_value()) << daemon_->log();
  EXPECT_EQ(r->value("event", ""), "ok") << r->dump().substr(0, 300) << "\ndaemon log:\n" << daemon_->log();
  EXPECT_EQ(daemon_->log().find("protocol violation by client=" + good_->clientId()), std::string::npos)
      << daemon_->log();
}

// ------------------------------------------------------------------------------------------------
// Violations are counted where tools can see them (STYLE "Counters where tools can see them").

TEST_F(HostileTest, CountersOnSigusr1IncludeProtocolViolations) {
  auto run = runHostile("torn-record");
  ASSERT_EQ(run.lastLine(), "disconnected ProtocolViolation") << run.describe();
  daemon_->process().signal(SIGUSR1);
  const std::regex counter("\"protocolViolations\":\\s*([0-9]+)");
  long violations = -1;
  EXPECT_TRUE(eventually(
      [&] {
        auto log = daemon_->log();
        auto at = log.find("counters");
        if (at == std::string::npos) return false;
        auto eol = log.find('\n', at);
        std::smatch m;
        std::string line = log.substr(at, eol == std::string::npos ? std::string::npos : eol - at);
        if (!std::regex_search(line, m, counter)) return false;
        violations = std::stol(m[1].str());
        return true;
      },
      5s))
      << daemon_->log();
  EXPECT_GE(violations, 1) << daemon_->log();
  EXPECT_TRUE(daemon_->process().running()) << daemon_->log();
}

}  // namespace
}  // namespace swipc::testing
