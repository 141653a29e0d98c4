// PageEvents: the page's own callbacks (Client::onMessage, onControllerChange, ...) and how each
// event reaches them. SW -> client messages go through the held queue (held until
// startMessages()); every other event runs as soon as no blocking call is running
// (HeldQueue::deliver). A callback is looked up when its event runs, not when it was queued, so
// one set in between is the one called.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "page/held_queue.h"
#include "swipc/error.h"
#include "swipc/message_event.h"
#include "swipc/types.h"

namespace swipc::page {

/// @concurrent: single-threaded (the page's loop thread).
class PageEvents {
 public:
  explicit PageEvents(HeldQueue& queue) : queue_(queue) {}
  PageEvents(const PageEvents&) = delete;
  PageEvents& operator=(const PageEvents&) = delete;

  // ---- the callbacks (Client's setters)
  void onMessage(std::function<void(const MessageEvent&)> fn) { onMessage_ = std::move(fn); }
  void onMessageError(std::function<void(const MessageErrorEvent&)> fn) { onMessageError_ = std::move(fn); }
  void onControllerChange(std::function<void(bool)> fn) { onControllerChange_ = std::move(fn); }
  void onUndelivered(std::function<void(MessageSeq, const Error&)> fn) { onUndelivered_ = std::move(fn); }
  void onDelivered(std::function<void(MessageSeq)> fn) { onDelivered_ = std::move(fn); }
  void onNavigate(std::function<void(const std::string&)> fn) { onNavigate_ = std::move(fn); }
  void onFocus(std::function<void()> fn) { onFocus_ = std::move(fn); }

  // ---- the events (held until startMessages())
  /// A message from the service worker (client.postMessage), costing `bytes` while held. Held
  /// past the queue's byte bound it is dropped (logged, counted), and one messageerror
  /// (QuotaExceededError) stands in its place for it and the drops right after it.
  void message(std::shared_ptr<MessageEvent> ev, uint64_t bytes = 0);
  /// Messages dropped because the held ones were over their byte bound.
  uint64_t droppedOverQuota() const { return droppedOverQuota_; }
  /// A message from the service worker that could not be decoded here.
  void messageError(Error error);

  // ---- the events (delivered)
  void controllerChange(bool controlled);
  /// Post `seq` (made with requestAck) was consumed by the daemon.
  void delivered(MessageSeq seq);
  /// Post `seq` never reached the service worker (refused, or the daemon died first).
  void undelivered(MessageSeq seq, Error error);
  void navigate(std::string url);
  void focus();

 private:
  HeldQueue& queue_;
  uint64_t droppedOverQuota_ = 0;
  bool lastHeldWasDrop_ = false;  // the held queue ends with a drop's messageerror
  std::function<void(const MessageEvent&)> onMessage_;
  std::function<void(const MessageErrorEvent&)> onMessageError_;
  std::function<void(bool)> onControllerChange_;
  std::function<void(MessageSeq, const Error&)> onUndelivered_;
  std::function<void(MessageSeq)> onDelivered_;
  std::function<void(const std::string&)> onNavigate_;
  std::function<void()> onFocus_;
};

}  // namespace swipc::page
