#include "process.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>

namespace swipc::testing {

std::string swDaemonPath() { return SWIPC_SW_DAEMON_PATH; }
std::string pageClientPath() { return SWIPC_PAGE_CLIENT_PATH; }
std::string hostileClientPath() { return SWIPC_HOSTILE_CLIENT_PATH; }
std::string bcPeerPath() { return SWIPC_BC_PEER_PATH; }
std::string portPeerPath() { return SWIPC_PORT_PEER_PATH; }

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "swipc-test-XXXXXX").string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const Options& opts) {
  int in[2] = {-1, -1};
  int out[2] = {-1, -1};
  if (opts.pipeStdin && ::pipe2(in, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  if (opts.pipeStdout && ::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  char tmpl[] = "/tmp/swipc-child-stderr-XXXXXX";
  int errFd = ::mkstemp(tmpl);
  if (errFd < 0) throw std::runtime_error("mkstemp");
  stderrPath_ = tmpl;
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

// ------------------------------------------------------------------------------------------------

Daemon::Daemon(const std::string& runtimeDir, const std::string& scope, std::vector<std::string> extraArgs)
    : socketPath_(runtimeDir + "/" + scope + "/daemon.sock") {
  std::vector<std::string> argv{swDaemonPath(), "--scope", scope, "--runtime-dir", runtimeDir};
  if (std::find(extraArgs.begin(), extraArgs.end(), "--log-level") == extraArgs.end()) {
    argv.push_back("--log-level");
    argv.push_back("info");
  }
  argv.insert(argv.end(), extraArgs.begin(), extraArgs.end());
  proc_ = ChildProcess(argv, {});
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

std::string ScriptClient::clientId() {
  if (clientId_.empty()) {
    auto a = waitEvent("attached", 10s);
    if (a) clientId_ = a->value("clientId", "");
  }
  return clientId_;
}

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

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = TestClock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (TestClock::now() >= deadline) return false;
    ::usleep(2000);
  }
}

}  // namespace swipc::testing
