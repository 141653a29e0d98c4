// Typed payloads: any application Cap'n Proto struct posted instead of a Value.
#pragma once

#include <capnp/any.h>
#include <capnp/generated-header-support.h>

#include <cstdint>
#include <functional>
#include <utility>

namespace swipc {

/// Builds a typed payload: given an AnyPointer builder, initialise your struct in it.
using TypedBuilder = std::function<void(capnp::AnyPointer::Builder)>;

/// Helper for typed posts: `typedBuilder<MySchema>([](MySchema::Builder b){ b.setX(1); })`.
template <typename T, typename F>
std::pair<uint64_t, TypedBuilder> typedBuilder(F&& fill) {
  return {capnp::typeId<T>(), [fill = std::forward<F>(fill)](capnp::AnyPointer::Builder b) mutable {
            fill(b.initAs<T>());
          }};
}

}  // namespace swipc
