#include "shm/layout.h"

#include <atomic>
#include <cstring>
#include <string>

namespace swipc::shm {

namespace {
bool isPow2(uint64_t v) { return v && !(v & (v - 1)); }
}  // namespace

SegmentLayout computeLayout(uint64_t upCapacity, uint64_t downCapacity, size_t ringHeaderBytes) {
  SWIPC_REQUIRE(isPow2(upCapacity) && isPow2(downCapacity) && upCapacity >= MIN_RING_BYTES &&
                    downCapacity >= MIN_RING_BYTES && upCapacity <= MAX_RING_BYTES && downCapacity <= MAX_RING_BYTES,
                "ring capacities must be powers of two in [MIN_RING_BYTES, MAX_RING_BYTES]");
  SegmentLayout l;
  l.upCapacity = upCapacity;
  l.downCapacity = downCapacity;
  l.upOffset = SEGMENT_HEADER_BYTES;
  l.downOffset = l.upOffset + ringHeaderBytes + upCapacity;
  l.totalBytes = l.downOffset + ringHeaderBytes + downCapacity;
  return l;
}

void writeHeader(void* base, const SegmentLayout& layout) {
  SegmentHeader h{};
  h.magic = SEGMENT_MAGIC;
  h.layoutVersion = LAYOUT_VERSION;
  h.headerBytes = SEGMENT_HEADER_BYTES;
  h.totalBytes = layout.totalBytes;
  h.upOffset = layout.upOffset;
  h.upCapacity = layout.upCapacity;
  h.downOffset = layout.downOffset;
  h.downCapacity = layout.downCapacity;
  std::memcpy(base, &h, sizeof h);
  std::atomic_thread_fence(std::memory_order_release);
}

Result<SegmentLayout> readHeader(const void* base, size_t mappedBytes, size_t ringHeaderBytes) {
  if (mappedBytes < SEGMENT_HEADER_BYTES) return makeError(Errc::PROTOCOL_VIOLATION, "segment smaller than its header");
  SegmentHeader h;
  std::memcpy(&h, base, sizeof h);  // one copy: never re-read the shared header
  if (h.magic != SEGMENT_MAGIC) return makeError(Errc::VERSION_MISMATCH, "segment magic mismatch");
  if (h.layoutVersion != LAYOUT_VERSION)
    return makeError(Errc::VERSION_MISMATCH, "segment layout version " + std::to_string(h.layoutVersion) +
                                                 ", expected " + std::to_string(LAYOUT_VERSION));
  if (h.headerBytes != SEGMENT_HEADER_BYTES) return makeError(Errc::PROTOCOL_VIOLATION, "segment header size");
  if (!isPow2(h.upCapacity) || !isPow2(h.downCapacity) || h.upCapacity < MIN_RING_BYTES ||
      h.downCapacity < MIN_RING_BYTES || h.upCapacity > MAX_RING_BYTES || h.downCapacity > MAX_RING_BYTES)
    return makeError(Errc::PROTOCOL_VIOLATION, "ring capacity not a power of two in range");
  SegmentLayout expect = computeLayout(h.upCapacity, h.downCapacity, ringHeaderBytes);
  if (h.upOffset != expect.upOffset || h.downOffset != expect.downOffset || h.totalBytes != expect.totalBytes ||
      h.totalBytes > mappedBytes)
    return makeError(Errc::PROTOCOL_VIOLATION, "segment offsets inconsistent with its size");
  return expect;
}

}  // namespace swipc::shm
