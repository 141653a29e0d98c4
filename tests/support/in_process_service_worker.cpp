#include "in_process_service_worker.h"

#include <poll.h>

#include <algorithm>

#include "test_scope.h"

namespace swipc::testing {

InProcessServiceWorker::InProcessServiceWorker(ServiceWorkerOptions opts, const Setup& setup, Loop loop) : loop_(loop) {
  if (opts.runtimeDir.empty()) {
    dir_ = std::make_unique<TempDir>();
    opts.runtimeDir = dir_->path();
  }
  if (opts.scope == ServiceWorkerOptions{}.scope) opts.scope = testScope();
  opts.handleSignals = false;
  runtimeDir_ = opts.runtimeDir;
  scope_ = opts.scope;
  sw_ = std::make_unique<ServiceWorker>(std::move(opts));
  if (setup) setup(*sw_);
  auto r = sw_->listen();
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().describe());
  if (loop_ == Loop::ON_THREAD) thread_ = std::thread([this] { (void)sw_->run(); });
}

InProcessServiceWorker::~InProcessServiceWorker() {
  if (thread_.joinable()) {
    sw_->post([this] { sw_->stop(); });  // from the loop thread: cannot race run() starting up
    thread_.join();
  }
  sw_.reset();  // before the runtime directory goes
}

ClientOptions InProcessServiceWorker::clientOptions(const std::string& url) const {
  ClientOptions o;
  o.scope = scope_;
  o.runtimeDir = runtimeDir_;
  o.url = url;
  return o;
}

void InProcessServiceWorker::dispatch() {
  SWIPC_REQUIRE(loop_ == Loop::STEPPED, "dispatch() on a harness whose loop runs on its own thread");
  sw_->dispatch();
}

bool InProcessServiceWorker::dispatchUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = TestClock::now() + timeout;
  for (;;) {
    dispatch();
    if (done()) return true;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - TestClock::now());
    if (left <= 0ms) return false;
    pollfd p{sw_->fd(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::min<std::chrono::milliseconds>(left, 10ms).count()));
  }
}

}  // namespace swipc::testing
