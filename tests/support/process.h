// Test support: real child processes (fork/exec) with pipes, deadlines instead of sleeps.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace swipc::testing {

using namespace std::chrono_literals;
using TestClock = std::chrono::steady_clock;

/// Paths of the built binaries (set by CMake).
std::string swDaemonPath();
std::string pageClientPath();
std::string hostileClientPath();
/// tests/support/bc_peer: library-based BroadcastChannel receiver/sender.
std::string bcPeerPath();
/// tests/support/port_peer: library-based MessagePort sender/relay/receiver/holder.
std::string portPeerPath();

/// A fresh private directory, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// A child process. Its stdin and stdout are pipes when asked for; stderr goes to a file that
/// tests can read. Destruction kills (SIGKILL) and reaps it, so no test leaves a process behind.
class ChildProcess {
 public:
  struct Options {
    bool pipeStdin = false;
    bool pipeStdout = false;
    std::vector<std::string> extraEnv;  // "NAME=value"
  };

  ChildProcess() = default;
  ChildProcess(const std::vector<std::string>& argv, const Options& opts);
  ChildProcess(ChildProcess&&) noexcept;
  ChildProcess& operator=(ChildProcess&&) noexcept;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  bool running();
  void signal(int sig);
  /// Waits for exit until the deadline; the exit status (as from waitpid) or nullopt.
  std::optional<int> waitExit(std::chrono::milliseconds timeout);
  /// Exit code if it exited normally, -signal if killed, nullopt if still running.
  std::optional<int> waitExitCode(std::chrono::milliseconds timeout);

  /// Writes one line (adds '\n') to the child's stdin.
  bool writeLine(const std::string& line);
  void closeStdin();
  /// Next stdout line, waiting until the timeout; nullopt on timeout or EOF.
  std::optional<std::string> readLine(std::chrono::milliseconds timeout);
  /// Everything the child wrote to stderr so far.
  std::string stderrText() const;

 private:
  void reset();
  pid_t pid_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  std::string stderrPath_;
  std::string buffer_;
  bool exited_ = false;
  int status_ = 0;
};

/// sw_daemon for one scope in a private runtime dir; ready() once its socket accepts.
class Daemon {
 public:
  Daemon(const std::string& runtimeDir, const std::string& scope, std::vector<std::string> extraArgs = {});
  ChildProcess& process() { return proc_; }
  pid_t pid() const { return proc_.pid(); }
  /// True once a client could attach (polls connect() with a deadline). The default deadline is
  /// generous: under ASan on a loaded 2-core machine (another test spawning hundreds of pages) a
  /// daemon's start — lock, signals, opening its SQLite state — has been seen to take over 5 s.
  bool waitReady(std::chrono::milliseconds timeout = 20000ms);
  std::string log() const { return proc_.stderrText(); }

 private:
  std::string socketPath_;
  ChildProcess proc_;
};

/// page_client in `script` mode: send ops, wait for events.
class ScriptClient {
 public:
  ScriptClient(const std::string& runtimeDir, const std::string& scope, std::vector<std::string> extraArgs = {});
  ChildProcess& process() { return proc_; }
  pid_t pid() const { return proc_.pid(); }

  void send(const nlohmann::json& op);
  /// The next event for which pred is true; events skipped on the way are kept in seen().
  std::optional<nlohmann::json> waitFor(const std::function<bool(const nlohmann::json&)>& pred,
                                        std::chrono::milliseconds timeout = 5000ms);
  std::optional<nlohmann::json> waitEvent(const std::string& name, std::chrono::milliseconds timeout = 5000ms);
  /// The ok/error event for op id `id`.
  std::optional<nlohmann::json> waitResult(const nlohmann::json& id, std::chrono::milliseconds timeout = 5000ms);
  /// The clientId from the "attached" line (waits for it).
  std::string clientId();
  const std::vector<nlohmann::json>& seen() const { return seen_; }

 private:
  ChildProcess proc_;
  std::vector<nlohmann::json> seen_;
  std::vector<nlohmann::json> pending_;  // read but not yet matched
  std::string clientId_;
};

/// Whether RSS figures of the processes under test mean what they say. Not in an AddressSanitizer
/// build: freed memory waits in ASan's quarantine (256 MiB by default) and every block carries
/// redzones, so a flood shows up as ~300 MiB whatever the code does. The plain pass of
/// scripts/test.sh checks the figures; the sanitizer pass checks everything else.
constexpr bool rssFiguresHold() {
#if defined(__SANITIZE_ADDRESS__)
  return false;
#else
  return true;
#endif
}

/// Number of open fds of a process (/proc/PID/fd).
int openFdCount(pid_t pid);
/// Resident set size in KiB (/proc/PID/status VmRSS).
long rssKiB(pid_t pid);
/// The state letter of a process from /proc/PID/stat ('R', 'S', 'T' for stopped, ...); 0 when
/// it cannot be read.
char processState(pid_t pid);
/// The system call a process is blocked in, from /proc/PID/syscall: its number and first three
/// arguments (number -1 outside one); nullopt when it is running, or the file cannot be read.
std::optional<std::vector<unsigned long long>> blockedSyscall(pid_t pid);
/// Entries in /dev/shm.
std::vector<std::string> devShmEntries();
/// The daemon's counters (ServiceWorker::counters() as JSON): sends it SIGUSR1 and waits for the
/// "counters clients=N {...}" line that answers it; nullopt when none came before the timeout.
/// The object also carries "clients": N from that line.
std::optional<nlohmann::json> readCounters(Daemon& daemon, std::chrono::milliseconds timeout = 5000ms);

/// Polls `pred` until true or timeout (no fixed sleeps: short waits between checks).
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5000ms);

}  // namespace swipc::testing
