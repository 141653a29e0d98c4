// The testing kit (swipc/testing.h) on real sw_daemon and page_client processes: a Scope starts
// and drives them, kills and stops them, restarts the daemon on the same state dir, and leaves
// no process, directory or /dev/shm entry behind: also when the test using it fails.
#include <swipc/testing.h>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

namespace swipc::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

/// Processes whose command line names `dir` (or a path below it).
std::vector<pid_t> processesNaming(const std::string& dir) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (cmdline.find(dir + "/") != std::string::npos) out.push_back(std::stoi(name));
  }
  return out;
}

/// Gone: no such process (reaped), or a zombie holding nothing.
bool gone(pid_t pid) {
  const char s = processState(pid);
  return s == 0 || s == 'Z';
}

std::set<std::string> swipcShmEntries() {
  std::set<std::string> out;
  for (auto& e : devShmEntries())
    if (e.find("swipc") != std::string::npos) out.insert(e);
  return out;
}

/// messageSW {"type": type} from `page`; the reply's data (null when none came).
json ask(ScriptClient& page, const std::string& type) {
  auto r = page.call({{"op", "messageSW"}, {"data", {{"type", type}}}, {"timeoutMs", 5000}});
  if (!r || r->value("event", "") != "ok") return nullptr;
  return r->value("data", json());
}

std::vector<std::string> clientIds(ScriptClient& page) {
  std::vector<std::string> ids;
  const json reply = ask(page, "MATCH_ALL");
  if (reply.is_object() && reply.contains("clients"))
    for (const auto& c : reply["clients"]) ids.push_back(c.value("id", ""));
  return ids;
}

bool contains(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

TEST(TestingKitTest, BinariesDefaultToTheBuiltOnesAndTheEnvironmentOverridesThem) {
  ASSERT_EQ(::access(swDaemonPath().c_str(), X_OK), 0) << swDaemonPath();
  ASSERT_EQ(::access(pageClientPath().c_str(), X_OK), 0) << pageClientPath();
  ::setenv("SWIPC_SW_DAEMON", "/elsewhere/sw_daemon", 1);
  ::setenv("SWIPC_PAGE_CLIENT", "/elsewhere/page_client", 1);
  EXPECT_EQ(swDaemonPath(), "/elsewhere/sw_daemon");
  EXPECT_EQ(pageClientPath(), "/elsewhere/page_client");
  ::unsetenv("SWIPC_SW_DAEMON");
  ::unsetenv("SWIPC_PAGE_CLIENT");
  EXPECT_NE(swDaemonPath(), "/elsewhere/sw_daemon");
}

TEST(TestingKitTest, ScopeStartsADaemonWithTheChosenFlagsThatPagesAttachTo) {
  Scope sut({.daemonArgs = {"--sw-version", "kit-1"}});
  EXPECT_EQ(sut.name(), testScope());
  EXPECT_EQ(sut.name().rfind("ScopeStartsADaemon", 0), 0u) << sut.name();
  EXPECT_TRUE(fs::is_socket(sut.runtimeDir() + "/" + sut.name() + "/daemon.sock"));
  EXPECT_EQ(sut.runtimeDir().rfind(sut.root() + "/", 0), 0u);
  EXPECT_EQ(sut.stateDir().rfind(sut.root() + "/", 0), 0u);
  auto& page = sut.page();
  EXPECT_FALSE(page.clientId().empty());
  EXPECT_EQ(ask(page, "GET_VERSION"), json("kit-1"));
}

TEST(TestingKitTest, ProcessesStartedInAScopeFindItsDaemonThroughTheirEnvironment) {
  Scope sut;
  auto& env = sut.spawn({"/usr/bin/env"}, {.pipeStdout = true});
  std::vector<std::string> lines;
  while (auto l = env.readLine(5s)) lines.push_back(*l);
  EXPECT_TRUE(contains(lines, "SWIPC_RUNTIME_DIR=" + sut.runtimeDir()));
  EXPECT_TRUE(contains(lines, "XDG_STATE_HOME=" + sut.root() + "/state"));
  // A program of the user's gets no --runtime-dir: page_client finds the runtime dir in its
  // environment.
  auto& own = sut.scriptPage({pageClientPath(), "--scope", sut.name(), "script"});
  EXPECT_FALSE(own.clientId().empty()) << own.process().stderrText();
}

TEST(TestingKitTest, DestroyingAScopeKillsEveryProcessAndRemovesEveryFile) {
  const auto shmBefore = swipcShmEntries();
  std::vector<pid_t> pids;
  std::string root;
  {
    Scope sut;
    root = sut.root();
    auto& a = sut.page();
    auto& b = sut.page();
    ASSERT_TRUE(b.stop());  // a stopped process is killed too
    auto& other = sut.spawn({"/bin/cat"}, {.pipeStdin = true});
    pids = {sut.daemon().pid(), a.pid(), b.pid(), other.pid()};
    for (pid_t p : pids) ASSERT_FALSE(gone(p)) << p;
  }
  for (pid_t p : pids) EXPECT_EQ(processState(p), 0) << "pid " << p << " is left (or not reaped)";
  EXPECT_FALSE(fs::exists(root)) << root;
  EXPECT_TRUE(processesNaming(root).empty());
  EXPECT_EQ(swipcShmEntries(), shmBefore);
}

TEST(TestingKitTest, DestroyingAScopeKillsADaemonAPageSpawnedInItsOwnSession) {
  std::vector<pid_t> strays;
  {
    Scope sut({.startDaemon = false});
    auto& page = sut.page({"--spawn-daemon", "--daemon-path", swDaemonPath()});
    EXPECT_EQ(ask(page, "GET_VERSION").is_string(), true);
    strays = processesNaming(sut.root());
    std::erase(strays, page.pid());
    ASSERT_EQ(strays.size(), 1u) << "the daemon the page started";
  }
  EXPECT_TRUE(gone(strays[0])) << "the spawned daemon " << strays[0] << " outlived the Scope";
}

TEST(TestingKitTest, RestartingTheDaemonKeepsTheScopeAndTheStateDir) {
  Scope sut({.daemonArgs = {"--sw-version", "kit-2"}});
  const std::string marker = sut.stateDir() + "/marker";
  std::ofstream(marker) << "kept";
  auto& page = sut.page();
  const pid_t first = sut.daemon().pid();

  auto& second = sut.restartDaemon();
  EXPECT_NE(second.pid(), first);
  EXPECT_EQ(processState(first), 0);
  EXPECT_TRUE(fs::exists(marker));
  std::ifstream f("/proc/" + std::to_string(second.pid()) + "/cmdline", std::ios::binary);
  std::string cmdline((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(cmdline.find(std::string("--state-dir") + '\0' + sut.stateDir() + '\0'), std::string::npos);
  EXPECT_NE(cmdline.find(std::string("--sw-version") + '\0' + "kit-2" + '\0'), std::string::npos);

  // The page re-attaches to the new daemon, which answers.
  auto back = page.waitFor(
      [](const json& e) { return e.value("event", "") == "controllerchange" && e.value("controlled", false); }, 10s);
  ASSERT_TRUE(back) << second.log();
  EXPECT_EQ(ask(page, "GET_VERSION"), json("kit-2"));

  auto& third = sut.restartDaemon(/*kill9=*/true);
  EXPECT_NE(third.pid(), second.pid());
  EXPECT_TRUE(fs::exists(marker));
}

TEST(TestingKitTest, AKillNineOfAPageIsObservedByTheDaemon) {
  Scope sut;
  auto& a = sut.page();
  auto& b = sut.page();
  const std::string bId = b.clientId();
  ASSERT_TRUE(contains(clientIds(a), bId));
  ASSERT_TRUE(b.kill9());
  EXPECT_EQ(b.process().waitExitCode(0ms), -SIGKILL);
  EXPECT_TRUE(eventually([&] { return !contains(clientIds(a), bId); }, 5s)) << "matchAll still lists " << bId;
}

TEST(TestingKitTest, AStoppedPageDoesNotStallTheOthersAndResumes) {
  Scope sut;
  auto& a = sut.page();
  auto& b = sut.page();
  ASSERT_TRUE(b.stop());
  EXPECT_EQ(processState(b.pid()), 'T');
  EXPECT_TRUE(ask(a, "GET_VERSION").is_string());
  ASSERT_TRUE(b.resume());
  EXPECT_NE(processState(b.pid()), 'T');
  EXPECT_TRUE(ask(b, "GET_VERSION").is_string());
}

TEST(TestingKitTest, ADaemonThatNeverGetsReadyThrowsWithItsLogAndLeavesNothing) {
  TempDir tmp;
  const char* old = std::getenv("TMPDIR");
  const std::string saved = old ? old : "";
  ::setenv("TMPDIR", tmp.path().c_str(), 1);
  std::string what;
  try {
    Scope sut({.daemonArgs = {"--no-such-flag"}, .readyTimeout = 3000ms});
  } catch (const std::runtime_error& e) {
    what = e.what();
  }
  if (old)
    ::setenv("TMPDIR", saved.c_str(), 1);
  else
    ::unsetenv("TMPDIR");
  EXPECT_NE(what.find("not ready"), std::string::npos) << what;
  EXPECT_NE(what.find("no-such-flag"), std::string::npos) << "the daemon's log is in the message: " << what;
  EXPECT_TRUE(fs::is_empty(tmp.path()));
}

// ---- ScopeFixture, also when the test fails ------------------------------------------------------

// Run by FixtureCleansUpAfterAFailedAssertion in a child test run, in this order: the first fails
// with processes running, the second checks that nothing of it is left.
class KitChild : public ScopeFixture {
 protected:
  static std::string recordPath() { return std::getenv("SWIPC_KIT_RECORD"); }
};

TEST_F(KitChild, DISABLED_FailsWithProcessesRunning) {
  auto& a = page();
  auto& b = page();
  std::ofstream(recordPath()) << scope().root() << "\n" << daemon().pid() << " " << a.pid() << " " << b.pid() << "\n";
  FAIL() << "on purpose";
}

TEST_F(KitChild, DISABLED_SeesNothingLeftOfTheFailedTest) {
  std::ifstream in(recordPath());
  std::string root;
  std::getline(in, root);
  ASSERT_FALSE(root.empty());
  EXPECT_FALSE(fs::exists(root)) << root;
  int n = 0;
  for (pid_t p; in >> p; ++n) EXPECT_EQ(processState(p), 0) << "pid " << p << " left by the failed test";
  EXPECT_EQ(n, 3);
}

TEST(TestingKitTest, FixtureCleansUpAfterAFailedAssertion) {
  TempDir tmp;
  const std::string record = tmp.path() + "/record";
  ChildProcess run({"/proc/self/exe", "--gtest_filter=KitChild.*", "--gtest_also_run_disabled_tests"},
                   {.pipeStdout = true, .extraEnv = {"SWIPC_KIT_RECORD=" + record}});
  std::string out;
  while (auto l = run.readLine(60s)) out += *l + "\n";
  EXPECT_EQ(run.waitExitCode(10s), 1) << out;
  EXPECT_NE(out.find("[  FAILED  ] KitChild.DISABLED_FailsWithProcessesRunning"), std::string::npos) << out;
  EXPECT_NE(out.find("[       OK ] KitChild.DISABLED_SeesNothingLeftOfTheFailedTest"), std::string::npos) << out;
  std::ifstream in(record);
  std::string root;
  std::getline(in, root);
  ASSERT_FALSE(root.empty());
  EXPECT_FALSE(fs::exists(root));
}

}  // namespace
}  // namespace swipc::testing
