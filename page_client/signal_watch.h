// SignalWatch: SIGINT and SIGTERM as a pollable fd (signalfd), for a graceful exit from a poll loop.
#pragma once

namespace page_client {

/// Blocks SIGINT and SIGTERM for the process and makes them readable on fd(). Create it before
/// any thread starts (before Client::connect) so every thread inherits the blocked mask.
class SignalWatch {
 public:
  SignalWatch();
  ~SignalWatch();
  SignalWatch(const SignalWatch&) = delete;
  SignalWatch& operator=(const SignalWatch&) = delete;

  /// -1 when the signalfd could not be made (the signals then keep their default action).
  int fd() const { return fd_; }
  /// Consumes a pending signal; returns its number, or 0 when none was pending.
  int take();

 private:
  int fd_ = -1;
};

}  // namespace page_client
