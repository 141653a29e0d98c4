// Doorbell: an eventfd wake-up hint. WakePipe: the same over a pipe whose write end only the
// writer holds.
#include "queue/doorbell.h"

#include <fcntl.h>
#include <signal.h>
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

TEST(WakePipeTest, CreateGivesNonBlockingCloseOnExecEnds) {
  auto p = WakePipe::create();
  ASSERT_TRUE(p.ok()) << p.error().describe();
  int fl = ::fcntl(p->readFd(), F_GETFL);
  ASSERT_NE(fl, -1);
  EXPECT_TRUE(fl & O_NONBLOCK);
  EXPECT_TRUE(::fcntl(p->readFd(), F_GETFD) & FD_CLOEXEC);
  EXPECT_FALSE(readable(p->readFd()));
}

TEST(WakePipeTest, RingMakesTheReaderReadableAndDrainClearsIt) {
  auto writer = WakePipe::create();
  ASSERT_TRUE(writer.ok());
  auto reader = WakePipe::adoptReadEnd(UniqueFd(::dup(writer->readFd())));
  ASSERT_TRUE(reader.ok()) << reader.error().describe();
  writer->ring();
  writer->ring();
  EXPECT_TRUE(readable(reader->readFd()));
  reader->drain();
  EXPECT_FALSE(readable(reader->readFd()));
}

TEST(WakePipeTest, RingNeverBlocksWhenTheReaderNeverDrainsEvenIfItMadeItsEndBlocking) {
  auto writer = WakePipe::create();
  ASSERT_TRUE(writer.ok());
  auto reader = WakePipe::adoptReadEnd(UniqueFd(::dup(writer->readFd())));
  ASSERT_TRUE(reader.ok());
  // A hostile reader clears O_NONBLOCK on the file description it holds: the write end is
  // another description, so the writer's rings still return at once on a full pipe.
  ASSERT_EQ(::fcntl(reader->readFd(), F_SETFL, 0), 0);
  writer->forgetReadEnd();
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    for (int i = 0; i < 200'000; ++i) writer->ring();  // far more than a pipe buffer holds
    ::_exit(0);
  }
  // A deadline instead of a hang: the child must finish on its own.
  int status = 0;
  bool exited = false;
  for (int i = 0; i < 1000 && !exited; ++i) {
    if (::waitpid(child, &status, WNOHANG) == child) exited = true;
    else ::poll(nullptr, 0, 10);
  }
  if (!exited) {
    ::kill(child, SIGKILL);
    ::waitpid(child, &status, 0);
  }
  EXPECT_TRUE(exited) << "ring() blocked on a full pipe";
  EXPECT_TRUE(readable(reader->readFd()));
}

TEST(WakePipeTest, AdoptRefusesAnEndThatIsNotReadOnly) {
  auto writer = WakePipe::create();
  ASSERT_TRUE(writer.ok());
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ::close(fds[0]);
  auto bad = WakePipe::adoptReadEnd(UniqueFd(fds[1]));  // a write end
  EXPECT_FALSE(bad.ok());
}

}  // namespace
}  // namespace swipc::queue
