// Broadcast ring: the region header (format, and each step of the check in its fixed order),
// record framing (PAD, short gaps, the largest payload), lapped readers (the exact gap in seq),
// torn copies (the writer overwriting a record while a reader copies it, interleaved
// deterministically), and a reader process racing a writer.
#include "queue/broadcast_ring.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/futex.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "queue/ring_layout.h"
#include "shm/memfd.h"

namespace swipc::queue {
namespace {

constexpr uint64_t CAPACITY = 1024;
constexpr uint32_t TYPE = 7;
constexpr size_t PAGE = 4096;

uint8_t patternByte(uint64_t seq, uint32_t i) { return static_cast<uint8_t>(seq * 131 + i * 7 + 1); }

std::vector<uint8_t> pattern(uint64_t seq, uint32_t length) {
  std::vector<uint8_t> bytes(length);
  for (uint32_t i = 0; i < length; ++i) bytes[i] = patternByte(seq, i);
  return bytes;
}

bool matchesPattern(const BroadcastRecord& r) {
  for (uint32_t i = 0; i < r.length; ++i)
    if (r.bytes()[i] != patternByte(r.seq, i)) return false;
  return true;
}

void append(BroadcastWriter& w, uint64_t seq, uint32_t length, uint32_t type = TYPE) {
  auto bytes = pattern(seq, length);
  w.append(type, seq, seq * 10, bytes.data(), length);
}

/// One mmap of a whole file, unmapped on destruction.
class View {
 public:
  View(int fd, size_t bytes, int prot) : bytes_(bytes) {
    void* p = ::mmap(nullptr, bytes, prot, MAP_SHARED, fd, 0);
    EXPECT_NE(p, MAP_FAILED) << std::strerror(errno);
    base_ = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  ~View() {
    if (base_) ::munmap(base_, bytes_);
  }
  View(const View&) = delete;
  View& operator=(const View&) = delete;

  uint8_t* base() const { return base_; }
  size_t bytes() const { return bytes_; }

 private:
  uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
};

/// One channel's memfd as the daemon makes it: created, mapped read-write, then sealed so that
/// every later mapping (a member's) is read-only.
class ChannelMemfd {
 public:
  explicit ChannelMemfd(uint64_t capacity, size_t extraBytes = 0)
      : bytes_(broadcastRegionBytes(capacity) + extraBytes),
        fd_(shm::createMemfd("broadcast-ring-test", bytes_).value()),
        writable_(fd_.get(), bytes_, PROT_READ | PROT_WRITE) {
    auto sealed = shm::addSeals(fd_.get(), shm::SEALS_FIXED_SIZE | F_SEAL_FUTURE_WRITE);
    EXPECT_TRUE(sealed.ok()) << sealed.error().describe();
  }

  int fd() const { return fd_.get(); }
  size_t bytes() const { return bytes_; }
  uint8_t* writable() const { return writable_.base(); }
  BroadcastRegionHeader header() const {
    BroadcastRegionHeader h;
    std::memcpy(&h, writable(), sizeof h);
    return h;
  }
  void setHeader(const BroadcastRegionHeader& h) const { std::memcpy(writable(), &h, sizeof h); }
  BroadcastHeader& indices() const { return *reinterpret_cast<BroadcastHeader*>(writable() + BROADCAST_INDICES_OFFSET); }
  uint8_t* data() const { return writable() + BROADCAST_DATA_OFFSET; }

 private:
  size_t bytes_;
  UniqueFd fd_;
  View writable_;
};

void expectRejected(const Result<BroadcastRegion>& sut, Errc code, const std::string& says) {
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, code) << sut.error().describe();
  EXPECT_NE(sut.error().message.find(says), std::string::npos) << sut.error().describe();
}

// ================================================================ the region header

class BroadcastRegionTest : public ::testing::Test {
 protected:
  BroadcastRegionTest() : memfd_(CAPACITY), member_(memfd_.fd(), memfd_.bytes(), PROT_READ) {
    writer_ = formatBroadcastRegion(memfd_.writable(), memfd_.bytes(), CAPACITY);
  }

  Result<BroadcastRegion> read() const { return readBroadcastHeader(member_.base(), member_.bytes()); }

  ChannelMemfd memfd_;
  View member_;
  BroadcastWriter writer_;
};

TEST(BroadcastRegionBytesTest, RegionIsHeaderIndicesAndData) {
  EXPECT_EQ(BROADCAST_INDICES_OFFSET, 128u);
  EXPECT_EQ(BROADCAST_DATA_OFFSET, 128u + 3 * 128u);
  EXPECT_EQ(broadcastRegionBytes(4096), 512u + 4096u);
  EXPECT_EQ(broadcastMaxPayload(4096), 1024u - 24u);
}

TEST_F(BroadcastRegionTest, FormatWritesEveryHeaderField) {
  BroadcastRegionHeader sut = memfd_.header();
  EXPECT_EQ(sut.magic, BROADCAST_MAGIC);
  EXPECT_EQ(sut.layoutVersion, BROADCAST_LAYOUT_VERSION);
  EXPECT_EQ(sut.recordHeaderBytes, 24u);
  EXPECT_EQ(sut.capacity, CAPACITY);
  EXPECT_EQ(sut.dataOffset, BROADCAST_DATA_OFFSET);
}

TEST_F(BroadcastRegionTest, FormatStartsEveryIndexAtZero) {
  BroadcastHeader& sut = memfd_.indices();
  EXPECT_EQ(sut.tailIntent.load(), 0u);
  EXPECT_EQ(sut.tail.load(), 0u);
  EXPECT_EQ(sut.oldest.load(), 0u);
  EXPECT_EQ(sut.wakeSeq.load(), 0u);
  EXPECT_EQ(writer_.tail(), 0u);
  EXPECT_EQ(writer_.maxPayload(), broadcastMaxPayload(CAPACITY));
}

TEST_F(BroadcastRegionTest, ReadHeaderAcceptsAFormattedRegion) {
  auto sut = read();
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  EXPECT_EQ(sut->capacity, CAPACITY);
  EXPECT_EQ(sut->totalBytes, broadcastRegionBytes(CAPACITY));
}

TEST_F(BroadcastRegionTest, ReadHeaderAcceptsAMappingLargerThanTheRegion) {
  ChannelMemfd larger(CAPACITY, PAGE);
  (void)formatBroadcastRegion(larger.writable(), larger.bytes(), CAPACITY);
  auto sut = readBroadcastHeader(larger.writable(), larger.bytes());
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  EXPECT_EQ(sut->totalBytes, broadcastRegionBytes(CAPACITY));
}

TEST_F(BroadcastRegionTest, ReaderOverTheReadOnlyMappingSeesWhatTheWriterAppends) {
  auto region = read();
  ASSERT_TRUE(region.ok()) << region.error().describe();
  BroadcastReader sut = openBroadcastReader(member_.base(), *region, 0);
  append(writer_, 1, 40);
  BroadcastRecord rec;
  ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
  EXPECT_EQ(rec.seq, 1u);
  EXPECT_TRUE(matchesPattern(rec));
  EXPECT_EQ(&sut.wakeWord(), &reinterpret_cast<const BroadcastHeader*>(member_.base() + BROADCAST_INDICES_OFFSET)->wakeSeq);
}

TEST_F(BroadcastRegionTest, MemberCannotMapTheRegionWritable) {
  void* p = ::mmap(nullptr, memfd_.bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, memfd_.fd(), 0);
  EXPECT_EQ(p, MAP_FAILED);
  if (p != MAP_FAILED) ::munmap(p, memfd_.bytes());
}

TEST_F(BroadcastRegionTest, ReadHeaderRejectsAMappingSmallerThanTheHeader) {
  expectRejected(readBroadcastHeader(member_.base(), BROADCAST_REGION_HEADER_BYTES - 1), Errc::PROTOCOL_VIOLATION,
                 "smaller than its 128-byte header");
}

TEST_F(BroadcastRegionTest, ReadHeaderRejectsAnUnformattedRegion) {
  ChannelMemfd blank(CAPACITY);
  expectRejected(readBroadcastHeader(blank.writable(), blank.bytes()), Errc::PROTOCOL_VIOLATION, "no magic");
}

TEST_F(BroadcastRegionTest, ReadHeaderRejectsAForeignMagic) {
  BroadcastRegionHeader h = memfd_.header();
  h.magic = shm::SEGMENT_MAGIC;  // a per-client segment is not a channel ring
  memfd_.setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION, "is not a swipc channel ring's");
}

TEST_F(BroadcastRegionTest, ReadHeaderRejectsAnotherLayoutVersion) {
  BroadcastRegionHeader h = memfd_.header();
  h.layoutVersion = BROADCAST_LAYOUT_VERSION + 1;
  memfd_.setHeader(h);
  expectRejected(read(), Errc::VERSION_MISMATCH, "layout version 2, expected 1");
}

TEST_F(BroadcastRegionTest, ReadHeaderRejectsACapacityThatIsNotAPowerOfTwo) {
  BroadcastRegionHeader h = memfd_.header();
  h.capacity = CAPACITY - 8;
  memfd_.setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION, "capacity 1016 is not a power of two in [1024, 1073741824]");
}

TEST_F(BroadcastRegionTest, ReadHeaderRejectsACapacityBelowTheMinimum) {
  BroadcastRegionHeader h = memfd_.header();
  h.capacity = MIN_BROADCAST_CAPACITY / 2;
  memfd_.setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION, "capacity 512 is not a power of two in");
}

TEST_F(BroadcastRegionTest, ReadHeaderRejectsACapacityAboveTheMaximum) {
  BroadcastRegionHeader h = memfd_.header();
  h.capacity = MAX_BROADCAST_CAPACITY * 2;
  memfd_.setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION, "capacity 2147483648 is not a power of two in");
}

TEST_F(BroadcastRegionTest, ReadHeaderRejectsARingLargerThanTheMapping) {
  BroadcastRegionHeader h = memfd_.header();
  h.capacity = CAPACITY * 2;
  memfd_.setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION,
                 "ring of 2048 data bytes needs 2560 bytes, but only " + std::to_string(member_.bytes()) + " are mapped");
}

TEST_F(BroadcastRegionTest, ReadHeaderRejectsAnotherRecordHeaderSize) {
  BroadcastRegionHeader h = memfd_.header();
  h.recordHeaderBytes = 16;
  memfd_.setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION, "record header of 16 bytes, expected 24");
}

TEST_F(BroadcastRegionTest, ReadHeaderRejectsAnotherDataOffset) {
  BroadcastRegionHeader h = memfd_.header();
  h.dataOffset = 256;
  memfd_.setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION, "data at offset 256, expected 512");
}

TEST_F(BroadcastRegionTest, ReadHeaderChecksInAFixedOrder) {
  // Everything wrong at once; fixing one field at a time reveals the next check in order.
  BroadcastRegionHeader h{};
  h.magic = 1;
  h.layoutVersion = 99;
  h.capacity = 3;
  h.recordHeaderBytes = 8;
  h.dataOffset = 0;
  memfd_.setHeader(h);
  expectRejected(readBroadcastHeader(member_.base(), 64), Errc::PROTOCOL_VIOLATION, "smaller than its");
  expectRejected(read(), Errc::PROTOCOL_VIOLATION, "magic");
  h.magic = BROADCAST_MAGIC;
  memfd_.setHeader(h);
  expectRejected(read(), Errc::VERSION_MISMATCH, "layout version 99");
  h.layoutVersion = BROADCAST_LAYOUT_VERSION;
  memfd_.setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION, "capacity 3 is not a power of two");
  h.capacity = CAPACITY * 4;
  memfd_.setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION, "are mapped");
  h.capacity = CAPACITY;
  memfd_.setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION, "record header of 8 bytes");
  h.recordHeaderBytes = BROADCAST_RECORD_HEADER_BYTES;
  memfd_.setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION, "data at offset 0");
  h.dataOffset = BROADCAST_DATA_OFFSET;
  memfd_.setHeader(h);
  EXPECT_TRUE(read().ok());
}

using BroadcastRegionDeathTest = BroadcastRegionTest;

TEST_F(BroadcastRegionDeathTest, FormatRefusesACapacityThatIsNotAPowerOfTwo) {
  EXPECT_DEATH((void)formatBroadcastRegion(memfd_.writable(), memfd_.bytes(), CAPACITY - 8), "power of two");
}

TEST_F(BroadcastRegionDeathTest, FormatRefusesARegionTooSmallForTheCapacity) {
  EXPECT_DEATH((void)formatBroadcastRegion(memfd_.writable(), memfd_.bytes(), CAPACITY * 2), "needs 2560");
}

// ================================================================ records

/// A formatted region with one writer and readers over the member's read-only mapping.
class BroadcastRingTest : public ::testing::Test {
 protected:
  explicit BroadcastRingTest(uint64_t capacity = CAPACITY)
      : capacity_(capacity), memfd_(capacity), member_(memfd_.fd(), memfd_.bytes(), PROT_READ) {
    writer_ = formatBroadcastRegion(memfd_.writable(), memfd_.bytes(), capacity);
  }

  BroadcastReader makeReader(uint64_t startPos = 0) const {
    return openBroadcastReader(member_.base(), BroadcastRegion{capacity_, broadcastRegionBytes(capacity_)}, startPos);
  }
  BroadcastRecordHeader recordAt(uint64_t pos) const {
    BroadcastRecordHeader h;
    std::memcpy(&h, memfd_.data() + (pos & (capacity_ - 1)), sizeof h);
    return h;
  }

  uint64_t capacity_;
  ChannelMemfd memfd_;
  View member_;
  BroadcastWriter writer_;
};

TEST_F(BroadcastRingTest, NextReturnsEmptyOnAFreshRing) {
  BroadcastReader sut = makeReader();
  BroadcastRecord rec;
  EXPECT_EQ(sut.next(rec), BroadcastReader::Status::EMPTY);
  EXPECT_EQ(sut.cursor(), 0u);
}

TEST_F(BroadcastRingTest, NextReturnsAnAppendedRecordWithTypeSeqTagAndPayload) {
  BroadcastReader sut = makeReader();
  append(writer_, 5, 13, 42);
  BroadcastRecord rec;
  ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
  EXPECT_EQ(rec.type, 42u);
  EXPECT_EQ(rec.seq, 5u);
  EXPECT_EQ(rec.tag, 50u);
  EXPECT_EQ(rec.length, 13u);
  EXPECT_TRUE(matchesPattern(rec));
  EXPECT_EQ(sut.next(rec), BroadcastReader::Status::EMPTY);
}

TEST_F(BroadcastRingTest, AppendWritesTheRecordHeaderStructAndPublishesTheTail) {
  append(writer_, 9, 13);
  BroadcastRecordHeader sut = recordAt(0);
  EXPECT_EQ(sut.length, 13u);
  EXPECT_EQ(sut.type, TYPE);
  EXPECT_EQ(sut.seq, 9u);
  EXPECT_EQ(sut.tag, 90u);
  EXPECT_EQ(writer_.tail(), BROADCAST_RECORD_HEADER_BYTES + 16);
  EXPECT_EQ(memfd_.indices().tail.load(), BROADCAST_RECORD_HEADER_BYTES + 16);
  EXPECT_EQ(memfd_.indices().tailIntent.load(), BROADCAST_RECORD_HEADER_BYTES + 16);
}

TEST_F(BroadcastRingTest, EmptyPayloadRoundTrips) {
  BroadcastReader sut = makeReader();
  writer_.append(TYPE, 1, 0, nullptr, 0);
  BroadcastRecord rec;
  ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
  EXPECT_EQ(rec.length, 0u);
  EXPECT_EQ(sut.cursor(), BROADCAST_RECORD_HEADER_BYTES);
}

TEST_F(BroadcastRingTest, RecordsArriveInOrder) {
  BroadcastReader sut = makeReader();
  for (uint64_t seq = 1; seq <= 5; ++seq) append(writer_, seq, static_cast<uint32_t>(seq * 11));
  BroadcastRecord rec;
  for (uint64_t seq = 1; seq <= 5; ++seq) {
    ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
    EXPECT_EQ(rec.seq, seq);
    EXPECT_TRUE(matchesPattern(rec));
  }
  EXPECT_EQ(sut.next(rec), BroadcastReader::Status::EMPTY);
  EXPECT_EQ(sut.resyncs(), 0u);
}

TEST_F(BroadcastRingTest, ReaderStartingAtTheTailSeesOnlyLaterRecords) {
  append(writer_, 1, 8);
  BroadcastReader sut = makeReader(writer_.tail());
  append(writer_, 2, 8);
  BroadcastRecord rec;
  ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
  EXPECT_EQ(rec.seq, 2u);
}

TEST_F(BroadcastRingTest, RecordThatDoesNotFitBeforeTheEndFollowsAPadRecord) {
  // 5 x (24 + 176) = 1000: 24 bytes remain, exactly one PAD header with an empty body.
  for (uint64_t seq = 1; seq <= 5; ++seq) append(writer_, seq, 176);
  BroadcastReader sut = makeReader(writer_.tail());
  append(writer_, 6, 40);
  BroadcastRecordHeader pad = recordAt(1000);
  EXPECT_EQ(pad.type, RECORD_TYPE_PAD);
  EXPECT_EQ(pad.length, 0u);
  EXPECT_EQ(recordAt(0).seq, 6u);
  EXPECT_EQ(writer_.tail(), CAPACITY + BROADCAST_RECORD_HEADER_BYTES + 40);
  BroadcastRecord rec;
  ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
  EXPECT_EQ(rec.seq, 6u);
  EXPECT_TRUE(matchesPattern(rec));
  EXPECT_EQ(sut.resyncs(), 0u);
}

TEST_F(BroadcastRingTest, PadRecordWithABodyIsSkipped) {
  for (uint64_t seq = 1; seq <= 4; ++seq) append(writer_, seq, 200);  // 4 x 224 = 896, 128 to the end
  BroadcastReader sut = makeReader(writer_.tail());
  append(writer_, 5, 200);  // 224 does not fit in 128: PAD with a 104-byte body, then at 1024
  EXPECT_EQ(recordAt(896).type, RECORD_TYPE_PAD);
  EXPECT_EQ(recordAt(896).length, 128u - BROADCAST_RECORD_HEADER_BYTES);
  BroadcastRecord rec;
  ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
  EXPECT_EQ(rec.seq, 5u);
  EXPECT_TRUE(matchesPattern(rec));
  EXPECT_EQ(sut.cursor(), CAPACITY + 224);
}

TEST_F(BroadcastRingTest, GapShorterThanARecordHeaderIsSkippedWithoutAPad) {
  // 4 x (24 + 224) = 992, then 24 + 0 = 1016: 8 bytes to the end, too few for a PAD header.
  for (uint64_t seq = 1; seq <= 4; ++seq) append(writer_, seq, 224);
  append(writer_, 5, 0);
  ASSERT_EQ(writer_.tail(), CAPACITY - 8);
  BroadcastReader sut = makeReader(writer_.tail());
  append(writer_, 6, 16);
  BroadcastRecord rec;
  ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
  EXPECT_EQ(rec.seq, 6u);
  EXPECT_EQ(sut.cursor(), CAPACITY + BROADCAST_RECORD_HEADER_BYTES + 16);
  EXPECT_EQ(sut.resyncs(), 0u);
}

TEST_F(BroadcastRingTest, MaxPayloadIsAQuarterOfTheRingLessTheRecordHeader) {
  EXPECT_EQ(writer_.maxPayload(), CAPACITY / 4 - BROADCAST_RECORD_HEADER_BYTES);
}

TEST_F(BroadcastRingTest, RecordOfMaxPayloadRoundTripsAcrossTheEnd) {
  BroadcastReader sut = makeReader();
  const auto max = static_cast<uint32_t>(writer_.maxPayload());
  BroadcastRecord rec;
  for (uint64_t seq = 1; seq <= 9; ++seq) {  // 9 x 256 bytes: wraps twice
    append(writer_, seq, max);
    ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
    EXPECT_EQ(rec.seq, seq);
    EXPECT_EQ(rec.length, max);
    EXPECT_TRUE(matchesPattern(rec));
  }
  EXPECT_EQ(sut.resyncs(), 0u);
}

using BroadcastRingDeathTest = BroadcastRingTest;

TEST_F(BroadcastRingDeathTest, AppendRefusesAPayloadOverMaxPayload) {
  std::vector<uint8_t> big(writer_.maxPayload() + 1);
  EXPECT_DEATH(writer_.append(TYPE, 1, 0, big.data(), static_cast<uint32_t>(big.size())), "maxPayload");
}

TEST_F(BroadcastRingDeathTest, AppendRefusesThePadType) {
  EXPECT_DEATH(writer_.append(RECORD_TYPE_PAD, 1, 0, nullptr, 0), "PAD is reserved");
}

TEST_F(BroadcastRingTest, ReaderThatKeepsUpNeverResyncsAcrossManyWraps) {
  BroadcastReader sut = makeReader();
  std::mt19937 rng(7);
  const auto max = static_cast<uint32_t>(writer_.maxPayload());
  BroadcastRecord rec;
  uint64_t seq = 0;
  for (int round = 0; round < 500; ++round) {
    const int batch = 1 + static_cast<int>(rng() % 3);  // at most 3 x 256 bytes: never laps
    for (int i = 0; i < batch; ++i) append(writer_, ++seq, rng() % (max + 1));
    for (uint64_t expect = seq - batch + 1; expect <= seq; ++expect) {
      ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
      ASSERT_EQ(rec.seq, expect);
      ASSERT_TRUE(matchesPattern(rec));
    }
    ASSERT_EQ(sut.next(rec), BroadcastReader::Status::EMPTY);
  }
  EXPECT_EQ(sut.resyncs(), 0u);
}

TEST_F(BroadcastRingTest, ReaderLappedReportsMissedCountThroughSeq) {
  // Records of 24 + 104 = 128 bytes: 8 per ring. After 20, records 13..20 are intact.
  BroadcastReader sut = makeReader();
  for (uint64_t seq = 1; seq <= 20; ++seq) append(writer_, seq, 104);
  EXPECT_EQ(memfd_.indices().oldest.load(), 12 * 128u);
  BroadcastRecord rec;
  ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
  EXPECT_EQ(rec.seq, 13u);  // the gap says it missed exactly 12
  EXPECT_EQ(sut.resyncs(), 1u);
  for (uint64_t seq = 14; seq <= 20; ++seq) {
    ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
    EXPECT_EQ(rec.seq, seq);
    EXPECT_TRUE(matchesPattern(rec));
  }
  EXPECT_EQ(sut.next(rec), BroadcastReader::Status::EMPTY);
  EXPECT_EQ(sut.resyncs(), 1u);
}

TEST_F(BroadcastRingTest, ReaderLappedAcrossPadsResumesAtTheOldestIntactRecord) {
  // Random sizes (so PADs and short gaps land everywhere) in bursts of random length. After a
  // burst the reader goes on where it was, or (lapped) at the first record that still lies wholly
  // within the last ring length; either way it then drains to the tail with no further gap.
  std::mt19937 rng(11);
  const auto max = static_cast<uint32_t>(writer_.maxPayload());
  BroadcastReader sut = makeReader();
  std::vector<std::pair<uint64_t, uint64_t>> starts;  // (start, seq): the test's model of the writer
  uint64_t seq = 0;
  uint64_t expectNext = 1;
  BroadcastRecord rec;
  for (int burst = 0; burst < 200; ++burst) {
    const int n = 1 + static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) {
      const uint32_t length = rng() % (max + 1);
      const uint64_t total = BROADCAST_RECORD_HEADER_BYTES + align8(length);
      uint64_t start = writer_.tail();
      const uint64_t toEnd = CAPACITY - (start & (CAPACITY - 1));
      if (total > toEnd) start += toEnd;
      append(writer_, ++seq, length);
      starts.emplace_back(start, seq);
    }
    uint64_t firstIntact = 0;
    for (auto [start, s] : starts)
      if (start + CAPACITY >= writer_.tail()) {
        firstIntact = s;
        break;
      }
    const uint64_t resyncsBefore = sut.resyncs();
    ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
    ASSERT_TRUE(matchesPattern(rec));
    if (sut.resyncs() == resyncsBefore) {
      EXPECT_EQ(rec.seq, expectNext) << "burst " << burst;
    } else {
      EXPECT_EQ(rec.seq, firstIntact) << "burst " << burst;
    }
    uint64_t last = rec.seq;
    while (sut.next(rec) == BroadcastReader::Status::OK) {
      ASSERT_EQ(rec.seq, last + 1) << "burst " << burst;
      ASSERT_TRUE(matchesPattern(rec));
      last = rec.seq;
    }
    ASSERT_EQ(last, seq) << "the reader drains to the tail";
    expectNext = seq + 1;
  }
  EXPECT_GT(sut.resyncs(), 0u) << "no burst lapped the reader: the test proves nothing";
}

TEST_F(BroadcastRingTest, ReaderAheadOfTheTailResyncsToTheOldestRecord) {
  // A start position from a ring that no longer exists (e.g. a daemon from before a restart).
  for (uint64_t seq = 1; seq <= 3; ++seq) append(writer_, seq, 8);
  BroadcastReader sut = makeReader(50'000);
  BroadcastRecord rec;
  ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
  EXPECT_EQ(rec.seq, 1u);
  EXPECT_EQ(sut.resyncs(), 1u);
}

TEST_F(BroadcastRingTest, ReaderSkipsARecordTheWriterAnnouncedItIsOverwriting) {
  // The writer is caught half-way through its next append: it has published `oldest` and its
  // intent and scribbled over the first record, but not published the tail yet.
  BroadcastReader sut = makeReader();
  for (uint64_t seq = 1; seq <= 8; ++seq) append(writer_, seq, 104);  // exactly full
  BroadcastHeader& indices = memfd_.indices();
  indices.oldest.store(128);
  indices.tailIntent.store(CAPACITY + 128);
  std::memset(memfd_.data(), 0xEE, 128);
  BroadcastRecord rec;
  ASSERT_EQ(sut.next(rec), BroadcastReader::Status::OK);
  EXPECT_EQ(rec.seq, 2u);
  EXPECT_TRUE(matchesPattern(rec));
  EXPECT_EQ(sut.resyncs(), 1u);
}

TEST_F(BroadcastRingTest, WakeAllBumpsTheWakeWordReadersWaitOn) {
  BroadcastReader sut = makeReader();
  const uint32_t before = sut.wakeWord().load();
  writer_.wakeAll();
  EXPECT_EQ(sut.wakeWord().load(), before + 1);
}

// ================================================================ torn copies

/// Stops a reader thread in the middle of its payload copy: the reader's view of one page is
/// made inaccessible, so its copy faults there; the fault handler parks the reader until the
/// test thread has done what it wants (say, let the writer run) and made the page readable again.
/// Then the copy resumes where it stopped. Deterministic, no timing involved.
class CopyInterrupter {
 public:
  explicit CopyInterrupter(uint8_t* page) {
    page_ = page;
    sem_init(&faulted_, 0, 0);
    sem_init(&resume_, 0, 0);
    struct sigaction sa {};
    sa.sa_sigaction = &CopyInterrupter::onFault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_);
    EXPECT_EQ(::mprotect(page_, PAGE, PROT_NONE), 0) << std::strerror(errno);
  }
  ~CopyInterrupter() {
    sigaction(SIGSEGV, &previous_, nullptr);
    sem_destroy(&faulted_);
    sem_destroy(&resume_);
  }

  /// Waits (up to 10 s) for the reader to fault on the page or to finish without touching it.
  bool waitForFault() {
    timespec deadline{};
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    while (sem_timedwait(&faulted_, &deadline) == -1)
      if (errno != EINTR) return false;
    return !readerFinished_.load();
  }
  /// The reader finished (wakes waitForFault if it never faulted).
  void readerDone() {
    readerFinished_.store(true);
    sem_post(&faulted_);
  }
  /// Makes the page readable again and lets the parked reader continue its copy.
  void resume() {
    EXPECT_EQ(::mprotect(page_, PAGE, PROT_READ), 0) << std::strerror(errno);
    sem_post(&resume_);
  }

 private:
  static void onFault(int, siginfo_t* info, void*) {
    auto* at = static_cast<uint8_t*>(info->si_addr);
    if (at < page_ || at >= page_ + PAGE) {
      signal(SIGSEGV, SIG_DFL);  // a real crash: returning re-executes the access and dies
      return;
    }
    sem_post(&faulted_);  // both are async-signal-safe
    while (sem_wait(&resume_) == -1) {
    }
  }

  static inline uint8_t* page_ = nullptr;
  static inline sem_t faulted_;
  static inline sem_t resume_;
  std::atomic<bool> readerFinished_{false};
  struct sigaction previous_ {};
};

class BroadcastRingTornTest : public BroadcastRingTest {
 protected:
  static constexpr uint64_t BIG = 16384;
  static constexpr uint32_t LENGTH = 4000;  // 4024-byte records: 4 fit in the ring, 288 bytes spare

  BroadcastRingTornTest() : BroadcastRingTest(BIG) {}

  /// Four records; then a reader copies the first (its payload crosses from the member view's
  /// first page into its second) and `whileCopying` runs when the copy reaches the second page.
  template <typename Fn>
  std::vector<BroadcastRecord> readInterrupted(BroadcastReader& sut, Fn whileCopying) {
    for (uint64_t seq = 1; seq <= 4; ++seq) append(writer_, seq, LENGTH);
    static_assert(BROADCAST_DATA_OFFSET + BROADCAST_RECORD_HEADER_BYTES < PAGE &&
                  BROADCAST_DATA_OFFSET + BROADCAST_RECORD_HEADER_BYTES + LENGTH > PAGE);
    CopyInterrupter interrupter(member_.base() + PAGE);
    std::vector<BroadcastRecord> got;
    std::thread reader([&] {
      BroadcastRecord rec;
      while (sut.next(rec) == BroadcastReader::Status::OK) got.push_back(rec);
      interrupter.readerDone();
    });
    const bool faulted = interrupter.waitForFault();
    if (faulted) whileCopying();
    interrupter.resume();
    reader.join();
    EXPECT_TRUE(faulted) << "the reader never copied from the interrupted page";
    return got;
  }
};

TEST_F(BroadcastRingTornTest, CopyIsDeliveredWhenTheWriterStaysAwayDuringIt) {
  BroadcastReader sut = makeReader();
  auto got = readInterrupted(sut, [] {});
  ASSERT_EQ(got.size(), 4u);
  for (uint64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(got[i].seq, i + 1);
    EXPECT_TRUE(matchesPattern(got[i]));
  }
  EXPECT_EQ(sut.resyncs(), 0u);
}

TEST_F(BroadcastRingTornTest, TornCopyIsDetectedWhenTheWriterOverwritesBetweenCopyAndRecheck) {
  BroadcastReader sut = makeReader();
  // Record 5 does not fit in the 288 spare bytes: PAD, then it lands on record 1, which the
  // reader is half-way through copying.
  auto got = readInterrupted(sut, [&] { append(writer_, 5, LENGTH); });
  ASSERT_EQ(got.size(), 4u) << "record 1 must not be delivered";
  for (uint64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(got[i].seq, i + 2);
    EXPECT_TRUE(matchesPattern(got[i])) << "seq " << got[i].seq;
  }
  EXPECT_EQ(sut.resyncs(), 1u);
}

// ================================================================ a reader process

constexpr uint32_t STOP = 8;

uint32_t lengthFor(uint64_t seq, uint64_t maxPayload) { return static_cast<uint32_t>((seq * 2654435761u) % (maxPayload + 1)); }

/// The forked reader: maps the memfd read-only itself, checks the header, reads until STOP.
/// Exit codes: 0 every record intact and in order; 1 header refused; 2 a torn or foreign
/// record; 3 seq went backwards or repeated.
[[noreturn]] void runReaderProcess(int fd, size_t bytes, int readyFd) {
  alarm(60);  // a bound, in case the writer side dies without a STOP
  void* base = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  auto region = readBroadcastHeader(base, bytes);
  if (base == MAP_FAILED || !region) _exit(1);
  BroadcastReader reader = openBroadcastReader(base, *region, 0);
  const uint64_t maxPayload = broadcastMaxPayload(region->capacity);
  char ready = 'r';
  if (::write(readyFd, &ready, 1) != 1) _exit(1);
  BroadcastRecord rec;
  uint64_t last = 0;
  for (;;) {
    const uint32_t word = reader.wakeWord().load(std::memory_order_acquire);
    if (reader.next(rec) == BroadcastReader::Status::EMPTY) {
      timespec bound{0, 50'000'000};  // a hint with a bound: the writer wakes us on progress
      ::syscall(SYS_futex, &reader.wakeWord(), FUTEX_WAIT, word, &bound, nullptr, 0);
      continue;
    }
    if (rec.seq <= last) _exit(3);
    last = rec.seq;
    if (rec.tag != rec.seq * 10 || rec.length != lengthFor(rec.seq, maxPayload) || !matchesPattern(rec)) _exit(2);
    if (rec.type == STOP) _exit(0);
  }
}

TEST_F(BroadcastRingTest, ReaderProcessRacingTheWriterNeverSeesATornRecord) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_NE(child, -1);
  if (child == 0) runReaderProcess(memfd_.fd(), memfd_.bytes(), ready[1]);
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1) << "the reader process did not start";
  ::close(ready[0]);
  constexpr uint64_t RECORDS = 200'000;
  for (uint64_t seq = 1; seq <= RECORDS; ++seq) {
    append(writer_, seq, lengthFor(seq, writer_.maxPayload()), seq == RECORDS ? STOP : TYPE);
    if (seq % 256 == 0) writer_.wakeAll();
  }
  writer_.wakeAll();
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "reader process killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: header refused, 2: torn record delivered, 3: seq out of order";
}

}  // namespace
}  // namespace swipc::queue
