// Broadcast ring: one writer (the daemon), any number of readers that map it read-only and never
// slow the writer down. Lapped readers find out; torn reads are detected (Aeron's broadcast buffer
// idea: the writer announces how far it is about to overwrite before it writes).
//
//   BroadcastHeader (3 x 128 bytes, written only by the daemon)       data (capacity, power of 2)
//   +----------------+----------------------+----------------+  +----------------------------------+
//   | tailIntent u64 | tail u64, oldest u64 | wakeSeq u32    |  | [u32 len|u32 type|u64 seq|u64 tag|
//   | (bytes about   | (published; oldest   | (futex: bumped |  |  payload padded to 8] ... PAD    |
//   |  to be written)|  intact record start)|  after writes) |  +----------------------------------+
//   +----------------+----------------------+----------------+
//
// Writer: evict what it will overwrite, publish `oldest`, store tailIntent, release fence, write
// the record, publish tail. Reader: copy the record, acquire fence, re-read tailIntent; if the
// writer came within one ring length of the copied bytes, the copy may be torn: resynchronise at
// `oldest`. Records carry a channel sequence number, so a reader knows exactly how many it missed.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "shm/layout.h"

namespace swipc::queue {

struct BroadcastHeader {
  alignas(shm::CACHE_LINE) std::atomic<uint64_t> tailIntent;
  alignas(shm::CACHE_LINE) std::atomic<uint64_t> tail;
  std::atomic<uint64_t> oldest;
  alignas(shm::CACHE_LINE) std::atomic<uint32_t> wakeSeq;
};
static_assert(offsetof(BroadcastHeader, tail) == shm::CACHE_LINE);
static_assert(offsetof(BroadcastHeader, wakeSeq) == 2 * shm::CACHE_LINE);
static_assert(sizeof(BroadcastHeader) == 3 * shm::CACHE_LINE);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

inline constexpr size_t BROADCAST_HEADER_BYTES = sizeof(BroadcastHeader);
inline constexpr size_t BROADCAST_RECORD_HEADER_BYTES = 24;

/// @concurrent: one writer thread in the daemon.
class BroadcastWriter {
 public:
  BroadcastWriter() = default;
  BroadcastWriter(BroadcastHeader* header, uint8_t* data, uint64_t capacity);

  /// Largest payload one record can carry.
  uint64_t maxPayload() const { return capacity_ / 4 - BROADCAST_RECORD_HEADER_BYTES; }
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

}  // namespace swipc::queue
