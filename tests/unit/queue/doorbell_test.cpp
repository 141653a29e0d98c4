// Doorbell: an eventfd wake-up hint.
#include "queue/doorbell.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

namespace swipc::queue {
namespace {

/// poll() the fd for POLLIN; `timeoutMs` bounds the wait (0 = just look).
bool readable(int fd, int timeoutMs = 0) {
  pollfd p{fd, POLLIN, 0};
  int n = ::poll(&p, 1, timeoutMs);
  return n == 1 && (p.revents & POLLIN);
}

class DoorbellTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = Doorbell::create();
    ASSERT_TRUE(d.ok()) << d.error().describe();
    sut = std::move(*d);
  }
  Doorbell sut;
};

TEST_F(DoorbellTest, CreateGivesNonBlockingCloseOnExecFd) {
  ASSERT_TRUE(sut.valid());
  int fl = ::fcntl(sut.fd(), F_GETFL);
  int fd = ::fcntl(sut.fd(), F_GETFD);
  ASSERT_NE(fl, -1);
  ASSERT_NE(fd, -1);
  EXPECT_TRUE(fl & O_NONBLOCK);
  EXPECT_TRUE(fd & FD_CLOEXEC);
}

TEST_F(DoorbellTest, FreshDoorbellIsNotReadable) { EXPECT_FALSE(readable(sut.fd())); }

TEST_F(DoorbellTest, RingMakesFdReadable) {
  sut.ring();
  EXPECT_TRUE(readable(sut.fd()));
}

TEST_F(DoorbellTest, DrainClearsReadable) {
  sut.ring();
  sut.drain();
  EXPECT_FALSE(readable(sut.fd()));
}

TEST_F(DoorbellTest, OneDrainClearsManyRings) {
  for (int i = 0; i < 5; ++i) sut.ring();
  sut.drain();
  EXPECT_FALSE(readable(sut.fd()));
}

TEST_F(DoorbellTest, DrainWhenNotRungReturnsAndStaysClear) {
  sut.drain();  // non-blocking: returns at once
  EXPECT_FALSE(readable(sut.fd()));
  sut.ring();
  EXPECT_TRUE(readable(sut.fd()));
}

TEST_F(DoorbellTest, RingFromChildProcessWakesParent) {
  pid_t pid = ::fork();
  ASSERT_NE(pid, -1);
  if (pid == 0) {
    sut.ring();
    ::_exit(0);
  }
  EXPECT_TRUE(readable(sut.fd(), 10'000));
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(DoorbellTest, MoveTransfersFd) {
  int fd = sut.fd();
  Doorbell moved = std::move(sut);
  EXPECT_EQ(moved.fd(), fd);
  EXPECT_FALSE(sut.valid());
  moved.ring();
  EXPECT_TRUE(readable(moved.fd()));
}

TEST(DoorbellDefaultTest, DefaultIsInvalid) {
  Doorbell sut;
  EXPECT_FALSE(sut.valid());
}

}  // namespace
}  // namespace swipc::queue
