// A bundle: several messages of one NATS subject packed into one NATS message. The link's sender
// thread packs what queued up for one subject while it was writing (a burst of posts on one
// channel); the receiving link unpacks it before anything else sees it, so every other module
// sees the same messages, in the same order, as if they had travelled one by one. A message that
// travels alone is not wrapped. NATS's cost is per message (a protocol line, a parse, a route hop
// and a delivery each), so under a burst this is what keeps the daemon near raw NATS's rate.
//
//   0        4        6        8                 12                16
//   +--------+--------+--------+-----------------+-----------------+
//   | magic  | version| 0      | count u32       | 0 u32           |
//   +--------+--------+--------+-----------------+-----------------+
//   then `count` items, each: length u32, 0 u32, `length` bytes, zero padding to 8
//
// Little-endian, as every host of a scope is. The magic differs from every other frame's first
// bytes (a post's "SWFB", JSON's '{'), so a plain message is never taken for a bundle.
//
// @concurrent: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace swipc::federation {

inline constexpr uint32_t BUNDLE_MAGIC = 0x4B465753;  // "SWFK"
inline constexpr uint16_t BUNDLE_VERSION = 1;
inline constexpr size_t BUNDLE_HEADER_BYTES = 16;
inline constexpr size_t BUNDLE_ITEM_HEADER_BYTES = 8;

/// The bytes one more item of `bytes` adds to a bundle (its header and padding included).
size_t bundleItemBytes(size_t bytes);

/// Packs `items` (at least two; none empty; each at most 4 GiB - 1) into one bundle.
std::vector<uint8_t> encodeBundle(const std::vector<std::string_view>& items);

/// True when `data` starts like a bundle (magic and version): such a message is never a plain one.
bool looksLikeBundle(const uint8_t* data, size_t bytes);

/// The items of a bundle as views into `data`, or nothing when it is not a whole, well-formed
/// bundle (a count of at least 2, no empty item, every length inside the message, zero padding,
/// nothing left over; a hostile count cannot make it reserve more than the message's size): the caller then treats the message as a plain one, and its own decoder refuses it by
/// name.
std::optional<std::vector<std::string_view>> decodeBundle(const uint8_t* data, size_t bytes);

}  // namespace swipc::federation
