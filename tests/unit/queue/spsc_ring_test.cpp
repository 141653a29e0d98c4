// SPSC byte ring: record framing, wrap-around, backpressure, hostile indices, wake handshake,
// and one writer process feeding one reader process through a memfd.
#include "queue/spsc_ring.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <new>
#include <thread>
#include <utility>
#include <vector>

#include "shm/memfd.h"
#include "swipc/types.h"

namespace swipc::queue {
namespace {

constexpr uint64_t CAPACITY = 1024;
constexpr uint32_t TYPE = 7;

/// One ring's shared memory, owned by the test: a RingHeader followed by `capacity` data bytes.
class RingMemory {
 public:
  explicit RingMemory(uint64_t capacity)
      : capacity_(capacity),
        storage_(static_cast<uint8_t*>(
            ::operator new (RING_HEADER_BYTES + capacity, std::align_val_t{shm::CACHE_LINE}))) {
    std::memset(storage_, 0, RING_HEADER_BYTES + capacity);
    header_ = new (storage_) RingHeader{};
  }
  ~RingMemory() { ::operator delete (storage_, std::align_val_t{shm::CACHE_LINE}); }
  RingMemory(const RingMemory&) = delete;
  RingMemory& operator=(const RingMemory&) = delete;

  RingHeader* header() const { return header_; }
  uint8_t* data() const { return storage_ + RING_HEADER_BYTES; }
  uint64_t capacity() const { return capacity_; }

  /// Writes a raw record header at ring position `pos` (a hostile or hand-made writer).
  void putRecord(uint64_t pos, uint32_t length, uint32_t type) const {
    RecordHeader h{length, type};
    std::memcpy(data() + pos, &h, sizeof h);
  }
  /// Makes both indices start at `index` (an empty ring that has already carried traffic).
  void startAt(uint64_t index) const {
    header_->tail.store(index);
    header_->head.store(index);
  }

 private:
  uint64_t capacity_;
  uint8_t* storage_;
  RingHeader* header_;
};

uint8_t patternByte(uint64_t seq, uint32_t i) { return static_cast<uint8_t>(seq * 131 + i * 7 + 1); }

void fillPattern(uint8_t* p, uint64_t seq, uint32_t length) {
  for (uint32_t i = 0; i < length; ++i) p[i] = patternByte(seq, i);
}

bool matchesPattern(const uint8_t* p, uint64_t seq, uint32_t length) {
  for (uint32_t i = 0; i < length; ++i)
    if (p[i] != patternByte(seq, i)) return false;
  return true;
}

class SpscRingTest : public ::testing::Test {
 protected:
  explicit SpscRingTest(uint64_t capacity = CAPACITY) : memory_(capacity) {}

  RingWriter makeWriter() { return RingWriter(memory_.header(), memory_.data(), memory_.capacity()); }
  RingReader makeReader() { return RingReader(memory_.header(), memory_.data(), memory_.capacity()); }

  RingStatus writeBytes(RingWriter& w, uint32_t length, uint64_t seq, uint32_t type = TYPE) {
    std::vector<uint8_t> bytes(length);
    fillPattern(bytes.data(), seq, length);
    return w.tryWrite(type, bytes.data(), length);
  }

  RingMemory memory_;
};

// ---------------------------------------------------------------- basic framing

TEST_F(SpscRingTest, PeekReturnsEmptyWhenNothingWritten) {
  RingReader sut = makeReader();
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::EMPTY);
  EXPECT_FALSE(sut.hasData());
}

TEST_F(SpscRingTest, PeekReturnsWrittenRecordWithTypeAndContent) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  ASSERT_EQ(writeBytes(writer, 13, 1, 42), RingStatus::OK);
  EXPECT_TRUE(sut.hasData());
  RecordView v;
  ASSERT_EQ(sut.peek(v), RingStatus::OK);
  EXPECT_EQ(v.type, 42u);
  EXPECT_EQ(v.length, 13u);
  EXPECT_TRUE(matchesPattern(v.payload, 1, 13));
  sut.release();
  EXPECT_EQ(sut.peek(v), RingStatus::EMPTY);
  EXPECT_FALSE(sut.hasData());
}

TEST_F(SpscRingTest, CommitAdvancesTailByHeaderAndPaddedPayload) {
  RingWriter sut = makeWriter();
  ASSERT_EQ(writeBytes(sut, 13, 1), RingStatus::OK);
  EXPECT_EQ(sut.tail(), RECORD_HEADER_BYTES + 16);
  EXPECT_EQ(memory_.header()->tail.load(), RECORD_HEADER_BYTES + 16);
  ASSERT_EQ(writeBytes(sut, 0, 2), RingStatus::OK);
  EXPECT_EQ(sut.tail(), 2 * RECORD_HEADER_BYTES + 16);
}

TEST_F(SpscRingTest, ZeroLengthRecordIsDelivered) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  ASSERT_EQ(writer.tryWrite(TYPE, nullptr, 0), RingStatus::OK);
  RecordView v;
  ASSERT_EQ(sut.peek(v), RingStatus::OK);
  EXPECT_EQ(v.length, 0u);
  EXPECT_EQ(v.type, TYPE);
}

TEST_F(SpscRingTest, ClaimedRecordIsInvisibleUntilCommit) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  uint8_t* p = nullptr;
  ASSERT_EQ(writer.tryClaim(8, p), RingStatus::OK);
  ASSERT_NE(p, nullptr);
  std::memcpy(p, "claimed!", 8);
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::EMPTY);
  EXPECT_FALSE(sut.hasData());
  writer.commit(TYPE);
  ASSERT_EQ(sut.peek(v), RingStatus::OK);
  EXPECT_EQ(std::memcmp(v.payload, "claimed!", 8), 0);
}

TEST_F(SpscRingTest, RecordsArriveInOrder) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  for (uint64_t seq = 0; seq < 10; ++seq)
    ASSERT_EQ(writeBytes(writer, 8 + seq, seq, 100 + seq), RingStatus::OK);
  for (uint64_t seq = 0; seq < 10; ++seq) {
    RecordView v;
    ASSERT_EQ(sut.peek(v), RingStatus::OK);
    EXPECT_EQ(v.type, 100 + seq);
    EXPECT_EQ(v.length, 8 + seq);
    EXPECT_TRUE(matchesPattern(v.payload, seq, v.length));
    sut.release();
  }
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::EMPTY);
}

TEST_F(SpscRingTest, MaxPayloadIsAQuarterOfCapacity) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  EXPECT_EQ(writer.maxPayload(), CAPACITY / 4);
  ASSERT_EQ(writeBytes(writer, CAPACITY / 4, 5), RingStatus::OK);
  RecordView v;
  ASSERT_EQ(sut.peek(v), RingStatus::OK);
  EXPECT_EQ(v.length, CAPACITY / 4);
  EXPECT_TRUE(matchesPattern(v.payload, 5, v.length));
}

TEST_F(SpscRingTest, RecordsOfManySizesSurviveWrapAround) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  uint64_t written = 0, read = 0, pads = 0;
  std::vector<uint32_t> lengths;  // by sequence number
  const uint32_t maxLen = static_cast<uint32_t>(writer.maxPayload());
  // Interleave bursts of writes (until FULL) with partial drains so the two sides meet at every
  // alignment and wrap many times.
  for (int round = 0; round < 400; ++round) {
    for (;;) {
      const uint32_t len = static_cast<uint32_t>((written * 37 + round) % (maxLen + 1));
      const uint64_t before = writer.tail();
      RingStatus s = writeBytes(writer, len, written, static_cast<uint32_t>(written % 1000));
      if (s == RingStatus::FULL) break;
      ASSERT_EQ(s, RingStatus::OK);
      if (writer.tail() - before > RECORD_HEADER_BYTES + align8(len)) ++pads;
      lengths.push_back(len);
      ++written;
    }
    const uint64_t drain = (round % 3 == 0) ? written : read + (written - read + 1) / 2;
    while (read < drain) {
      RecordView v;
      ASSERT_EQ(sut.peek(v), RingStatus::OK) << "record " << read;
      ASSERT_EQ(v.type, read % 1000) << "record " << read;
      ASSERT_EQ(v.length, lengths[read]) << "record " << read;
      ASSERT_TRUE(matchesPattern(v.payload, read, v.length)) << "record " << read;
      sut.release();
      ++read;
    }
  }
  EXPECT_GT(writer.tail(), 100 * CAPACITY);  // wrapped many times
  EXPECT_GT(pads, 10u);                      // and needed PAD records to do it
  EXPECT_EQ(sut.head(), memory_.header()->head.load());
}

TEST_F(SpscRingTest, WrapWritesPadAndStartsRecordAtZero) {
  memory_.startAt(CAPACITY - 32);
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  ASSERT_EQ(writeBytes(writer, 40, 9), RingStatus::OK);  // 48 bytes do not fit in the last 32
  EXPECT_EQ(writer.tail(), CAPACITY + 48);
  RecordHeader pad;
  std::memcpy(&pad, memory_.data() + CAPACITY - 32, sizeof pad);
  EXPECT_EQ(pad.type, RECORD_TYPE_PAD);
  EXPECT_EQ(pad.length, 32 - RECORD_HEADER_BYTES);
  RecordView v;
  ASSERT_EQ(sut.peek(v), RingStatus::OK);
  EXPECT_EQ(v.payload, memory_.data() + RECORD_HEADER_BYTES);
  EXPECT_TRUE(matchesPattern(v.payload, 9, 40));
  sut.release();
  EXPECT_EQ(memory_.header()->head.load(), CAPACITY + 48);
}

TEST_F(SpscRingTest, RecordEndingExactlyAtEndNeedsNoPad) {
  memory_.startAt(CAPACITY - 32);
  RingWriter sut = makeWriter();
  ASSERT_EQ(writeBytes(sut, 24, 1), RingStatus::OK);
  EXPECT_EQ(sut.tail(), CAPACITY);
}

TEST_F(SpscRingTest, ReleaseLocalDefersPublishingHead) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  ASSERT_EQ(writeBytes(writer, 8, 1), RingStatus::OK);
  ASSERT_EQ(writeBytes(writer, 8, 2), RingStatus::OK);
  RecordView v;
  ASSERT_EQ(sut.peek(v), RingStatus::OK);
  sut.releaseLocal();
  ASSERT_EQ(sut.peek(v), RingStatus::OK);
  EXPECT_TRUE(matchesPattern(v.payload, 2, 8));
  sut.releaseLocal();
  EXPECT_EQ(memory_.header()->head.load(), 0u);
  sut.publishHead();
  EXPECT_EQ(memory_.header()->head.load(), 32u);
}

// TODO(test): enable if peek is meant to be idempotent until release. Today a second peek
// without release silently consumes the first record (spsc_ring.cpp, RingReader::peek adds
// pendingAdvance_ to head_), so a caller that peeks, cannot handle the record yet, and peeks
// again later loses it.
TEST_F(SpscRingTest, PeekWithoutReleaseReturnsSameRecordAgain) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  ASSERT_EQ(writeBytes(writer, 8, 1), RingStatus::OK);
  ASSERT_EQ(writeBytes(writer, 8, 2), RingStatus::OK);
  RecordView first, again;
  ASSERT_EQ(sut.peek(first), RingStatus::OK);
  ASSERT_EQ(sut.peek(again), RingStatus::OK);
  EXPECT_EQ(again.payload, first.payload);
}

// ---------------------------------------------------------------- backpressure

TEST_F(SpscRingTest, TryClaimReturnsFullWhenRingIsFull) {
  RingWriter sut = makeWriter();
  for (int i = 0; i < 16; ++i) ASSERT_EQ(writeBytes(sut, 56, i), RingStatus::OK) << i;  // 16 x 64 bytes
  uint8_t* p = nullptr;
  EXPECT_EQ(sut.tryClaim(0, p), RingStatus::FULL);
  EXPECT_EQ(sut.tail(), CAPACITY);
  EXPECT_EQ(memory_.header()->tail.load(), CAPACITY);
}

TEST_F(SpscRingTest, TryClaimSucceedsAfterReaderReleases) {
  RingWriter sut = makeWriter();
  RingReader reader = makeReader();
  for (int i = 0; i < 16; ++i) ASSERT_EQ(writeBytes(sut, 56, i), RingStatus::OK);
  ASSERT_EQ(writeBytes(sut, 56, 16), RingStatus::FULL);
  RecordView v;
  ASSERT_EQ(reader.peek(v), RingStatus::OK);
  reader.release();
  EXPECT_EQ(writeBytes(sut, 56, 16), RingStatus::OK);
  EXPECT_EQ(sut.approxHead(), 64u);
  EXPECT_EQ(writeBytes(sut, 0, 17), RingStatus::FULL);
}

TEST_F(SpscRingTest, TryClaimIsFullWhileReleaseIsOnlyLocal) {
  RingWriter sut = makeWriter();
  RingReader reader = makeReader();
  for (int i = 0; i < 16; ++i) ASSERT_EQ(writeBytes(sut, 56, i), RingStatus::OK);
  RecordView v;
  ASSERT_EQ(reader.peek(v), RingStatus::OK);
  reader.releaseLocal();
  EXPECT_EQ(writeBytes(sut, 56, 16), RingStatus::FULL);
  reader.publishHead();
  EXPECT_EQ(writeBytes(sut, 56, 16), RingStatus::OK);
}

TEST_F(SpscRingTest, TryClaimIsFullWhenPadPlusRecordDoNotFit) {
  memory_.startAt(CAPACITY - 32);
  RingWriter sut = makeWriter();
  RingReader reader = makeReader();
  ASSERT_EQ(writeBytes(sut, 56, 1), RingStatus::OK);  // pad 32 + record 64: tail = CAPACITY + 64
  RecordView v;
  ASSERT_EQ(reader.peek(v), RingStatus::OK);
  reader.release();
  // Fill from 64 up to CAPACITY - 32 (14 records of 64 bytes, one of 32), leaving 32 + 64 free.
  for (int i = 0; i < 14; ++i) ASSERT_EQ(writeBytes(sut, 56, 2 + i), RingStatus::OK) << i;
  ASSERT_EQ(writeBytes(sut, 24, 16), RingStatus::OK);
  EXPECT_EQ(sut.tail() & (CAPACITY - 1), CAPACITY - 32);
  // 96 bytes free: a 72-byte payload needs pad 32 + record 80 > 96, so FULL and nothing is
  // written; a 56-byte payload needs pad 32 + record 64 = 96 and fits exactly.
  const uint64_t tailBefore = sut.tail();
  EXPECT_EQ(writeBytes(sut, 72, 99), RingStatus::FULL);
  EXPECT_EQ(sut.tail(), tailBefore);
  EXPECT_EQ(writeBytes(sut, 56, 99), RingStatus::OK);
  EXPECT_EQ(sut.tail() - reader.head(), CAPACITY);
}

// ---------------------------------------------------------------- hostile writer (reader checks)

TEST_F(SpscRingTest, PeekIsCorruptWhenTailBehindHead) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  ASSERT_EQ(writeBytes(writer, 8, 1), RingStatus::OK);
  RecordView v;
  ASSERT_EQ(sut.peek(v), RingStatus::OK);
  sut.release();
  memory_.header()->tail.store(8);  // head is 16
  EXPECT_EQ(sut.peek(v), RingStatus::CORRUPT);
}

TEST_F(SpscRingTest, PeekIsCorruptWhenTailMoreThanCapacityAhead) {
  RingReader sut = makeReader();
  memory_.putRecord(0, 8, TYPE);
  memory_.header()->tail.store(CAPACITY + 8);
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::CORRUPT);
}

TEST_F(SpscRingTest, PeekIsCorruptWhenTailFarAhead) {
  RingReader sut = makeReader();
  memory_.header()->tail.store(~uint64_t{7});
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::CORRUPT);
}

TEST_F(SpscRingTest, PeekIsCorruptWhenTailUnaligned) {
  RingReader sut = makeReader();
  memory_.putRecord(0, 8, TYPE);  // a valid 16-byte record lies wholly before the tail
  memory_.header()->tail.store(20);
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::CORRUPT);
  memory_.header()->tail.store(17);
  EXPECT_EQ(sut.peek(v), RingStatus::CORRUPT);
}

TEST_F(SpscRingTest, PeekIsCorruptWhenLengthExceedsQuarterCapacity) {
  RingReader sut = makeReader();
  const uint32_t len = CAPACITY / 4 + 1;
  memory_.putRecord(0, len, TYPE);
  memory_.header()->tail.store(RECORD_HEADER_BYTES + align8(len));
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::CORRUPT);
}

TEST_F(SpscRingTest, PeekIsCorruptWhenLengthHuge) {
  RingReader sut = makeReader();
  memory_.putRecord(0, 0xFFFF'FFF0u, TYPE);
  memory_.header()->tail.store(CAPACITY);
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::CORRUPT);
}

TEST_F(SpscRingTest, PeekAcceptsHandMadeRecordOfQuarterCapacity) {
  RingReader sut = makeReader();
  const uint32_t len = CAPACITY / 4;
  memory_.putRecord(0, len, TYPE);
  memory_.header()->tail.store(RECORD_HEADER_BYTES + len);
  RecordView v;
  ASSERT_EQ(sut.peek(v), RingStatus::OK);
  EXPECT_EQ(v.length, len);
}

TEST_F(SpscRingTest, PeekIsCorruptWhenRecordCrossesEnd) {
  memory_.startAt(CAPACITY - 32);
  RingReader sut = makeReader();
  memory_.putRecord(CAPACITY - 32, 64, TYPE);  // 72 bytes from 32 before the end
  memory_.header()->tail.store(CAPACITY - 32 + 72);
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::CORRUPT);
}

TEST_F(SpscRingTest, PeekIsCorruptWhenRecordExtendsPastTail) {
  RingReader sut = makeReader();
  memory_.putRecord(0, 64, TYPE);
  memory_.header()->tail.store(RECORD_HEADER_BYTES + 32);  // record claims 72, tail says 40
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::CORRUPT);
}

TEST_F(SpscRingTest, PeekIsCorruptWhenPadLengthWrong) {
  memory_.startAt(CAPACITY - 32);
  RingReader sut = makeReader();
  memory_.putRecord(CAPACITY - 32, 16, RECORD_TYPE_PAD);  // must be 24 to reach the end
  memory_.putRecord(0, 8, TYPE);
  memory_.header()->tail.store(CAPACITY + 16);
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::CORRUPT);
}

TEST_F(SpscRingTest, PeekIsCorruptWhenPadInMiddleOfRing) {
  RingReader sut = makeReader();
  memory_.putRecord(0, 8, RECORD_TYPE_PAD);
  memory_.putRecord(16, 8, TYPE);
  memory_.header()->tail.store(32);
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::CORRUPT);
}

TEST_F(SpscRingTest, PeekIsCorruptWhenPadExtendsPastTail) {
  memory_.startAt(CAPACITY - 32);
  RingReader sut = makeReader();
  memory_.putRecord(CAPACITY - 32, 24, RECORD_TYPE_PAD);
  memory_.header()->tail.store(CAPACITY - 16);  // pad reaches the end, tail does not
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::CORRUPT);
}

TEST_F(SpscRingTest, PeekSkipsHandMadePadToRecordAtZero) {
  memory_.startAt(CAPACITY - 32);
  RingReader sut = makeReader();
  memory_.putRecord(CAPACITY - 32, 24, RECORD_TYPE_PAD);
  memory_.putRecord(0, 8, TYPE);
  memory_.header()->tail.store(CAPACITY + 16);
  RecordView v;
  ASSERT_EQ(sut.peek(v), RingStatus::OK);
  EXPECT_EQ(v.payload, memory_.data() + RECORD_HEADER_BYTES);
  sut.release();
  EXPECT_EQ(sut.head(), CAPACITY + 16);
}

TEST_F(SpscRingTest, PeekIsEmptyAfterTrailingPadOnly) {
  memory_.startAt(CAPACITY - 32);
  RingReader sut = makeReader();
  memory_.putRecord(CAPACITY - 32, 24, RECORD_TYPE_PAD);
  memory_.header()->tail.store(CAPACITY);
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::EMPTY);
  EXPECT_EQ(sut.head(), CAPACITY);
}

// ---------------------------------------------------------------- hostile reader (writer checks)

TEST_F(SpscRingTest, RefreshHeadIsCorruptWhenHeadMovesBackwards) {
  RingWriter sut = makeWriter();
  RingReader reader = makeReader();
  ASSERT_EQ(writeBytes(sut, 8, 1), RingStatus::OK);
  ASSERT_EQ(writeBytes(sut, 8, 2), RingStatus::OK);
  RecordView v;
  ASSERT_EQ(reader.peek(v), RingStatus::OK);
  reader.release();
  ASSERT_EQ(sut.refreshHead(), RingStatus::OK);
  EXPECT_EQ(sut.approxHead(), 16u);
  memory_.header()->head.store(8);
  EXPECT_EQ(sut.refreshHead(), RingStatus::CORRUPT);
  EXPECT_EQ(sut.approxHead(), 16u);  // the bad value is not adopted
}

TEST_F(SpscRingTest, RefreshHeadIsCorruptWhenHeadBeyondTail) {
  RingWriter sut = makeWriter();
  ASSERT_EQ(writeBytes(sut, 8, 1), RingStatus::OK);
  memory_.header()->head.store(sut.tail() + 8);
  EXPECT_EQ(sut.refreshHead(), RingStatus::CORRUPT);
}

TEST_F(SpscRingTest, RefreshHeadAcceptsHeadEqualToTail) {
  RingWriter sut = makeWriter();
  ASSERT_EQ(writeBytes(sut, 8, 1), RingStatus::OK);
  memory_.header()->head.store(sut.tail());
  EXPECT_EQ(sut.refreshHead(), RingStatus::OK);
  EXPECT_EQ(sut.approxHead(), sut.tail());
}

TEST_F(SpscRingTest, TryClaimIsCorruptWhenFullRingSeesHeadBeyondTail) {
  RingWriter sut = makeWriter();
  for (int i = 0; i < 16; ++i) ASSERT_EQ(writeBytes(sut, 56, i), RingStatus::OK);
  memory_.header()->head.store(sut.tail() + 64);
  uint8_t* p = nullptr;
  EXPECT_EQ(sut.tryClaim(8, p), RingStatus::CORRUPT);
}

// ---------------------------------------------------------------- wake handshake

TEST_F(SpscRingTest, ReaderNeedsWakeOnlyWhileReaderSleeping) {
  RingWriter sut = makeWriter();
  RingReader reader = makeReader();
  EXPECT_FALSE(sut.readerNeedsWake());
  reader.setSleeping(true);
  EXPECT_TRUE(sut.readerNeedsWake());
  reader.setSleeping(false);
  EXPECT_FALSE(sut.readerNeedsWake());
}

TEST_F(SpscRingTest, SleepingReaderSeesDataCommittedBeforeSleeping) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  ASSERT_EQ(writeBytes(writer, 8, 1), RingStatus::OK);
  sut.setSleeping(true);
  EXPECT_TRUE(sut.hasData());  // the re-check after marking sleep catches it: no blocking
}

TEST_F(SpscRingTest, TakeWriterWaitingIsFalseWhenWriterNotWaiting) {
  RingReader sut = makeReader();
  EXPECT_FALSE(sut.takeWriterWaiting());
}

TEST_F(SpscRingTest, TakeWriterWaitingReturnsTrueOnceThenClears) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  writer.setWaiting(true);
  EXPECT_TRUE(sut.takeWriterWaiting());
  EXPECT_FALSE(sut.takeWriterWaiting());
  EXPECT_EQ(memory_.header()->writerWaiting.load(), 0u);
}

TEST_F(SpscRingTest, WaitingWriterIsNotTakenUntilTheAskedShareOfTheRingIsFree) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  // Fill the ring with 64-byte payloads (72 bytes a record) until it is full.
  int written = 0;
  while (writeBytes(writer, 64, static_cast<uint64_t>(written)) == RingStatus::OK) ++written;
  ASSERT_GT(written, 8);
  writer.setWaiting(true);
  RecordView rec;
  ASSERT_EQ(sut.peek(rec), RingStatus::OK);
  sut.release();  // one record consumed: far less than half the ring is free
  EXPECT_FALSE(sut.takeWriterWaiting(CAPACITY / 2));
  EXPECT_EQ(memory_.header()->writerWaiting.load(), 1u) << "a refused take must leave the flag set";
  while (sut.head() < CAPACITY / 2 + 64) {
    ASSERT_EQ(sut.peek(rec), RingStatus::OK);
    sut.release();
  }
  EXPECT_TRUE(sut.takeWriterWaiting(CAPACITY / 2));
  EXPECT_EQ(memory_.header()->writerWaiting.load(), 0u);
}

TEST_F(SpscRingTest, WaitingWriterIsTakenWhenTheRingIsEmptyWhateverTheShareAsked) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  ASSERT_EQ(writeBytes(writer, 64, 1), RingStatus::OK);
  writer.setWaiting(true);
  RecordView rec;
  ASSERT_EQ(sut.peek(rec), RingStatus::OK);
  sut.release();
  EXPECT_TRUE(sut.takeWriterWaiting(CAPACITY));  // empty ring: all of it is free
}

TEST_F(SpscRingTest, ImpossibleTailWakesAWaitingWriterRatherThanStrandIt) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  writer.setWaiting(true);
  memory_.header()->tail.store(CAPACITY * 4);  // a hostile writer's tail: used > capacity
  EXPECT_TRUE(sut.takeWriterWaiting(CAPACITY / 2));
}

TEST_F(SpscRingTest, TakeWriterWaitingIsFalseAfterWriterClearsWaiting) {
  RingWriter writer = makeWriter();
  RingReader sut = makeReader();
  writer.setWaiting(true);
  writer.setWaiting(false);
  EXPECT_FALSE(sut.takeWriterWaiting());
}

// ---------------------------------------------------------------- preconditions

TEST(SpscRingDeathTest, WriterAbortsOnCapacityNotPowerOfTwo) {
  RingMemory memory(128);
  EXPECT_DEATH((void)RingWriter(memory.header(), memory.data(), 96), "power of two");
}

TEST(SpscRingDeathTest, ReaderAbortsOnCapacityBelowMinimum) {
  RingMemory memory(64);
  EXPECT_DEATH((void)RingReader(memory.header(), memory.data(), 32), "power of two");
}

TEST(SpscRingDeathTest, TryClaimAbortsOnPayloadAboveMax) {
  RingMemory memory(CAPACITY);
  RingWriter sut(memory.header(), memory.data(), CAPACITY);
  uint8_t* p = nullptr;
  EXPECT_DEATH((void)sut.tryClaim(CAPACITY / 4 + 1, p), "maxPayload");
}

TEST(SpscRingDeathTest, CommitAbortsOnPadType) {
  RingMemory memory(CAPACITY);
  RingWriter sut(memory.header(), memory.data(), CAPACITY);
  uint8_t* p = nullptr;
  ASSERT_EQ(sut.tryClaim(8, p), RingStatus::OK);
  EXPECT_DEATH(sut.commit(RECORD_TYPE_PAD), "PAD");
}

// ---------------------------------------------------------------- two processes

/// A ring inside a MAP_SHARED memfd mapping, so a fork()ed child shares it.
class SharedRing {
 public:
  explicit SharedRing(uint64_t capacity) : capacity_(capacity), bytes_(RING_HEADER_BYTES + capacity) {
    auto fd = shm::createMemfd("swipc-spsc-test", bytes_);
    if (!fd) return;
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd->get(), 0);
    if (p == MAP_FAILED) return;
    base_ = static_cast<uint8_t*>(p);
    new (base_) RingHeader{};
  }
  ~SharedRing() {
    if (base_) ::munmap(base_, bytes_);
  }
  bool ok() const { return base_ != nullptr; }
  RingHeader* header() const { return reinterpret_cast<RingHeader*>(base_); }
  uint8_t* data() const { return base_ + RING_HEADER_BYTES; }
  uint64_t capacity() const { return capacity_; }

 private:
  uint64_t capacity_;
  size_t bytes_;
  uint8_t* base_ = nullptr;
};

/// Kills and reaps the child if the test leaves early.
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid) : pid_(pid) {}
  ~ChildGuard() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  /// Waits for the child; its wait status.
  int reap() {
    int status = 0;
    ::waitpid(std::exchange(pid_, -1), &status, 0);
    return status;
  }

 private:
  pid_t pid_;
};

constexpr uint64_t CROSS_RECORDS = 200'000;
constexpr uint64_t CROSS_CAPACITY = 64 * 1024;

uint32_t crossLength(uint64_t seq) {
  // Mostly small, sometimes up to the ring's maxPayload; never below the 8-byte sequence number.
  if (seq % 97 == 0) return static_cast<uint32_t>(CROSS_CAPACITY / 4);
  return static_cast<uint32_t>(8 + (seq * 2654435761u) % 1500);
}

[[noreturn]] void runChildWriter(const SharedRing& ring, Clock::time_point deadline) {
  RingWriter writer(ring.header(), ring.data(), ring.capacity());
  for (uint64_t seq = 0; seq < CROSS_RECORDS; ++seq) {
    const uint32_t len = crossLength(seq);
    uint8_t* p = nullptr;
    for (;;) {
      RingStatus s = writer.tryClaim(len, p);
      if (s == RingStatus::OK) break;
      if (s != RingStatus::FULL) ::_exit(3);
      if (Clock::now() > deadline) ::_exit(2);
      std::this_thread::yield();
    }
    std::memcpy(p, &seq, sizeof seq);
    fillPattern(p + sizeof seq, seq, len - static_cast<uint32_t>(sizeof seq));
    writer.commit(static_cast<uint32_t>(seq % 65521));
  }
  ::_exit(0);
}

TEST(SpscRingCrossProcessTest, ReaderReceivesEveryRecordInOrderFromChildWriter) {
  SharedRing ring(CROSS_CAPACITY);
  ASSERT_TRUE(ring.ok());
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  pid_t pid = ::fork();
  ASSERT_NE(pid, -1);
  if (pid == 0) runChildWriter(ring, deadline);
  ChildGuard child(pid);

  RingReader sut(ring.header(), ring.data(), ring.capacity());
  uint64_t bytes = 0;
  for (uint64_t seq = 0; seq < CROSS_RECORDS; ++seq) {
    RecordView v;
    RingStatus s;
    while ((s = sut.peek(v)) == RingStatus::EMPTY) {
      ASSERT_LT(Clock::now(), deadline) << "timed out waiting for record " << seq;
      std::this_thread::yield();
    }
    ASSERT_EQ(s, RingStatus::OK) << "record " << seq;
    ASSERT_EQ(v.length, crossLength(seq)) << "record " << seq;
    ASSERT_EQ(v.type, seq % 65521) << "record " << seq;
    uint64_t got = 0;
    std::memcpy(&got, v.payload, sizeof got);
    ASSERT_EQ(got, seq);
    ASSERT_TRUE(matchesPattern(v.payload + sizeof got, seq, v.length - static_cast<uint32_t>(sizeof got)))
        << "record " << seq;
    bytes += v.length;
    sut.release();
  }
  RecordView v;
  EXPECT_EQ(sut.peek(v), RingStatus::EMPTY);
  EXPECT_GT(sut.head(), 100 * CROSS_CAPACITY);  // wrapped many times
  int status = child.reap();
  ASSERT_TRUE(WIFEXITED(status)) << "child status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace swipc::queue
