// EventLoop: epoll over fds + timers (one timerfd) + a thread-safe post()/wake().
// The epoll fd itself is pollable, so a loop can be embedded in a user's poll loop.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "common/unique_fd.h"
#include "swipc/error.h"
#include "swipc/types.h"

namespace swipc::core {

/// @concurrent: owned by one thread; only post() and wake() may be called from others.
class EventLoop {
 public:
  using FdHandler = std::function<void(uint32_t events)>;
  using Task = std::function<void()>;
  using WatchId = uint64_t;
  using TimerId = uint64_t;

  static Result<std::unique_ptr<EventLoop>> create();
  ~EventLoop();

  /// The epoll fd: readable whenever runOnce() has something to do.
  int fd() const { return epoll_.get(); }

  /// Watches `fd` for `events` (EPOLLIN, EPOLLET, ...). The handler may remove any watch.
  Result<WatchId> watch(int fd, uint32_t events, FdHandler handler);
  void unwatch(WatchId id);

  /// Calls `task` once at or after `when`; cancelTimer before that makes it never run.
  TimerId addTimer(Deadline when, Task task);
  void cancelTimer(TimerId id);

  /// Thread-safe: runs `task` on the loop thread soon.
  void post(Task task);
  /// Thread-safe: makes a blocked runOnce() return.
  void wake();

  /// Waits for events until `until` (past deadline = do not block) and runs what is ready.
  /// Returns the number of handlers/timers/tasks run.
  int runOnce(Deadline until);

 private:
  EventLoop() = default;
  void armTimerFd();
  int runTimers();
  int runPosted();

  struct Watch {
    int fd;
    std::shared_ptr<FdHandler> handler;  // shared, so a handler runs without copying its captures
  };
  UniqueFd epoll_;
  UniqueFd timerFd_;
  UniqueFd wakeFd_;
  std::unordered_map<WatchId, Watch> watches_;
  WatchId nextWatch_ = 16;  // ids below are reserved for internal fds
  // Timers: tasks in reusable slots, and a min-heap of (deadline, slot, generation). A cancel
  // frees its slot at once and leaves its heap entry stale (its generation no longer matches);
  // stale entries are dropped when they reach the top or when they outnumber the live ones, so
  // adding and cancelling a timer (every messageSW with a deadline) allocates nothing.
  struct TimerSlot {
    Task task;
    uint32_t generation = 0;  // bumped when the slot is freed: older ids and heap entries are stale
  };
  struct TimerEntry {
    Deadline when;
    uint32_t slot;
    uint32_t generation;
  };
  /// The heap's order: std::*_heap keep the greatest on top, so "greater" is the later deadline.
  struct EarliestFirst {
    bool operator()(const TimerEntry& a, const TimerEntry& b) const { return a.when > b.when; }
  };
  bool stale(const TimerEntry& e) const { return slots_[e.slot].generation != e.generation; }
  void popTimer();
  void dropStaleTop();
  void releaseSlot(uint32_t slot);
  std::vector<TimerSlot> slots_;
  std::vector<uint32_t> freeSlots_;
  std::vector<TimerEntry> heap_;
  size_t liveTimers_ = 0;
  Deadline armedFor_ = Deadline::max();
  std::mutex postMutex_;
  std::vector<Task> posted_;
};

}  // namespace swipc::core
