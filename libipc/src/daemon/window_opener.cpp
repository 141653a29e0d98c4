#include "daemon/window_opener.h"

#include <algorithm>

#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "core/identity.h"
#include "core/log.h"

extern char** environ;

namespace swipc::daemon {

namespace {

std::string findPageClient() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    std::string dir(buf, static_cast<size_t>(n));
    dir = dir.substr(0, dir.rfind('/'));
    for (const std::string& cand : {dir + "/page_client", dir + "/../page_client/page_client"}) {
      if (::access(cand.c_str(), X_OK) == 0) return cand;
    }
  }
  return "page_client";  // from PATH
}

void replaceAll(std::string& s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) s.replace(pos, from.size(), to);
}

}  // namespace

std::vector<std::string> WindowOpener::windowArgv(const std::string& url) const {
  std::vector<std::string> argv = opts_.windowCommand;
  if (argv.empty())
    argv = {findPageClient(), "--scope", "{scope}", "--runtime-dir", "{runtime-dir}", "--url", "{url}", "listen"};
  for (auto& a : argv) {
    replaceAll(a, "{url}", url);
    replaceAll(a, "{scope}", opts_.scope);
    replaceAll(a, "{runtime-dir}", runtimeDir_);
  }
  return argv;
}

void WindowOpener::open(const std::string& url, Done done) {
  // Each open is a process: a service worker flooded with OPEN_WINDOW requests must not fork
  // without bound. Pages that attached no longer count (they are clients, under --max-clients).
  const auto starting = static_cast<size_t>(
      std::count_if(opens_.begin(), opens_.end(), [](const auto& o) { return !o.second.attached; }));
  if (starting >= opts_.maxOpenWindows) {
    ++counters_.openWindowRefused;
    core::log().warn("openWindow refused: {} windows are already starting (--max-open-windows)", starting);
    done(std::nullopt);
    return;
  }
  char hex[33];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(core::randomU64()),
                static_cast<unsigned long long>(core::randomU64()));
  const std::string token = hex;
  const auto argv = windowArgv(url);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> envStore;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "SWIPC_OPEN_TOKEN=", 17) != 0) envStore.emplace_back(*e);
  envStore.push_back("SWIPC_OPEN_TOKEN=" + token);
  std::vector<char*> envp;
  for (auto& e : envStore) envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);  // the daemon blocks signals it reads via signalfd
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], nullptr, &attr, args.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    ++counters_.openWindowFailures;
    core::log().warn("openWindow({}): cannot start {}: {}", url, argv[0], std::strerror(rc));
    done(std::nullopt);
    return;
  }
  Spawned o;
  o.pid = pid;
  o.done = std::move(done);
  o.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (o.pidfd) {
    auto w = loop_.watch(o.pidfd.get(), EPOLLIN, [this, token](uint32_t) { onExit(token); });
    if (w) o.watch = *w;
  }
  o.timer = loop_.addTimer(deadlineIn(opts_.openWindowTimeout), [this, token] {
    auto it = opens_.find(token);
    if (it == opens_.end() || it->second.attached) return;
    it->second.timer = 0;
    ::kill(it->second.pid, SIGKILL);  // reaped by the pidfd watch, so no zombie is left
    finish(token, std::nullopt,
           "the page did not attach within " + std::to_string(opts_.openWindowTimeout.count()) + " ms");
  });
  core::log().info("openWindow({}): spawned pid={} ({})", url, pid, argv[0]);
  opens_.emplace(token, std::move(o));
}

void WindowOpener::onExit(const std::string& token) {
  auto it = opens_.find(token);
  if (it == opens_.end()) return;
  int status = 0;
  if (::waitpid(it->second.pid, &status, WNOHANG) != it->second.pid) return;
  std::string why = WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                                      : "killed by signal " + std::to_string(WTERMSIG(status));
  const auto watch = it->second.watch;
  finish(token, std::nullopt, "the page " + why + " before attaching");  // `done` may open another
  loop_.unwatch(watch);
  opens_.erase(token);
}

bool WindowOpener::expects(const std::string& token) const {
  if (token.empty()) return false;
  auto it = opens_.find(token);
  return it != opens_.end() && !it->second.attached;
}

void WindowOpener::finish(const std::string& token, std::optional<ClientHandle> result, const std::string& why) {
  auto it = opens_.find(token);
  if (it == opens_.end() || !it->second.done) return;
  auto done = std::move(it->second.done);
  it->second.done = nullptr;
  if (it->second.timer) loop_.cancelTimer(it->second.timer);
  it->second.timer = 0;
  if (result) {
    it->second.attached = true;
    ++counters_.windowsOpened;
  } else {
    ++counters_.openWindowFailures;
    core::log().warn("openWindow: pid={} failed: {}", it->second.pid, why);
  }
  done(std::move(result));
}

void WindowOpener::stop() {
  for (auto& [token, o] : opens_) {
    loop_.unwatch(o.watch);
    loop_.cancelTimer(o.timer);
  }
  opens_.clear();  // spawned pages live on; they re-attach to the next daemon
}

}  // namespace swipc::daemon
