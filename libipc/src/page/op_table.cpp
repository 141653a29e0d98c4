#include "page/op_table.h"

#include <string>

#include "core/log.h"

namespace swipc::page {

void OpTable::on(schema::Envelope::Which kind, Handler handler) {
  const auto k = static_cast<size_t>(kind);
  SWIPC_REQUIRE(k < MAX_KINDS, "envelope kind " + std::to_string(k) + " is past the op table");
  SWIPC_REQUIRE(!handlers_[k], "envelope kind " + std::to_string(k) + " already has a handler");
  SWIPC_REQUIRE(handler != nullptr, "an empty handler for envelope kind " + std::to_string(k));
  handlers_[k] = std::move(handler);
}

bool OpTable::handles(schema::Envelope::Which kind) const {
  const auto k = static_cast<size_t>(kind);
  return k < MAX_KINDS && handlers_[k] != nullptr;
}

bool OpTable::dispatch(wire::Inbound&& in) {
  auto owner = std::make_shared<const wire::Inbound>(std::move(in));
  auto env = owner->envelope();
  const auto k = static_cast<size_t>(env.which());
  if (k >= MAX_KINDS || !handlers_[k]) {
    core::log().warn("ignoring envelope kind {} from the daemon", k);
    return false;
  }
  handlers_[k](env, owner);
  return true;
}

}  // namespace swipc::page
