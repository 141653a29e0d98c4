// swipc::testing: multi-process integration tests of programs that use swipc (GoogleTest).
//
// A Scope is one private swipc world: a scope name, a private runtime dir and state dir under a
// fresh temporary directory, an sw_daemon started with the flags the test chooses, and the pages
// the test spawns (our page_client in script mode, driven by JSON lines as in DESIGN §6, or any
// program of the user's). The test drives pages (send an op, wait for an event with a deadline),
// kills any process with kill -9 or stops it with SIGSTOP, restarts the daemon on the same state
// dir. Destroying the Scope SIGKILLs and reaps every process it started (and any process whose
// command line names its directory, such as a daemon a page started with --spawn-daemon) and
// removes its directory, whether the test passed or not. ScopeFixture is a ::testing::Test that
// holds one Scope per test.
//
//   class ChatTest : public swipc::testing::ScopeFixture {};
//   TEST_F(ChatTest, ...) {
//     auto& a = page();
//     auto& b = page();
//     b.send({{"op", "bc.open"}, {"id", 1}, {"bc", "b"}, {"name", "chat"}});
//     ASSERT_TRUE(b.waitResult(1));
//     ...
//   }
//
// Binaries: sw_daemon and page_client are ScopeOptions::swDaemon / pageClient when set, else
// $SWIPC_SW_DAEMON / $SWIPC_PAGE_CLIENT, else those installed with this kit (found from where
// libswipc.so is loaded), else on $PATH. No wait in this kit sleeps for a fixed time: every wait
// polls or reads with a deadline.
//
// Inside namespace swipc::testing, `testing` names this namespace: write ::testing:: for
// GoogleTest's.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace swipc::testing {

using namespace std::chrono_literals;
using TestClock = std::chrono::steady_clock;

/// The sw_daemon this kit starts by default: $SWIPC_SW_DAEMON, else the one installed with the
/// kit (or built beside it in the swipc tree), else "sw_daemon" found on $PATH.
std::string swDaemonPath();
/// The page_client this kit starts by default; $SWIPC_PAGE_CLIENT, then as swDaemonPath().
std::string pageClientPath();

/// Calls `pred` until it returns true or the timeout passes (short waits between checks, never
/// one long sleep); whether it returned true.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5000ms);

/// A scope named after the running GoogleTest test (at most 48 characters), "swipc-test" outside
/// one.
std::string testScope();
/// Milliseconds since `t0` on the steady clock.
long long msSince(TestClock::time_point t0);

/// A fresh private directory (mode 0700) under $TMPDIR (else /tmp), removed recursively on
/// destruction.
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

/// A child process (fork/exec). Its stdin and stdout are pipes when asked for; stderr goes to a
/// file that tests can read. It is SIGKILLed if the thread that started it dies
/// (PR_SET_PDEATHSIG). Destruction SIGKILLs and reaps it and removes its stderr file, so no test
/// leaves a process behind.
class ChildProcess {
 public:
  struct Options {
    bool pipeStdin = false;
    bool pipeStdout = false;
    std::vector<std::string> extraEnv;  // "NAME=value", added to (or replacing in) this process's
    std::string stderrDir;              // where the stderr file goes ("" = $TMPDIR, else /tmp)
  };

  ChildProcess() = default;
  /// Starts argv[0] (a path, not looked up on $PATH) with argv.
  ChildProcess(const std::vector<std::string>& argv, const Options& opts);
  ChildProcess(ChildProcess&&) noexcept;
  ChildProcess& operator=(ChildProcess&&) noexcept;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  /// False once it has exited (reaps it then).
  bool running();
  /// Sends `sig` while it has not been reaped.
  void signal(int sig);
  /// Waits for exit until the deadline; the exit status (as from waitpid) or nullopt.
  std::optional<int> waitExit(std::chrono::milliseconds timeout);
  /// Exit code if it exited normally, -signal if killed, nullopt if still running.
  std::optional<int> waitExitCode(std::chrono::milliseconds timeout);

  /// kill -9, then reaps it: true once it is gone.
  bool kill9(std::chrono::milliseconds timeout = 5000ms);
  /// SIGSTOP, then waits until the kernel reports it stopped ('T'): whether it did in time.
  bool stop(std::chrono::milliseconds timeout = 5000ms);
  /// SIGCONT, then waits until it is no longer reported stopped: whether it did in time.
  bool resume(std::chrono::milliseconds timeout = 5000ms);

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

/// sw_daemon for one scope in a given runtime dir; waitReady() once its socket accepts.
class Daemon {
 public:
  struct Options {
    std::string runtimeDir;
    std::string scope;
    std::vector<std::string> extraArgs;  // after --scope/--runtime-dir ("--log-level info" unless given)
    std::vector<std::string> extraEnv;   // "NAME=value"
    std::string path;                    // "" = swDaemonPath()
    std::string stderrDir;               // as ChildProcess::Options
  };

  Daemon(const std::string& runtimeDir, const std::string& scope, std::vector<std::string> extraArgs = {});
  explicit Daemon(const Options& opts);
  ChildProcess& process() { return proc_; }
  pid_t pid() const { return proc_.pid(); }
  /// True once a client could attach (polls connect() with a deadline). The default deadline is
  /// generous: under ASan on a loaded 2-core machine a daemon's start — lock, signals, opening
  /// its SQLite state — has been seen to take over 5 s.
  bool waitReady(std::chrono::milliseconds timeout = 20000ms);
  /// Its stderr so far (its log).
  std::string log() const { return proc_.stderrText(); }
  /// kill -9 and reap.
  bool kill9(std::chrono::milliseconds timeout = 5000ms) { return proc_.kill9(timeout); }

 private:
  std::string socketPath_;
  ChildProcess proc_;
};

/// A program speaking page_client's JSON-lines contract (DESIGN §6) on stdin/stdout: by default
/// page_client in `script` mode. Send ops, wait for events.
class ScriptClient {
 public:
  /// page_client --scope S --runtime-dir D [extraArgs...] script
  ScriptClient(const std::string& runtimeDir, const std::string& scope, std::vector<std::string> extraArgs = {});
  /// Any program: argv as given, stdin and stdout piped (opts' pipe flags are forced on).
  ScriptClient(const std::vector<std::string>& argv, ChildProcess::Options opts);
  ChildProcess& process() { return proc_; }
  pid_t pid() const { return proc_.pid(); }

  /// Writes `op` as one line.
  void send(const nlohmann::json& op);
  /// The next event for which pred is true; events skipped on the way are kept (for later waits)
  /// and every event read is in seen(). nullopt at the deadline or when stdout closes.
  std::optional<nlohmann::json> waitFor(const std::function<bool(const nlohmann::json&)>& pred,
                                        std::chrono::milliseconds timeout = 5000ms);
  /// The next event named `name` ({"event": name, …}).
  std::optional<nlohmann::json> waitEvent(const std::string& name, std::chrono::milliseconds timeout = 5000ms);
  /// The ok/error event for op id `id`.
  std::optional<nlohmann::json> waitResult(const nlohmann::json& id, std::chrono::milliseconds timeout = 5000ms);
  /// Sends `op` with a fresh "id" (unless it has one) and waits for its ok/error event.
  std::optional<nlohmann::json> call(nlohmann::json op, std::chrono::milliseconds timeout = 5000ms);
  /// The clientId from the "attached" line (waits for it; "" if none came in time).
  std::string clientId(std::chrono::milliseconds timeout = 10000ms);
  const std::vector<nlohmann::json>& seen() const { return seen_; }

  bool kill9(std::chrono::milliseconds timeout = 5000ms) { return proc_.kill9(timeout); }
  bool stop(std::chrono::milliseconds timeout = 5000ms) { return proc_.stop(timeout); }
  bool resume(std::chrono::milliseconds timeout = 5000ms) { return proc_.resume(timeout); }

 private:
  ChildProcess proc_;
  std::vector<nlohmann::json> seen_;
  std::vector<nlohmann::json> pending_;  // read but not yet matched
  std::string clientId_;
  long long nextId_ = 1;
};

/// Number of open fds of a process (/proc/PID/fd).
int openFdCount(pid_t pid);
/// Resident set size in KiB (/proc/PID/status VmRSS); -1 when it cannot be read.
long rssKiB(pid_t pid);
/// The state letter of a process from /proc/PID/stat ('R', 'S', 'T' for stopped, 'Z', ...); 0
/// when it cannot be read (no such process).
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

// ------------------------------------------------------------------------------------------------

/// What a Scope starts, and with what.
struct ScopeOptions {
  std::string scope;                    // "" = testScope()
  std::vector<std::string> daemonArgs;  // sw_daemon flags (--sw-version, --max-clients, …)
  bool startDaemon = true;              // false: the test calls startDaemon() (or a page spawns one)
  std::vector<std::string> env;         // "NAME=value" for every process the Scope starts
  std::string swDaemon;                 // "" = swDaemonPath()
  std::string pageClient;               // "" = pageClientPath()
  std::chrono::milliseconds readyTimeout = 20000ms;  // for the daemon's socket, a page's "attached"
};

/// One private swipc world for a test; see the top of this file. Processes it starts get
/// SWIPC_RUNTIME_DIR=runtimeDir() and XDG_STATE_HOME=root()/state in their environment, so
/// programs of the user's find the scope's daemon and state without flags (the scope name they
/// still need: name()).
/// @concurrent: one thread (the test's).
class Scope {
 public:
  /// Makes the directories and, with opts.startDaemon, starts the daemon and waits until it is
  /// ready (throws std::runtime_error with its log when it is not).
  explicit Scope(ScopeOptions opts = {});
  /// SIGKILLs and reaps every process started here, SIGKILLs any other process whose command
  /// line names root(), and removes root().
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

  const std::string& name() const { return opts_.scope; }
  /// The temporary directory holding everything below.
  const std::string& root() const { return root_.path(); }
  /// The runtime dir (--runtime-dir; the scope's socket is runtimeDir()/name()/daemon.sock).
  const std::string& runtimeDir() const { return runtimeDir_; }
  /// The daemon's --state-dir (root()/state/swipc/name()); the same across restartDaemon().
  const std::string& stateDir() const { return stateDir_; }
  /// The "NAME=value" entries every process started here gets (ScopeOptions::env included).
  std::vector<std::string> environment() const;

  /// Starts sw_daemon --scope name() --runtime-dir runtimeDir() --state-dir stateDir()
  /// <ScopeOptions::daemonArgs> <extraArgs>, waits until it is ready (throws when it is not).
  /// A daemon already running is SIGKILLed first.
  Daemon& startDaemon(std::vector<std::string> extraArgs = {});
  /// The daemon started last (throws std::logic_error if none was).
  Daemon& daemon();
  bool hasDaemon() const { return daemon_ != nullptr; }
  /// SIGTERM; waits for its exit: the exit code, -signal, or nullopt when it was still running at
  /// the deadline (then it is SIGKILLed).
  std::optional<int> stopDaemon(std::chrono::milliseconds timeout = 10000ms);
  /// kill -9 of the daemon, reaped.
  void killDaemon();
  /// Stops the daemon (SIGTERM, or kill -9 with `kill9`) and starts it again with the same
  /// arguments, scope and state dir; the new one is ready.
  Daemon& restartDaemon(bool kill9 = false);

  /// page_client --scope … --runtime-dir … <extraArgs> script; waits for its "attached" line
  /// (throws when none comes). Stable reference until the Scope is destroyed.
  ScriptClient& page(std::vector<std::string> extraArgs = {});
  /// Like page(), but for the user's own program speaking the same JSON lines: argv as given,
  /// plus extraEnv; does not wait for anything.
  ScriptClient& scriptPage(const std::vector<std::string>& argv, std::vector<std::string> extraEnv = {});
  /// Any program (argv[0] a path): environment() plus extraEnv; stdin/stdout piped as opts says.
  ChildProcess& spawn(const std::vector<std::string>& argv, ChildProcess::Options opts = {});

 private:
  void startDaemonWith(const std::vector<std::string>& args);
  ChildProcess::Options childOptions(std::vector<std::string> extraEnv) const;
  void killStrays();

  TempDir root_;  // first: removed after every process is gone
  ScopeOptions opts_;
  std::string runtimeDir_;
  std::string stateDir_;
  std::vector<std::string> daemonExtraArgs_;        // startDaemon()'s
  std::vector<std::string> daemonArgs_;             // what the last daemon was started with
  std::unique_ptr<Daemon> daemon_;
  std::vector<std::unique_ptr<Daemon>> retired_;    // earlier daemons (dead), kept for references
  std::vector<std::unique_ptr<ScriptClient>> pages_;
  std::vector<std::unique_ptr<ChildProcess>> processes_;
};

/// A GoogleTest fixture holding one Scope per test: made in SetUp() from scopeOptions(),
/// destroyed in TearDown() (so after a failed assertion too).
class ScopeFixture : public ::testing::Test {
 protected:
  /// Override to choose the daemon's flags and the rest.
  virtual ScopeOptions scopeOptions() { return {}; }
  void SetUp() override;
  void TearDown() override;

  Scope& scope();
  Daemon& daemon() { return scope().daemon(); }
  ScriptClient& page(std::vector<std::string> extraArgs = {}) { return scope().page(std::move(extraArgs)); }

 private:
  std::unique_ptr<Scope> scope_;
};

}  // namespace swipc::testing
