#include "core/payload.h"

#include <kj/exception.h>

#include "wire/value_codec.h"

namespace swipc::core {


void writePayload(const OutgoingPayload& p, schema::Payload::Builder out) {
  if (p.value) {
    wire::writeValue(*p.value, out.initValue());
    return;
  }
  auto t = out.initTyped();
  t.setTypeId(p.typeId);
  (*p.build)(t.getContent());
}

namespace {

Result<void> readPayloadUnguarded(schema::Payload::Reader in, const std::shared_ptr<const void>& owner,
                                  const TypeRegistry& types, MessageEvent& event) {
  switch (in.which()) {
    case schema::Payload::VALUE: {
      auto v = wire::readValue(in.getValue());
      if (!v) return v.error();
      event.data = std::move(*v);
      return {};
    }
    case schema::Payload::TYPED: {
      auto t = in.getTyped();
      if (auto ok = types.check(t.getTypeId(), t.getContent()); !ok) return ok.error();
      auto typed = std::make_shared<TypedContent>();
      typed->typeId = t.getTypeId();
      typed->content = t.getContent();
      typed->keepAlive = owner;
      event.typed = std::move(typed);
      return {};
    }
  }
  return makeError(Errc::DATA_CLONE, "payload of a kind this build does not know");
}

}  // namespace

Result<void> readPayload(schema::Payload::Reader in, const std::shared_ptr<const void>& owner,
                         const TypeRegistry& types, MessageEvent& event) {
  // The payload's bytes came from outside (another endpoint, through the daemon): a pointer the
  // walk at receipt could not judge (of the wrong kind) throws as it is read. That is this
  // message's messageerror, never the end of the receiver.
  try {
    return readPayloadUnguarded(in, owner, types, event);
  } catch (const kj::Exception& e) {
    return makeError(Errc::DATA_CLONE, std::string("malformed payload: ") + e.getDescription().cStr());
  }
}

}  // namespace swipc::core
