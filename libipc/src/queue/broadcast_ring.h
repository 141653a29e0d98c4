// Broadcast ring: one writer (the daemon), any number of readers that map it read-only and never
// slow the writer down. Lapped readers find out; torn reads are detected (Aeron's broadcast buffer
// idea: the writer announces how far it is about to overwrite before it writes).
//
// One channel = one memfd (the region), laid out as:
//
//   0                        128               256                     384              512
//   +------------------------+-----------------+-----------------------+----------------+--------------------+
//   | BroadcastRegionHeader  | tailIntent u64  | tail u64 | oldest u64 | wakeSeq u32    | data: capacity     |
//   | magic, layoutVersion,  | (bytes about to | (published; start of  | (futex: bumped | bytes, power of 2, |
//   | recordHeaderBytes,     |  be written)    |  the oldest intact    |  after writes) | records below      |
//   | capacity, dataOffset   |                 |  record)              |                |                    |
//   +------------------------+-----------------+-----------------------+----------------+--------------------+
//    written once, magic      \_____________ BroadcastHeader (3 x 128 bytes) ___________/
//    last (release)             written only by the daemon, read by every member
//
//   record (starts 8-aligned, never straddles the end of the data):
//   0            4          8                16               24
//   +------------+----------+----------------+----------------+-------------------------+
//   | length u32 | type u32 | seq u64        | tag u64        | payload, padded to 8    |
//   +------------+----------+----------------+----------------+-------------------------+
//   type 0xFFFFFFFF = PAD to the end of the data (length = bytes after its header); less than 24
//   bytes to the end carry no PAD header: readers skip them by position.
//
// Writer: evict what it will overwrite, publish `oldest`, store tailIntent, release fence, write
// the record, publish tail. Reader: copy the record, acquire fence, re-read tailIntent; if the
// writer came within one ring length of the copied bytes, the copy may be torn: resynchronise at
// `oldest`. Records carry a channel sequence number, so a reader knows exactly how many it missed.
//
// The region header is written once by the daemon (formatBroadcastRegion) before the fd leaves it,
// magic last with release ordering; a member checks it once (readBroadcastHeader) and from then on
// uses only its own copy of the capacity, never the shared one.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <type_traits>
#include <vector>

#include "shm/layout.h"
#include "swipc/error.h"

namespace swipc::queue {

// ---------------------------------------------------------------- shared layout

inline constexpr uint64_t BROADCAST_MAGIC = 0x31434243'50495753ULL;  // "SWIPCBC1" little-endian
inline constexpr uint32_t BROADCAST_LAYOUT_VERSION = 1;
/// Data capacities a region may have (same bounds as the per-client rings).
inline constexpr uint64_t MIN_BROADCAST_CAPACITY = shm::MIN_RING_BYTES;
inline constexpr uint64_t MAX_BROADCAST_CAPACITY = shm::MAX_RING_BYTES;

/// @concurrent: written once by the daemon (formatBroadcastRegion), `magic` last with release
/// ordering; read-only afterwards. Members copy it once and validate the copy.
struct BroadcastRegionHeader {
  uint64_t magic;              // BROADCAST_MAGIC; the publish word
  uint32_t layoutVersion;      // BROADCAST_LAYOUT_VERSION
  uint32_t recordHeaderBytes;  // sizeof(BroadcastRecordHeader)
  uint64_t capacity;           // data bytes, a power of two in [MIN, MAX]_BROADCAST_CAPACITY
  uint64_t dataOffset;         // BROADCAST_DATA_OFFSET: where the data starts in the region
};
static_assert(std::is_standard_layout_v<BroadcastRegionHeader> && std::is_trivially_copyable_v<BroadcastRegionHeader>);
static_assert(offsetof(BroadcastRegionHeader, magic) == 0);
static_assert(offsetof(BroadcastRegionHeader, layoutVersion) == 8);
static_assert(offsetof(BroadcastRegionHeader, recordHeaderBytes) == 12);
static_assert(offsetof(BroadcastRegionHeader, capacity) == 16);
static_assert(offsetof(BroadcastRegionHeader, dataOffset) == 24);
static_assert(sizeof(BroadcastRegionHeader) == 32);
static_assert(alignof(BroadcastRegionHeader) == 8);
// The magic is published with std::atomic_ref: it must be a lock-free 8-byte word in place.
static_assert(std::atomic_ref<uint64_t>::is_always_lock_free);
static_assert(std::atomic_ref<uint64_t>::required_alignment <= alignof(BroadcastRegionHeader));

/// The ring's indices. @concurrent: written only by the daemon; read by every member.
struct BroadcastHeader {
  alignas(shm::CACHE_LINE) std::atomic<uint64_t> tailIntent;
  alignas(shm::CACHE_LINE) std::atomic<uint64_t> tail;
  std::atomic<uint64_t> oldest;
  alignas(shm::CACHE_LINE) std::atomic<uint32_t> wakeSeq;
};
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::is_standard_layout_v<BroadcastHeader>);
static_assert(offsetof(BroadcastHeader, tailIntent) == 0);
static_assert(offsetof(BroadcastHeader, tail) == shm::CACHE_LINE);
static_assert(offsetof(BroadcastHeader, oldest) == shm::CACHE_LINE + 8);
static_assert(offsetof(BroadcastHeader, wakeSeq) == 2 * shm::CACHE_LINE);
static_assert(sizeof(BroadcastHeader) == 3 * shm::CACHE_LINE);
static_assert(alignof(BroadcastHeader) == shm::CACHE_LINE);

/// One record's header in the data area; the payload follows, padded to 8 bytes.
struct BroadcastRecordHeader {
  uint32_t length;  // payload bytes, excluding this header and the padding
  uint32_t type;    // RECORD_TYPE_PAD or a value chosen by the layer above
  uint64_t seq;     // channel sequence number (a reader sees gaps in it when lapped)
  uint64_t tag;     // chosen by the layer above (who posted it)
};
static_assert(std::is_standard_layout_v<BroadcastRecordHeader> && std::is_trivially_copyable_v<BroadcastRecordHeader>);
static_assert(offsetof(BroadcastRecordHeader, length) == 0);
static_assert(offsetof(BroadcastRecordHeader, type) == 4);
static_assert(offsetof(BroadcastRecordHeader, seq) == 8);
static_assert(offsetof(BroadcastRecordHeader, tag) == 16);
static_assert(sizeof(BroadcastRecordHeader) == 24);
static_assert(alignof(BroadcastRecordHeader) == 8);

/// Bytes reserved for the region header: one cache line, so the indices start aligned.
inline constexpr size_t BROADCAST_REGION_HEADER_BYTES = shm::CACHE_LINE;
/// Size of the indices (BroadcastHeader).
inline constexpr size_t BROADCAST_HEADER_BYTES = sizeof(BroadcastHeader);
inline constexpr size_t BROADCAST_RECORD_HEADER_BYTES = sizeof(BroadcastRecordHeader);
/// Where the indices and the data start in a region.
inline constexpr uint64_t BROADCAST_INDICES_OFFSET = BROADCAST_REGION_HEADER_BYTES;
inline constexpr uint64_t BROADCAST_DATA_OFFSET = BROADCAST_INDICES_OFFSET + BROADCAST_HEADER_BYTES;
static_assert(sizeof(BroadcastRegionHeader) <= BROADCAST_REGION_HEADER_BYTES);
static_assert(BROADCAST_INDICES_OFFSET % shm::CACHE_LINE == 0 && BROADCAST_DATA_OFFSET % shm::CACHE_LINE == 0);
static_assert(BROADCAST_DATA_OFFSET == 512);

/// Bytes of a region (memfd size) whose ring has `capacity` data bytes.
constexpr uint64_t broadcastRegionBytes(uint64_t capacity) { return BROADCAST_DATA_OFFSET + capacity; }
/// Largest payload one record of a ring with `capacity` data bytes can carry.
constexpr uint64_t broadcastMaxPayload(uint64_t capacity) { return capacity / 4 - BROADCAST_RECORD_HEADER_BYTES; }

// ---------------------------------------------------------------- roles

/// @concurrent: one writer thread in the daemon.
class BroadcastWriter {
 public:
  BroadcastWriter() = default;
  /// Over indices and data the caller laid out itself. Prefer formatBroadcastRegion().
  BroadcastWriter(BroadcastHeader* header, uint8_t* data, uint64_t capacity);

  /// Largest payload one record can carry.
  uint64_t maxPayload() const { return broadcastMaxPayload(capacity_); }
  /// Appends one record (never blocks, never waits for readers). `type` must not be PAD.
  void append(uint32_t type, uint64_t seq, uint64_t tag, const void* payload, uint32_t length);
  /// Bumps the futex word and wakes every waiter (one syscall, whatever the number of readers).
  void wakeAll();
  uint64_t tail() const { return tail_; }

 private:
  BroadcastHeader* header_ = nullptr;
  uint8_t* data_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;
  uint64_t tail_ = 0;
  std::deque<uint64_t> starts_;  // positions of the records still (partly) in the ring
};

struct BroadcastRecord {
  uint32_t type = 0;
  uint64_t seq = 0;
  uint64_t tag = 0;
  uint32_t length = 0;
  std::vector<uint64_t> words;  // private, 8-byte aligned copy of the payload
  const uint8_t* bytes() const { return reinterpret_cast<const uint8_t*>(words.data()); }
};

/// @concurrent: one reader thread; any number of readers in any processes.
class BroadcastReader {
 public:
  enum class Status { OK, EMPTY };

  BroadcastReader() = default;
  /// Over indices and data the caller located itself. Prefer readBroadcastHeader() +
  /// openBroadcastReader().
  BroadcastReader(const BroadcastHeader* header, const uint8_t* data, uint64_t capacity, uint64_t startPos);

  /// The next intact record, or EMPTY. After being lapped (or a torn copy) the reader silently
  /// resynchronises at the oldest intact record; the caller sees the gap in `seq`.
  Status next(BroadcastRecord& out);
  uint64_t cursor() const { return cursor_; }
  /// Times this reader had to resynchronise.
  uint64_t resyncs() const { return resyncs_; }
  const std::atomic<uint32_t>& wakeWord() const { return header_->wakeSeq; }

 private:
  bool overwritten(uint64_t pos) const;
  void resync();

  const BroadcastHeader* header_ = nullptr;
  const uint8_t* data_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;
  uint64_t cursor_ = 0;
  uint64_t resyncs_ = 0;
};

// ---------------------------------------------------------------- the region

/// What readBroadcastHeader() accepted: the member's private, trusted copy of the geometry.
struct BroadcastRegion {
  uint64_t capacity = 0;    // data bytes, power of two
  uint64_t totalBytes = 0;  // broadcastRegionBytes(capacity): the bytes the member uses
};

/// Daemon side: formats a fresh (zero-filled) region of `bytes` bytes at `base` (the daemon's
/// writable mapping, cache-line aligned) for a ring of `capacity` data bytes, and returns its
/// writer. The header's magic is stored last, with release ordering. Preconditions (asserted):
/// capacity a power of two in [MIN_BROADCAST_CAPACITY, MAX_BROADCAST_CAPACITY], bytes >=
/// broadcastRegionBytes(capacity).
BroadcastWriter formatBroadcastRegion(void* base, size_t bytes, uint64_t capacity);

/// Member side: checks the header of a region a peer formatted: `base` is the start of our
/// mapping (8-byte aligned, asserted) and `mappedBytes` its size. Checked in this order, each
/// with its own message: the mapping holds the header; magic (ProtocolViolation); layout version
/// (VersionMismatch); capacity a power of two in range; the region fits the mapping; record
/// header size; data offset (all ProtocolViolation). The header is copied once, never re-read.
Result<BroadcastRegion> readBroadcastHeader(const void* base, size_t mappedBytes);

/// Member side: a reader over a region readBroadcastHeader() accepted, starting at `startPos`
/// (the tail the daemon recorded when the join was processed).
BroadcastReader openBroadcastReader(const void* base, const BroadcastRegion& region, uint64_t startPos);

}  // namespace swipc::queue
