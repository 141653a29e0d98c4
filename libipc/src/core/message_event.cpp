#include "swipc/message_event.h"

#include <kj/exception.h>

#include <cstdio>

namespace swipc {

Result<void> TypeRegistry::check(uint64_t typeId, capnp::AnyPointer::Reader content) const {
  for (const auto& e : validators_) {
    if (e.typeId != typeId) continue;
    try {
      e.validate(content);
      return {};
    } catch (const kj::Exception& ex) {
      return makeError(Errc::DATA_CLONE, std::string("typed payload does not match its schema: ") +
                                             ex.getDescription().cStr());
    }
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(typeId));
  return makeError(Errc::DATA_CLONE, std::string("no accepted schema with type id 0x") + buf);
}

}  // namespace swipc
