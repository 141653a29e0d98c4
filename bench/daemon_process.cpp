#include "daemon_process.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

namespace swipc::bench {

namespace {
using namespace std::chrono_literals;
constexpr auto STOP_DEADLINE = 5s;

std::string makeTempDir(const char* what) {
  std::string tmpl = std::string("/tmp/swipc-bench-") + what + ".XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  return tmpl;
}
}  // namespace

std::string defaultDaemonPath() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "sw_daemon";
  return (self.parent_path().parent_path() / "sw_daemon" / "sw_daemon").string();
}

DaemonProcess::DaemonProcess(const std::string& path, const std::string& scope,
                             const std::vector<std::string>& extraArgs)
    : runtimeDir_(makeTempDir("run")), stateDir_(makeTempDir("state")) {
  std::vector<std::string> argv = {path,          "--scope",     scope,    "--runtime-dir", runtimeDir_,
                                   "--state-dir", stateDir_, "--log-level", "warn"};
  argv.insert(argv.end(), extraArgs.begin(), extraArgs.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  std::fflush(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    ::dup2(STDERR_FILENO, STDOUT_FILENO);
    ::execv(cargv[0], cargv.data());
    const char msg[] = "bench: execv(sw_daemon) failed\n";
    ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
    ::_exit(127);
  }
}

DaemonProcess::~DaemonProcess() {
  try {
    stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench: stopping sw_daemon: %s\n", e.what());
  }
  std::error_code ec;
  std::filesystem::remove_all(runtimeDir_, ec);
  std::filesystem::remove_all(stateDir_, ec);
}

bool DaemonProcess::alive() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    exitStatus_ = status;
    pid_ = -1;
    return false;
  }
  return true;
}

void DaemonProcess::stop() {
  if (!alive()) return;
  ::kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + STOP_DEADLINE;
  auto backoff = 1ms;
  while (alive()) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "bench: sw_daemon ignored SIGTERM for %llds; killing it\n",
                   static_cast<long long>(STOP_DEADLINE.count()));
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(20));
  }
}

swipc::Client attachWithRetry(DaemonProcess& daemon, const std::string& scope, std::chrono::microseconds spin) {
  swipc::ClientOptions opts;
  opts.scope = scope;
  opts.runtimeDir = daemon.runtimeDir();
  opts.attachTimeout = 2000ms;
  opts.spin = spin;
  opts.reconnect = false;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  auto backoff = 1ms;
  for (;;) {
    auto client = swipc::Client::connect(opts);
    if (client) return std::move(client).value();
    if (!daemon.alive())
      throw std::runtime_error("sw_daemon exited (status " + std::to_string(daemon.exitStatus()) +
                               ") before a client could attach: " + client.error().describe());
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("could not attach to sw_daemon: " + client.error().describe());
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
  }
}

}  // namespace swipc::bench
