#include "federation/sequence_tracker.h"

#include <gtest/gtest.h>

namespace swipc::federation {
namespace {

const ChannelName A("a");
const ChannelName B("b");

TEST(SequenceTrackerTest, InOrderPostsAreDeliveredWithNothingMissed) {
  SequenceTracker sut;
  for (uint64_t s = 1; s <= 5; ++s) {
    auto v = sut.onPost("n1", 1, A, s);
    EXPECT_TRUE(v.deliver);
    EXPECT_EQ(v.missed, 0u);
  }
}

TEST(SequenceTrackerTest, FirstPostHeardMidStreamIsABaselineNotAGap) {
  SequenceTracker sut;
  auto v = sut.onPost("n1", 1, A, 40);
  EXPECT_TRUE(v.deliver);
  EXPECT_EQ(v.missed, 0u);
}

TEST(SequenceTrackerTest, HoleInPostsIsCountedOnce) {
  SequenceTracker sut;
  sut.onPost("n1", 1, A, 1);
  auto v = sut.onPost("n1", 1, A, 5);
  EXPECT_TRUE(v.deliver);
  EXPECT_EQ(v.missed, 3u);
  EXPECT_EQ(sut.onPost("n1", 1, A, 6).missed, 0u);
}

TEST(SequenceTrackerTest, DuplicateOrOlderPostIsNotDelivered) {
  SequenceTracker sut;
  sut.onPost("n1", 1, A, 3);
  EXPECT_FALSE(sut.onPost("n1", 1, A, 3).deliver);
  EXPECT_FALSE(sut.onPost("n1", 1, A, 2).deliver);
}

TEST(SequenceTrackerTest, FirstHeartbeatSetsBaselines) {
  SequenceTracker sut;
  EXPECT_EQ(sut.onMark("n1", 1, A, 10), 0u);
  sut.heartbeatDone("n1", 1);
  EXPECT_EQ(sut.onPost("n1", 1, A, 11).missed, 0u);
}

TEST(SequenceTrackerTest, MarkAheadOfLastPostIsATailGap) {
  SequenceTracker sut;
  sut.onMark("n1", 1, A, 2);
  sut.heartbeatDone("n1", 1);
  sut.onPost("n1", 1, A, 3);
  EXPECT_EQ(sut.onMark("n1", 1, A, 7), 4u);
  EXPECT_EQ(sut.onMark("n1", 1, A, 7), 0u);  // counted once
  EXPECT_FALSE(sut.onPost("n1", 1, A, 6).deliver);
}

TEST(SequenceTrackerTest, ChannelNewAfterAnnouncementStartsAtOne) {
  SequenceTracker sut;
  sut.onMark("n1", 1, A, 2);
  sut.heartbeatDone("n1", 1);
  EXPECT_EQ(sut.onPost("n1", 1, B, 3).missed, 2u);
  EXPECT_EQ(sut.onMark("n1", 1, ChannelName("c"), 4), 4u);
}

TEST(SequenceTrackerTest, AnotherEpochStartsAgainWithoutClaimingAGap) {
  SequenceTracker sut;
  sut.onPost("n1", 5, A, 9);
  auto v = sut.onPost("n1", 6, A, 1);
  EXPECT_TRUE(v.deliver);
  EXPECT_EQ(v.missed, 0u);
  // A restarted node whose clock went back (a smaller epoch) is not stale.
  v = sut.onPost("n1", 2, A, 1);
  EXPECT_TRUE(v.deliver);
  EXPECT_EQ(v.missed, 0u);
  EXPECT_EQ(sut.onPost("n1", 2, A, 2).missed, 0u);
}

TEST(SequenceTrackerTest, SendersAreCountedApart) {
  SequenceTracker sut;
  sut.onPost("n1", 1, A, 1);
  sut.onPost("n2", 1, A, 1);
  EXPECT_EQ(sut.onPost("n1", 1, A, 2).missed, 0u);
  EXPECT_EQ(sut.onPost("n2", 1, A, 3).missed, 1u);
  EXPECT_EQ(sut.nodeCount(), 2u);
}

}  // namespace
}  // namespace swipc::federation
