// MessagePort::Impl: today only the one-shot reply port of a messageSW request (daemon side).
#pragma once

#include "api/payload.h"
#include "swipc/message_event.h"

namespace swipc {

class MessagePort::Impl {
 public:
  virtual ~Impl() = default;
  virtual Result<void> post(const api::OutgoingPayload& payload) = 0;
  virtual void close() = 0;
};

}  // namespace swipc
