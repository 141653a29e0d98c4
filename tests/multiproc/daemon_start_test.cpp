// Starting the daemon without starting it by hand (DESIGN §17), with real processes:
//  - on demand: `page_client --spawn-daemon` (and Client::connect with spawnDaemon) start
//    sw_daemon when none answers; it is detached (its own session, stdio on /dev/null, a log in
//    the scope's runtime dir) and outlives the page; pages that do it at once end with one
//    daemon, all attached to it;
//  - socket activation: sw_daemon run by systemd-socket-activate serves the socket it inherits
//    (LISTEN_FDS), narrows its mode, and refuses one bound anywhere but the scope's path.
// Spawned daemons are nobody's children here: each test finds them by its private runtime dir
// in /proc and kills them by pid at the end, also when it fails.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "process.h"
#include "swipc/client.h"
#include "test_scope.h"

namespace swipc::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* DEFAULT_SW_VERSION = "1.0.0";

/// Pids of the live sw_daemon processes serving `runtimeDir` (their argv says
/// `--runtime-dir <runtimeDir>`; a zombie's cmdline is empty, so the dead do not count).
std::vector<pid_t> daemonsServing(const std::string& runtimeDir) {
  std::vector<pid_t> found;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline", std::ios::binary);
    std::vector<std::string> argv;
    for (std::string arg; std::getline(in, arg, '\0');) argv.push_back(arg);
    if (argv.empty() || fs::path(argv[0]).filename() != "sw_daemon") continue;
    for (size_t i = 1; i + 1 < argv.size(); ++i)
      if (argv[i] == "--runtime-dir" && argv[i + 1] == runtimeDir) found.push_back(std::stoi(name));
  }
  return found;
}

/// Alive: not gone and not a zombie (an orphan's zombie waits for a reaper we do not control).
bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  char state = processState(pid);
  return state != 0 && state != 'Z' && state != 'X';
}

/// Kills (SIGKILL, by pid) every daemon that serves the runtime dir when the test ends, passed
/// or failed. Declared after the TempDir: it runs first.
class DaemonReaper {
 public:
  explicit DaemonReaper(std::string runtimeDir) : runtimeDir_(std::move(runtimeDir)) {}
  ~DaemonReaper() {
    auto pids = daemonsServing(runtimeDir_);
    for (pid_t pid : pids) ::kill(pid, SIGKILL);
    for (pid_t pid : pids) eventually([&] { return !alive(pid); }, 5000ms);
  }

 private:
  std::string runtimeDir_;
};

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t countOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

/// `page_client ... message-sw JSON` to completion: exit code and stdout's first line.
struct OneShot {
  std::optional<int> code;
  std::string out;
  std::string err;
};
OneShot messageSw(const std::string& runtimeDir, const std::string& scope, const std::string& data,
                  std::vector<std::string> extra = {}) {
  std::vector<std::string> argv{pageClientPath(), "--scope", scope, "--runtime-dir", runtimeDir};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back("message-sw");
  argv.push_back(data);
  ChildProcess::Options o;
  o.pipeStdout = true;
  ChildProcess p(argv, o);
  OneShot r;
  r.out = p.readLine(30000ms).value_or("");
  r.code = p.waitExitCode(30000ms);
  r.err = p.stderrText();
  return r;
}

std::vector<std::string> spawnArgs() { return {"--spawn-daemon", "--daemon-path", swDaemonPath()}; }

// ------------------------------------------------------------------------------------------------ on demand

TEST(SpawnDaemonTest, PageStartsDetachedDaemonThatOutlivesIt) {
  TempDir rt;
  DaemonReaper reaper(rt.path());
  const std::string scope = testScope();
  ASSERT_TRUE(daemonsServing(rt.path()).empty());
  pid_t daemon = -1;
  {
    ScriptClient page(rt.path(), scope, spawnArgs());
    auto attached = page.waitEvent("attached", 20000ms);
    ASSERT_TRUE(attached) << page.process().stderrText();
    EXPECT_EQ((*attached)["controlled"], true);
    page.send({{"op", "messageSW"}, {"id", 1}, {"data", {{"type", "GET_VERSION"}}}});
    auto reply = page.waitResult(1);
    ASSERT_TRUE(reply);
    EXPECT_EQ((*reply)["data"], DEFAULT_SW_VERSION);

    auto daemons = daemonsServing(rt.path());
    ASSERT_EQ(daemons.size(), 1u);
    daemon = daemons[0];
    EXPECT_EQ(::getsid(daemon), daemon) << "the daemon leads a session of its own";
    EXPECT_NE(::getsid(daemon), ::getsid(page.pid()));
    EXPECT_NE(::getsid(daemon), ::getsid(0));
    EXPECT_EQ(fs::read_symlink("/proc/" + std::to_string(daemon) + "/fd/0"), "/dev/null");
    EXPECT_EQ(fs::read_symlink("/proc/" + std::to_string(daemon) + "/fd/1"), "/dev/null");

    page.send({{"op", "exit"}});
    EXPECT_EQ(page.process().waitExitCode(10000ms), 0);
  }

  // The page is gone; the daemon lives on and serves a page that did not ask to start it.
  EXPECT_TRUE(alive(daemon));
  auto again = messageSw(rt.path(), scope, R"({"type":"GET_VERSION"})", {"--timeout-ms", "10000"});
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(again.out, std::string("\"") + DEFAULT_SW_VERSION + "\"");
  EXPECT_EQ(daemonsServing(rt.path()), std::vector<pid_t>{daemon});
  const std::string log = readFile(rt.path() + "/" + scope + "/daemon.log");
  EXPECT_NE(log.find("serving scope=" + scope), std::string::npos) << log;

  ASSERT_EQ(::kill(daemon, SIGTERM), 0);
  EXPECT_TRUE(eventually([&] { return !alive(daemon); }, 10000ms));
}

TEST(SpawnDaemonTest, ConcurrentSpawnsEndWithOneDaemonAllAttached) {
  TempDir rt;
  DaemonReaper reaper(rt.path());
  const std::string scope = testScope();
  constexpr int PAGES = 5;
  std::vector<std::unique_ptr<ScriptClient>> pages;
  for (int i = 0; i < PAGES; ++i)
    pages.push_back(std::make_unique<ScriptClient>(rt.path(), scope, spawnArgs()));
  std::vector<std::string> ids;
  for (auto& page : pages) {
    auto attached = page->waitEvent("attached", 20000ms);
    ASSERT_TRUE(attached) << page->process().stderrText();
    ids.push_back((*attached)["clientId"]);
  }

  // The losers exit as soon as the lock refuses them.
  EXPECT_TRUE(eventually([&] { return daemonsServing(rt.path()).size() == 1; }, 3000ms))
      << daemonsServing(rt.path()).size() << " daemons";
  // All five are clients of that one daemon.
  pages[0]->send({{"op", "messageSW"}, {"id", 1}, {"data", {{"type", "MATCH_ALL"}, {"options", {{"includeUncontrolled", true}}}}}});
  auto reply = pages[0]->waitResult(1);
  ASSERT_TRUE(reply);
  std::vector<std::string> seen;
  for (const auto& c : (*reply)["data"]["clients"]) seen.push_back(c["id"]);
  std::sort(seen.begin(), seen.end());
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(seen, ids);
  const std::string log = readFile(rt.path() + "/" + scope + "/daemon.log");
  EXPECT_EQ(countOf(log, "serving scope="), 1u) << log;

  for (auto& page : pages) page->send({{"op", "exit"}});
  for (auto& page : pages) EXPECT_EQ(page->process().waitExitCode(10000ms), 0);
  auto daemons = daemonsServing(rt.path());
  ASSERT_EQ(daemons.size(), 1u);
  ASSERT_EQ(::kill(daemons[0], SIGTERM), 0);
  EXPECT_TRUE(eventually([&] { return !alive(daemons[0]); }, 10000ms));
}

TEST(SpawnDaemonTest, MissingDaemonBinaryIsNoDaemon) {
  TempDir rt;
  auto r = messageSw(rt.path(), testScope(), R"({"type":"GET_VERSION"})",
                     {"--spawn-daemon", "--daemon-path", rt.path() + "/no-such-sw_daemon"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("no-such-sw_daemon"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
}

TEST(SpawnDaemonTest, LibraryClientStartsDaemon) {
  TempDir rt;
  DaemonReaper reaper(rt.path());
  const std::string scope = testScope();
  {
    auto client = Client::connect(
        {.scope = scope, .runtimeDir = rt.path(), .spawnDaemon = true, .daemonPath = swDaemonPath(), .spawnTimeout = 20000ms});
    ASSERT_TRUE(client.ok()) << client.error().describe();
    EXPECT_TRUE(client->controlled());
    EXPECT_EQ(client->swVersion(), DEFAULT_SW_VERSION);
    auto version = client->messageSW(Value::map({{"type", Value("GET_VERSION")}}), 10000ms);
    ASSERT_TRUE(version.ok()) << version.error().describe();
  }
  auto daemons = daemonsServing(rt.path());
  ASSERT_EQ(daemons.size(), 1u);
  EXPECT_EQ(::getsid(daemons[0]), daemons[0]);
  ASSERT_EQ(::kill(daemons[0], SIGTERM), 0);
  EXPECT_TRUE(eventually([&] { return !alive(daemons[0]); }, 10000ms));
}

// ------------------------------------------------------------------------------------------------ socket activation

/// systemd-socket-activate (Debian package systemd), or "" when not installed.
std::string socketActivatePath() {
  for (const char* p : {"/usr/bin/systemd-socket-activate", "/bin/systemd-socket-activate"})
    if (::access(p, X_OK) == 0) return p;
  return "";
}

#define SKIP_WITHOUT_SOCKET_ACTIVATE()                                                          \
  const std::string activate = socketActivatePath();                                           \
  if (activate.empty()) GTEST_SKIP() << "systemd-socket-activate is not installed (Debian: apt-get install systemd)"

/// sw_daemon under systemd-socket-activate listening at `socket`, started with umask 0 so the
/// socket file is born 0777 and only the daemon narrows it. systemd-socket-activate execs the
/// daemon in its own process at the first connection: the pid stays the same.
ChildProcess activated(const std::string& activate, const std::string& socket, const std::string& rt,
                       const std::string& scope, const std::vector<std::string>& extra = {}) {
  std::string cmd = "umask 000; exec " + activate + " --seqpacket -l " + socket + " " + swDaemonPath() + " --scope " +
                    scope + " --runtime-dir " + rt + " --log-level info";
  for (const auto& e : extra) cmd += " " + e;
  return ChildProcess({"/bin/sh", "-c", cmd}, {});
}

/// The activator listens. (Its socket file appears at bind(), before listen(): a connect in
/// between is refused, which once made a CI run fail.) It says "Listening on …" after listen().
bool listening(ChildProcess& activator) {
  return eventually([&] { return activator.stderrText().find("Listening on") != std::string::npos; }, 10000ms);
}

unsigned fileMode(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0;
}

void activationServes(const std::vector<std::string>& extra, unsigned wantDirMode, unsigned wantSocketMode) {
  SKIP_WITHOUT_SOCKET_ACTIVATE();
  TempDir rt;
  const std::string scope = testScope();
  const std::string dir = rt.path() + "/" + scope;
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);  // what the socket unit's DirectoryMode=0700 makes
  const std::string socket = dir + "/daemon.sock";
  ChildProcess sut = activated(activate, socket, rt.path(), scope, extra);
  ASSERT_TRUE(listening(sut)) << sut.stderrText();
  EXPECT_TRUE(daemonsServing(rt.path()).empty()) << "no daemon before the first connection";

  auto r = messageSw(rt.path(), scope, R"({"type":"GET_VERSION"})", {"--timeout-ms", "20000"});

  EXPECT_EQ(r.code, 0) << r.err << "\n" << sut.stderrText();
  EXPECT_EQ(r.out, std::string("\"") + DEFAULT_SW_VERSION + "\"");
  EXPECT_EQ(daemonsServing(rt.path()), std::vector<pid_t>{sut.pid()}) << "the daemon serves the activator's socket";
  EXPECT_EQ(fileMode(socket), wantSocketMode);
  EXPECT_EQ(fileMode(dir), wantDirMode);
  sut.signal(SIGTERM);
  EXPECT_EQ(sut.waitExitCode(10000ms), 0) << sut.stderrText();
  EXPECT_TRUE(fs::exists(socket)) << "the socket's name belongs to the socket unit: the daemon leaves it";
}

TEST(SocketActivationTest, DaemonServesInheritedSocketWithMode0600) { activationServes({}, 0700, 0600); }

TEST(SocketActivationTest, AllowGroupSetsInheritedSocketMode0660) {
  activationServes({"--allow-group"}, 0750, 0660);
}

TEST(SocketActivationTest, SocketBoundElsewhereIsRefused) {
  SKIP_WITHOUT_SOCKET_ACTIVATE();
  TempDir rt;
  const std::string scope = testScope();
  ASSERT_EQ(::mkdir((rt.path() + "/" + scope).c_str(), 0700), 0);
  const std::string elsewhere = rt.path() + "/elsewhere.sock";
  ChildProcess sut = activated(activate, elsewhere, rt.path(), scope);
  ASSERT_TRUE(listening(sut)) << sut.stderrText();

  // A connection makes the activator exec the daemon, which must not serve a socket no page of
  // the scope would find.
  int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, elsewhere.c_str(), sizeof a.sun_path - 1);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);

  EXPECT_EQ(sut.waitExitCode(20000ms), 1);
  ::close(fd);
  EXPECT_NE(sut.stderrText().find("InvalidAccessError"), std::string::npos) << sut.stderrText();
  EXPECT_NE(sut.stderrText().find("elsewhere.sock"), std::string::npos) << sut.stderrText();
}

}  // namespace
}  // namespace swipc::testing
