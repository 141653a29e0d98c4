// page: BroadcastWaiter. Its thread signals when a watched futex word moves (one signal however
// many words moved), signals once for a word it has not seen, and stops when destroyed.
#include "page/broadcast_waiter.h"

#include <gtest/gtest.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <memory>
#include <mutex>

namespace swipc::page {
namespace {

using namespace std::chrono_literals;

/// Counts signals; waitFor() blocks until `n` have come (or the guard passes).
struct Signals {
  std::mutex m;
  std::condition_variable cv;
  int count = 0;
  std::function<void()> fn() {
    return [this] {
      std::lock_guard<std::mutex> l(m);
      ++count;
      cv.notify_all();
    };
  }
  bool waitFor(int n, std::chrono::milliseconds guard = 5s) {
    std::unique_lock<std::mutex> l(m);
    return cv.wait_for(l, guard, [&] { return count >= n; });
  }
  int now() {
    std::lock_guard<std::mutex> l(m);
    return count;
  }
};

/// What the daemon does after writing a ring: bump the word, wake its waiters (shared futex).
void bump(std::atomic<uint32_t>& word) {
  word.fetch_add(1, std::memory_order_release);
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

TEST(BroadcastWaiterTest, ANewWordIsSignalledOnce) {
  Signals s;
  alignas(8) std::atomic<uint32_t> word{0};
  BroadcastWaiter sut(s.fn());
  sut.setWords({&word}, {});
  ASSERT_TRUE(s.waitFor(1));  // a ring just joined may already hold records
}

TEST(BroadcastWaiterTest, AMovedWordIsSignalled) {
  Signals s;
  alignas(8) std::atomic<uint32_t> a{0}, b{0};
  BroadcastWaiter sut(s.fn());
  sut.setWords({&a, &b}, {});
  ASSERT_TRUE(s.waitFor(1));
  const int before = s.now();
  bump(b);
  ASSERT_TRUE(s.waitFor(before + 1));
  bump(a);
  ASSERT_TRUE(s.waitFor(before + 2));
}

TEST(BroadcastWaiterTest, KeepAliveIsHeldWhileTheWordsAreWatched) {
  Signals s;
  auto owner = std::make_shared<std::atomic<uint32_t>>(0);
  std::weak_ptr<std::atomic<uint32_t>> watch = owner;
  {
    BroadcastWaiter sut(s.fn());
    sut.setWords({owner.get()}, {owner});
    owner.reset();
    ASSERT_TRUE(s.waitFor(1));
    EXPECT_FALSE(watch.expired());
  }
  EXPECT_TRUE(watch.expired());  // released with the waiter
}

TEST(BroadcastWaiterTest, DestructionStopsTheThreadPromptly) {
  Signals s;
  alignas(8) std::atomic<uint32_t> word{0};
  const auto start = std::chrono::steady_clock::now();
  {
    BroadcastWaiter sut(s.fn());
    sut.setWords({&word}, {});
    ASSERT_TRUE(s.waitFor(1));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

}  // namespace
}  // namespace swipc::page
