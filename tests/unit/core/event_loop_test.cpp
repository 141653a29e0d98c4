// core: EventLoop timers. They fire in deadline order whatever the order they were added in; a
// cancelled one never runs; an old id never cancels the timer that took over its slot; tasks may
// add and cancel timers; heavy add/cancel traffic leaves the rest working.
#include "core/event_loop.h"

#include <gtest/gtest.h>

#include <chrono>
#include <vector>

namespace swipc::core {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<EventLoop> makeLoop() {
  auto loop = EventLoop::create();
  EXPECT_TRUE(loop.ok());
  return std::move(*loop);
}

/// Runs the loop until `done()` or the guard deadline passes; false on the guard.
template <typename Done>
bool runUntil(EventLoop& loop, Done done, std::chrono::milliseconds guard = 5s) {
  const Deadline until = Clock::now() + guard;
  while (!done()) {
    if (Clock::now() >= until) return false;
    loop.runOnce(until);
  }
  return true;
}

TEST(EventLoopTimerTest, FireInDeadlineOrderNotInTheOrderAdded) {
  auto loop = makeLoop();
  std::vector<int> fired;
  const Deadline base = Clock::now();
  loop->addTimer(base + 30ms, [&] { fired.push_back(3); });
  loop->addTimer(base + 10ms, [&] { fired.push_back(1); });
  loop->addTimer(base + 20ms, [&] { fired.push_back(2); });
  loop->addTimer(base, [&] { fired.push_back(0); });
  ASSERT_TRUE(runUntil(*loop, [&] { return fired.size() == 4; }));
  EXPECT_EQ(fired, (std::vector<int>{0, 1, 2, 3}));
}

TEST(EventLoopTimerTest, ACancelledTimerNeverRunsAndCancelIsIdempotent) {
  auto loop = makeLoop();
  bool cancelledRan = false, laterRan = false;
  const Deadline base = Clock::now();
  auto early = loop->addTimer(base + 5ms, [&] { cancelledRan = true; });
  loop->addTimer(base + 40ms, [&] { laterRan = true; });
  loop->cancelTimer(early);
  loop->cancelTimer(early);  // twice: harmless
  loop->cancelTimer(0);      // "no timer": harmless
  loop->cancelTimer(~EventLoop::TimerId{0});
  ASSERT_TRUE(runUntil(*loop, [&] { return laterRan; }));
  EXPECT_FALSE(cancelledRan);
  EXPECT_GE(Clock::now(), base + 40ms);  // not early
}

TEST(EventLoopTimerTest, AnOldIdDoesNotCancelTheTimerThatReusedItsSlot) {
  auto loop = makeLoop();
  bool ran = false;
  auto first = loop->addTimer(Clock::now() + 1h, [] {});
  loop->cancelTimer(first);
  auto second = loop->addTimer(Clock::now(), [&] { ran = true; });  // takes the freed slot
  EXPECT_NE(first, second);
  loop->cancelTimer(first);  // stale: must not touch `second`
  ASSERT_TRUE(runUntil(*loop, [&] { return ran; }));
  // And the id of a timer that has run cancels nothing either.
  bool third = false;
  loop->addTimer(Clock::now(), [&] { third = true; });
  loop->cancelTimer(second);
  ASSERT_TRUE(runUntil(*loop, [&] { return third; }));
}

TEST(EventLoopTimerTest, ATaskMayAddAndCancelTimers) {
  auto loop = makeLoop();
  bool victimRan = false, childRan = false;
  EventLoop::TimerId victim = loop->addTimer(Clock::now() + 30ms, [&] { victimRan = true; });
  loop->addTimer(Clock::now(), [&] {
    loop->cancelTimer(victim);
    loop->addTimer(Clock::now() + 1ms, [&] { childRan = true; });
  });
  ASSERT_TRUE(runUntil(*loop, [&] { return childRan; }));
  // Past the victim's deadline: it stays cancelled.
  bool after = false;
  loop->addTimer(Clock::now() + 50ms, [&] { after = true; });
  ASSERT_TRUE(runUntil(*loop, [&] { return after; }));
  EXPECT_FALSE(victimRan);
}

TEST(EventLoopTimerTest, HeavyAddAndCancelLeavesTheLiveTimersIntact) {
  // What messageSW with a deadline does: one timer per call, cancelled when the reply comes.
  auto loop = makeLoop();
  std::vector<int> fired;
  const Deadline base = Clock::now();
  loop->addTimer(base + 20ms, [&] { fired.push_back(2); });
  for (int i = 0; i < 200000; ++i) {
    auto id = loop->addTimer(base + 1h + std::chrono::microseconds(i), [&] { fired.push_back(-1); });
    if (i == 100000) loop->addTimer(base + 10ms, [&] { fired.push_back(1); });
    loop->cancelTimer(id);
  }
  loop->addTimer(base + 30ms, [&] { fired.push_back(3); });
  ASSERT_TRUE(runUntil(*loop, [&] { return fired.size() >= 3; }));
  EXPECT_EQ(fired, (std::vector<int>{1, 2, 3}));
}

}  // namespace
}  // namespace swipc::core
