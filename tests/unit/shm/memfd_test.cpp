// memfd segments: create, seal, inspect.
#include "shm/memfd.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

namespace swipc::shm {
namespace {

constexpr size_t SEGMENT_BYTES = 64 * 1024;

TEST(MemfdTest, CreateGivesFdOfRequestedSize) {
  auto sut = createMemfd("swipc-test", SEGMENT_BYTES);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  EXPECT_TRUE(sut->valid());
  auto size = fileSize(sut->get());
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, SEGMENT_BYTES);
}

TEST(MemfdTest, CreateSetsCloseOnExec) {
  auto sut = createMemfd("swipc-test", SEGMENT_BYTES);
  ASSERT_TRUE(sut.ok());
  int flags = ::fcntl(sut->get(), F_GETFD);
  ASSERT_NE(flags, -1);
  EXPECT_TRUE(flags & FD_CLOEXEC);
}

TEST(MemfdTest, NewMemfdHasNoSeals) {
  auto fd = createMemfd("swipc-test", SEGMENT_BYTES);
  ASSERT_TRUE(fd.ok());
  auto sut = getSeals(fd->get());
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  EXPECT_EQ(*sut, 0u);  // MFD_ALLOW_SEALING: F_SEAL_SEAL is not set
}

TEST(MemfdTest, AddSealsIsVisibleInGetSeals) {
  auto fd = createMemfd("swipc-test", SEGMENT_BYTES);
  ASSERT_TRUE(fd.ok());
  ASSERT_TRUE(addSeals(fd->get(), SEALS_FIXED_SIZE).ok());
  auto sut = getSeals(fd->get());
  ASSERT_TRUE(sut.ok());
  EXPECT_EQ(*sut & (F_SEAL_SHRINK | F_SEAL_GROW), unsigned{F_SEAL_SHRINK | F_SEAL_GROW});
  EXPECT_EQ(SEALS_FIXED_SIZE, unsigned{F_SEAL_SHRINK | F_SEAL_GROW});
}

TEST(MemfdTest, FtruncateFailsAfterFixedSizeSeals) {
  auto fd = createMemfd("swipc-test", SEGMENT_BYTES);
  ASSERT_TRUE(fd.ok());
  ASSERT_TRUE(addSeals(fd->get(), SEALS_FIXED_SIZE).ok());
  EXPECT_EQ(::ftruncate(fd->get(), SEGMENT_BYTES * 2), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::ftruncate(fd->get(), SEGMENT_BYTES / 2), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::ftruncate(fd->get(), 0), -1);
  auto size = fileSize(fd->get());
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, SEGMENT_BYTES);
}

TEST(MemfdTest, AddSealsFailsAfterSealSeal) {
  auto fd = createMemfd("swipc-test", SEGMENT_BYTES);
  ASSERT_TRUE(fd.ok());
  ASSERT_TRUE(addSeals(fd->get(), F_SEAL_SEAL).ok());
  auto sut = addSeals(fd->get(), SEALS_FIXED_SIZE);
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::SYSTEM);
}

TEST(MemfdTest, GetSealsFailsOnPipe) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  UniqueFd readEnd(p[0]), writeEnd(p[1]);
  auto sut = getSeals(readEnd.get());
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::SYSTEM);
  EXPECT_NE(sut.error().message.find("F_GET_SEALS"), std::string::npos) << sut.error().message;
}

TEST(MemfdTest, AddSealsFailsOnPipe) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  UniqueFd readEnd(p[0]), writeEnd(p[1]);
  EXPECT_FALSE(addSeals(readEnd.get(), SEALS_FIXED_SIZE).ok());
}

TEST(MemfdTest, FileSizeFailsOnClosedFd) {
  auto sut = fileSize(-1);
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::SYSTEM);
}

TEST(MemfdTest, CreateZeroBytesGivesEmptyFile) {
  auto sut = createMemfd("swipc-test", 0);
  ASSERT_TRUE(sut.ok());
  EXPECT_EQ(*fileSize(sut->get()), 0u);
}

}  // namespace
}  // namespace swipc::shm
