#include "page/broadcast_waiter.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <unordered_map>

namespace swipc::page {

namespace {
#ifndef FUTEX_32
constexpr unsigned FUTEX_32 = 2;
#endif
constexpr size_t MAX_WAITV = 128;
}  // namespace

BroadcastWaiter::BroadcastWaiter(std::function<void()> signal) : signal_(std::move(signal)) {
  thread_ = std::thread([this] { run(); });
}

BroadcastWaiter::~BroadcastWaiter() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  poke();
  thread_.join();
}

void BroadcastWaiter::setWords(std::vector<const std::atomic<uint32_t>*> words,
                               std::vector<std::shared_ptr<const void>> keepAlive) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    words_ = std::move(words);
    keepAlive_ = std::move(keepAlive);
  }
  poke();
}

void BroadcastWaiter::poke() {
  control_.fetch_add(1, std::memory_order_release);
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&control_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

void BroadcastWaiter::run() {
  std::unordered_map<const void*, uint32_t> last;  // last value seen per word
  for (;;) {
    std::vector<const std::atomic<uint32_t>*> words;
    std::vector<std::shared_ptr<const void>> alive;
    uint32_t ctl = control_.load(std::memory_order_acquire);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stop_) return;
      words = words_;
      alive = keepAlive_;  // the mappings stay valid until we drop these
    }
    if (words.size() > MAX_WAITV - 1) words.resize(MAX_WAITV - 1);
    std::vector<futex_waitv> waitv(words.size() + 1);
    bool changed = false;
    std::unordered_map<const void*, uint32_t> now;
    for (size_t i = 0; i < words.size(); ++i) {
      uint32_t v = words[i]->load(std::memory_order_acquire);
      auto it = last.find(words[i]);
      if (it == last.end() || it->second != v) changed = true;  // new ring or moved: tell the loop
      now[words[i]] = v;
      waitv[i].val = v;
      waitv[i].uaddr = reinterpret_cast<uintptr_t>(words[i]);
      waitv[i].flags = FUTEX_32;  // shared: the word lives in a memfd mapping
      waitv[i].__reserved = 0;
    }
    last.swap(now);
    if (changed) signal_();
    futex_waitv& c = waitv.back();
    c.val = ctl;
    c.uaddr = reinterpret_cast<uintptr_t>(&control_);
    c.flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
    c.__reserved = 0;
    ::syscall(SYS_futex_waitv, waitv.data(), static_cast<unsigned>(waitv.size()), 0u, nullptr, CLOCK_MONOTONIC);
  }
}

}  // namespace swipc::page
