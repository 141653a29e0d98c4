// Doorbell: an eventfd used as a wake-up hint. Waiters always re-check their ring after waking.
// WakePipe: the same hint over a pipe, for a writer that must never block on a peer that holds
// the other end (an eventfd is one open file: a peer could clear its O_NONBLOCK and saturate it;
// a pipe's write end is a file description only the writer has).
#pragma once

#include "common/unique_fd.h"
#include "swipc/error.h"

namespace swipc::queue {

class Doorbell {
 public:
  Doorbell() = default;
  explicit Doorbell(UniqueFd fd) : fd_(std::move(fd)) {}
  /// A fresh non-blocking, close-on-exec eventfd.
  static Result<Doorbell> create();

  /// Never blocks (the fd is non-blocking; a saturated counter already means "wake").
  void ring() const;
  /// Clears pending rings; never blocks.
  void drain() const;
  int fd() const { return fd_.get(); }
  bool valid() const { return fd_.valid(); }

 private:
  UniqueFd fd_;
};

class WakePipe {
 public:
  WakePipe() = default;
  /// Reader side: the read end a writer passed (made non-blocking here).
  static Result<WakePipe> adoptReadEnd(UniqueFd readEnd);
  /// Writer side: a fresh non-blocking, close-on-exec pipe; pass takeReadEnd() to the reader.
  static Result<WakePipe> create();

  /// Writer: never blocks (a full pipe already holds wakes the reader has not seen).
  void ring() const;
  /// Reader: reads every pending wake byte; never blocks.
  void drain() const;
  /// The read end: the reader's own, or on the writer's side the one to pass (until forgotten).
  int readFd() const { return read_.get(); }
  void forgetReadEnd() { read_.reset(); }

 private:
  UniqueFd read_;
  UniqueFd write_;
};

}  // namespace swipc::queue
