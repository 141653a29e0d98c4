// Building and reading the Payload union (Value or typed) shared by both sides of the API.
#pragma once

#include <memory>

#include "envelope.capnp.h"
#include "swipc/message_event.h"
#include "wire/codec.h"

namespace swipc::core {

/// What to put in an outgoing payload: a Value, or a typed struct built by a callback.
struct OutgoingPayload {
  const Value* value = nullptr;
  uint64_t typeId = 0;
  const TypedBuilder* build = nullptr;
};

void writePayload(const OutgoingPayload& p, schema::Payload::Builder out);

/// Decodes a payload into `event` (data or typed). DataCloneError when this receiver cannot
/// decode it (unknown schema, value this build cannot represent): the caller raises messageerror.
Result<void> readPayload(schema::Payload::Reader in, const std::shared_ptr<const void>& owner,
                         const TypeRegistry& types, MessageEvent& event);

}  // namespace swipc::core
