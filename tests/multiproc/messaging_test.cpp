// Black-box messaging tests: real sw_daemon and page_client processes (DESIGN §3, §6, §7).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <regex>
#include <sstream>

#include "process.h"
#include "test_scope.h"

namespace swipc::testing {
namespace {

using nlohmann::json;

/// What a finished one-shot page_client run left behind.
struct CommandResult {
  std::optional<int> exitCode;  // nullopt: still running at the deadline (then killed)
  std::vector<std::string> stdoutLines;
  std::string stderrText;
};

/// Runs argv to completion (or until the timeout), collecting stdout lines and stderr.
CommandResult runCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = 10s) {
  ChildProcess::Options opts;
  opts.pipeStdout = true;
  ChildProcess child(argv, opts);
  CommandResult r;
  auto deadline = TestClock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - TestClock::now());
    if (left <= 0ms) break;
    auto line = child.readLine(left);
    if (!line) break;  // EOF or deadline
    r.stdoutLines.push_back(*line);
  }
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - TestClock::now());
  r.exitCode = child.waitExitCode(std::max(left, 1ms));
  r.stderrText = child.stderrText();
  return r;
}

size_t countLines(const std::string& text) {
  size_t n = std::count(text.begin(), text.end(), '\n');
  if (!text.empty() && text.back() != '\n') ++n;
  return n;
}

class MessagingTest : public ::testing::Test {
 protected:
  std::vector<std::string> pageClient(std::vector<std::string> args) const {
    std::vector<std::string> argv{pageClientPath(), "--scope", scope, "--runtime-dir", dir.path()};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  std::unique_ptr<Daemon> startDaemon(std::vector<std::string> extraArgs = {}) {
    auto d = std::make_unique<Daemon>(dir.path(), scope, std::move(extraArgs));
    EXPECT_TRUE(d->waitReady()) << d->log();
    return d;
  }
  std::unique_ptr<ScriptClient> startScript(std::vector<std::string> extraArgs = {}) {
    auto c = std::make_unique<ScriptClient>(dir.path(), scope, std::move(extraArgs));
    EXPECT_EQ(c->clientId().size(), 32u) << c->process().stderrText();
    return c;
  }

  TempDir dir;
  std::string scope = testScope();
};

// ------------------------------------------------------------------------------------------------ message-sw

TEST_F(MessagingTest, MessageSwPrintsVersionAndExitsZero) {
  auto daemon = startDaemon({"--sw-version", "7.3.1-test"});
  auto r = runCommand(pageClient({"message-sw", R"({"type":"GET_VERSION"})"}));
  ASSERT_EQ(r.exitCode, 0) << r.stderrText;
  ASSERT_EQ(r.stdoutLines.size(), 1u);
  EXPECT_EQ(json::parse(r.stdoutLines[0]), json("7.3.1-test"));
}

TEST_F(MessagingTest, MessageSwEchoReturnsWholeDataWithBytesAndNumberKinds) {
  auto daemon = startDaemon();
  const std::string data =
      R"({"type":"ECHO","int":42,"neg":-9007199254740993,"float":1.5,"wholeFloat":2.0,"exp":1e3,)"
      R"("bytes":{"$bytes":"AAEC/w=="},"list":[1,"two",null,true,[]],"text":"h\u00e9llo \"q\"","map":{"k":{}}})";
  auto r = runCommand(pageClient({"message-sw", data}));
  ASSERT_EQ(r.exitCode, 0) << r.stderrText;
  ASSERT_EQ(r.stdoutLines.size(), 1u);
  auto got = json::parse(r.stdoutLines[0]);
  EXPECT_EQ(got, json::parse(data));
  EXPECT_TRUE(got["int"].is_number_integer());
  EXPECT_EQ(got["neg"].get<int64_t>(), -9007199254740993LL);
  EXPECT_TRUE(got["float"].is_number_float());
  EXPECT_TRUE(got["wholeFloat"].is_number_float()) << "2.0 must stay a float, got " << got["wholeFloat"].dump();
  EXPECT_TRUE(got["exp"].is_number_float());
  EXPECT_EQ(got["bytes"], json::parse(R"({"$bytes":"AAEC/w=="})"));
  EXPECT_EQ(got["text"], "h\u00e9llo \"q\"");
}

TEST_F(MessagingTest, MessageSwExitsThreeWithTimeoutErrorWhenSwIgnoresType) {
  auto daemon = startDaemon();
  auto start = TestClock::now();
  auto r = runCommand(pageClient({"--timeout-ms", "200", "message-sw", R"({"type":"NOBODY_HANDLES_THIS"})"}));
  auto elapsed = TestClock::now() - start;
  EXPECT_EQ(r.exitCode, 3) << r.stderrText;
  EXPECT_NE(r.stderrText.find("TimeoutError"), std::string::npos) << r.stderrText;
  EXPECT_TRUE(r.stdoutLines.empty());
  EXPECT_GE(elapsed, 200ms);
}

TEST_F(MessagingTest, MessageSwExitsTwoWithOneLineNoDaemonErrorWithoutDaemon) {
  auto r = runCommand(pageClient({"message-sw", R"({"type":"GET_VERSION"})"}));
  EXPECT_EQ(r.exitCode, 2) << r.stderrText;
  EXPECT_EQ(countLines(r.stderrText), 1u) << r.stderrText;
  EXPECT_NE(r.stderrText.find("NoDaemon"), std::string::npos) << r.stderrText;
  EXPECT_TRUE(r.stdoutLines.empty());
}

// ------------------------------------------------------------------------------------------------ script

TEST_F(MessagingTest, ScriptFirstLineIsAttachedWithClientIdAndControlled) {
  auto daemon = startDaemon();
  ScriptClient sut(dir.path(), scope);
  auto first = sut.waitFor([](const json&) { return true; }, 5s);
  ASSERT_TRUE(first) << sut.process().stderrText();
  EXPECT_EQ(first->value("event", ""), "attached");
  EXPECT_TRUE(std::regex_match(first->value("clientId", ""), std::regex("[0-9a-f]{32}"))) << first->dump();
  EXPECT_EQ((*first)["controlled"], true);
}

TEST_F(MessagingTest, ScriptUncontrolledClientGetsInvalidStateErrorOnPostAndMessageSw) {
  auto daemon = startDaemon();
  ScriptClient sut(dir.path(), scope, {"--uncontrolled"});
  auto first = sut.waitFor([](const json&) { return true; }, 5s);
  ASSERT_TRUE(first) << sut.process().stderrText();
  EXPECT_EQ(first->value("event", ""), "attached");
  EXPECT_EQ((*first)["controlled"], false);

  sut.send({{"op", "post"}, {"id", "p"}, {"data", {{"type", "ECHO"}}}});
  sut.send({{"op", "messageSW"}, {"id", "m"}, {"data", {{"type", "GET_VERSION"}}}});
  auto post = sut.waitResult("p");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->value("event", ""), "error");
  EXPECT_EQ(post->value("name", ""), "InvalidStateError");
  auto msg = sut.waitResult("m");
  ASSERT_TRUE(msg);
  EXPECT_EQ(msg->value("event", ""), "error");
  EXPECT_EQ(msg->value("name", ""), "InvalidStateError");
}

TEST_F(MessagingTest, ScriptMessageSwReportsOkWithReplyData) {
  auto daemon = startDaemon({"--sw-version", "script-9"});
  auto sut = startScript();
  sut->send({{"op", "messageSW"}, {"id", 1}, {"data", {{"type", "GET_VERSION"}}}});
  sut->send({{"op", "messageSW"}, {"id", "echo"}, {"data", {{"type", "ECHO"}, {"n", 5}, {"f", 0.25}}}});
  auto v = sut->waitResult(1);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->value("event", ""), "ok") << v->dump();
  EXPECT_EQ((*v)["data"], "script-9");
  auto e = sut->waitResult("echo");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->value("event", ""), "ok") << e->dump();
  EXPECT_EQ((*e)["data"], json({{"type", "ECHO"}, {"n", 5}, {"f", 0.25}}));
}

TEST_F(MessagingTest, ScriptMessageSwReportsTimeoutErrorWhenNoReplyComes) {
  auto daemon = startDaemon();
  auto sut = startScript();
  auto start = TestClock::now();
  sut->send({{"op", "messageSW"}, {"id", "t"}, {"data", {{"type", "UNANSWERED"}}}, {"timeoutMs", 150}});
  auto r = sut->waitResult("t");
  auto elapsed = TestClock::now() - start;
  ASSERT_TRUE(r);
  EXPECT_EQ(r->value("event", ""), "error");
  EXPECT_EQ(r->value("name", ""), "TimeoutError");
  EXPECT_GE(elapsed, 150ms);
}

TEST_F(MessagingTest, ScriptMalformedLineReportsTypeErrorAndClientKeepsWorking) {
  auto daemon = startDaemon({"--sw-version", "still-here"});
  auto sut = startScript();
  sut->process().writeLine("{this is not json");
  auto err = sut->waitEvent("error");
  ASSERT_TRUE(err);
  EXPECT_EQ(err->value("name", ""), "TypeError");
  EXPECT_FALSE(err->contains("id"));
  sut->process().writeLine("[1,2,3]");  // JSON, but not an op object
  auto err2 = sut->waitEvent("error");
  ASSERT_TRUE(err2);
  EXPECT_EQ(err2->value("name", ""), "TypeError");

  sut->send({{"op", "messageSW"}, {"id", "after"}, {"data", {{"type", "GET_VERSION"}}}});
  auto ok = sut->waitResult("after");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->value("event", ""), "ok");
  EXPECT_EQ((*ok)["data"], "still-here");
  EXPECT_TRUE(sut->process().running());
}

TEST_F(MessagingTest, ScriptHoldsSwMessagesUntilStartMessages) {
  auto daemon = startDaemon({"--sw-version", "held"});
  auto sut = startScript();
  json echoed = {{"type", "ECHO"}, {"payload", "first"}, {"n", 1}};
  // ECHO without a port answers event.source: a SW -> client message, committed to the client's
  // ring before the post's ack, so by the post's "ok" the client has it in hand.
  sut->send({{"op", "post"}, {"id", "p"}, {"data", echoed}});
  auto posted = sut->waitResult("p");
  ASSERT_TRUE(posted);
  ASSERT_EQ(posted->value("event", ""), "ok") << posted->dump();
  sut->send({{"op", "messageSW"}, {"id", "v"}, {"data", {{"type", "GET_VERSION"}}}});
  auto v = sut->waitResult("v");
  ASSERT_TRUE(v);
  ASSERT_EQ(v->value("event", ""), "ok");
  EXPECT_EQ((*v)["data"], "held");
  for (const auto& e : sut->seen()) EXPECT_NE(e.value("event", ""), "message") << "delivered before start: " << e.dump();

  sut->send({{"op", "startMessages"}, {"id", "s"}});
  auto msg = sut->waitEvent("message");
  ASSERT_TRUE(msg);
  EXPECT_EQ((*msg)["data"], echoed);
  EXPECT_EQ((*msg)["ports"], json::array());
}

TEST_F(MessagingTest, ScriptFlushesSeveralHeldMessagesInOrder) {
  auto daemon = startDaemon();
  auto sut = startScript();
  constexpr int COUNT = 8;
  for (int i = 0; i < COUNT; ++i) sut->send({{"op", "post"}, {"id", i}, {"data", {{"type", "ECHO"}, {"n", i}}}});
  for (int i = 0; i < COUNT; ++i) {
    auto r = sut->waitResult(i);
    ASSERT_TRUE(r) << "post " << i;
    ASSERT_EQ(r->value("event", ""), "ok") << r->dump();
  }
  for (const auto& e : sut->seen()) ASSERT_NE(e.value("event", ""), "message") << e.dump();
  sut->send({{"op", "startMessages"}});
  for (int i = 0; i < COUNT; ++i) {
    auto msg = sut->waitEvent("message");
    ASSERT_TRUE(msg) << "message " << i;
    EXPECT_EQ((*msg)["data"]["n"], i);
  }
}

TEST_F(MessagingTest, ScriptExitOpExitsWithGivenCode) {
  auto daemon = startDaemon();
  auto sut = startScript();
  sut->send({{"op", "exit"}, {"code", 7}});
  EXPECT_EQ(sut->process().waitExitCode(5s), 7);
}

TEST_F(MessagingTest, ScriptExitsZeroOnEndOfInput) {
  auto daemon = startDaemon();
  auto sut = startScript();
  sut->process().closeStdin();
  EXPECT_EQ(sut->process().waitExitCode(5s), 0);
  // A graceful exit is a detach the daemon sees as "closed", not a crash.
  const std::string detached = "detached client=" + sut->clientId();
  ASSERT_TRUE(eventually([&] { return daemon->log().find(detached) != std::string::npos; })) << daemon->log();
  auto log = daemon->log();
  auto pos = log.find(detached);
  EXPECT_NE(log.substr(pos, log.find('\n', pos) - pos).find(": closed"), std::string::npos) << log;
}

// ------------------------------------------------------------------------------------------------ daemon lifecycle

TEST_F(MessagingTest, SecondDaemonForSameScopeFailsWithAlreadyRunningWhileFirstKeepsServing) {
  auto first = startDaemon({"--sw-version", "first"});
  Daemon second(dir.path(), scope, {"--sw-version", "second"});
  auto code = second.process().waitExitCode(5s);
  ASSERT_TRUE(code.has_value()) << "second daemon still running: " << second.log();
  EXPECT_GT(*code, 0);
  EXPECT_NE(second.log().find("AlreadyRunning"), std::string::npos) << second.log();

  EXPECT_TRUE(first->process().running());
  auto r = runCommand(pageClient({"message-sw", R"({"type":"GET_VERSION"})"}));
  ASSERT_EQ(r.exitCode, 0) << r.stderrText;
  ASSERT_EQ(r.stdoutLines.size(), 1u);
  EXPECT_EQ(json::parse(r.stdoutLines[0]), "first");
}

TEST_F(MessagingTest, DaemonStartedAfterKillNineReplacesStaleSocket) {
  auto first = startDaemon({"--sw-version", "first"});
  first->process().signal(SIGKILL);
  ASSERT_EQ(first->process().waitExitCode(5s), -SIGKILL);
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() + "/" + scope + "/daemon.sock").c_str(), &st), 0) << "expected a stale socket";

  auto stale = runCommand(pageClient({"message-sw", R"({"type":"GET_VERSION"})"}));
  EXPECT_EQ(stale.exitCode, 2) << stale.stderrText;

  auto second = startDaemon({"--sw-version", "second"});
  EXPECT_TRUE(second->process().running()) << second->log();
  auto r = runCommand(pageClient({"message-sw", R"({"type":"GET_VERSION"})"}));
  ASSERT_EQ(r.exitCode, 0) << r.stderrText << second->log();
  ASSERT_EQ(r.stdoutLines.size(), 1u);
  EXPECT_EQ(json::parse(r.stdoutLines[0]), "second");
}

}  // namespace
}  // namespace swipc::testing
