#include "queue/broadcast_ring.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstring>

#include "queue/ring_layout.h"
#include "swipc/error.h"

namespace swipc::queue {

namespace {
struct BroadcastRecordHeader {
  uint32_t length;
  uint32_t type;
  uint64_t seq;
  uint64_t tag;
};
static_assert(sizeof(BroadcastRecordHeader) == BROADCAST_RECORD_HEADER_BYTES);
}  // namespace

// ---------------------------------------------------------------- writer

BroadcastWriter::BroadcastWriter(BroadcastHeader* header, uint8_t* data, uint64_t capacity)
    : header_(header), data_(data), capacity_(capacity), mask_(capacity - 1) {
  SWIPC_REQUIRE(capacity >= 1024 && !(capacity & (capacity - 1)), "broadcast capacity: power of two >= 1024");
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
  header_->tailIntent.store(newTail, std::memory_order_relaxed);
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
  std::atomic_thread_fence(std::memory_order_acquire);
  uint64_t intent = header_->tailIntent.load(std::memory_order_relaxed);
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
    if (h.length > capacity_ / 4 || total > toEnd || cursor_ + total > t) {
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
