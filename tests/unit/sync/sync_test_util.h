// Helpers shared by the sync unit tests: a scratch directory, stepping an EventLoop until
// something happens (never sleeping), and running a function in a child process.
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include "core/event_loop.h"

namespace swipc::sync::testing {

/// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/swipc-sync-XXXXXX";
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all, ignored);
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

/// Steps `loop` until `done()` or `guard` passes; false on the guard.
template <typename Done>
bool runUntil(core::EventLoop& loop, Done done, std::chrono::milliseconds guard = std::chrono::seconds(5)) {
  const Deadline until = Clock::now() + guard;
  while (!done()) {
    if (Clock::now() >= until) return false;
    loop.runOnce(until);
  }
  return true;
}

/// Steps `loop` for `window`: an observation period in which something must NOT happen.
inline void runFor(core::EventLoop& loop, std::chrono::milliseconds window) {
  const Deadline until = Clock::now() + window;
  while (Clock::now() < until) loop.runOnce(until);
}

/// Runs `body` in a forked child and returns its wait status (or -1 when it did not end within
/// `guard`, after killing it). The child ends with _exit(body()), or however body ends it.
inline int runInChild(const std::function<int()>& body, std::chrono::milliseconds guard = std::chrono::seconds(20)) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());
  if (pid < 0) return -1;
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(guard.count()));
    ::close(pidfd);
    if (ready != 1) ::kill(pid, SIGKILL);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return status;
}

}  // namespace swipc::sync::testing
