// Mapping memfds through Boost.Interprocess, and DESIGN §4's sealing claim: after the creator maps
// read-write and adds F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE, every writable path for
// the receiver of the fd fails while the creator's earlier mapping keeps writing.
#include "shm/mapping.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "shm/memfd.h"

namespace swipc::shm {
namespace {

constexpr size_t SEGMENT_BYTES = 16 * 4096;

UniqueFd makeSegment() {
  auto fd = createMemfd("swipc-mapping-test", SEGMENT_BYTES);
  EXPECT_TRUE(fd.ok());
  return fd.ok() ? std::move(*fd) : UniqueFd();
}

TEST(MappingTest, ReadWriteMapIsWritableAndSized) {
  UniqueFd fd = makeSegment();
  auto sut = Mapping::map(fd.get(), SEGMENT_BYTES, Access::READ_WRITE);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  ASSERT_TRUE(sut->valid());
  EXPECT_EQ(sut->size(), SEGMENT_BYTES);
  EXPECT_EQ(sut->data()[0], 0);  // memfds start zeroed
  sut->data()[0] = 0x5a;
  sut->data()[SEGMENT_BYTES - 1] = 0xa5;
  EXPECT_EQ(sut->data()[0], 0x5a);
}

TEST(MappingTest, ReadOnlyMapSeesWritesOfReadWriteMap) {
  UniqueFd fd = makeSegment();
  auto writer = Mapping::map(fd.get(), SEGMENT_BYTES, Access::READ_WRITE);
  auto sut = Mapping::map(fd.get(), SEGMENT_BYTES, Access::READ_ONLY);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE(sut.ok());
  ASSERT_NE(writer->data(), sut->data());
  std::memcpy(writer->data() + 100, "hello", 5);
  EXPECT_EQ(std::memcmp(sut->data() + 100, "hello", 5), 0);
  writer->data()[SEGMENT_BYTES - 1] = 7;
  EXPECT_EQ(sut->data()[SEGMENT_BYTES - 1], 7);
}

TEST(MappingTest, MappingOutlivesItsFd) {
  UniqueFd fd = makeSegment();
  auto writer = Mapping::map(fd.get(), SEGMENT_BYTES, Access::READ_WRITE);
  auto sut = Mapping::map(fd.get(), SEGMENT_BYTES, Access::READ_ONLY);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE(sut.ok());
  fd.reset();
  writer->data()[42] = 42;
  EXPECT_EQ(sut->data()[42], 42);
}

TEST(MappingTest, MoveTransfersOwnership) {
  UniqueFd fd = makeSegment();
  auto r = Mapping::map(fd.get(), SEGMENT_BYTES, Access::READ_WRITE);
  ASSERT_TRUE(r.ok());
  uint8_t* p = r->data();
  Mapping sut = std::move(*r);
  EXPECT_EQ(sut.data(), p);
  EXPECT_EQ(sut.size(), SEGMENT_BYTES);
  EXPECT_FALSE(r->valid());
  sut.data()[1] = 1;
  EXPECT_EQ(sut.data()[1], 1);
}

TEST(MappingTest, DefaultIsInvalid) {
  Mapping sut;
  EXPECT_FALSE(sut.valid());
}

TEST(MappingTest, MapFailsOnBadFd) {
  auto sut = Mapping::map(-1, SEGMENT_BYTES, Access::READ_ONLY);
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::SYSTEM);
}

TEST(MappingTest, MapFailsOnPipe) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  UniqueFd readEnd(p[0]), writeEnd(p[1]);
  EXPECT_FALSE(Mapping::map(readEnd.get(), 4096, Access::READ_ONLY).ok());
}

TEST(MappingTest, ReadWriteMapFailsOnReadOnlyFd) {
  UniqueFd fd = makeSegment();
  UniqueFd ro(::open(("/proc/self/fd/" + std::to_string(fd.get())).c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(ro.valid()) << std::strerror(errno);
  EXPECT_FALSE(Mapping::map(ro.get(), SEGMENT_BYTES, Access::READ_WRITE).ok());
  EXPECT_TRUE(Mapping::map(ro.get(), SEGMENT_BYTES, Access::READ_ONLY).ok());
}

// ---------------------------------------------------------------- F_SEAL_FUTURE_WRITE

/// A segment as the daemon hands it out: mapped read-write by its creator, then sealed.
class SealedSegmentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_ = makeSegment();
    ASSERT_TRUE(fd_.valid());
    auto m = Mapping::map(fd_.get(), SEGMENT_BYTES, Access::READ_WRITE);
    ASSERT_TRUE(m.ok()) << m.error().describe();
    creator_ = std::move(*m);
    creator_.data()[0] = 1;
    auto sealed = addSeals(fd_.get(), SEALS_FIXED_SIZE | F_SEAL_FUTURE_WRITE);
    ASSERT_TRUE(sealed.ok()) << sealed.error().describe();
  }

  std::string procPath() const { return "/proc/self/fd/" + std::to_string(fd_.get()); }

  UniqueFd fd_;
  Mapping creator_;
};

TEST_F(SealedSegmentTest, SealsAreReported) {
  auto sut = getSeals(fd_.get());
  ASSERT_TRUE(sut.ok());
  EXPECT_EQ(*sut, unsigned{F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE});
}

TEST_F(SealedSegmentTest, SharedReadWriteMmapFails) {
  void* p = ::mmap(nullptr, SEGMENT_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  EXPECT_EQ(p, MAP_FAILED);
  if (p != MAP_FAILED) ::munmap(p, SEGMENT_BYTES);
  EXPECT_EQ(errno, EPERM);
}

TEST_F(SealedSegmentTest, BoostReadWriteMappingFails) {
  auto sut = Mapping::map(fd_.get(), SEGMENT_BYTES, Access::READ_WRITE);
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::SYSTEM);
}

TEST_F(SealedSegmentTest, MprotectOfReadOnlyViewToWriteFails) {
  auto view = Mapping::map(fd_.get(), SEGMENT_BYTES, Access::READ_ONLY);
  ASSERT_TRUE(view.ok()) << view.error().describe();
  EXPECT_EQ(::mprotect(view->data(), SEGMENT_BYTES, PROT_READ | PROT_WRITE), -1);
  EXPECT_EQ(::mprotect(view->data(), 4096, PROT_WRITE), -1);
}

TEST_F(SealedSegmentTest, MprotectOfRawReadOnlyMmapToWriteFails) {
  void* p = ::mmap(nullptr, SEGMENT_BYTES, PROT_READ, MAP_SHARED, fd_.get(), 0);
  ASSERT_NE(p, MAP_FAILED) << std::strerror(errno);
  EXPECT_EQ(::mprotect(p, SEGMENT_BYTES, PROT_READ | PROT_WRITE), -1);
  ::munmap(p, SEGMENT_BYTES);
}

TEST_F(SealedSegmentTest, PwriteFails) {
  const char byte = 'x';
  EXPECT_EQ(::pwrite(fd_.get(), &byte, 1, 0), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::write(fd_.get(), &byte, 1), -1);
  EXPECT_EQ(creator_.data()[0], 1);
}

TEST_F(SealedSegmentTest, FtruncateFails) {
  EXPECT_EQ(::ftruncate(fd_.get(), SEGMENT_BYTES * 2), -1);
  EXPECT_EQ(::ftruncate(fd_.get(), 0), -1);
  EXPECT_EQ(*fileSize(fd_.get()), SEGMENT_BYTES);
}

TEST_F(SealedSegmentTest, ReopenThroughProcGivesNoWritablePath) {
  UniqueFd reopened(::open(procPath().c_str(), O_RDWR | O_CLOEXEC));
  if (!reopened.valid()) return;  // refusing the re-open closes this path too
  void* p = ::mmap(nullptr, SEGMENT_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, reopened.get(), 0);
  EXPECT_EQ(p, MAP_FAILED);
  if (p != MAP_FAILED) ::munmap(p, SEGMENT_BYTES);
  EXPECT_FALSE(Mapping::map(reopened.get(), SEGMENT_BYTES, Access::READ_WRITE).ok());
  const char byte = 'x';
  EXPECT_EQ(::pwrite(reopened.get(), &byte, 1, 0), -1);
  EXPECT_EQ(::ftruncate(reopened.get(), 0), -1);
  EXPECT_EQ(creator_.data()[0], 1);
}

TEST_F(SealedSegmentTest, ReopenedReadOnlyViewCannotBeMadeWritable) {
  UniqueFd reopened(::open(procPath().c_str(), O_RDWR | O_CLOEXEC));
  if (!reopened.valid()) return;  // refusing the re-open closes this path too
  auto view = Mapping::map(reopened.get(), SEGMENT_BYTES, Access::READ_ONLY);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(::mprotect(view->data(), SEGMENT_BYTES, PROT_READ | PROT_WRITE), -1);
}

TEST_F(SealedSegmentTest, CreatorMappingStillWritesAndReadersSeeIt) {
  auto reader = Mapping::map(fd_.get(), SEGMENT_BYTES, Access::READ_ONLY);
  ASSERT_TRUE(reader.ok()) << reader.error().describe();
  std::memcpy(creator_.data() + 512, "after seal", 10);
  creator_.data()[SEGMENT_BYTES - 1] = 0xee;
  EXPECT_EQ(std::memcmp(reader->data() + 512, "after seal", 10), 0);
  EXPECT_EQ(reader->data()[SEGMENT_BYTES - 1], 0xee);
  EXPECT_EQ(reader->data()[0], 1);  // the write made before sealing
}

TEST_F(SealedSegmentTest, PrivateReadWriteMapDoesNotReachSharedContent) {
  // MAP_PRIVATE is allowed (copy-on-write): writes through it must stay private.
  void* p = ::mmap(nullptr, SEGMENT_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd_.get(), 0);
  if (p == MAP_FAILED) return;  // refusing it is just as safe
  static_cast<uint8_t*>(p)[0] = 99;
  EXPECT_EQ(creator_.data()[0], 1);
  ::munmap(p, SEGMENT_BYTES);
}

}  // namespace
}  // namespace swipc::shm
