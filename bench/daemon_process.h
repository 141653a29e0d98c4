// A sw_daemon child for a benchmark: its own temporary runtime directory (and state directory),
// stopped with SIGTERM (SIGKILL after a deadline) and cleaned up on destruction. Its stdout goes
// to stderr, so a benchmark's stdout stays pure JSON lines.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "swipc/client.h"

namespace swipc::bench {

/// ../sw_daemon/sw_daemon relative to the directory holding this executable (the build tree).
std::string defaultDaemonPath();

class DaemonProcess {
 public:
  /// Starts `path --scope scope --runtime-dir <tmp> --state-dir <tmp> --log-level warn extraArgs…`.
  DaemonProcess(const std::string& path, const std::string& scope, const std::vector<std::string>& extraArgs = {});
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;
  ~DaemonProcess();

  const std::string& runtimeDir() const { return runtimeDir_; }
  const std::string& stateDir() const { return stateDir_; }
  pid_t pid() const { return pid_; }
  /// False once the daemon has exited (and reaps it).
  bool alive();
  int exitStatus() const { return exitStatus_; }
  /// SIGTERM, wait up to 5 s for a graceful exit, then SIGKILL.
  void stop();

 private:
  std::string runtimeDir_;
  std::string stateDir_;
  pid_t pid_ = -1;
  int exitStatus_ = 0;
};

/// Attaches a client to `daemon`'s scope, retrying with a short backoff for up to 10 s; throws
/// std::runtime_error when the daemon exits first or the deadline passes. No re-attach.
swipc::Client attachWithRetry(DaemonProcess& daemon, const std::string& scope, std::chrono::microseconds spin = {});

}  // namespace swipc::bench
