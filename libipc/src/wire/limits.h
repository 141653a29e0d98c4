// The one place that decides how much a decoder will read (Cap'n Proto ReaderOptions).
#pragma once

#include <capnp/message.h>

#include <cstdint>

namespace swipc::wire {

inline constexpr uint64_t DEFAULT_MAX_MESSAGE_BYTES = 64ull << 20;
/// Deepest Value nesting accepted (lists/maps inside each other).
inline constexpr int MAX_NESTING = 64;
/// Largest control datagram (Hello, Welcome, ...) on the socket.
inline constexpr size_t MAX_CONTROL_BYTES = 8192;

/// ReaderOptions for an envelope of at most `maxMessageBytes` bytes: the traversal limit counts
/// every word at most twice (amplification via shared pointers is refused beyond that).
capnp::ReaderOptions readerOptions(uint64_t maxMessageBytes);

}  // namespace swipc::wire
