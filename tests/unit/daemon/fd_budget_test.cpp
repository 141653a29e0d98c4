// FdBudget: which clients get their own wake fds, which get socket wakes, which are refused, and
// when the fds in use are counted again (a fake counter stands for /proc/self/fd).
#include "daemon/fd_budget.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

namespace swipc::daemon {
namespace {

class FdBudgetTest : public ::testing::Test {
 protected:
  uint64_t open_ = 20;  // what the fake /proc/self/fd says
  int counts_ = 0;
  FdBudget sut{1024, [this] {
                 ++counts_;
                 return open_;
               }};
  /// Admits like the daemon: decides, then "opens" the fds the decision costs.
  FdBudget::Admit admitOne() {
    auto a = sut.decide();
    if (a == FdBudget::Admit::REFUSE) return a;
    unsigned fds = a == FdBudget::Admit::WAKE_FDS ? FdBudget::FDS_WITH_WAKE_FDS : FdBudget::FDS_WITH_SOCKET_WAKES;
    open_ += fds;
    sut.admitted(fds);
    return a;
  }
};

TEST_F(FdBudgetTest, ReserveIsABasePlusAShareOfTheLimit) {
  EXPECT_EQ(sut.reserve(), 64u + 1024u / 32u);
  EXPECT_EQ(FdBudget(20000).reserve(), 689u);
}

TEST_F(FdBudgetTest, WakeFdsUntilAQuarterThenSocketWakesThenRefusal) {
  // 1024: wake fds while <= 256 in use, refusal once a client would pass 1024 - 96 = 928.
  size_t wakeFds = 0, socketWakes = 0;
  for (;;) {
    auto a = admitOne();
    if (a == FdBudget::Admit::REFUSE) break;
    (a == FdBudget::Admit::WAKE_FDS ? wakeFds : socketWakes)++;
    ASSERT_LT(wakeFds + socketWakes, 2000u);
  }
  EXPECT_EQ(wakeFds, (256u - 20u) / 3u);
  EXPECT_EQ(open_, 1024u - sut.reserve());  // the last one admitted took the last fd before the reserve
  EXPECT_EQ(socketWakes, 928u - (20u + 3u * wakeFds));
}

TEST_F(FdBudgetTest, FdsOpenedElsewhereAreSeenAtTheNextCount) {
  EXPECT_EQ(admitOne(), FdBudget::Admit::WAKE_FDS);
  open_ = 1000;  // fetch bodies, channel rings...: not the budget's doing
  // Far from a threshold by the estimate, so counted again only after RECOUNT_EVERY admissions.
  for (uint64_t i = 1; i < FdBudget::RECOUNT_EVERY; ++i) sut.admitted(1);
  EXPECT_EQ(sut.decide(), FdBudget::Admit::REFUSE);
}

TEST_F(FdBudgetTest, RefusalFloodDoesNotCountEveryTime) {
  open_ = 1000;
  EXPECT_EQ(sut.decide(), FdBudget::Admit::REFUSE);
  const int after = counts_;
  for (int i = 0; i < 100; ++i) EXPECT_EQ(sut.decide(), FdBudget::Admit::REFUSE);
  EXPECT_LE(counts_ - after, 1);  // at most once per REFUSED_RECOUNT_AFTER, and this took less
}

TEST_F(FdBudgetTest, RealCountSeesANewFd) {
  const uint64_t before = FdBudget::countOpenFds();
  int fd = ::dup(0);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(FdBudget::countOpenFds(), before + 1);
  ::close(fd);
}

TEST_F(FdBudgetTest, SoftLimitIsRaisedToTheHardOne) {
  auto lim = FdBudget::raiseSoftLimit();
  rlimit rl{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
  EXPECT_EQ(lim.soft, rl.rlim_cur);
  EXPECT_EQ(rl.rlim_cur, rl.rlim_max);
}

}  // namespace
}  // namespace swipc::daemon
