// HeldQueue: when a page's events run.
//
//   deliverOrHold(e) ──started?──no──► held ──start()──┐ (in order)
//                         │ yes                         ▼
//   deliver(e) ───────────┴──────────► inside a blocking call? ──yes──► deferred ──flushDeferred()──► run
//                                                     │ no
//                                                     └──────────────────────────────────────────► run
//
// SW -> client messages are held until the page starts its message queue (startMessages(), the
// web's DOMContentLoaded), then run in arrival order. Any event that arrives while the page is
// inside a blocking call (messageSW, a send waiting for ring space) runs right after that call,
// never inside it. Events run in the order they reach each queue. What is held is bounded in
// bytes (the sender is another process; the page's memory is not its to fill).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <utility>

#include "common/small_function.h"

namespace swipc::page {

/// @concurrent: single-threaded (the page's loop thread).
class HeldQueue {
 public:
  /// A lambda holding up to 48 bytes (say, an object and its event) is kept without allocating.
  using Event = SmallFunction<48>;

  /// Runs `fn` now, or right after the blocking call the page is in.
  void deliver(Event fn) {
    if (blockingDepth_ > 0) {
      deferred_.push_back(std::move(fn));
      return;
    }
    fn();
  }
  /// A SW -> client message event: as deliver() once messages are started, held until then.
  /// `bytes`: what holding it costs. False (nothing kept) when the held events would go past
  /// the bound (setMaxHeldBytes); an event that arrives when nothing is held, or costs nothing,
  /// is always held.
  bool deliverOrHold(Event fire, uint64_t bytes = 0) {
    if (started_) {
      deliver(std::move(fire));
      return true;
    }
    if (maxHeldBytes_ != 0 && bytes != 0 && !held_.empty() && heldBytes_ + bytes > maxHeldBytes_) return false;
    heldBytes_ += bytes;
    held_.push_back(Held{std::move(fire), bytes});
    return true;
  }
  /// The bound on held bytes (ClientOptions::maxHeldBytes); 0: none.
  void setMaxHeldBytes(uint64_t bytes) { maxHeldBytes_ = bytes; }
  uint64_t heldBytes() const { return heldBytes_; }
  /// startMessages(): from now on messages are delivered; the held ones first, in order.
  /// Idempotent.
  void start();
  bool started() const { return started_; }

  /// Runs the deferred events, oldest first, while no blocking call is running (an event may
  /// start one; the rest then wait for its end).
  void flushDeferred();
  bool hasDeferred() const { return !deferred_.empty(); }

  /// A blocking call begins / ends: events that arrive meanwhile are deferred. Calls nest.
  void enterBlocking() { ++blockingDepth_; }
  void leaveBlocking() { --blockingDepth_; }
  bool blocking() const { return blockingDepth_ > 0; }

 private:
  struct Held {
    Event fire;
    uint64_t bytes;
  };
  bool started_ = false;
  int blockingDepth_ = 0;
  uint64_t maxHeldBytes_ = 0;
  uint64_t heldBytes_ = 0;
  std::deque<Held> held_;       // SW -> client events until start()
  std::deque<Event> deferred_;  // events that arrived inside a blocking call
};

}  // namespace swipc::page
