#include "page/broadcast_waiter.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>

#include "common/thread_name.h"

namespace swipc::page {

namespace {
#ifndef FUTEX_32
constexpr unsigned FUTEX_32 = 2;
#endif
}  // namespace

BroadcastWaiter::BroadcastWaiter(std::function<void()> signal) : signal_(std::move(signal)) {
  threads_.emplace_back([this] {
    nameThisThread("swipc-bc-wait");
    run(0);
  });
}

BroadcastWaiter::~BroadcastWaiter() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  poke();
  for (auto& t : threads_) t.join();
}

void BroadcastWaiter::setWords(std::vector<const std::atomic<uint32_t>*> words,
                               std::vector<std::shared_ptr<const void>> keepAlive) {
  const size_t groups = (words.size() + WORDS_PER_THREAD - 1) / WORDS_PER_THREAD;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    words_ = std::move(words);
    keepAlive_ = std::move(keepAlive);
  }
  // Only this (loop) thread starts threads, so reading threads_ here needs no lock.
  while (threads_.size() < groups) {
    const size_t group = threads_.size();
    threads_.emplace_back([this, group] {
      nameThisThread("swipc-bc-wait");
      run(group);
    });
  }
  poke();
}

void BroadcastWaiter::poke() {
  control_.fetch_add(1, std::memory_order_release);
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&control_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

void BroadcastWaiter::run(size_t group) {
  // Nothing is allocated per wake-up: the slice of words is copied again only when setWords()
  // changed it (the control word moved), and the wait vector is reused.
  std::vector<const std::atomic<uint32_t>*> words;
  std::vector<std::shared_ptr<const void>> alive;
  std::vector<uint32_t> last;  // the value each word had when we last told the loop
  std::vector<futex_waitv> waitv;
  bool fresh = true;           // words just (re)read: tell the loop once
  uint32_t seenCtl = control_.load(std::memory_order_acquire) - 1;  // differs: read the words first
  for (;;) {
    const uint32_t ctl = control_.load(std::memory_order_acquire);
    if (ctl != seenCtl) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stop_) return;
      // This thread's slice; the mappings stay valid until we drop `alive`.
      const size_t begin = std::min(words_.size(), group * WORDS_PER_THREAD);
      const size_t end = std::min(words_.size(), begin + WORDS_PER_THREAD);
      words.assign(words_.begin() + static_cast<std::ptrdiff_t>(begin), words_.begin() + static_cast<std::ptrdiff_t>(end));
      alive = keepAlive_;
      last.assign(words.size(), 0);
      waitv.assign(words.size() + 1, futex_waitv{});
      seenCtl = ctl;
      fresh = true;  // a new ring may hold records already: the loop reads them
    }
    bool changed = fresh;
    fresh = false;
    for (size_t i = 0; i < words.size(); ++i) {
      const uint32_t v = words[i]->load(std::memory_order_acquire);
      if (v != last[i]) changed = true;
      last[i] = v;
      waitv[i].val = v;
      waitv[i].uaddr = reinterpret_cast<uintptr_t>(words[i]);
      waitv[i].flags = FUTEX_32;  // shared: the word lives in a memfd mapping
      waitv[i].__reserved = 0;
    }
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
