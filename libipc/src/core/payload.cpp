#include "core/payload.h"

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

Result<void> readPayload(schema::Payload::Reader in, const std::shared_ptr<const void>& owner,
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

}  // namespace swipc::core
