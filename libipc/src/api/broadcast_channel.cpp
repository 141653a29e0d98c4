#include "swipc/broadcast_channel.h"

#include "core/broadcast_object.h"

namespace swipc {

using detail::BcObject;

BroadcastChannel::BroadcastChannel(Client& client, std::string name) : obj_(std::make_shared<BcObject>()) {
  obj_->name = std::move(name);
  obj_->hub = client.broadcastHub();
  if (auto hub = obj_->hub.lock()) hub->open(obj_);
}

BroadcastChannel::BroadcastChannel(ServiceWorker& sw, std::string name) : obj_(std::make_shared<BcObject>()) {
  obj_->name = std::move(name);
  obj_->hub = sw.broadcastHub();
  if (auto hub = obj_->hub.lock()) hub->open(obj_);
}

BroadcastChannel::BroadcastChannel(BroadcastChannel&&) noexcept = default;
BroadcastChannel& BroadcastChannel::operator=(BroadcastChannel&& o) noexcept {
  if (this != &o) {
    close();
    obj_ = std::move(o.obj_);
  }
  return *this;
}
BroadcastChannel::~BroadcastChannel() { close(); }

const std::string& BroadcastChannel::name() const { return obj_->name; }

Result<MessageSeq> BroadcastChannel::postMessage(const Value& data, const PostOptions& opts) {
  if (!obj_ || obj_->closed) return makeError(Errc::INVALID_STATE, "BroadcastChannel is closed");
  auto hub = obj_->hub.lock();
  if (!hub) return makeError(Errc::INVALID_STATE, "the client or service worker is gone");
  core::OutgoingPayload p;
  p.value = &data;
  return hub->post(*obj_, p, opts.requestAck);
}

Result<MessageSeq> BroadcastChannel::postTyped(uint64_t typeId, const TypedBuilder& build, const PostOptions& opts) {
  if (!obj_ || obj_->closed) return makeError(Errc::INVALID_STATE, "BroadcastChannel is closed");
  auto hub = obj_->hub.lock();
  if (!hub) return makeError(Errc::INVALID_STATE, "the client or service worker is gone");
  core::OutgoingPayload p;
  p.typeId = typeId;
  p.build = &build;
  return hub->post(*obj_, p, opts.requestAck);
}

void BroadcastChannel::onMessage(std::function<void(const MessageEvent&)> fn) { obj_->onMessage = std::move(fn); }
void BroadcastChannel::onMessageError(std::function<void(const MessageErrorEvent&)> fn) {
  obj_->onMessageError = std::move(fn);
}
void BroadcastChannel::onLapped(std::function<void(uint64_t)> fn) { obj_->onLapped = std::move(fn); }
void BroadcastChannel::onJoined(std::function<void()> fn) { obj_->onJoined = std::move(fn); }
void BroadcastChannel::onJoinRefused(std::function<void(const Error&)> fn) { obj_->onJoinRefused = std::move(fn); }
bool BroadcastChannel::joined() const { return obj_ && obj_->joined; }
bool BroadcastChannel::closed() const { return !obj_ || obj_->closed; }

void BroadcastChannel::close() {
  if (!obj_ || obj_->closed) return;
  obj_->closed = true;
  obj_->onMessage = nullptr;
  obj_->onMessageError = nullptr;
  obj_->onLapped = nullptr;
  obj_->onJoined = nullptr;
  obj_->onJoinRefused = nullptr;
  if (auto hub = obj_->hub.lock()) hub->close(*obj_);
}

}  // namespace swipc
