// page/daemon_spawn: which binary --spawn-daemon starts, and how it starts it (detached, own
// session, stdio on /dev/null, cwd "/", the page's scope and runtime dir). A stand-in "daemon"
// script records what it was given; the real sw_daemon is tests/multiproc/daemon_start_test.
#include "page/daemon_spawn.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace swipc::page {
namespace {

namespace fs = std::filesystem;

class DaemonSpawnTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "swipc-spawn-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string writeScript(const std::string& name, const std::string& body) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << body;
    ::chmod(path.c_str(), 0700);
    return path;
  }

  /// Waits (polling, with a deadline) for `path` to appear; its lines.
  std::vector<std::string> waitLines(const std::string& path) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!fs::exists(path) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::vector<std::string> lines;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  std::string dir_;
};

TEST_F(DaemonSpawnTest, ResolveTakesGivenExecutable) {
  auto sut = resolveDaemonPath("/bin/sh");
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  EXPECT_EQ(*sut, "/bin/sh");
}

TEST_F(DaemonSpawnTest, ResolveSearchesPathForBareName) {
  auto sut = resolveDaemonPath("sh");
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  EXPECT_EQ(sut->front(), '/');
  EXPECT_EQ(fs::path(*sut).filename(), "sh");
}

TEST_F(DaemonSpawnTest, ResolveRefusesMissingFileAsNoDaemon) {
  auto sut = resolveDaemonPath(dir_ + "/no-such-daemon");
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::NO_DAEMON);
  EXPECT_NE(sut.error().message.find("no-such-daemon"), std::string::npos);
}

TEST_F(DaemonSpawnTest, SpawnRunsDetachedWithScopeAndRuntimeDir) {
  const std::string record = dir_ + "/record";
  const std::string daemon = writeScript("fake_daemon", "#!/bin/sh\n"
                                                        "{ echo \"$*\"; readlink /proc/$$/fd/0; readlink /proc/$$/fd/2;\n"
                                                        "  cut -d' ' -f6 /proc/$$/stat; echo $$; pwd; } > " +
                                                            record + ".tmp && mv " + record + ".tmp " + record + "\n");
  core::ScopePaths paths{dir_ + "/rt", dir_ + "/rt/s1", dir_ + "/rt/s1/daemon.sock", dir_ + "/rt/s1/daemon.lock"};

  auto sut = spawnDaemon(daemon, "s1", paths);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();

  auto lines = waitLines(record);
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_EQ(lines[0], "--scope s1 --runtime-dir " + dir_ + "/rt --log-file " + dir_ + "/rt/s1/daemon.log");
  EXPECT_EQ(lines[1], "/dev/null");
  EXPECT_EQ(lines[2], "/dev/null");
  EXPECT_EQ(lines[3], lines[4]) << "the daemon leads its own session";
  EXPECT_NE(std::stoi(lines[3]), static_cast<int>(::getsid(0)));
  EXPECT_EQ(lines[5], "/");
}

TEST_F(DaemonSpawnTest, SpawnReportsExecFailureAsNoDaemon) {
  // Executable, but its interpreter does not exist: execve fails with ENOENT in the child.
  const std::string daemon = writeScript("broken_daemon", "#!/no/such/interpreter\n");
  core::ScopePaths paths{dir_, dir_ + "/s", dir_ + "/s/daemon.sock", dir_ + "/s/daemon.lock"};

  auto sut = spawnDaemon(daemon, "s", paths);

  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::NO_DAEMON);
  EXPECT_NE(sut.error().message.find("No such file"), std::string::npos) << sut.error().message;
}

}  // namespace
}  // namespace swipc::page
