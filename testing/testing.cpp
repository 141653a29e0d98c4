// swipc::testing (libipc/include/swipc/testing.h): child processes, the daemon and page drivers,
// and the Scope that owns one private swipc world for a test.
#include "swipc/testing.h"

#ifdef SWIPC_TESTING_BINDIR_FROM_LIBDIR
#include "swipc/types.h"
#endif

#include <dirent.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>

namespace swipc::testing {

// ---- binaries ------------------------------------------------------------------------------------

namespace {

bool isExecutableFile(const std::string& path) {
  struct stat st {};
  return !path.empty() && ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

#ifdef SWIPC_TESTING_BINDIR_FROM_LIBDIR
/// The directory of the libswipc.so this process loaded ("" when none): the installed kit's
/// binaries lie at SWIPC_TESTING_BINDIR_FROM_LIBDIR from it, wherever the package was unpacked.
std::string loadedLibswipcDir() {
  // A use of libswipc, so a test that calls nothing of it still loads it (linkers drop an unused
  // library with --as-needed).
  static auto* volatile const anchor = &swipc::isValidScope;
  (void)anchor;
  std::string dir;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) -> int {
        const std::string_view name = info->dlpi_name ? info->dlpi_name : "";
        const size_t slash = name.rfind('/');
        if (slash == std::string_view::npos || name.substr(slash + 1).rfind("libswipc.so", 0) != 0) return 0;
        *static_cast<std::string*>(out) = std::string(name.substr(0, slash));
        return 1;
      },
      &dir);
  return dir;
}
#endif

/// $envName, else the installed (or in-tree) binary, else `name` on $PATH, else `name`.
std::string findBinary(const char* envName, const std::string& name, [[maybe_unused]] const char* inTree) {
  if (const char* e = std::getenv(envName); e && *e) return e;
#ifdef SWIPC_TESTING_BINDIR_FROM_LIBDIR
  if (std::string lib = loadedLibswipcDir(); !lib.empty()) {
    std::string p = lib + "/" SWIPC_TESTING_BINDIR_FROM_LIBDIR "/" + name;
    if (isExecutableFile(p)) return p;
  }
#endif
  if (inTree && isExecutableFile(inTree)) return inTree;
  if (const char* path = std::getenv("PATH")) {
    std::string_view rest = path;
    while (!rest.empty()) {
      const size_t colon = rest.find(':');
      std::string dir(rest.substr(0, colon));
      rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
      if (dir.empty()) continue;
      if (std::string p = dir + "/" + name; isExecutableFile(p)) return p;
    }
  }
  return name;  // exec fails, and the child's stderr says so
}

#ifdef SWIPC_TESTING_IN_TREE_SW_DAEMON
constexpr const char* IN_TREE_SW_DAEMON = SWIPC_TESTING_IN_TREE_SW_DAEMON;
constexpr const char* IN_TREE_PAGE_CLIENT = SWIPC_TESTING_IN_TREE_PAGE_CLIENT;
#else
constexpr const char* IN_TREE_SW_DAEMON = nullptr;
constexpr const char* IN_TREE_PAGE_CLIENT = nullptr;
#endif

}  // namespace

std::string swDaemonPath() { return findBinary("SWIPC_SW_DAEMON", "sw_daemon", IN_TREE_SW_DAEMON); }
std::string pageClientPath() { return findBinary("SWIPC_PAGE_CLIENT", "page_client", IN_TREE_PAGE_CLIENT); }

// ---- small helpers -------------------------------------------------------------------------------

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = TestClock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (TestClock::now() >= deadline) return false;
    ::usleep(2000);
  }
}

std::string testScope() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (!info) return "swipc-test";
  return std::string(info->name()).substr(0, 48);
}

long long msSince(TestClock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(TestClock::now() - t0).count();
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "swipc-test-XXXXXX").string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp " + tmpl + ": " + std::strerror(errno));
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

// ---- ChildProcess --------------------------------------------------------------------------------

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const Options& opts) {
  if (argv.empty()) throw std::invalid_argument("ChildProcess: empty argv");
  int in[2] = {-1, -1};
  int out[2] = {-1, -1};
  if (opts.pipeStdin && ::pipe2(in, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  if (opts.pipeStdout && ::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  std::string dir = opts.stderrDir;
  if (dir.empty()) {
    std::error_code ec;
    dir = std::filesystem::temp_directory_path(ec).string();
    if (ec || dir.empty()) dir = "/tmp";
  }
  std::string tmpl = dir + "/swipc-child-stderr-XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  int errFd = ::mkostemp(name.data(), O_CLOEXEC);
  if (errFd < 0) throw std::runtime_error("mkstemp " + tmpl + ": " + std::strerror(errno));
  stderrPath_ = name.data();
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork");
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed test never leaves its daemon behind
    if (opts.pipeStdin) ::dup2(in[0], 0);
    if (opts.pipeStdout) ::dup2(out[1], 1);
    ::dup2(errFd, 2);
    for (const auto& e : opts.extraEnv) ::putenv(const_cast<char*>(e.c_str()));
    ::execv(args[0], args.data());
    std::fprintf(stderr, "exec %s failed: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(errFd);
  if (opts.pipeStdin) {
    ::close(in[0]);
    stdin_ = in[1];
  }
  if (opts.pipeStdout) {
    ::close(out[1]);
    stdout_ = out[0];
  }
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept { *this = std::move(o); }

ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  if (this != &o) {
    reset();
    pid_ = std::exchange(o.pid_, -1);
    stdin_ = std::exchange(o.stdin_, -1);
    stdout_ = std::exchange(o.stdout_, -1);
    stderrPath_ = std::exchange(o.stderrPath_, {});
    buffer_ = std::move(o.buffer_);
    exited_ = o.exited_;
    status_ = o.status_;
  }
  return *this;
}

ChildProcess::~ChildProcess() { reset(); }

void ChildProcess::reset() {
  if (pid_ > 0 && !exited_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status_, 0);
  }
  if (stdin_ >= 0) ::close(stdin_);
  if (stdout_ >= 0) ::close(stdout_);
  if (!stderrPath_.empty()) ::unlink(stderrPath_.c_str());
  pid_ = -1;
  stdin_ = stdout_ = -1;
  stderrPath_.clear();
  exited_ = false;
}

bool ChildProcess::running() {
  if (pid_ <= 0 || exited_) return false;
  int st;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    exited_ = true;
    status_ = st;
    return false;
  }
  return true;
}

void ChildProcess::signal(int sig) {
  if (pid_ > 0 && !exited_) ::kill(pid_, sig);
}

std::optional<int> ChildProcess::waitExit(std::chrono::milliseconds timeout) {
  auto deadline = TestClock::now() + timeout;
  for (;;) {
    if (!running()) {
      if (exited_) return status_;
      return std::nullopt;
    }
    if (TestClock::now() >= deadline) return std::nullopt;
    // Bounded poll on the process's state: a pidfd would be nicer; 2 ms granularity is plenty.
    ::usleep(2000);
  }
}

std::optional<int> ChildProcess::waitExitCode(std::chrono::milliseconds timeout) {
  auto st = waitExit(timeout);
  if (!st) return std::nullopt;
  if (WIFEXITED(*st)) return WEXITSTATUS(*st);
  if (WIFSIGNALED(*st)) return -WTERMSIG(*st);
  return std::nullopt;
}

bool ChildProcess::kill9(std::chrono::milliseconds timeout) {
  signal(SIGKILL);
  return waitExit(timeout).has_value();
}

bool ChildProcess::stop(std::chrono::milliseconds timeout) {
  if (!running()) return false;
  signal(SIGSTOP);
  return eventually([&] { return processState(pid_) == 'T'; }, timeout);
}

bool ChildProcess::resume(std::chrono::milliseconds timeout) {
  if (!running()) return false;
  signal(SIGCONT);
  return eventually([&] { return processState(pid_) != 'T'; }, timeout);
}

bool ChildProcess::writeLine(const std::string& line) {
  std::string l = line + "\n";
  const char* p = l.data();
  size_t n = l.size();
  while (n) {
    ssize_t w = ::write(stdin_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

void ChildProcess::closeStdin() {
  if (stdin_ >= 0) ::close(stdin_);
  stdin_ = -1;
}

std::optional<std::string> ChildProcess::readLine(std::chrono::milliseconds timeout) {
  auto deadline = TestClock::now() + timeout;
  for (;;) {
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    auto now = TestClock::now();
    if (now >= deadline || stdout_ < 0) return std::nullopt;
    pollfd p{stdout_, POLLIN, 0};
    int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count()) + 1;
    if (::poll(&p, 1, ms) <= 0) continue;
    char buf[65536];
    ssize_t r = ::read(stdout_, buf, sizeof buf);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      return std::nullopt;  // EOF
    }
    buffer_.append(buf, static_cast<size_t>(r));
  }
}

std::string ChildProcess::stderrText() const {
  std::ifstream f(stderrPath_);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// ---- Daemon, ScriptClient ------------------------------------------------------------------------

Daemon::Daemon(const std::string& runtimeDir, const std::string& scope, std::vector<std::string> extraArgs)
    : Daemon(Options{.runtimeDir = runtimeDir, .scope = scope, .extraArgs = std::move(extraArgs)}) {}

Daemon::Daemon(const Options& opts) : socketPath_(opts.runtimeDir + "/" + opts.scope + "/daemon.sock") {
  std::vector<std::string> argv{opts.path.empty() ? swDaemonPath() : opts.path, "--scope", opts.scope,
                                "--runtime-dir", opts.runtimeDir};
  const auto& extra = opts.extraArgs;
  if (std::find(extra.begin(), extra.end(), "--log-level") == extra.end()) {
    argv.push_back("--log-level");
    argv.push_back("info");
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  ChildProcess::Options o;
  o.extraEnv = opts.extraEnv;
  o.stderrDir = opts.stderrDir;
  proc_ = ChildProcess(argv, o);
}

bool Daemon::waitReady(std::chrono::milliseconds timeout) {
  return eventually(
      [&] {
        int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, socketPath_.c_str(), sizeof a.sun_path - 1);
        bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        ::close(fd);
        return ok;
      },
      timeout);
}

ScriptClient::ScriptClient(const std::string& runtimeDir, const std::string& scope, std::vector<std::string> extraArgs) {
  std::vector<std::string> argv{pageClientPath(), "--scope", scope, "--runtime-dir", runtimeDir};
  argv.insert(argv.end(), extraArgs.begin(), extraArgs.end());
  argv.push_back("script");
  ChildProcess::Options o;
  o.pipeStdin = true;
  o.pipeStdout = true;
  proc_ = ChildProcess(argv, o);
}

ScriptClient::ScriptClient(const std::vector<std::string>& argv, ChildProcess::Options opts) {
  opts.pipeStdin = true;
  opts.pipeStdout = true;
  proc_ = ChildProcess(argv, opts);
}

void ScriptClient::send(const nlohmann::json& op) { proc_.writeLine(op.dump()); }

std::optional<nlohmann::json> ScriptClient::waitFor(const std::function<bool(const nlohmann::json&)>& pred,
                                                    std::chrono::milliseconds timeout) {
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (pred(*it)) {
      auto j = *it;
      pending_.erase(it);
      return j;
    }
  }
  auto deadline = TestClock::now() + timeout;
  for (;;) {
    auto now = TestClock::now();
    if (now >= deadline) return std::nullopt;
    auto line = proc_.readLine(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now));
    if (!line) return std::nullopt;
    auto j = nlohmann::json::parse(*line, nullptr, false);
    if (j.is_discarded()) continue;
    seen_.push_back(j);
    if (pred(j)) return j;
    pending_.push_back(j);
  }
}

std::optional<nlohmann::json> ScriptClient::waitEvent(const std::string& name, std::chrono::milliseconds timeout) {
  return waitFor([&](const nlohmann::json& j) { return j.value("event", "") == name; }, timeout);
}

std::optional<nlohmann::json> ScriptClient::waitResult(const nlohmann::json& id, std::chrono::milliseconds timeout) {
  return waitFor(
      [&](const nlohmann::json& j) {
        auto ev = j.value("event", "");
        return (ev == "ok" || ev == "error") && j.contains("id") && j["id"] == id;
      },
      timeout);
}

std::optional<nlohmann::json> ScriptClient::call(nlohmann::json op, std::chrono::milliseconds timeout) {
  if (!op.contains("id")) op["id"] = "call-" + std::to_string(nextId_++);
  const nlohmann::json id = op["id"];
  send(op);
  return waitResult(id, timeout);
}

std::string ScriptClient::clientId(std::chrono::milliseconds timeout) {
  if (clientId_.empty()) {
    auto a = waitEvent("attached", timeout);
    if (a) clientId_ = a->value("clientId", "");
  }
  return clientId_;
}

// ---- /proc readers -------------------------------------------------------------------------------

int openFdCount(pid_t pid) {
  int n = 0;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n;
}

long rssKiB(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

char processState(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(f, stat);
  // "PID (comm) S ...": comm may hold spaces and parentheses, the state follows the last ')'.
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return 0;
  return stat[paren + 2];
}

std::optional<std::vector<unsigned long long>> blockedSyscall(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/syscall");
  std::string first;
  if (!(f >> first) || first == "running") return std::nullopt;
  std::vector<unsigned long long> out;
  char* end = nullptr;
  out.push_back(std::strtoull(first.c_str(), &end, 0));
  if (*end != '\0') return std::nullopt;  // not a number
  for (std::string arg; out.size() < 4 && f >> arg;) out.push_back(std::strtoull(arg.c_str(), nullptr, 0));
  if (out.size() < 4) return std::nullopt;
  return out;
}

std::vector<std::string> devShmEntries() {
  std::vector<std::string> out;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') out.emplace_back(e->d_name);
    ::closedir(d);
  }
  return out;
}

namespace {
/// Every "counters clients=N {...}" line of a daemon log, parsed (clients added to the object).
std::vector<nlohmann::json> counterLines(const std::string& log) {
  static constexpr std::string_view MARK = "counters clients=";
  std::vector<nlohmann::json> out;
  for (size_t at = log.find(MARK); at != std::string::npos; at = log.find(MARK, at + 1)) {
    const size_t eol = log.find('\n', at);
    if (eol == std::string::npos) break;  // not complete yet
    const std::string l = log.substr(at, eol - at);
    const size_t brace = l.find('{');
    if (brace == std::string::npos) continue;
    auto j = nlohmann::json::parse(l.substr(brace), nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    j["clients"] = std::atol(l.c_str() + MARK.size());
    out.push_back(std::move(j));
  }
  return out;
}
}  // namespace

std::optional<nlohmann::json> readCounters(Daemon& daemon, std::chrono::milliseconds timeout) {
  const size_t before = counterLines(daemon.log()).size();
  daemon.process().signal(SIGUSR1);
  std::optional<nlohmann::json> result;
  eventually(
      [&] {
        auto lines = counterLines(daemon.log());
        if (lines.size() <= before) return false;
        result = lines.back();
        return true;
      },
      timeout);
  return result;
}

// ---- Scope ---------------------------------------------------------------------------------------

namespace {

void makePrivateDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
    throw std::runtime_error("mkdir " + path + ": " + std::strerror(errno));
}

bool hasFlag(const std::vector<std::string>& args, const std::string& flag) {
  return std::any_of(args.begin(), args.end(),
                     [&](const std::string& a) { return a == flag || a.rfind(flag + "=", 0) == 0; });
}

/// Whether `arg` names `dir` or a path below it.
bool namesDir(std::string_view arg, std::string_view dir) {
  for (size_t at = arg.find(dir); at != std::string_view::npos; at = arg.find(dir, at + 1)) {
    const size_t end = at + dir.size();
    if (end == arg.size() || arg[end] == '/') return true;
  }
  return false;
}

}  // namespace

Scope::Scope(ScopeOptions opts) : opts_(std::move(opts)) {
  if (opts_.scope.empty()) opts_.scope = testScope();
  if (opts_.swDaemon.empty()) opts_.swDaemon = swDaemonPath();
  if (opts_.pageClient.empty()) opts_.pageClient = pageClientPath();
  runtimeDir_ = root() + "/run";
  makePrivateDir(runtimeDir_);
  makePrivateDir(root() + "/state");
  makePrivateDir(root() + "/state/swipc");
  stateDir_ = root() + "/state/swipc/" + opts_.scope;
  makePrivateDir(stateDir_);
  if (opts_.startDaemon) startDaemon();
}

Scope::~Scope() {
  pages_.clear();  // each SIGKILLed and reaped
  processes_.clear();
  daemon_.reset();
  retired_.clear();
  killStrays();
  // root_ (declared first) is removed last.
}

std::vector<std::string> Scope::environment() const {
  std::vector<std::string> env{"SWIPC_RUNTIME_DIR=" + runtimeDir_, "XDG_STATE_HOME=" + root() + "/state"};
  env.insert(env.end(), opts_.env.begin(), opts_.env.end());
  return env;
}

ChildProcess::Options Scope::childOptions(std::vector<std::string> extraEnv) const {
  ChildProcess::Options o;
  o.extraEnv = environment();
  o.extraEnv.insert(o.extraEnv.end(), extraEnv.begin(), extraEnv.end());
  o.stderrDir = root();
  return o;
}

Daemon& Scope::startDaemon(std::vector<std::string> extraArgs) {
  daemonExtraArgs_ = std::move(extraArgs);
  std::vector<std::string> args;
  if (!hasFlag(opts_.daemonArgs, "--state-dir") && !hasFlag(daemonExtraArgs_, "--state-dir"))
    args = {"--state-dir", stateDir_};
  args.insert(args.end(), opts_.daemonArgs.begin(), opts_.daemonArgs.end());
  args.insert(args.end(), daemonExtraArgs_.begin(), daemonExtraArgs_.end());
  startDaemonWith(args);
  return *daemon_;
}

void Scope::startDaemonWith(const std::vector<std::string>& args) {
  if (daemon_) {
    daemon_->kill9();
    retired_.push_back(std::move(daemon_));  // references the test holds stay valid
  }
  daemon_ = std::make_unique<Daemon>(Daemon::Options{.runtimeDir = runtimeDir_,
                                                     .scope = opts_.scope,
                                                     .extraArgs = args,
                                                     .extraEnv = environment(),
                                                     .path = opts_.swDaemon,
                                                     .stderrDir = root()});
  daemonArgs_ = args;
  if (!daemon_->waitReady(opts_.readyTimeout)) {
    const auto code = daemon_->process().waitExitCode(0ms);
    throw std::runtime_error("swipc::testing: " + opts_.swDaemon + " for scope '" + opts_.scope + "' not ready within " +
                             std::to_string(opts_.readyTimeout.count()) + " ms" +
                             (code ? " (exited " + std::to_string(*code) + ")" : "") + "; its log:\n" + daemon_->log());
  }
}

Daemon& Scope::daemon() {
  if (!daemon_) throw std::logic_error("swipc::testing::Scope: no daemon was started");
  return *daemon_;
}

std::optional<int> Scope::stopDaemon(std::chrono::milliseconds timeout) {
  auto& d = daemon();
  d.process().signal(SIGTERM);
  auto code = d.process().waitExitCode(timeout);
  if (!code) d.kill9();
  return code;
}

void Scope::killDaemon() { daemon().kill9(); }

Daemon& Scope::restartDaemon(bool kill9) {
  if (kill9)
    killDaemon();
  else
    stopDaemon();
  startDaemonWith(daemonArgs_);
  return *daemon_;
}

ScriptClient& Scope::page(std::vector<std::string> extraArgs) {
  std::vector<std::string> argv{opts_.pageClient, "--scope", opts_.scope, "--runtime-dir", runtimeDir_};
  argv.insert(argv.end(), extraArgs.begin(), extraArgs.end());
  argv.push_back("script");
  auto& p = *pages_.emplace_back(std::make_unique<ScriptClient>(argv, childOptions({})));
  if (p.clientId(opts_.readyTimeout).empty()) {
    throw std::runtime_error("swipc::testing: page_client (pid " + std::to_string(p.pid()) + ") of scope '" +
                             opts_.scope + "' printed no \"attached\" line within " +
                             std::to_string(opts_.readyTimeout.count()) + " ms; its stderr:\n" +
                             p.process().stderrText());
  }
  return p;
}

ScriptClient& Scope::scriptPage(const std::vector<std::string>& argv, std::vector<std::string> extraEnv) {
  return *pages_.emplace_back(std::make_unique<ScriptClient>(argv, childOptions(std::move(extraEnv))));
}

ChildProcess& Scope::spawn(const std::vector<std::string>& argv, ChildProcess::Options opts) {
  auto o = childOptions(std::move(opts.extraEnv));
  o.pipeStdin = opts.pipeStdin;
  o.pipeStdout = opts.pipeStdout;
  if (!opts.stderrDir.empty()) o.stderrDir = opts.stderrDir;
  return *processes_.emplace_back(std::make_unique<ChildProcess>(argv, o));
}

void Scope::killStrays() {
  const pid_t self = ::getpid();
  std::vector<pid_t> killed;
  if (DIR* d = ::opendir("/proc")) {
    while (dirent* e = ::readdir(d)) {
      char* end = nullptr;
      const long pid = std::strtol(e->d_name, &end, 10);
      if (pid <= 0 || *end != '\0' || pid == self) continue;
      std::ifstream f("/proc/" + std::string(e->d_name) + "/cmdline", std::ios::binary);
      std::string cmdline((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      std::string_view rest = cmdline;
      bool ours = false;
      while (!rest.empty() && !ours) {
        const size_t nul = rest.find('\0');
        ours = namesDir(rest.substr(0, nul), root());
        rest = nul == std::string_view::npos ? std::string_view() : rest.substr(nul + 1);
      }
      if (ours && ::kill(static_cast<pid_t>(pid), SIGKILL) == 0) killed.push_back(static_cast<pid_t>(pid));
    }
    ::closedir(d);
  }
  // Not our children: whoever reaps them, they are gone (or zombies holding nothing) soon.
  eventually(
      [&] {
        return std::all_of(killed.begin(), killed.end(), [](pid_t p) {
          const char s = processState(p);
          return s == 0 || s == 'Z';
        });
      },
      5000ms);
}

// ---- ScopeFixture --------------------------------------------------------------------------------

void ScopeFixture::SetUp() { scope_ = std::make_unique<Scope>(scopeOptions()); }

void ScopeFixture::TearDown() { scope_.reset(); }

Scope& ScopeFixture::scope() {
  if (!scope_) throw std::logic_error("swipc::testing::ScopeFixture: no Scope (SetUp failed or not run)");
  return *scope_;
}

}  // namespace swipc::testing
