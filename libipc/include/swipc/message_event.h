// MessageEvent and typed (application Cap'n Proto) payloads.
#pragma once

#include <capnp/any.h>
#include <capnp/generated-header-support.h>
#include <capnp/message.h>
#include <kj/exception.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "swipc/error.h"
#include "swipc/message_port.h"
#include "swipc/typed.h"
#include "swipc/value.h"

namespace swipc {

/// A typed payload as received: the application struct plus what keeps its bytes alive.
struct TypedContent {
  uint64_t typeId = 0;
  capnp::AnyPointer::Reader content;
  std::shared_ptr<const void> keepAlive;
};

/// Something a receiver got. `data` is the Value (null for typed payloads).
struct MessageEvent {
  Value data;
  std::vector<MessagePort> ports;
  std::shared_ptr<const TypedContent> typed;  // set for typed payloads
  /// Service-worker code, BroadcastChannel: a post that came from another node of a federated
  /// scope (sw_daemon --nats, DESIGN §16) carries that node's name; empty for everything that
  /// originates on this node (and always, in pages).
  std::string node;

  bool isTyped() const { return typed != nullptr; }
  uint64_t typeId() const { return typed ? typed->typeId : 0; }

  /// The typed payload as T; DataCloneError when it is a Value or another schema.
  /// The reader stays valid while this event (or a copy of it) lives.
  template <typename T>
  Result<typename T::Reader> as() const {
    if (!typed) return makeError(Errc::DATA_CLONE, "payload is a Value, not a typed struct");
    if (typed->typeId != capnp::typeId<T>()) return makeError(Errc::DATA_CLONE, "payload has another schema");
    try {
      return typed->content.template getAs<T>();
    } catch (const kj::Exception& e) {
      return makeError(Errc::DATA_CLONE, e.getDescription().cStr());
    }
  }
};

/// The payload could not be decoded here (unknown schema, malformed value).
struct MessageErrorEvent {
  std::string target;  // "controller", "client", ...
  Error error;
};

/// Registry of application schemas a receiver accepts; a typed payload of any other schema
/// raises messageerror at that receiver only.
class TypeRegistry {
 public:
  template <typename T>
  void accept() {
    validators_.push_back({capnp::typeId<T>(), [](capnp::AnyPointer::Reader r) {
                             r.getAs<T>().totalSize();  // throws on a non-struct or malformed pointer
                           }});
  }
  /// DataCloneError when the schema is not accepted or the content is not that struct.
  Result<void> check(uint64_t typeId, capnp::AnyPointer::Reader content) const;

 private:
  struct Entry {
    uint64_t typeId;
    std::function<void(capnp::AnyPointer::Reader)> validate;
  };
  std::vector<Entry> validators_;
};

}  // namespace swipc
