// InProcessServiceWorker: a swipc::ServiceWorker inside the test process — the in-process daemon
// harness of STYLE.md "Tests". It listens on its own runtime directory and scope, and either the
// test steps it (STEPPED: dispatch() from the test thread, so a protocol test decides exactly
// when the daemon runs) or a thread of the harness runs it (ON_THREAD: for tests whose clients
// are other processes, or block while they talk to it).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>

#include "process.h"
#include "swipc/client.h"
#include "swipc/service_worker.h"

namespace swipc::testing {

class InProcessServiceWorker {
 public:
  /// Who runs the service worker's loop.
  enum class Loop {
    STEPPED,    // the test thread: dispatch(), dispatchUntil(), whileDispatching()
    ON_THREAD,  // a thread of the harness runs ServiceWorker::run() until destruction; call() reaches it
  };
  using Setup = std::function<void(ServiceWorker&)>;

  /// `setup` runs before listen() (handlers, types); a failed listen() fails the test. Options
  /// left at their defaults get the harness's own: runtimeDir empty → a private TempDir, scope
  /// "default" → the running test's name. Signals are never taken (handleSignals = false).
  explicit InProcessServiceWorker(ServiceWorkerOptions opts = {}, const Setup& setup = {}, Loop loop = Loop::ON_THREAD);
  /// ON_THREAD: stops the loop from its own thread (it cannot race run() starting) and joins it.
  ~InProcessServiceWorker();
  InProcessServiceWorker(const InProcessServiceWorker&) = delete;
  InProcessServiceWorker& operator=(const InProcessServiceWorker&) = delete;

  ServiceWorker& sw() { return *sw_; }
  const std::string& runtimeDir() const { return runtimeDir_; }
  const std::string& scope() const { return scope_; }
  /// Options for a Client of this service worker (`url` empty: the library's default).
  ClientOptions clientOptions(const std::string& url = {}) const;

  // ---- STEPPED
  /// One turn of the service worker's loop; never blocks.
  void dispatch();
  /// Turns the loop until `done()` (true) or `timeout` (false), sleeping in poll() between turns.
  bool dispatchUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout = 5000ms);
  /// Runs `fn` on a helper thread while this thread turns the loop, and returns what fn returns
  /// (for a call that blocks on the service worker, such as Client::connect). Aborts the test
  /// when fn has not returned within `timeout` (the helper still refers to the caller's frame).
  template <typename F>
  auto whileDispatching(F fn, std::chrono::milliseconds timeout = 10000ms) -> decltype(fn()) {
    auto result = std::async(std::launch::async, std::move(fn));
    if (!dispatchUntil([&] { return result.wait_for(0s) == std::future_status::ready; }, timeout)) {
      ADD_FAILURE() << "the call did not return within " << timeout.count() << " ms";
      std::abort();
    }
    return result.get();
  }

  // ---- ON_THREAD
  /// Runs fn() or fn(ServiceWorker&) on the loop thread and returns its result. Aborts the test
  /// when the loop has not run it within 10 s (the task still refers to the caller's frame).
  template <typename F>
  auto call(F fn) {
    if constexpr (std::is_invocable_v<F, ServiceWorker&>) {
      return onLoop([this, fn = std::move(fn)]() mutable { return fn(*sw_); });
    } else {
      return onLoop(std::move(fn));
    }
  }

 private:
  template <typename F>
  auto onLoop(F fn) -> decltype(fn()) {
    using R = decltype(fn());
    auto task = std::make_shared<std::packaged_task<R()>>(std::move(fn));
    auto result = task->get_future();
    sw_->post([task] { (*task)(); });
    if (result.wait_for(10s) != std::future_status::ready) {
      ADD_FAILURE() << "the service worker's loop did not run the call within 10 s";
      std::abort();
    }
    return result.get();
  }

  std::unique_ptr<TempDir> dir_;
  std::string runtimeDir_;
  std::string scope_;
  std::unique_ptr<ServiceWorker> sw_;
  Loop loop_;
  std::thread thread_;
};

}  // namespace swipc::testing
