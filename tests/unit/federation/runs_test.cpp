// When a channel's run may end (federation/runs.h): never while another node may have missed
// its tail and not yet heard its last mark.
#include "federation/runs.h"

#include <gtest/gtest.h>

namespace swipc::federation::runs {
namespace {

using namespace std::chrono_literals;
constexpr Clock::duration SILENT = 2500ms;

Hearing heard(Clock::duration quiet, uint64_t since) { return {false, quiet, since}; }

TEST(RunsTest, ARunEndsOnceIdleAndItsLastMarkWentOutEnoughTimes) {
  const uint64_t since = heardByAllSince({heard(500ms, 0)}, SILENT);
  EXPECT_FALSE(mayEnd(9, 10, 3, 40, since));                  // not idle long enough
  EXPECT_FALSE(mayEnd(10, 10, 40, 40, since));                // idle, but no announcement since
  EXPECT_FALSE(mayEnd(10, 10, 36, 40, since));                // 4 repeats
  EXPECT_TRUE(mayEnd(10, 10, 35, 40, since));                 // 5
  EXPECT_TRUE(mayEnd(10, 10, 3, 40, heardByAllSince({}, SILENT)));  // alone
}

TEST(RunsTest, ANodeSilentNowHoldsEveryRunBack) {
  EXPECT_EQ(heardByAllSince({heard(500ms, 0), heard(3s, 0)}, SILENT), UINT64_MAX);
  EXPECT_FALSE(mayEnd(1000, 10, 0, 1000, heardByAllSince({heard(3s, 0)}, SILENT)));
  // Still after the 10 minutes that make the others stop publishing every channel to it.
  EXPECT_FALSE(mayEnd(1000, 10, 0, 1000, heardByAllSince({heard(30min, 0)}, SILENT)));
}

TEST(RunsTest, ANodeHeardAgainCountsTheRepeatsFromThen) {
  // Heard again when 38 announcements had gone out: the run posted on at 3 has been repeated
  // to it twice only.
  const uint64_t since = heardByAllSince({heard(200ms, 10), heard(100ms, 38)}, SILENT);
  EXPECT_EQ(since, 38u);
  EXPECT_FALSE(mayEnd(100, 10, 3, 40, since));
  EXPECT_TRUE(mayEnd(100, 10, 3, 43, since));
}

TEST(RunsTest, ANodeThatLeftOrIsGoneForGoodHoldsNothingBack) {
  EXPECT_EQ(heardByAllSince({{true, 5min, 39}}, SILENT), 0u);
  EXPECT_EQ(heardByAllSince({heard(PEER_GONE, 39)}, SILENT), 0u);
  EXPECT_EQ(heardByAllSince({heard(PEER_GONE - 1s, 39)}, SILENT), UINT64_MAX);
}

}  // namespace
}  // namespace swipc::federation::runs
