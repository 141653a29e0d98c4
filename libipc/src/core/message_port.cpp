#include "swipc/message_port.h"

#include <cstdio>

#include "core/port_state.h"

namespace swipc {

std::string PortId::toString() const {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v_));
  return buf;
}

PendingPort::PendingPort(MessagePort port) : state_(port.state()) {}
PendingPort::~PendingPort() = default;

TransferList::TransferList(std::vector<MessagePort> ports) {
  ports_.reserve(ports.size());
  for (auto& p : ports) ports_.emplace_back(std::move(p));
}

MessagePort::MessagePort(std::shared_ptr<detail::PortState> state) : state_(std::move(state)) {}

PortId MessagePort::id() const { return state_ ? state_->id : PortId(); }

Result<void> MessagePort::postMessage(const Value& data, TransferList transfer) {
  if (!state_) return makeError(Errc::INVALID_STATE, "port is not bound");
  core::OutgoingPayload p;
  p.value = &data;
  return state_->post(p, transfer);
}

Result<void> MessagePort::postTyped(uint64_t typeId, const TypedBuilder& build, TransferList transfer) {
  if (!state_) return makeError(Errc::INVALID_STATE, "port is not bound");
  core::OutgoingPayload p;
  p.typeId = typeId;
  p.build = &build;
  return state_->post(p, transfer);
}

void MessagePort::onMessage(std::function<void(const MessageEvent&)> fn) {
  if (!state_ || !state_->live()) return;
  state_->onMessage = std::move(fn);
  state_->start();
}

void MessagePort::onMessageError(std::function<void(const MessageErrorEvent&)> fn) {
  if (state_ && state_->live()) state_->onMessageError = std::move(fn);
}

void MessagePort::onClose(std::function<void()> fn) {
  if (!state_ || !state_->live()) return;
  state_->onClose = std::move(fn);
  state_->closeListenerSet();
}

void MessagePort::start() {
  if (state_) state_->start();
}

void MessagePort::close() {
  if (state_) state_->close();
}

bool MessagePort::closed() const { return !state_ || state_->mode == detail::PortState::Mode::CLOSED; }
bool MessagePort::neutered() const { return state_ && state_->mode == detail::PortState::Mode::NEUTERED; }
bool MessagePort::started() const { return state_ && state_->started; }
size_t MessagePort::queuedCount() const { return state_ ? state_->queue.size() : 0; }

}  // namespace swipc
