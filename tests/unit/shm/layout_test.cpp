// The per-client segment header: written by the daemon, validated by the client.
#include "shm/layout.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace swipc::shm {
namespace {

// The queue layer's RingHeader size; shm knows nothing of queues, so the tests pass it like callers do.
constexpr size_t RING_HEADER = 2 * CACHE_LINE;
constexpr uint64_t UP = 4096;
constexpr uint64_t DOWN = 8192;

class LayoutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    layout_ = computeLayout(UP, DOWN, RING_HEADER);
    memory_.assign(layout_.totalBytes / 8, 0);
    writeHeader(base(), layout_);
  }

  void* base() { return memory_.data(); }
  size_t mappedBytes() const { return memory_.size() * 8; }
  SegmentHeader header() const {
    SegmentHeader h;
    std::memcpy(&h, memory_.data(), sizeof h);
    return h;
  }
  void setHeader(const SegmentHeader& h) { std::memcpy(memory_.data(), &h, sizeof h); }
  Result<SegmentLayout> read() { return readHeader(base(), mappedBytes(), RING_HEADER); }

  SegmentLayout layout_;
  std::vector<uint64_t> memory_;  // 8-byte aligned like a mapping
};

void expectRejected(const Result<SegmentLayout>& sut, Errc code) {
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, code) << sut.error().describe();
}

TEST_F(LayoutTest, ComputePlacesRingsAfterHeaderBackToBack) {
  const SegmentLayout& sut = layout_;
  EXPECT_EQ(sut.upCapacity, UP);
  EXPECT_EQ(sut.downCapacity, DOWN);
  EXPECT_EQ(sut.upOffset, SEGMENT_HEADER_BYTES);
  EXPECT_EQ(sut.downOffset, SEGMENT_HEADER_BYTES + RING_HEADER + UP);
  EXPECT_EQ(sut.totalBytes, SEGMENT_HEADER_BYTES + 2 * RING_HEADER + UP + DOWN);
}

TEST_F(LayoutTest, ComputeKeepsRingHeadersCacheLineAligned) {
  EXPECT_EQ(layout_.upOffset % CACHE_LINE, 0u);
  EXPECT_EQ(layout_.downOffset % CACHE_LINE, 0u);
  EXPECT_EQ(layout_.totalBytes % CACHE_LINE, 0u);
}

TEST_F(LayoutTest, WriteHeaderFillsEveryField) {
  SegmentHeader sut = header();
  EXPECT_EQ(sut.magic, SEGMENT_MAGIC);
  EXPECT_EQ(sut.layoutVersion, LAYOUT_VERSION);
  EXPECT_EQ(sut.headerBytes, SEGMENT_HEADER_BYTES);
  EXPECT_EQ(sut.totalBytes, layout_.totalBytes);
  EXPECT_EQ(sut.upOffset, layout_.upOffset);
  EXPECT_EQ(sut.upCapacity, UP);
  EXPECT_EQ(sut.downOffset, layout_.downOffset);
  EXPECT_EQ(sut.downCapacity, DOWN);
}

TEST_F(LayoutTest, ReadHeaderRoundTripsWrittenLayout) {
  auto sut = read();
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  EXPECT_EQ(sut->totalBytes, layout_.totalBytes);
  EXPECT_EQ(sut->upOffset, layout_.upOffset);
  EXPECT_EQ(sut->upCapacity, layout_.upCapacity);
  EXPECT_EQ(sut->downOffset, layout_.downOffset);
  EXPECT_EQ(sut->downCapacity, layout_.downCapacity);
}

TEST_F(LayoutTest, ReadHeaderAcceptsMappingLargerThanSegment) {
  memory_.resize(memory_.size() + 512);
  EXPECT_TRUE(read().ok());
}

TEST_F(LayoutTest, ReadHeaderRejectsBadMagic) {
  SegmentHeader h = header();
  h.magic ^= 1;
  setHeader(h);
  expectRejected(read(), Errc::VERSION_MISMATCH);
}

TEST_F(LayoutTest, ReadHeaderRejectsZeroedSegment) {
  std::fill(memory_.begin(), memory_.end(), 0);
  expectRejected(read(), Errc::VERSION_MISMATCH);
}

TEST_F(LayoutTest, ReadHeaderRejectsNewerVersion) {
  SegmentHeader h = header();
  h.layoutVersion = LAYOUT_VERSION + 1;
  setHeader(h);
  expectRejected(read(), Errc::VERSION_MISMATCH);
}

TEST_F(LayoutTest, ReadHeaderRejectsOlderVersion) {
  SegmentHeader h = header();
  h.layoutVersion = LAYOUT_VERSION - 1;
  setHeader(h);
  expectRejected(read(), Errc::VERSION_MISMATCH);
}

TEST_F(LayoutTest, ReadHeaderRejectsWrongHeaderSize) {
  SegmentHeader h = header();
  h.headerBytes = SEGMENT_HEADER_BYTES * 2;
  setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION);
}

TEST_F(LayoutTest, ReadHeaderRejectsNonPowerOfTwoUpCapacity) {
  SegmentHeader h = header();
  h.upCapacity = UP + 8;
  setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION);
}

TEST_F(LayoutTest, ReadHeaderRejectsNonPowerOfTwoDownCapacity) {
  SegmentHeader h = header();
  h.downCapacity = 3 * 1024;
  setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION);
}

TEST_F(LayoutTest, ReadHeaderRejectsZeroCapacity) {
  SegmentHeader h = header();
  h.upCapacity = 0;
  setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION);
}

TEST_F(LayoutTest, ReadHeaderRejectsCapacityAboveFourGiB) {
  SegmentHeader h = header();
  h.downCapacity = 1ULL << 33;
  setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION);
}

TEST_F(LayoutTest, ReadHeaderRejectsHugeCapacityThatWouldOverflowOffsets) {
  SegmentHeader h = header();
  h.upCapacity = 1ULL << 63;
  h.downOffset = h.upOffset + RING_HEADER + h.upCapacity;
  h.totalBytes = h.downOffset + RING_HEADER + h.downCapacity;
  setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION);
}

// TODO(test): enable once readHeader enforces a minimum ring capacity. Today a header with
// capacity 8 passes readHeader, then RingReader/RingWriter abort on their capacity >= 64
// precondition, and the down RingHeader lands off its 128-byte alignment.
TEST_F(LayoutTest, ReadHeaderRejectsCapacityTooSmallForARing) {
  for (uint64_t tiny : {uint64_t{1}, uint64_t{8}, uint64_t{32}}) {
    SegmentHeader h = header();
    h.upCapacity = tiny;
    h.downOffset = h.upOffset + RING_HEADER + tiny;
    h.totalBytes = h.downOffset + RING_HEADER + h.downCapacity;
    setHeader(h);
    expectRejected(read(), Errc::PROTOCOL_VIOLATION);
  }
}

TEST_F(LayoutTest, ReadHeaderRejectsShiftedUpOffset) {
  SegmentHeader h = header();
  h.upOffset += 8;
  setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION);
}

TEST_F(LayoutTest, ReadHeaderRejectsDownOffsetInsideUpRing) {
  SegmentHeader h = header();
  h.downOffset = h.upOffset + RING_HEADER;  // overlaps the up ring's data
  setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION);
}

TEST_F(LayoutTest, ReadHeaderRejectsTotalDisagreeingWithRings) {
  SegmentHeader h = header();
  h.totalBytes -= CACHE_LINE;
  setHeader(h);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION);
}

TEST_F(LayoutTest, ReadHeaderRejectsTotalLargerThanMapping) {
  auto sut = readHeader(base(), mappedBytes() - 8, RING_HEADER);
  expectRejected(sut, Errc::PROTOCOL_VIOLATION);
}

TEST_F(LayoutTest, ReadHeaderRejectsConsistentHeaderLargerThanMapping) {
  // Every field agrees, but describes rings far bigger than what was mapped.
  SegmentLayout big = computeLayout(UP * 16, DOWN * 16, RING_HEADER);
  writeHeader(base(), big);
  expectRejected(read(), Errc::PROTOCOL_VIOLATION);
}

TEST_F(LayoutTest, ReadHeaderRejectsMappingSmallerThanHeader) {
  auto sut = readHeader(base(), SEGMENT_HEADER_BYTES - 1, RING_HEADER);
  expectRejected(sut, Errc::PROTOCOL_VIOLATION);
}

TEST(LayoutDeathTest, ComputeAbortsOnNonPowerOfTwoCapacity) {
  EXPECT_DEATH((void)computeLayout(1000, 1024, RING_HEADER), "power");
}

}  // namespace
}  // namespace swipc::shm
