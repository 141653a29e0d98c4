#include "page/daemon_spawn.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include "core/log.h"

extern char** environ;

namespace swipc::page {

namespace {

constexpr unsigned CLOSE_RANGE_CLOEXEC_FLAG = 1u << 2;  // CLOSE_RANGE_CLOEXEC (Linux 5.11)

bool isExecutableFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

/// `path` made absolute against the working directory (the daemon runs in "/").
std::string absolute(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  char cwd[PATH_MAX];
  if (!::getcwd(cwd, sizeof cwd)) return path;
  return std::string(cwd) + "/" + path;
}

std::optional<std::string> findOnPath(const std::string& name) {
  const char* env = std::getenv("PATH");
  const std::string dirs = env && *env ? env : "/usr/local/bin:/usr/bin:/bin";
  for (size_t pos = 0; pos <= dirs.size();) {
    size_t end = dirs.find(':', pos);
    if (end == std::string::npos) end = dirs.size();
    std::string dir = dirs.substr(pos, end - pos);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (isExecutableFile(candidate)) return absolute(candidate);
    pos = end + 1;
  }
  return std::nullopt;
}

Error noDaemon(const std::string& what) { return makeError(Errc::NO_DAEMON, what); }

/// The daemon's side of the fork, up to exec. Only async-signal-safe calls: the page may have
/// threads, and one of them may have held a lock (malloc's) at the fork. On failure the errno
/// goes to `report` and the process exits.
[[noreturn]] void execDaemon(char* const* argv, int report, int fdLimit) {
  auto fail = [&] {
    int err = errno;
    [[maybe_unused]] ssize_t n = ::write(report, &err, sizeof err);
    ::_exit(127);
  };
  if (::setsid() == -1) fail();  // its own session: no terminal, no signals meant for the page's group
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(sig, &dfl, nullptr);  // EINVAL for the C library's own signals: fine
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // The report pipe must not be one of the stdio fds we are about to replace.
  if (report <= STDERR_FILENO) {
    report = ::fcntl(report, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    if (report == -1) ::_exit(127);
  }
  int null = ::open("/dev/null", O_RDWR);
  if (null == -1) fail();
  for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; ++fd)
    if (::dup2(null, fd) == -1) fail();
  if (null > STDERR_FILENO) ::close(null);
  if (::chdir("/") == -1) fail();
  // Nothing of the page's but stdio crosses the exec (a test harness's pipes, a program's
  // sockets opened without O_CLOEXEC): mark every other fd close-on-exec.
  if (::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC_FLAG) == -1)
    for (int fd = STDERR_FILENO + 1; fd < fdLimit; ++fd) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  ::execve(argv[0], argv, environ);
  fail();
  ::_exit(127);
}

}  // namespace

Result<std::string> resolveDaemonPath(const std::string& requested) {
  if (!requested.empty()) {
    if (requested.find('/') == std::string::npos) {
      if (auto found = findOnPath(requested)) return *found;
      return noDaemon("cannot start the daemon: no executable '" + requested + "' on PATH");
    }
    if (isExecutableFile(requested)) return absolute(requested);
    return noDaemon("cannot start the daemon: " + requested + " is not an executable file");
  }
  std::string nextToUs;
  char self[PATH_MAX];
  if (ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1); n > 0) {
    std::string exe(self, static_cast<size_t>(n));
    nextToUs = exe.substr(0, exe.rfind('/') + 1) + "sw_daemon";
    if (isExecutableFile(nextToUs)) return nextToUs;
  }
  if (auto found = findOnPath("sw_daemon")) return *found;
  return noDaemon("cannot start the daemon: no sw_daemon next to this program (" + nextToUs +
                  ") nor on PATH; name one with --daemon-path");
}

std::string daemonLogPath(const core::ScopePaths& paths) { return paths.dir + "/daemon.log"; }

Result<void> spawnDaemon(const std::string& daemonPath, const std::string& scope, const core::ScopePaths& paths) {
  // Everything the children need is made here: after the fork they may not allocate.
  std::vector<std::string> args{daemonPath,       "--scope",    scope, "--runtime-dir", absolute(paths.root),
                                "--log-file", absolute(daemonLogPath(paths))};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fdLimit = 1024;
  if (rlimit rl{}; ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    fdLimit = static_cast<int>(std::min<rlim_t>(rl.rlim_cur, 65536));
  int report[2];
  if (::pipe2(report, O_CLOEXEC) == -1) return noDaemon(std::string("cannot start the daemon: pipe: ") + std::strerror(errno));

  // No signal handler of the page's may run in a child before the daemon has reset them all.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t middle = ::fork();
  if (middle == 0) {
    // The middle process exits at once: the daemon, orphaned, is nobody's child to reap and is
    // not tied to the page.
    ::close(report[0]);
    const pid_t daemon = ::fork();
    if (daemon == 0) execDaemon(argv.data(), report[1], fdLimit);
    ::_exit(daemon > 0 ? 0 : 1);
  }
  const int forkErrno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(report[1]);
  UniqueFd reportFd(report[0]);
  if (middle < 0) return noDaemon(std::string("cannot start the daemon: fork: ") + std::strerror(forkErrno));
  int status = 0;
  pid_t waited;
  do {
    waited = ::waitpid(middle, &status, 0);
  } while (waited == -1 && errno == EINTR);
  // ECHILD: the program reaps its children itself (SIGCHLD ignored): the pipe still tells.
  if (waited == middle && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    return noDaemon("cannot start the daemon: fork failed in the starter process");
  // The pipe closes when the daemon execs (O_CLOEXEC), or carries the errno of why it did not.
  int execErrno = 0;
  size_t got = 0;
  pollfd p{reportFd.get(), POLLIN, 0};
  while (got < sizeof execErrno && ::poll(&p, 1, 5000) > 0) {
    ssize_t n = ::read(reportFd.get(), reinterpret_cast<char*>(&execErrno) + got, sizeof execErrno - got);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    got += static_cast<size_t>(n);
  }
  if (got == sizeof execErrno)
    return noDaemon("cannot start the daemon " + daemonPath + ": " + std::strerror(execErrno));
  core::log().info("started {} for scope {} (log: {})", daemonPath, scope, daemonLogPath(paths));
  return {};
}

}  // namespace swipc::page
