// Shared layout of one single-producer single-consumer byte ring.
//
//   RingHeader (2 x 128 bytes)                           data (capacity bytes, power of two)
//   +---------------------------+---------------------------+--------------------------------------+
//   | writer line:              | reader line:              | records, 8-byte aligned:             |
//   |  tail  (u64, published)   |  head (u64, consumed)     |  [u32 length | u32 type | payload    |
//   |  writerWaiting (u32)      |  readerSleeping (u32)     |   padded to 8] ... [PAD to the end]  |
//   +---------------------------+---------------------------+--------------------------------------+
//
// head and tail are monotonically increasing byte counters; position = counter & (capacity-1).
// A record never straddles the end: the writer fills the rest with one PAD record and starts at 0.
// Each process keeps its own copy of capacity and mask and never re-reads them from shared memory.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "shm/layout.h"

namespace swipc::queue {

inline constexpr size_t RECORD_HEADER_BYTES = 8;
inline constexpr uint32_t RECORD_TYPE_PAD = 0xFFFF'FFFFu;

/// @concurrent: tail/writerWaiting written only by the writer process, head/readerSleeping only by
/// the reader process. Either side may be hostile: every value read from here is validated.
struct RingHeader {
  alignas(shm::CACHE_LINE) std::atomic<uint64_t> tail;
  std::atomic<uint32_t> writerWaiting;  // writer found the ring full; reader should ring after consuming
  alignas(shm::CACHE_LINE) std::atomic<uint64_t> head;
  std::atomic<uint32_t> readerSleeping;  // reader is (about to be) blocked on its doorbell
};

static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(offsetof(RingHeader, tail) == 0);
static_assert(offsetof(RingHeader, head) == shm::CACHE_LINE);
static_assert(sizeof(RingHeader) == 2 * shm::CACHE_LINE);
static_assert(alignof(RingHeader) == shm::CACHE_LINE);

inline constexpr size_t RING_HEADER_BYTES = sizeof(RingHeader);

struct RecordHeader {
  uint32_t length;  // payload bytes, excluding this header and padding
  uint32_t type;    // RECORD_TYPE_PAD or a value chosen by the layer above
};
static_assert(sizeof(RecordHeader) == RECORD_HEADER_BYTES);

constexpr uint64_t align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

}  // namespace swipc::queue
