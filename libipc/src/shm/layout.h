// The per-client segment: one memfd the daemon creates, seals and passes to the client.
//
//   offset 0                     SEGMENT_HEADER_BYTES
//   +----------------------------+----------------------------------+---------------------------------+
//   | SegmentHeader (daemon, RO  | up ring: RingHeader + data       | down ring: RingHeader + data    |
//   | after handshake)           | client writes, daemon reads      | daemon writes, client reads     |
//   +----------------------------+----------------------------------+---------------------------------+
//
// The daemon fills the header before passing the fd and never reads it back: it keeps its own
// copies of every offset and size. The client validates the header in a fixed order
// (magic, version, header size, bounds) before it uses any other byte.
#pragma once

#include <cstddef>
#include <cstdint>

#include "swipc/error.h"

namespace swipc::shm {

/// Distance in bytes between words written by different processes (two x86 lines, prefetch pairs).
inline constexpr size_t CACHE_LINE = 128;
inline constexpr uint64_t SEGMENT_MAGIC = 0x31434950'49575357ULL;  // "SWIPCIP1" little-endian-ish
inline constexpr uint32_t LAYOUT_VERSION = 1;
inline constexpr size_t SEGMENT_HEADER_BYTES = CACHE_LINE;
inline constexpr uint64_t MIN_RING_BYTES = 1024;
inline constexpr uint64_t MAX_RING_BYTES = 1ULL << 30;

/// @concurrent: written once by the daemon before the fd is passed; read-only afterwards.
struct SegmentHeader {
  uint64_t magic;
  uint32_t layoutVersion;
  uint32_t headerBytes;
  uint64_t totalBytes;
  uint64_t upOffset;       // offset of the up ring's RingHeader
  uint64_t upCapacity;     // data bytes of the up ring (power of two)
  uint64_t downOffset;
  uint64_t downCapacity;
};
static_assert(sizeof(SegmentHeader) <= SEGMENT_HEADER_BYTES);
static_assert(offsetof(SegmentHeader, layoutVersion) == 8);
static_assert(offsetof(SegmentHeader, upOffset) == 24);

/// Where things are inside one segment (the process-local, trusted copy).
struct SegmentLayout {
  uint64_t totalBytes = 0;
  uint64_t upOffset = 0;
  uint64_t upCapacity = 0;
  uint64_t downOffset = 0;
  uint64_t downCapacity = 0;
};

/// Computes the layout for rings of the given data sizes (each a power of two ≥ 1 KiB).
SegmentLayout computeLayout(uint64_t upCapacity, uint64_t downCapacity, size_t ringHeaderBytes);
/// Fills the header at `base`.
void writeHeader(void* base, const SegmentLayout& layout);
/// Validates a header a peer wrote (mappedBytes = the size we mapped) and returns the layout.
/// VersionMismatch for a wrong magic/version, ProtocolViolation for inconsistent sizes.
Result<SegmentLayout> readHeader(const void* base, size_t mappedBytes, size_t ringHeaderBytes);

}  // namespace swipc::shm
