#include "federation/bundle.h"

#include <cstring>

namespace swipc::federation {

namespace {

constexpr size_t padTo8(size_t n) { return (n + 7) & ~size_t{7}; }

void put32(std::vector<uint8_t>& out, size_t at, uint32_t v) { std::memcpy(out.data() + at, &v, sizeof v); }
void put16(std::vector<uint8_t>& out, size_t at, uint16_t v) { std::memcpy(out.data() + at, &v, sizeof v); }

uint32_t get32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
uint16_t get16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

size_t bundleItemBytes(size_t bytes) { return BUNDLE_ITEM_HEADER_BYTES + padTo8(bytes); }

std::vector<uint8_t> encodeBundle(const std::vector<std::string_view>& items) {
  size_t total = BUNDLE_HEADER_BYTES;
  for (auto item : items) total += bundleItemBytes(item.size());
  std::vector<uint8_t> out(total, 0);  // the zeros are the reserved fields and the padding
  put32(out, 0, BUNDLE_MAGIC);
  put16(out, 4, BUNDLE_VERSION);
  put32(out, 8, static_cast<uint32_t>(items.size()));
  size_t at = BUNDLE_HEADER_BYTES;
  for (auto item : items) {
    put32(out, at, static_cast<uint32_t>(item.size()));
    if (!item.empty()) std::memcpy(out.data() + at + BUNDLE_ITEM_HEADER_BYTES, item.data(), item.size());
    at += bundleItemBytes(item.size());
  }
  return out;
}

bool looksLikeBundle(const uint8_t* data, size_t bytes) {
  return bytes >= BUNDLE_HEADER_BYTES && get32(data) == BUNDLE_MAGIC && get16(data + 4) == BUNDLE_VERSION;
}

std::optional<std::vector<std::string_view>> decodeBundle(const uint8_t* data, size_t bytes) {
  if (!looksLikeBundle(data, bytes) || get16(data + 6) != 0 || get32(data + 12) != 0) return std::nullopt;
  const uint32_t count = get32(data + 8);
  // Every item takes at least its header and 8 bytes (no item is empty): a count the message
  // cannot hold is refused before anything is reserved for it.
  if (count < 2 || count > (bytes - BUNDLE_HEADER_BYTES) / (BUNDLE_ITEM_HEADER_BYTES + 8)) return std::nullopt;
  std::vector<std::string_view> items;
  items.reserve(count);
  size_t at = BUNDLE_HEADER_BYTES;
  for (uint32_t i = 0; i < count; ++i) {
    if (bytes - at < BUNDLE_ITEM_HEADER_BYTES) return std::nullopt;
    const size_t length = get32(data + at);
    if (length == 0 || get32(data + at + 4) != 0) return std::nullopt;
    const size_t room = bytes - at - BUNDLE_ITEM_HEADER_BYTES;
    if (length > room || padTo8(length) > room) return std::nullopt;
    const uint8_t* item = data + at + BUNDLE_ITEM_HEADER_BYTES;
    for (size_t p = length; p < padTo8(length); ++p)
      if (item[p] != 0) return std::nullopt;
    items.emplace_back(reinterpret_cast<const char*>(item), length);
    at += bundleItemBytes(length);
  }
  if (at != bytes) return std::nullopt;
  return items;
}

}  // namespace swipc::federation
