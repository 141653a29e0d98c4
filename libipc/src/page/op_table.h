// OpTable: what the page does with each kind of envelope its daemon sends, the page's half of
// dispatch. Every module registers the kinds it owns (ports: portMessage, portClosed; the
// broadcast feature: bcJoined; ...); the connection hands each envelope that did not come on the
// fast lane to dispatch(). A feature module registers its kinds the same way (page/feature.h),
// so adding one edits no switch.
//
// A kind nobody registered is logged and dropped, as the page has always done with a kind it
// does not expect from its daemon (one meant for the other direction, or from a newer daemon).
#pragma once

#include <array>
#include <cstddef>
#include <functional>
#include <memory>

#include "envelope.capnp.h"
#include "wire/codec.h"

namespace swipc::page {

/// @concurrent: single-threaded (the page's loop thread).
class OpTable {
 public:
  /// Handles one envelope. `owner` holds the bytes `env` points into: keep it to keep them.
  using Handler = std::function<void(schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>& owner)>;

  /// Registers the handler of `kind`. A kind has one owner: registering one twice is a bug.
  void on(schema::Envelope::Which kind, Handler handler);
  bool handles(schema::Envelope::Which kind) const;
  /// Hands `in` to its kind's handler; false (it is logged and dropped) when none is registered.
  bool dispatch(wire::Inbound&& in);

 private:
  /// Room for every kind envelope.capnp has, and more: a kind past it is unknown.
  static constexpr size_t MAX_KINDS = 64;
  std::array<Handler, MAX_KINDS> handlers_;
};

}  // namespace swipc::page
