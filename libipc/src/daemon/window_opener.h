// WindowOpener: clients.openWindow(url). It spawns a page process (ServiceWorkerOptions::
// windowCommand, default `page_client listen`) with a one-time open token in its environment
// (SWIPC_OPEN_TOKEN), watches it through a pidfd, and finishes the call exactly once: with the new
// client when a page presenting that token attaches, or with nullopt when the process cannot
// start, exits first, or does not attach within openWindowTimeout (it is then killed and reaped).
//
// @concurrent: single-threaded; the daemon's loop thread.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/unique_fd.h"
#include "core/event_loop.h"
#include "swipc/clients.h"
#include "swipc/service_worker.h"

namespace swipc::daemon {

class WindowOpener {
 public:
  using Done = std::function<void(std::optional<ClientHandle>)>;

  WindowOpener(core::EventLoop& loop, Counters& counters, const ServiceWorkerOptions& options)
      : loop_(loop), counters_(counters), opts_(options) {}
  ~WindowOpener() { stop(); }
  WindowOpener(const WindowOpener&) = delete;
  WindowOpener& operator=(const WindowOpener&) = delete;

  /// The runtime directory the spawned pages attach under ("{runtime-dir}" in the command).
  void setRuntimeDir(std::string dir) { runtimeDir_ = std::move(dir); }
  /// Spawns the page; `done` runs once, on the loop thread (at once when the spawn fails).
  void open(const std::string& url, Done done);
  /// A page presenting `token` is attaching: true when it is one this opener still waits for.
  bool expects(const std::string& token) const;
  /// Ends the openWindow call of `token` with `result` (nullopt: failed, because `why`).
  void finish(const std::string& token, std::optional<ClientHandle> result, const std::string& why);
  /// Forgets every spawned page (they live on, and re-attach to the next daemon).
  void stop();
  /// The argv open(url) runs: the command with "{url}", "{scope}", "{runtime-dir}" replaced.
  std::vector<std::string> windowArgv(const std::string& url) const;

 private:
  /// A page process spawned by open(), until it attaches, fails or times out.
  struct Spawned {
    pid_t pid = -1;
    UniqueFd pidfd;
    core::EventLoop::WatchId watch = 0;
    core::EventLoop::TimerId timer = 0;
    Done done;
    bool attached = false;
  };
  /// The page's pidfd is readable: it exited.
  void onExit(const std::string& token);

  core::EventLoop& loop_;
  Counters& counters_;
  const ServiceWorkerOptions& opts_;
  std::string runtimeDir_;
  std::unordered_map<std::string, Spawned> opens_;  // open token -> spawned page
};

}  // namespace swipc::daemon
