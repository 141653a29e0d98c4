// page: HeldQueue. Messages wait for start() and then run in arrival order; anything delivered
// inside a blocking call runs after it, never inside it.
#include "page/held_queue.h"

#include <gtest/gtest.h>

#include <vector>

namespace swipc::page {
namespace {

TEST(HeldQueueTest, MessagesAreHeldUntilStartThenRunInArrivalOrder) {
  HeldQueue sut;
  std::vector<int> ran;
  sut.deliverOrHold([&] { ran.push_back(1); });
  sut.deliverOrHold([&] { ran.push_back(2); });
  EXPECT_TRUE(ran.empty());
  sut.start();
  EXPECT_EQ(ran, (std::vector<int>{1, 2}));
  sut.deliverOrHold([&] { ran.push_back(3); });  // started: at once
  EXPECT_EQ(ran, (std::vector<int>{1, 2, 3}));
}

TEST(HeldQueueTest, StartTwiceRunsNothingTwice) {
  HeldQueue sut;
  int ran = 0;
  sut.deliverOrHold([&] { ++ran; });
  sut.start();
  sut.start();
  EXPECT_EQ(ran, 1);
  EXPECT_TRUE(sut.started());
}

TEST(HeldQueueTest, DeliverRunsAtOnceOutsideABlockingCall) {
  HeldQueue sut;
  bool ran = false;
  sut.deliver([&] { ran = true; });  // not a message: not held by start()
  EXPECT_TRUE(ran);
}

TEST(HeldQueueTest, EventsInsideABlockingCallRunAfterItInOrder) {
  HeldQueue sut;
  std::vector<int> ran;
  sut.enterBlocking();
  sut.deliver([&] { ran.push_back(1); });
  sut.deliver([&] { ran.push_back(2); });
  sut.flushDeferred();  // still inside: nothing runs
  EXPECT_TRUE(ran.empty());
  EXPECT_TRUE(sut.hasDeferred());
  sut.leaveBlocking();
  sut.flushDeferred();
  EXPECT_EQ(ran, (std::vector<int>{1, 2}));
  EXPECT_FALSE(sut.hasDeferred());
}

TEST(HeldQueueTest, HeldMessagesStartedInsideABlockingCallWaitForItsEnd) {
  HeldQueue sut;
  int ran = 0;
  sut.deliverOrHold([&] { ++ran; });
  sut.enterBlocking();
  sut.start();
  EXPECT_EQ(ran, 0);
  sut.leaveBlocking();
  sut.flushDeferred();
  EXPECT_EQ(ran, 1);
}

TEST(HeldQueueTest, FlushStopsWhileAnEventIsInABlockingCall) {
  HeldQueue sut;
  std::vector<int> ran;
  sut.enterBlocking();
  sut.deliver([&] {
    ran.push_back(1);
    sut.enterBlocking();  // the event starts a blocking call and is still in it
    sut.flushDeferred();
  });
  sut.deliver([&] { ran.push_back(2); });
  sut.leaveBlocking();
  sut.flushDeferred();
  EXPECT_EQ(ran, (std::vector<int>{1}));  // the second waits for that call's end
  sut.leaveBlocking();
  sut.flushDeferred();
  EXPECT_EQ(ran, (std::vector<int>{1, 2}));
}

}  // namespace
}  // namespace swipc::page

namespace swipc::page {
namespace {

TEST(HeldQueueTest, HeldBytesAreBoundedAndTheFirstAlwaysFits) {
  HeldQueue sut;
  sut.setMaxHeldBytes(100);
  int ran = 0;
  EXPECT_TRUE(sut.deliverOrHold([&] { ++ran; }, 150));  // alone: held whatever its size
  EXPECT_FALSE(sut.deliverOrHold([&] { ++ran; }, 10));  // past the bound: not kept
  EXPECT_TRUE(sut.deliverOrHold([&] { ++ran; }, 0));    // costs nothing: kept (a drop's report)
  EXPECT_EQ(sut.heldBytes(), 150u);
  sut.start();
  EXPECT_EQ(ran, 2);
  EXPECT_EQ(sut.heldBytes(), 0u);
  EXPECT_TRUE(sut.deliverOrHold([&] { ++ran; }, 1000));  // started: no bound
  EXPECT_EQ(ran, 3);
}

}  // namespace
}  // namespace swipc::page
