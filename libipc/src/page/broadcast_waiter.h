// BroadcastWaiter: threads that sleep on the futex words of every channel ring this process
// reads (futex_waitv) and signal the owning loop when any of them moves. The daemon's wake is
// one FUTEX_WAKE per post, however many readers there are.
//
// One futex_waitv call takes at most 128 words (FUTEX_WAITV_MAX), one of which is our own
// control word; so the words are split into groups of 127, one thread per group. A page with
// 200 channels has two waiter threads; every channel is watched.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace swipc::page {

/// @concurrent: setWords()/destruction from the loop thread; the signal runs on waiter threads.
class BroadcastWaiter {
 public:
  /// Channel words one thread watches (futex_waitv's limit, less the control word).
  static constexpr size_t WORDS_PER_THREAD = 127;

  /// `signal` must be thread-safe (it writes an eventfd the loop watches).
  explicit BroadcastWaiter(std::function<void()> signal);
  ~BroadcastWaiter();

  /// The futex words to watch; `keepAlive` keeps their mappings alive while the threads wait.
  /// Starts threads as needed (they stay until destruction; one with no words only waits).
  void setWords(std::vector<const std::atomic<uint32_t>*> words, std::vector<std::shared_ptr<const void>> keepAlive);
  /// Waiter threads running now (for tests).
  size_t threadCount() const { return threads_.size(); }

 private:
  /// Thread `group` watches words [group * WORDS_PER_THREAD, +WORDS_PER_THREAD).
  void run(size_t group);
  void poke();

  std::function<void()> signal_;
  std::mutex mutex_;
  std::vector<const std::atomic<uint32_t>*> words_;
  std::vector<std::shared_ptr<const void>> keepAlive_;
  bool stop_ = false;
  alignas(8) std::atomic<uint32_t> control_{0};  // every thread also waits on this: poke() wakes all
  std::vector<std::thread> threads_;
};

}  // namespace swipc::page
