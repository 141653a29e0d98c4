#include "page/page_events.h"

#include "core/log.h"

namespace swipc::page {

void PageEvents::message(std::shared_ptr<MessageEvent> ev, uint64_t bytes) {
  const bool held = queue_.deliverOrHold(
      [this, ev = std::move(ev)] {
        if (onMessage_) onMessage_(*ev);
      },
      bytes);
  if (held) {
    lastHeldWasDrop_ = false;
    return;
  }
  ++droppedOverQuota_;
  if (lastHeldWasDrop_) {
    core::log().debug("message from the service worker dropped ({} so far)", droppedOverQuota_);
    return;
  }
  lastHeldWasDrop_ = true;
  core::log().warn("message from the service worker ({} bytes) dropped: {} bytes are held before startMessages(); "
                   "{} dropped so far",
                   bytes, queue_.heldBytes(), droppedOverQuota_);
  // Small, one per run of drops, and held whatever the bound (so the page learns it).
  queue_.deliverOrHold([this] {
    if (onMessageError_)
      onMessageError_(MessageErrorEvent{
          "client", makeError(Errc::QUOTA_EXCEEDED, "messages dropped: too many bytes held before startMessages()")});
  });
}

void PageEvents::messageError(Error error) {
  queue_.deliverOrHold([this, error = std::move(error)] {
    if (onMessageError_) onMessageError_(MessageErrorEvent{"client", error});
  });
}

void PageEvents::controllerChange(bool controlled) {
  queue_.deliver([this, controlled] {
    if (onControllerChange_) onControllerChange_(controlled);
  });
}

void PageEvents::delivered(MessageSeq seq) {
  queue_.deliver([this, seq] {
    if (onDelivered_) onDelivered_(seq);
  });
}

void PageEvents::undelivered(MessageSeq seq, Error error) {
  queue_.deliver([this, seq, error = std::move(error)] {
    if (onUndelivered_) onUndelivered_(seq, error);
  });
}

void PageEvents::navigate(std::string url) {
  queue_.deliver([this, url = std::move(url)] {
    if (onNavigate_) onNavigate_(url);
  });
}

void PageEvents::focus() {
  queue_.deliver([this] {
    if (onFocus_) onFocus_();
  });
}

}  // namespace swipc::page
