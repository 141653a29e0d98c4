// daemon: WindowOpener with small shell commands in place of page_client. The command's argv has
// its placeholders replaced; a command that cannot start, a page that exits first and a page that
// never attaches (killed at the deadline) each finish the call once with nullopt; a page that
// attaches with its token finishes it with the client.
#include "daemon/window_opener.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "daemon_rig.h"

namespace swipc::daemon {
namespace {

using testing::DaemonRig;

class WindowOpenerTest : public ::testing::Test {
 protected:
  void make(std::vector<std::string> command, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    auto o = DaemonRig::small();
    o.scope = "opener";
    o.windowCommand = std::move(command);
    o.openWindowTimeout = timeout;
    rig = std::make_unique<DaemonRig>(o);
    sut = std::make_unique<WindowOpener>(*rig->loop, rig->counters, rig->opts);
    sut->setRuntimeDir("/run/test");
  }
  /// Opens `url`, recording every time the call finishes.
  void open(const std::string& url = "app://new/") {
    sut->open(url, [this](std::optional<ClientHandle> h) { results.push_back(std::move(h)); });
  }
  std::string tokenFile() const { return "/tmp/swipc-opener-" + std::to_string(::getpid()) + "-" + testName(); }
  static std::string testName() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }
  void TearDown() override { ::unlink(tokenFile().c_str()); }

  std::unique_ptr<DaemonRig> rig;
  std::unique_ptr<WindowOpener> sut;
  std::vector<std::optional<ClientHandle>> results;
};

TEST_F(WindowOpenerTest, ArgvHasUrlScopeAndRuntimeDirReplaced) {
  make({"page", "--url={url}", "{scope}@{runtime-dir}"});
  EXPECT_EQ(sut->windowArgv("app://x/"), (std::vector<std::string>{"page", "--url=app://x/", "opener@/run/test"}));
}

TEST_F(WindowOpenerTest, CommandThatCannotStartFailsAtOnce) {
  make({"/nonexistent/swipc-page"});
  open();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_FALSE(results[0].has_value());
  EXPECT_EQ(rig->counters.openWindowFailures, 1u);
}

TEST_F(WindowOpenerTest, PageThatExitsBeforeAttachingFailsOnce) {
  make({"/bin/sh", "-c", "exit 3"});
  open();
  ASSERT_TRUE(rig->runUntil([&] { return !results.empty(); }));
  EXPECT_FALSE(results[0].has_value());
  rig->settle();
  EXPECT_EQ(results.size(), 1u);
  EXPECT_EQ(rig->counters.openWindowFailures, 1u);
}

TEST_F(WindowOpenerTest, PageThatDoesNotAttachInTimeIsKilledAndFails) {
  make({"/bin/sleep", "30"}, std::chrono::milliseconds(100));
  const auto t0 = Clock::now();
  open();
  ASSERT_TRUE(rig->runUntil([&] { return !results.empty(); }));
  EXPECT_FALSE(results[0].has_value());
  EXPECT_GE(Clock::now() - t0, std::chrono::milliseconds(100));
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10));  // killed, not waited for
  EXPECT_EQ(results.size(), 1u);
}

TEST_F(WindowOpenerTest, PageAttachingWithItsTokenFinishesTheCallWithTheClient) {
  // The page writes its token where the test reads it, and lives until the test removes the file.
  const std::string f = tokenFile();
  make({"/bin/sh", "-c", "printf %s \"$SWIPC_OPEN_TOKEN\" > " + f + "; while [ -e " + f + " ]; do sleep 0.05; done"});
  open();
  std::string token;
  ASSERT_TRUE(rig->runUntil([&] {
    std::ifstream f(tokenFile());
    std::getline(f, token);
    return token.size() == 32;
  }));
  EXPECT_TRUE(sut->expects(token));
  EXPECT_FALSE(sut->expects("someone-else"));
  EXPECT_FALSE(sut->expects(""));
  sut->finish(token, ClientHandle{}, "attached");
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].has_value());
  EXPECT_EQ(rig->counters.windowsOpened, 1u);
  EXPECT_FALSE(sut->expects(token));  // once
  sut->finish(token, std::nullopt, "late");
  EXPECT_EQ(results.size(), 1u);
}

}  // namespace
}  // namespace swipc::daemon
