#include "page/held_queue.h"

namespace swipc::page {

void HeldQueue::start() {
  if (started_) return;
  started_ = true;
  while (!held_.empty()) {
    auto fn = std::move(held_.front().fire);
    held_.pop_front();
    deliver(std::move(fn));
  }
  heldBytes_ = 0;
}

void HeldQueue::flushDeferred() {
  while (!deferred_.empty() && blockingDepth_ == 0) {
    auto fn = std::move(deferred_.front());
    deferred_.pop_front();
    fn();
  }
}

}  // namespace swipc::page
