// Identity and attach hardening (DESIGN §3, issue 14 findings 5, 8, 9) with real sw_daemon and
// page_client processes and a second uid (nobody, 65534) played by forked children:
//  - a runtime dir that is not ours (or root's) or is writable by others is refused by the
//    daemon and by the page, by name (InvalidAccessError); a symlinked lock file too;
//  - the socket's public name appears only with its final mode (never created, then chmod'ed);
//  - a page sends no Hello (it carries the resume token) to a socket another uid listens on;
//  - --allow-group: dir 0750, socket 0660, and a peer whose *supplementary* group is the
//    daemon's gets in;
//  - one uid's silent (pre-Hello) connections take at most --max-pending-per-uid slots, so other
//    users' pages still attach, and the refused ones hear QuotaExceededError, not NoDaemon;
//  - a page watches more than 127 BroadcastChannel rings;
//  - a url with a newline cannot forge a daemon log line.
// The "other uid" cases need root (CI runs the tests as root); they skip with a reason otherwise.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "process.h"
#include "test_scope.h"

namespace swipc::testing {
namespace {

using nlohmann::json;

constexpr uid_t NOBODY = 65534;
constexpr const char* SW_VERSION = "identity-test-sw-1";

#define SKIP_UNLESS_ROOT() \
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: another uid (nobody) plays the attacker"

/// Who a child runs as: uid, primary gid, supplementary groups.
struct Identity {
  uid_t uid = NOBODY;
  gid_t gid = NOBODY;
  std::vector<gid_t> groups;
};

/// In a forked child: become `who` (groups first, while we still may). False on failure.
bool becomeIdentity(const Identity& who) {
  return ::setgroups(who.groups.size(), who.groups.data()) == 0 && ::setresgid(who.gid, who.gid, who.gid) == 0 &&
         ::setresuid(who.uid, who.uid, who.uid) == 0;
}

std::string readFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

/// One run of a program to its end.
struct ProgramRun {
  std::optional<int> exitCode;  // nullopt: killed at the deadline
  std::string out, err;
};

/// Runs argv as `who` (or as ourselves) until it exits or `timeout` passes (then SIGKILL).
ProgramRun runProgram(const std::vector<std::string>& argv, const std::optional<Identity>& who,
               std::chrono::milliseconds timeout = 10s) {
  TempDir files;
  ::chmod(files.path().c_str(), 0700);
  const std::string outPath = files.path() + "/out", errPath = files.path() + "/err";
  pid_t pid = ::fork();
  if (pid == 0) {
    // Opened as root, before dropping privileges: the files stay ours.
    int out = ::open(outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int err = ::open(errPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0 || err < 0) ::_exit(120);
    ::dup2(out, 1);
    ::dup2(err, 2);
    if (who && !becomeIdentity(*who)) ::_exit(121);
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
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) {
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

std::string describe(const ProgramRun& r) {
  return "exit=" + (r.exitCode ? std::to_string(*r.exitCode) : std::string("killed")) + "\nstdout: " + r.out +
         "\nstderr: " + r.err;
}

mode_t modeOf(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

/// A forked child that is another user: it runs `body` after becoming `who`, and talks to the
/// test over a pipe (one line each way is enough). Killed and reaped on destruction.
class OtherUser {
 public:
  template <typename Body>
  OtherUser(const Identity& who, Body body, rlim_t fdLimit = 0) {
    int up[2], down[2];
    EXPECT_EQ(::pipe2(up, O_CLOEXEC), 0);
    EXPECT_EQ(::pipe2(down, O_CLOEXEC), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(up[0]);
      ::close(down[1]);
      if (fdLimit) {
        rlimit rl{fdLimit, fdLimit};
        ::setrlimit(RLIMIT_NOFILE, &rl);
      }
      if (!becomeIdentity(who)) ::_exit(121);
      body(up[1], down[0]);
      ::_exit(0);
    }
    ::close(up[1]);
    ::close(down[0]);
    fromChild_ = up[0];
    toChild_ = down[1];
  }
  ~OtherUser() {
    ::close(toChild_);
    ::close(fromChild_);
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  /// The child's next line, waiting up to `timeout`.
  std::optional<std::string> readLine(std::chrono::milliseconds timeout = 10s) {
    const auto deadline = TestClock::now() + timeout;
    for (;;) {
      if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - TestClock::now()).count();
      if (left <= 0) return std::nullopt;
      pollfd p{fromChild_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) != 1) return std::nullopt;
      char buf[256];
      ssize_t n = ::read(fromChild_, buf, sizeof buf);
      if (n <= 0) return std::nullopt;
      buffer_.append(buf, static_cast<size_t>(n));
    }
  }
  void tell(const std::string& line) { [[maybe_unused]] auto n = ::write(toChild_, (line + "\n").data(), line.size() + 1); }

 private:
  pid_t pid_ = -1;
  int fromChild_ = -1, toChild_ = -1;
  std::string buffer_;
};

void writeLine(int fd, const std::string& line) { [[maybe_unused]] auto n = ::write(fd, (line + "\n").data(), line.size() + 1); }

int connectTo(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class IdentityTest : public ::testing::Test {
 protected:
  std::string scopeDir() const { return dir_.path() + "/" + scope_; }

  std::vector<std::string> pageArgs(std::vector<std::string> rest, const std::string& runtimeDir = "") const {
    std::vector<std::string> argv{pageClientPath(), "--scope", scope_, "--runtime-dir",
                                  runtimeDir.empty() ? dir_.path() : runtimeDir, "--timeout-ms", "3000"};
    argv.insert(argv.end(), rest.begin(), rest.end());
    return argv;
  }
  std::vector<std::string> getVersion(const std::string& runtimeDir = "") const {
    return pageArgs({"message-sw", R"({"type":"GET_VERSION"})"}, runtimeDir);
  }
  std::vector<std::string> daemonArgs(std::vector<std::string> rest, const std::string& runtimeDir = "") const {
    std::vector<std::string> argv{swDaemonPath(), "--scope", scope_, "--runtime-dir",
                                  runtimeDir.empty() ? dir_.path() : runtimeDir, "--sw-version", SW_VERSION};
    argv.insert(argv.end(), rest.begin(), rest.end());
    return argv;
  }

  /// The daemon must refuse to start, naming the error, in one line.
  void expectDaemonRefuses(const std::string& runtimeDir, const std::string& says) {
    ProgramRun r = runProgram(daemonArgs({}, runtimeDir), std::nullopt);
    ASSERT_TRUE(r.exitCode.has_value()) << "the daemon started: " << describe(r);
    EXPECT_EQ(*r.exitCode, 1) << describe(r);
    EXPECT_NE(r.err.find("sw_daemon: InvalidAccessError: "), std::string::npos) << describe(r);
    EXPECT_NE(r.err.find(says), std::string::npos) << describe(r);
  }
  /// The page must refuse the dir before it connects (not NoDaemon: it names the problem).
  void expectPageRefuses(const std::string& runtimeDir, const std::string& says) {
    ProgramRun r = runProgram(getVersion(runtimeDir), std::nullopt);
    EXPECT_EQ(r.exitCode, std::optional<int>(1)) << describe(r);
    EXPECT_NE(r.err.find("InvalidAccessError"), std::string::npos) << describe(r);
    EXPECT_NE(r.err.find(says), std::string::npos) << describe(r);
  }

  TempDir dir_;
  std::string scope_ = testScope();
};

// ---------------------------------------------------------------------------------- runtime dir

TEST_F(IdentityTest, ScopeDirOwnedByAnotherUserIsRefusedByDaemonAndPage) {
  SKIP_UNLESS_ROOT();
  ASSERT_EQ(::mkdir(scopeDir().c_str(), 0700), 0);
  ASSERT_EQ(::chown(scopeDir().c_str(), NOBODY, NOBODY), 0);
  expectDaemonRefuses(dir_.path(), "owned by uid 65534");
  expectPageRefuses(dir_.path(), "owned by uid 65534");
}

TEST_F(IdentityTest, SquattedWorldWritableRuntimeDirIsRefusedByDaemonAndPage) {
  // Finding 8: a nobody-owned 0777 /tmp/swipc-<uid> was used as is.
  SKIP_UNLESS_ROOT();
  const std::string squat = dir_.path() + "/swipc-squat";
  ASSERT_EQ(::mkdir(squat.c_str(), 0777), 0);
  ASSERT_EQ(::chmod(squat.c_str(), 0777), 0);
  ASSERT_EQ(::chown(squat.c_str(), NOBODY, NOBODY), 0);
  expectDaemonRefuses(squat, "refusing to use it");
  expectPageRefuses(squat, "refusing to use it");
  EXPECT_FALSE(std::filesystem::exists(squat + "/" + scope_)) << "the daemon used the squatter's dir";
}

TEST_F(IdentityTest, RuntimeDirOfOursWritableByOthersIsRefused) {
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0777), 0);
  expectDaemonRefuses(dir_.path(), "writable by group or others");
  expectPageRefuses(dir_.path(), "writable by group or others");
}

TEST_F(IdentityTest, SymlinkedLockFileIsRefused) {
  ASSERT_EQ(::mkdir(scopeDir().c_str(), 0700), 0);
  const std::string target = dir_.path() + "/elsewhere";
  ASSERT_EQ(::symlink(target.c_str(), (scopeDir() + "/daemon.lock").c_str()), 0);
  expectDaemonRefuses(dir_.path(), "daemon.lock is a symlink");
  EXPECT_FALSE(std::filesystem::exists(target)) << "the daemon created a file through the symlink";
}

TEST_F(IdentityTest, SocketNameAppearsOnlyWithItsFinalMode) {
  // bind() then chmod() leaves an instant where daemon.sock exists 0777 & ~umask. Watch the
  // scope dir: the name must arrive by rename (IN_MOVED_TO), never be created (IN_CREATE) or
  // have its mode changed (IN_ATTRIB) under its public name.
  ASSERT_EQ(::mkdir(scopeDir().c_str(), 0700), 0);
  int in = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(in, 0);
  ASSERT_GE(::inotify_add_watch(in, scopeDir().c_str(), IN_CREATE | IN_ATTRIB | IN_MOVED_TO), 0);
  Daemon daemon(dir_.path(), scope_, {"--sw-version", SW_VERSION});
  ASSERT_TRUE(daemon.waitReady()) << daemon.log();
  bool movedIn = false;
  std::vector<std::string> bad;
  alignas(inotify_event) char buf[16384];
  for (ssize_t n; (n = ::read(in, buf, sizeof buf)) > 0;) {
    for (char* p = buf; p < buf + n;) {
      auto* e = reinterpret_cast<inotify_event*>(p);
      std::string name = e->len ? e->name : "";
      if (name == "daemon.sock") {
        if (e->mask & IN_MOVED_TO) movedIn = true;
        if (e->mask & (IN_CREATE | IN_ATTRIB)) bad.push_back(e->mask & IN_CREATE ? "IN_CREATE" : "IN_ATTRIB");
      }
      p += sizeof(inotify_event) + e->len;
    }
  }
  ::close(in);
  EXPECT_TRUE(movedIn) << "daemon.sock did not arrive by rename";
  EXPECT_TRUE(bad.empty()) << "daemon.sock had events under its public name: " << ::testing::PrintToString(bad);
  EXPECT_EQ(modeOf(scopeDir() + "/daemon.sock"), 0600u);
  EXPECT_EQ(modeOf(scopeDir()), 0700u);
}

// ---------------------------------------------------------------------------------- the daemon's uid

TEST_F(IdentityTest, PageSendsNoHelloToASocketOfAnotherUser) {
  // Finding 8: another uid replaced daemon.sock and a root page sent its Hello (with its resume
  // token) to the impostor. The page must check SO_PEERCRED first and send nothing.
  SKIP_UNLESS_ROOT();
  char lair[] = "/tmp/swipc-impostor-XXXXXX";
  ASSERT_NE(::mkdtemp(lair), nullptr);
  ASSERT_EQ(::chown(lair, NOBODY, NOBODY), 0);
  const std::string impostorPath = std::string(lair) + "/s.sock";
  OtherUser impostor(Identity{}, [&](int up, int) {
    int l = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, impostorPath.c_str(), sizeof a.sun_path - 1);
    if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l, 8) != 0) ::_exit(3);
    ::chmod(impostorPath.c_str(), 0777);
    writeLine(up, "listening");
    pollfd p{l, POLLIN, 0};
    if (::poll(&p, 1, 10000) != 1) {
      writeLine(up, "no connection");
      ::_exit(0);
    }
    int c = ::accept(l, nullptr, nullptr);
    // Whatever the page sends in the next 1.5 s (it would send its Hello at once).
    size_t got = 0;
    pollfd q{c, POLLIN, 0};
    while (::poll(&q, 1, 1500) == 1) {
      char buf[4096];
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    writeLine(up, "received " + std::to_string(got));
  });
  ASSERT_EQ(impostor.readLine(), std::optional<std::string>("listening"));
  // The impostor's socket, put where our daemon's goes, in a scope dir that passes its checks.
  ASSERT_EQ(::mkdir(scopeDir().c_str(), 0700), 0);
  ASSERT_EQ(::rename(impostorPath.c_str(), (scopeDir() + "/daemon.sock").c_str()), 0);
  ::rmdir(lair);
  ProgramRun r = runProgram(getVersion(), std::nullopt);
  EXPECT_EQ(r.exitCode, std::optional<int>(1)) << describe(r);
  EXPECT_NE(r.err.find("InvalidAccessError"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("served by uid 65534"), std::string::npos) << describe(r);
  EXPECT_EQ(impostor.readLine(), std::optional<std::string>("received 0")) << describe(r);
}

// ---------------------------------------------------------------------------------- --allow-group

TEST_F(IdentityTest, AllowGroupAdmitsAPeerBySupplementaryGroup) {
  // Finding 8: --allow-group left the dir 0700 and compared only the primary gid.
  SKIP_UNLESS_ROOT();
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0750), 0);  // the runtime dir is the user's to open
  Daemon daemon(dir_.path(), scope_, {"--sw-version", SW_VERSION, "--allow-group"});
  ASSERT_TRUE(daemon.waitReady()) << daemon.log();
  EXPECT_EQ(modeOf(scopeDir()), 0750u);
  EXPECT_EQ(modeOf(scopeDir() + "/daemon.sock"), 0660u);
  // nobody, primary group nogroup, in the daemon's group (root, 0) only as a supplementary one.
  ProgramRun member = runProgram(getVersion(), Identity{NOBODY, NOBODY, {0}});
  EXPECT_EQ(member.exitCode, std::optional<int>(0)) << describe(member) << daemon.log();
  EXPECT_NE(member.out.find(SW_VERSION), std::string::npos) << describe(member);
}

// ---------------------------------------------------------------------------------- pre-Hello quota

TEST_F(IdentityTest, SilentConnectionsOfOneUserDoNotLockOutOthers) {
  // Finding 5: 4,096 silent connections (no Hello) locked legitimate pages out. The attacker is
  // another user let in by --allow-group; it holds (and re-opens) 4,096 connections.
  SKIP_UNLESS_ROOT();
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0750), 0);
  Daemon daemon(dir_.path(), scope_, {"--sw-version", SW_VERSION, "--allow-group"});
  ASSERT_TRUE(daemon.waitReady()) << daemon.log();
  const std::string socketPath = scopeDir() + "/daemon.sock";
  constexpr size_t FLOOD = 4096;
  OtherUser attacker(
      Identity{NOBODY, NOBODY, {0}},
      [&](int up, int down) {
        std::vector<int> fds(FLOOD, -1);
        auto refill = [&] {
          for (auto& fd : fds)
            if (fd < 0) fd = connectTo(socketPath);
        };
        refill();
        writeLine(up, "flooding");
        // Keep the flood up: every connection the daemon drops (refused, or timed out without
        // a Hello) is opened again within a second, until the test says stop.
        for (;;) {
          pollfd stop{down, POLLIN, 0};
          if (::poll(&stop, 1, 0) == 1) break;
          std::vector<pollfd> ps;
          for (int fd : fds) ps.push_back(pollfd{fd, POLLIN, 0});
          ::poll(ps.data(), ps.size(), 1000);
          for (size_t i = 0; i < fds.size(); ++i)
            if (fds[i] >= 0 && (ps[i].revents & (POLLIN | POLLHUP | POLLERR))) {
              ::close(fds[i]);
              fds[i] = -1;
            }
          refill();
        }
      },
      FLOOD + 256);
  ASSERT_EQ(attacker.readLine(), std::optional<std::string>("flooding"));
  // Another user (root here) still attaches and is served.
  ProgramRun page = runProgram(getVersion(), std::nullopt);
  EXPECT_EQ(page.exitCode, std::optional<int>(0)) << describe(page);
  EXPECT_NE(page.out.find(SW_VERSION), std::string::npos) << describe(page);
  // The attacker's own uid is at its quota: a page of that uid hears why (finding 9), not
  // NoDaemon.
  ProgramRun same = runProgram(getVersion(), Identity{NOBODY, NOBODY, {0}});
  EXPECT_EQ(same.exitCode, std::optional<int>(1)) << describe(same);
  EXPECT_NE(same.err.find("QuotaExceededError"), std::string::npos) << describe(same);
  EXPECT_NE(same.err.find("--max-pending-per-uid"), std::string::npos) << describe(same);
  // Every flood connection beyond the quota is refused by name. The daemon accepts a bounded
  // batch per turn of its loop, so on a loaded machine it may still be working through the
  // backlog when the pages above are done: wait for the count, with a deadline.
  std::optional<nlohmann::json> counters;
  const bool refusedAll = eventually(
      [&] {
        counters = readCounters(daemon);
        return counters && (*counters)["uidQuotaRefused"].get<int64_t>() >= int64_t(FLOOD - 64);
      },
      30s);
  attacker.tell("stop");
  ASSERT_TRUE(counters.has_value()) << daemon.log();
  EXPECT_TRUE(refusedAll) << counters->dump();
}

// ---------------------------------------------------------------------------------- channels, logs

TEST_F(IdentityTest, PageWatchesTwoHundredChannels) {
  // Finding 9: a page stopped watching channel rings beyond 127 (one futex_waitv call). Each post
  // is waited for before the next, so a ring nobody watches cannot ride on another's wake-up.
  Daemon daemon(dir_.path(), scope_, {"--sw-version", SW_VERSION});
  ASSERT_TRUE(daemon.waitReady()) << daemon.log();
  constexpr int CHANNELS = 200;
  ScriptClient receiver(dir_.path(), scope_);
  ScriptClient sender(dir_.path(), scope_);
  ASSERT_FALSE(receiver.clientId().empty());
  ASSERT_FALSE(sender.clientId().empty());
  for (int i = 0; i < CHANNELS; ++i) {
    const std::string name = "ch" + std::to_string(i);
    receiver.send({{"op", "bc.open"}, {"id", i}, {"bc", "r" + std::to_string(i)}, {"name", name}});
    sender.send({{"op", "bc.open"}, {"id", i}, {"bc", "s" + std::to_string(i)}, {"name", name}});
  }
  for (int i = 0; i < CHANNELS; ++i) {
    auto ok = receiver.waitResult(i);
    ASSERT_TRUE(ok && (*ok)["event"] == "ok") << (ok ? ok->dump() : "no result") << " for bc.open " << i;
    ok = sender.waitResult(i);
    ASSERT_TRUE(ok && (*ok)["event"] == "ok") << (ok ? ok->dump() : "no result") << " for bc.open " << i;
  }
  for (int i = 0; i < CHANNELS; ++i) {
    sender.send({{"op", "bc.post"}, {"bc", "s" + std::to_string(i)}, {"data", i}});
    auto got = receiver.waitFor(
        [&](const json& e) { return e["event"] == "bc.message" && e["name"] == "ch" + std::to_string(i); }, 3000ms);
    ASSERT_TRUE(got.has_value()) << "channel ch" << i << " was not delivered (the page does not watch it)";
    EXPECT_EQ((*got)["data"], i);
  }
}

TEST_F(IdentityTest, NewlineInUrlDoesNotForgeALogLine) {
  // Finding 9: a url with a newline forged a daemon log line.
  Daemon daemon(dir_.path(), scope_, {"--sw-version", SW_VERSION});
  ASSERT_TRUE(daemon.waitReady()) << daemon.log();
  const std::string forged = "[fake] 2099-01-01 critical sw_daemon: everything is fine";
  ProgramRun r = runProgram(pageArgs({"--url", "app://x/\n" + forged + "\r\x1b[2J", "message-sw", R"({"type":"GET_VERSION"})"}),
                     std::nullopt);
  ASSERT_EQ(r.exitCode, std::optional<int>(0)) << describe(r);
  ASSERT_TRUE(eventually([&] { return daemon.log().find("[fake]") != std::string::npos; }))
      << "the daemon did not log the url at all: " << daemon.log();
  std::istringstream lines(daemon.log());
  for (std::string line; std::getline(lines, line);) {
    EXPECT_NE(line.rfind("[fake]", 0), 0u) << "forged log line: " << line;
    EXPECT_EQ(line.find('\x1b'), std::string::npos) << "raw escape in: " << line;
  }
  EXPECT_NE(daemon.log().find("app://x/\\n[fake]"), std::string::npos) << daemon.log();
}

}  // namespace
}  // namespace swipc::testing
