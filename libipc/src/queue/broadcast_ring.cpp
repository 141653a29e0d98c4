#include "queue/broadcast_ring.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "queue/ring_layout.h"
#include "swipc/error.h"

namespace swipc::queue {

namespace {
std::string hex(uint64_t v) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}
constexpr bool isPow2(uint64_t v) { return v && !(v & (v - 1)); }
constexpr bool validCapacity(uint64_t c) {
  return isPow2(c) && c >= MIN_BROADCAST_CAPACITY && c <= MAX_BROADCAST_CAPACITY;
}
}  // namespace

// ---------------------------------------------------------------- region

BroadcastWriter formatBroadcastRegion(void* base, size_t bytes, uint64_t capacity) {
  SWIPC_REQUIRE(validCapacity(capacity), "broadcast capacity: power of two in [MIN, MAX]_BROADCAST_CAPACITY, got " +
                                             std::to_string(capacity));
  SWIPC_REQUIRE(bytes >= broadcastRegionBytes(capacity),
                "broadcast region of " + std::to_string(bytes) + " bytes, needs " +
                    std::to_string(broadcastRegionBytes(capacity)));
  SWIPC_REQUIRE(reinterpret_cast<uintptr_t>(base) % shm::CACHE_LINE == 0, "broadcast region not cache-line aligned");
  auto* region = static_cast<uint8_t*>(base);
  auto* header = new (region + BROADCAST_INDICES_OFFSET) BroadcastHeader();  // all indices 0
  BroadcastRegionHeader h{};
  h.layoutVersion = BROADCAST_LAYOUT_VERSION;
  h.recordHeaderBytes = BROADCAST_RECORD_HEADER_BYTES;
  h.capacity = capacity;
  h.dataOffset = BROADCAST_DATA_OFFSET;
  std::memcpy(region, &h, sizeof h);  // magic still 0: not a region yet
  auto* published = reinterpret_cast<BroadcastRegionHeader*>(region);
  std::atomic_ref<uint64_t>(published->magic).store(BROADCAST_MAGIC, std::memory_order_release);
  return BroadcastWriter(header, region + BROADCAST_DATA_OFFSET, capacity);
}

Result<BroadcastRegion> readBroadcastHeader(const void* base, size_t mappedBytes) {
  SWIPC_REQUIRE(reinterpret_cast<uintptr_t>(base) % alignof(BroadcastRegionHeader) == 0,
                "broadcast region not 8-byte aligned (pass the start of the mapping)");
  if (mappedBytes < BROADCAST_REGION_HEADER_BYTES)
    return makeError(Errc::PROTOCOL_VIOLATION, "broadcast region of " + std::to_string(mappedBytes) +
                                                   " bytes is smaller than its " +
                                                   std::to_string(BROADCAST_REGION_HEADER_BYTES) + "-byte header");
  // The magic is the publish word (stored last, release): everything else is visible once it is.
  // A lock-free atomic load only reads, so the member's read-only mapping is fine.
  auto* shared = static_cast<const BroadcastRegionHeader*>(base);
  const uint64_t magic =
      std::atomic_ref<uint64_t>(const_cast<uint64_t&>(shared->magic)).load(std::memory_order_acquire);
  if (magic != BROADCAST_MAGIC)
    return makeError(Errc::PROTOCOL_VIOLATION,
                     magic == 0 ? std::string("broadcast region has no magic (never formatted)")
                                : "broadcast region magic " + hex(magic) + " is not a swipc channel ring's");
  BroadcastRegionHeader h;
  std::memcpy(&h, base, sizeof h);  // one copy: never re-read the shared header
  if (h.layoutVersion != BROADCAST_LAYOUT_VERSION)
    return makeError(Errc::VERSION_MISMATCH, "broadcast ring layout version " + std::to_string(h.layoutVersion) +
                                                 ", expected " + std::to_string(BROADCAST_LAYOUT_VERSION));
  if (!validCapacity(h.capacity))
    return makeError(Errc::PROTOCOL_VIOLATION, "broadcast ring capacity " + std::to_string(h.capacity) +
                                                   " is not a power of two in [" +
                                                   std::to_string(MIN_BROADCAST_CAPACITY) + ", " +
                                                   std::to_string(MAX_BROADCAST_CAPACITY) + "]");
  if (broadcastRegionBytes(h.capacity) > mappedBytes)
    return makeError(Errc::PROTOCOL_VIOLATION, "broadcast ring of " + std::to_string(h.capacity) + " data bytes needs " +
                                                   std::to_string(broadcastRegionBytes(h.capacity)) +
                                                   " bytes, but only " + std::to_string(mappedBytes) + " are mapped");
  if (h.recordHeaderBytes != BROADCAST_RECORD_HEADER_BYTES)
    return makeError(Errc::PROTOCOL_VIOLATION, "broadcast record header of " + std::to_string(h.recordHeaderBytes) +
                                                   " bytes, expected " + std::to_string(BROADCAST_RECORD_HEADER_BYTES));
  if (h.dataOffset != BROADCAST_DATA_OFFSET)
    return makeError(Errc::PROTOCOL_VIOLATION, "broadcast ring data at offset " + std::to_string(h.dataOffset) +
                                                   ", expected " + std::to_string(BROADCAST_DATA_OFFSET));
  return BroadcastRegion{h.capacity, broadcastRegionBytes(h.capacity)};
}

BroadcastReader openBroadcastReader(const void* base, const BroadcastRegion& region, uint64_t startPos) {
  auto* bytes = static_cast<const uint8_t*>(base);
  return BroadcastReader(reinterpret_cast<const BroadcastHeader*>(bytes + BROADCAST_INDICES_OFFSET),
                         bytes + BROADCAST_DATA_OFFSET, region.capacity, startPos);
}

// ---------------------------------------------------------------- writer

BroadcastWriter::BroadcastWriter(BroadcastHeader* header, uint8_t* data, uint64_t capacity)
    : header_(header), data_(data), capacity_(capacity), mask_(capacity - 1) {
  SWIPC_REQUIRE(validCapacity(capacity), "broadcast capacity: power of two in [MIN, MAX]_BROADCAST_CAPACITY");
  tail_ = header_->tail.load(std::memory_order_relaxed);
}

void BroadcastWriter::append(uint32_t type, uint64_t seq, uint64_t tag, const void* payload, uint32_t length) {
  SWIPC_REQUIRE(type != RECORD_TYPE_PAD, "PAD is reserved");
  SWIPC_REQUIRE(length <= maxPayload(), "broadcast record larger than maxPayload()");
  const uint64_t total = BROADCAST_RECORD_HEADER_BYTES + align8(length);
  const uint64_t pos = tail_ & mask_;
  const uint64_t toEnd = capacity_ - pos;
  const uint64_t pad = total > toEnd ? toEnd : 0;
  const uint64_t recordStart = tail_ + pad;
  const uint64_t newTail = recordStart + total;
  // Everything that starts before newTail - capacity is about to be (partly) overwritten.
  while (!starts_.empty() && starts_.front() + capacity_ < newTail) starts_.pop_front();
  header_->oldest.store(starts_.empty() ? recordStart : starts_.front(), std::memory_order_release);
  // Release: a reader that sees this intent also sees the `oldest` above (it resyncs there).
  header_->tailIntent.store(newTail, std::memory_order_release);
  std::atomic_thread_fence(std::memory_order_release);  // intent is visible before any new byte
  // Less than a header's room to the end needs no marker: readers skip it by position.
  if (pad >= BROADCAST_RECORD_HEADER_BYTES) {
    BroadcastRecordHeader ph{static_cast<uint32_t>(pad - BROADCAST_RECORD_HEADER_BYTES), RECORD_TYPE_PAD, 0, 0};
    std::memcpy(data_ + pos, &ph, sizeof ph);
  }
  BroadcastRecordHeader h{length, type, seq, tag};
  uint8_t* dst = data_ + (recordStart & mask_);
  std::memcpy(dst, &h, sizeof h);
  if (length) std::memcpy(dst + sizeof h, payload, length);
  starts_.push_back(recordStart);
  tail_ = newTail;
  header_->tail.store(newTail, std::memory_order_release);
}

void BroadcastWriter::wakeAll() {
  header_->wakeSeq.fetch_add(1, std::memory_order_release);
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&header_->wakeSeq), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

// ---------------------------------------------------------------- reader

BroadcastReader::BroadcastReader(const BroadcastHeader* header, const uint8_t* data, uint64_t capacity,
                                 uint64_t startPos)
    : header_(header), data_(data), capacity_(capacity), mask_(capacity - 1), cursor_(startPos) {}

bool BroadcastReader::overwritten(uint64_t pos) const {
  std::atomic_thread_fence(std::memory_order_acquire);  // the copy is done before the intent is read
  const uint64_t intent = header_->tailIntent.load(std::memory_order_acquire);  // ... and `oldest` after it
  // The writer overwrites the byte at `pos` when it writes pos + capacity: with its intent past
  // that, the copy from `pos` on may hold its new bytes.
  return intent > pos + capacity_;
}

void BroadcastReader::resync() {
  ++resyncs_;
  uint64_t oldest = header_->oldest.load(std::memory_order_acquire);
  if (oldest > cursor_) cursor_ = oldest;
  cursor_ = (cursor_ + 7) & ~uint64_t{7};
}

BroadcastReader::Status BroadcastReader::next(BroadcastRecord& out) {
  for (int guard = 0; guard < 1 << 20; ++guard) {
    const uint64_t t = header_->tail.load(std::memory_order_acquire);
    if (cursor_ == t) return Status::EMPTY;
    if (t < cursor_ || t - cursor_ > capacity_) {
      // Lapped (or a ring from before a restart): jump to the oldest record still intact.
      uint64_t oldest = header_->oldest.load(std::memory_order_acquire);
      ++resyncs_;
      cursor_ = oldest;
      continue;
    }
    const uint64_t pos = cursor_ & mask_;
    const uint64_t toEnd = capacity_ - pos;
    if (toEnd < BROADCAST_RECORD_HEADER_BYTES) {  // short pad to the end
      cursor_ += toEnd;
      continue;
    }
    BroadcastRecordHeader h;
    std::memcpy(&h, data_ + pos, sizeof h);
    if (overwritten(cursor_)) {
      resync();
      continue;
    }
    if (h.type == RECORD_TYPE_PAD) {
      if (h.length != toEnd - BROADCAST_RECORD_HEADER_BYTES) {
        resync();
        continue;
      }
      cursor_ += toEnd;
      continue;
    }
    const uint64_t total = BROADCAST_RECORD_HEADER_BYTES + align8(h.length);
    if (h.length > broadcastMaxPayload(capacity_) || total > toEnd || cursor_ + total > t) {
      resync();  // impossible framing: only a torn read can produce it
      continue;
    }
    out.words.resize((h.length + 7) / 8);
    if (h.length) std::memcpy(out.words.data(), data_ + pos + BROADCAST_RECORD_HEADER_BYTES, h.length);
    if (overwritten(cursor_)) {
      resync();
      continue;
    }
    out.type = h.type;
    out.seq = h.seq;
    out.tag = h.tag;
    out.length = h.length;
    cursor_ += total;
    return Status::OK;
  }
  return Status::EMPTY;  // a writer faster than us for a million tries: come back later
}

}  // namespace swipc::queue
