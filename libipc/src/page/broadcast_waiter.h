// BroadcastWaiter: a thread that sleeps on the futex words of every channel ring this process
// reads (futex_waitv) and signals the owning loop when any of them moves. The daemon's wake is
// one FUTEX_WAKE per post, however many readers there are.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace swipc::page {

/// @concurrent: setWords()/stop() from the loop thread; the signal runs on the waiter thread.
class BroadcastWaiter {
 public:
  /// `signal` must be thread-safe (it writes an eventfd the loop watches).
  explicit BroadcastWaiter(std::function<void()> signal);
  ~BroadcastWaiter();

  /// The futex words to watch; `keepAlive` keeps their mappings alive while the thread waits.
  void setWords(std::vector<const std::atomic<uint32_t>*> words, std::vector<std::shared_ptr<const void>> keepAlive);

 private:
  void run();
  void poke();

  std::function<void()> signal_;
  std::mutex mutex_;
  std::vector<const std::atomic<uint32_t>*> words_;
  std::vector<std::shared_ptr<const void>> keepAlive_;
  bool stop_ = false;
  alignas(8) std::atomic<uint32_t> control_{0};
  std::thread thread_;
};

}  // namespace swipc::page
