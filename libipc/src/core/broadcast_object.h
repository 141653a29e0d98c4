// The state behind one BroadcastChannel object, and the hub (client or daemon side) serving it.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "core/payload.h"
#include "swipc/message_event.h"
#include "swipc/types.h"

namespace swipc::detail {

struct BcObject;

class BroadcastHub {
 public:
  virtual ~BroadcastHub() = default;
  virtual void open(const std::shared_ptr<BcObject>& obj) = 0;
  virtual Result<MessageSeq> post(BcObject& obj, const core::OutgoingPayload& payload, bool wantAck) = 0;
  virtual void close(BcObject& obj) = 0;
};

struct BcObject {
  uint32_t id = 0;
  std::string name;
  bool joined = false;
  bool closed = false;
  uint64_t fromSeq = 0;  // first channel seq this object receives
  std::weak_ptr<BroadcastHub> hub;
  std::function<void(const MessageEvent&)> onMessage;
  std::function<void(const MessageErrorEvent&)> onMessageError;
  std::function<void(uint64_t)> onLapped;
  std::function<void()> onJoined;
  std::function<void(const Error&)> onJoinRefused;
};

/// Tag carried by each channel record: who posted it (client tag prefix | object id).
inline uint64_t bcTag(uint64_t prefix, uint32_t objectId) { return prefix | objectId; }

}  // namespace swipc::detail
