#include "queue/spsc_ring.h"

#include <cstring>

#include "swipc/error.h"

namespace swipc::queue {

namespace {
bool isPow2(uint64_t v) { return v && !(v & (v - 1)); }
}  // namespace

// ---------------------------------------------------------------- writer

RingWriter::RingWriter(RingHeader* header, uint8_t* data, uint64_t capacity)
    : header_(header), data_(data), capacity_(capacity), mask_(capacity - 1) {
  SWIPC_REQUIRE(isPow2(capacity) && capacity >= 64, "ring capacity must be a power of two >= 64");
  tail_ = header_->tail.load(std::memory_order_relaxed);
  headCache_ = tail_;
}

RingStatus RingWriter::refreshHead() {
  uint64_t h = header_->head.load(std::memory_order_acquire);
  if (h < headCache_ || h > tail_) return RingStatus::CORRUPT;
  headCache_ = h;
  return RingStatus::OK;
}

RingStatus RingWriter::tryClaim(uint32_t length, uint8_t*& payload) {
  SWIPC_REQUIRE(!claimed_, "tryClaim twice without commit");
  SWIPC_REQUIRE(length <= maxPayload(), "record payload larger than maxPayload()");
  const uint64_t total = RECORD_HEADER_BYTES + align8(length);
  const uint64_t pos = tail_ & mask_;
  const uint64_t toEnd = capacity_ - pos;
  const uint64_t pad = total > toEnd ? toEnd : 0;
  const uint64_t need = pad + total;
  if (tail_ + need - headCache_ > capacity_) {
    if (refreshHead() != RingStatus::OK) return RingStatus::CORRUPT;
    if (tail_ + need - headCache_ > capacity_) return RingStatus::FULL;
  }
  if (pad) {
    RecordHeader padHeader{static_cast<uint32_t>(pad - RECORD_HEADER_BYTES), RECORD_TYPE_PAD};
    std::memcpy(data_ + pos, &padHeader, sizeof padHeader);
  }
  claimPos_ = (tail_ + pad) & mask_;
  claimLen_ = length;
  claimPad_ = pad;
  claimed_ = true;
  // Remember the pad so commit() advances past it.
  tail_ += pad;
  payload = data_ + claimPos_ + RECORD_HEADER_BYTES;
  return RingStatus::OK;
}

void RingWriter::commit(uint32_t type) {
  SWIPC_REQUIRE(claimed_, "commit without tryClaim");
  SWIPC_REQUIRE(type != RECORD_TYPE_PAD, "PAD is reserved");
  RecordHeader h{claimLen_, type};
  std::memcpy(data_ + claimPos_, &h, sizeof h);
  tail_ += RECORD_HEADER_BYTES + align8(claimLen_);
  claimed_ = false;
  header_->tail.store(tail_, std::memory_order_release);
}

void RingWriter::cancelClaim() {
  SWIPC_REQUIRE(claimed_, "cancelClaim without tryClaim");
  tail_ -= claimPad_;
  claimed_ = false;
}

bool RingWriter::takeReaderSleeping() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (header_->readerSleeping.load(std::memory_order_relaxed) == 0) return false;
  return header_->readerSleeping.exchange(0, std::memory_order_acq_rel) != 0;
}

RingStatus RingWriter::tryWrite(uint32_t type, const void* bytes, uint32_t length) {
  uint8_t* p = nullptr;
  RingStatus s = tryClaim(length, p);
  if (s != RingStatus::OK) return s;
  if (length) std::memcpy(p, bytes, length);
  commit(type);
  return RingStatus::OK;
}

bool RingWriter::readerNeedsWake() const {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return header_->readerSleeping.load(std::memory_order_relaxed) != 0;
}

void RingWriter::setWaiting(bool waiting) {
  header_->writerWaiting.store(waiting ? 1 : 0, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

// ---------------------------------------------------------------- reader

RingReader::RingReader(RingHeader* header, const uint8_t* data, uint64_t capacity)
    : header_(header), data_(data), capacity_(capacity), mask_(capacity - 1) {
  SWIPC_REQUIRE(isPow2(capacity) && capacity >= 64, "ring capacity must be a power of two >= 64");
  head_ = header_->head.load(std::memory_order_relaxed);
  tailCache_ = head_;
}

RingStatus RingReader::peek(RecordView& out) {
  // The tail is re-read only once everything published before is consumed: a reader that is
  // behind does not pull the writer's tail line across cores for every record.
  uint64_t t = tailCache_;
  if (head_ == t) {
    t = header_->tail.load(std::memory_order_acquire);
    if (t < head_ || t - head_ > capacity_ || (t & 7) != 0) return RingStatus::CORRUPT;
    tailCache_ = t;
  }
  // Peeking again without release() returns the same record.
  uint64_t h = head_;
  pendingAdvance_ = 0;
  while (h != t) {
    const uint64_t pos = h & mask_;
    const uint64_t toEnd = capacity_ - pos;
    RecordHeader rh;
    std::memcpy(&rh, data_ + pos, sizeof rh);  // one fetch; every check below uses the copy
    if (rh.type == RECORD_TYPE_PAD) {
      if (rh.length != toEnd - RECORD_HEADER_BYTES || h + toEnd > t) return RingStatus::CORRUPT;
      h += toEnd;
      head_ = h;  // a pad is consumed as soon as it is seen
      continue;
    }
    if (rh.length > capacity_ / 4) return RingStatus::CORRUPT;
    const uint64_t total = RECORD_HEADER_BYTES + align8(rh.length);
    if (total > toEnd || h + total > t) return RingStatus::CORRUPT;
    out.type = rh.type;
    out.length = rh.length;
    out.payload = data_ + pos + RECORD_HEADER_BYTES;
    pendingAdvance_ = total;
    return RingStatus::OK;
  }
  return RingStatus::EMPTY;
}

void RingReader::releaseLocal() {
  head_ += pendingAdvance_;
  pendingAdvance_ = 0;
}

void RingReader::release() {
  releaseLocal();
  publishHead();
}

void RingReader::publishHead() { header_->head.store(head_, std::memory_order_release); }

void RingReader::setSleeping(bool sleeping) {
  header_->readerSleeping.store(sleeping ? 1 : 0, std::memory_order_relaxed);
  if (sleeping) std::atomic_thread_fence(std::memory_order_seq_cst);
}

bool RingReader::hasData() {
  return header_->tail.load(std::memory_order_acquire) != head_;
}

bool RingReader::takeWriterWaiting(uint64_t minFree) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (header_->writerWaiting.load(std::memory_order_relaxed) == 0) return false;
  // Hysteresis: a writer woken for every few freed records would sleep again at once, and each
  // round costs both sides a syscall. An impossible tail (used > capacity) wakes it anyway.
  const uint64_t used = header_->tail.load(std::memory_order_acquire) - head_;
  if (used <= capacity_ && capacity_ - used < minFree) return false;
  header_->writerWaiting.store(0, std::memory_order_relaxed);
  return true;
}

}  // namespace swipc::queue
