#include "core/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

#include <algorithm>
#include <array>

#include "common/sys_error.h"

namespace swipc::core {

namespace {
constexpr uint64_t TIMER_WATCH = 1;
constexpr uint64_t WAKE_WATCH = 2;
}  // namespace

Result<std::unique_ptr<EventLoop>> EventLoop::create() {
  std::unique_ptr<EventLoop> loop(new EventLoop());
  loop->epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!loop->epoll_) return sysError("epoll_create1");
  loop->timerFd_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!loop->timerFd_) return sysError("timerfd_create");
  loop->wakeFd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!loop->wakeFd_) return sysError("eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = TIMER_WATCH;
  SWIPC_SYSCALL(::epoll_ctl(loop->epoll_.get(), EPOLL_CTL_ADD, loop->timerFd_.get(), &ev), "epoll_ctl timerfd");
  ev.data.u64 = WAKE_WATCH;
  SWIPC_SYSCALL(::epoll_ctl(loop->epoll_.get(), EPOLL_CTL_ADD, loop->wakeFd_.get(), &ev), "epoll_ctl wake");
  return loop;
}

EventLoop::~EventLoop() = default;

Result<EventLoop::WatchId> EventLoop::watch(int fd, uint32_t events, FdHandler handler) {
  WatchId id = nextWatch_++;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = id;
  SWIPC_SYSCALL(::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev), "epoll_ctl add");
  watches_.emplace(id, Watch{fd, std::make_shared<FdHandler>(std::move(handler))});
  return id;
}

void EventLoop::unwatch(WatchId id) {
  auto it = watches_.find(id);
  if (it == watches_.end()) return;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.fd, nullptr);
  watches_.erase(it);
}

EventLoop::TimerId EventLoop::addTimer(Deadline when, Task task) {
  uint32_t slot;
  if (!freeSlots_.empty()) {
    slot = freeSlots_.back();
    freeSlots_.pop_back();
  } else {
    slot = static_cast<uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  TimerSlot& s = slots_[slot];
  s.task = std::move(task);
  ++liveTimers_;
  heap_.push_back(TimerEntry{when, slot, s.generation});
  std::push_heap(heap_.begin(), heap_.end(), EarliestFirst{});
  if (when < armedFor_) armTimerFd();
  // (generation, slot + 1): never 0, and an old id never names a reused slot.
  return (static_cast<TimerId>(s.generation) << 32) | (slot + 1);
}

void EventLoop::releaseSlot(uint32_t slot) {
  TimerSlot& s = slots_[slot];
  s.task = nullptr;
  ++s.generation;
  --liveTimers_;
  freeSlots_.push_back(slot);
}

void EventLoop::cancelTimer(TimerId id) {
  const uint64_t low = id & 0xFFFF'FFFFu;
  if (low == 0 || low > slots_.size()) return;
  const auto slot = static_cast<uint32_t>(low - 1);
  // A slot's generation moves on when it is freed, so the id of a timer that ran or was
  // cancelled no longer matches (a free slot's current generation was never handed out).
  if (slots_[slot].generation != static_cast<uint32_t>(id >> 32)) return;
  releaseSlot(slot);
  if (heap_.size() > 64 && heap_.size() > 2 * liveTimers_) {
    // Mostly stale: rebuild from the live entries (amortised O(1) per cancel; memory stays
    // proportional to the live timers however many come and go).
    std::erase_if(heap_, [this](const TimerEntry& e) { return stale(e); });
    std::make_heap(heap_.begin(), heap_.end(), EarliestFirst{});
  }
}

void EventLoop::popTimer() {
  std::pop_heap(heap_.begin(), heap_.end(), EarliestFirst{});
  heap_.pop_back();
}

void EventLoop::dropStaleTop() {
  while (!heap_.empty() && stale(heap_.front())) popTimer();
}

void EventLoop::armTimerFd() {
  itimerspec spec{};
  dropStaleTop();
  if (heap_.empty()) {
    armedFor_ = Deadline::max();
  } else {
    armedFor_ = heap_.front().when;
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(armedFor_.time_since_epoch()).count();
    if (ns <= 0) ns = 1;
    spec.it_value.tv_sec = ns / 1'000'000'000;
    spec.it_value.tv_nsec = ns % 1'000'000'000;
  }
  // steady_clock is CLOCK_MONOTONIC on Linux, so absolute times line up.
  ::timerfd_settime(timerFd_.get(), TFD_TIMER_ABSTIME, &spec, nullptr);
}

void EventLoop::post(Task task) {
  {
    std::lock_guard<std::mutex> lock(postMutex_);
    posted_.push_back(std::move(task));
  }
  wake();
}

void EventLoop::wake() {
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wakeFd_.get(), &one, sizeof one);
}

int EventLoop::runTimers() {
  int ran = 0;
  auto now = Clock::now();
  for (;;) {
    dropStaleTop();
    if (heap_.empty() || heap_.front().when > now) break;
    const uint32_t slot = heap_.front().slot;
    popTimer();
    Task task = std::move(slots_[slot].task);
    releaseSlot(slot);
    task();  // may add or cancel timers
    ++ran;
  }
  // Re-arm only when needed: the armed time passed, or an earlier timer exists. A cancelled
  // earliest timer just makes the fd fire once for nothing (cheaper than a syscall per loop pass).
  const Deadline want = heap_.empty() ? Deadline::max() : heap_.front().when;
  if (want < armedFor_ || (armedFor_ <= now && want != armedFor_)) armTimerFd();
  return ran;
}

int EventLoop::runPosted() {
  std::vector<Task> tasks;
  {
    std::lock_guard<std::mutex> lock(postMutex_);
    tasks.swap(posted_);
  }
  for (auto& t : tasks) t();  // never under the lock
  return static_cast<int>(tasks.size());
}

int EventLoop::runOnce(Deadline until) {
  int timeoutMs = 0;
  auto now = Clock::now();
  if (until == Deadline::max()) {
    timeoutMs = -1;
  } else if (until > now) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count();
    timeoutMs = static_cast<int>(std::min<int64_t>(ms + 1, 1 << 30));
  }
  std::array<epoll_event, 64> events;
  int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), timeoutMs);
  int ran = 0;
  for (int i = 0; i < n; ++i) {
    uint64_t id = events[i].data.u64;
    if (id == TIMER_WATCH) {
      uint64_t expirations;
      [[maybe_unused]] auto r = ::read(timerFd_.get(), &expirations, sizeof expirations);
      continue;
    }
    if (id == WAKE_WATCH) {
      uint64_t v;
      [[maybe_unused]] auto r = ::read(wakeFd_.get(), &v, sizeof v);
      continue;
    }
    auto it = watches_.find(id);
    if (it == watches_.end()) continue;  // removed by an earlier handler in this batch
    auto h = it->second.handler;  // a reference kept: the handler may unwatch itself (no copy of it)
    (*h)(events[i].events);
    ++ran;
  }
  ran += runTimers();
  ran += runPosted();
  return ran;
}

}  // namespace swipc::core
