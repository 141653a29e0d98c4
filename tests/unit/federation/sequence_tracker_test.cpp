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

// Runs (remote_post.h): a heartbeat names every run in use on its node; what it does not name
// ended there and is forgotten here, so what is kept stays as small as what the senders use.
TEST(SequenceTrackerTest, ChannelsAHeartbeatNoLongerNamesAreForgotten) {
  SequenceTracker sut;
  sut.onMark("n1", 1, A, 5, 1);
  sut.onMark("n1", 1, B, 2, 2);
  EXPECT_TRUE(sut.heartbeatDone("n1", 1).empty());
  EXPECT_EQ(sut.channelCount("n1"), 2u);
  sut.onMark("n1", 1, A, 5, 1);
  EXPECT_EQ(sut.heartbeatDone("n1", 1), std::vector<ChannelName>{B});
  EXPECT_EQ(sut.channelCount("n1"), 1u);
  // A channel first heard of in a post is named by the next heartbeat (it was built after).
  sut.onPost("n1", 1, B, 1, 3);
  sut.onMark("n1", 1, A, 5, 1);
  sut.onMark("n1", 1, B, 1, 3);
  EXPECT_TRUE(sut.heartbeatDone("n1", 1).empty());
  EXPECT_EQ(sut.channelCount("n1"), 2u);
}

TEST(SequenceTrackerTest, ANewRunAfterTheOldOneEndedStartsAtOneWithNothingMissed) {
  SequenceTracker sut;
  sut.onMark("n1", 1, A, 5, 1);
  sut.heartbeatDone("n1", 1);
  EXPECT_EQ(sut.onPost("n1", 1, A, 6, 1).missed, 0u);
  EXPECT_EQ(sut.heartbeatDone("n1", 1), std::vector<ChannelName>{A});  // its run ended there
  auto v = sut.onPost("n1", 1, A, 1, 2);  // seq 1 again, of the new run: not "seen already"
  EXPECT_TRUE(v.deliver);
  EXPECT_EQ(v.missed, 0u);
  EXPECT_EQ(sut.onPost("n1", 1, A, 2, 2).missed, 0u);
  EXPECT_EQ(sut.onMark("n1", 1, A, 2, 2), 0u);
}

TEST(SequenceTrackerTest, ANewRunHeardOfBeforeTheHeartbeatThatEndedTheOldOneCountsFromOne) {
  // The heartbeat without the old run never came (NATS dropped it): the new run's first post
  // still is not taken for an old one, and what it skipped is missed.
  SequenceTracker sut;
  sut.onMark("n1", 1, A, 5, 1);
  sut.heartbeatDone("n1", 1);
  auto v = sut.onPost("n1", 1, A, 3, 2);
  EXPECT_TRUE(v.deliver);
  EXPECT_EQ(v.missed, 2u);
  // A mark of a run never seen here: all of it was missed.
  EXPECT_EQ(sut.onMark("n1", 1, B, 4, 7), 4u);
  EXPECT_EQ(sut.onMark("n1", 1, B, 4, 7), 0u);
}

TEST(SequenceTrackerTest, SendersAreCountedApart) {
  SequenceTracker sut;
  sut.onPost("n1", 1, A, 1);
  sut.onPost("n2", 1, A, 1);
  EXPECT_EQ(sut.onPost("n1", 1, A, 2).missed, 0u);
  EXPECT_EQ(sut.onPost("n2", 1, A, 3).missed, 1u);
  EXPECT_EQ(sut.nodeCount(), 2u);
}

// Senders are other hosts, any NATS client among them: what is kept of their channels has a
// budget. A channel new past it is refused (its posts are not delivered: the caller counts and
// reports them); what heartbeats, restarts and forgetting drop is budget again.
TEST(SequenceTrackerTest, ChannelsPastTheBudgetAreRefusedAndForgettingGivesBudgetBack) {
  const ChannelName a("a"), b("b"), c("c");
  SequenceTracker t(2 * (1 + SequenceTracker::CHANNEL_OVERHEAD));  // two one-letter channels
  EXPECT_TRUE(t.onPost("n1", 7, a, 1).deliver);
  EXPECT_TRUE(t.onPost("n2", 9, b, 1).deliver);
  EXPECT_EQ(t.usedBytes(), 2 * (1 + SequenceTracker::CHANNEL_OVERHEAD));
  auto refused = t.onPost("n1", 7, c, 1);
  EXPECT_TRUE(refused.refused);
  EXPECT_FALSE(refused.deliver);
  EXPECT_EQ(t.onMark("n1", 7, c, 5), 0u);  // not kept either
  EXPECT_EQ(t.channelCount("n1"), 1u);
  EXPECT_TRUE(t.onPost("n1", 7, a, 2).deliver);  // a channel kept goes on
  t.forgetNode("n2");
  EXPECT_TRUE(t.onPost("n1", 7, c, 1).deliver);  // b's room
  // n1 restarts (another epoch): its two channels are dropped, their room is free again.
  EXPECT_TRUE(t.onPost("n1", 8, a, 1).deliver);
  EXPECT_EQ(t.usedBytes(), 1 + SequenceTracker::CHANNEL_OVERHEAD);
  // A heartbeat that does not name a channel forgets it.
  EXPECT_EQ(t.onMark("n1", 8, a, 1), 0u);
  t.heartbeatDone("n1", 8);
  EXPECT_TRUE(t.onPost("n1", 8, b, 1).deliver);
  EXPECT_EQ(t.onMark("n1", 8, b, 1), 0u);
  t.heartbeatDone("n1", 8);  // a not named: gone
  EXPECT_EQ(t.channelCount("n1"), 1u);
  EXPECT_EQ(t.usedBytes(), 1 + SequenceTracker::CHANNEL_OVERHEAD);
}

}  // namespace
}  // namespace swipc::federation
