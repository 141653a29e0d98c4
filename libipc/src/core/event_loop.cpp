#include "core/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

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
  watches_.emplace(id, Watch{fd, std::move(handler)});
  return id;
}

void EventLoop::unwatch(WatchId id) {
  auto it = watches_.find(id);
  if (it == watches_.end()) return;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.fd, nullptr);
  watches_.erase(it);
}

EventLoop::TimerId EventLoop::addTimer(Deadline when, Task task) {
  TimerId id = nextTimer_++;
  timers_.emplace(when, id);
  timerTasks_.emplace(id, std::make_pair(when, std::move(task)));
  if (when < armedFor_) armTimerFd();
  return id;
}

void EventLoop::cancelTimer(TimerId id) {
  auto it = timerTasks_.find(id);
  if (it == timerTasks_.end()) return;
  auto range = timers_.equal_range(it->second.first);
  for (auto t = range.first; t != range.second; ++t) {
    if (t->second == id) {
      timers_.erase(t);
      break;
    }
  }
  timerTasks_.erase(it);
}

void EventLoop::armTimerFd() {
  itimerspec spec{};
  if (timers_.empty()) {
    armedFor_ = Deadline::max();
  } else {
    armedFor_ = timers_.begin()->first;
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
  while (!timers_.empty() && timers_.begin()->first <= now) {
    TimerId id = timers_.begin()->second;
    timers_.erase(timers_.begin());
    auto it = timerTasks_.find(id);
    if (it == timerTasks_.end()) continue;
    Task task = std::move(it->second.second);
    timerTasks_.erase(it);
    task();
    ++ran;
  }
  // Re-arm only when needed: the armed time passed, or an earlier timer exists. A cancelled
  // earliest timer just makes the fd fire once for nothing (cheaper than a syscall per loop pass).
  const Deadline want = timers_.empty() ? Deadline::max() : timers_.begin()->first;
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
    FdHandler h = it->second.handler;    // copy: the handler may unwatch itself
    h(events[i].events);
    ++ran;
  }
  ran += runTimers();
  ran += runPosted();
  return ran;
}

}  // namespace swipc::core
