// Doorbell: an eventfd used as a wake-up hint. Waiters always re-check their ring after waking.
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

}  // namespace swipc::queue
