// page_client: the fetch progress bar's formatting and rate (pure functions; no terminal).
#include "progress_bar.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace page_client {
namespace {

using namespace std::chrono_literals;
using Clock = RateMeter::Clock;

TEST(HumanBytesTest, BinaryUnitsWithOneDecimal) {
  EXPECT_EQ(humanBytes(0), "0 B");
  EXPECT_EQ(humanBytes(1023), "1023 B");
  EXPECT_EQ(humanBytes(1024), "1.0 KiB");
  EXPECT_EQ(humanBytes(1536), "1.5 KiB");
  EXPECT_EQ(humanBytes(12'897'485), "12.3 MiB");
  EXPECT_EQ(humanBytes(1ull << 30), "1.0 GiB");
  EXPECT_EQ(humanBytes((1ull << 20) - 1), "1.0 MiB");  // never "1024.0 KiB"
}

TEST(HumanDurationTest, MinutesSecondsThenHours) {
  EXPECT_EQ(humanDuration(4s), "0:04");
  EXPECT_EQ(humanDuration(750s), "12:30");
  EXPECT_EQ(humanDuration(3723s), "1:02:03");
  EXPECT_EQ(humanDuration(std::nullopt), "--:--");
}

TEST(FormatProgressTest, WithATotalShowsPercentBarBytesRateAndEta) {
  ProgressView v{.done = 50 << 20, .total = 100 << 20, .bytesPerSecond = double(10 << 20)};
  EXPECT_EQ(formatProgress(v, 10), " 50% [====>     ] 50.0 MiB / 100.0 MiB  10.0 MiB/s  ETA 0:05");
}

TEST(FormatProgressTest, WithoutATotalShowsBytesAndRateOnly) {
  ProgressView v{.done = 2048, .total = 0, .bytesPerSecond = 1024.0};
  EXPECT_EQ(formatProgress(v), "2.0 KiB  1.0 KiB/s");
}

TEST(FormatProgressTest, UnknownRateHasNoEta) {
  ProgressView v{.done = 0, .total = 1000, .bytesPerSecond = std::nullopt};
  EXPECT_EQ(formatProgress(v, 4), "  0% [    ] 0 B / 1000 B  --- B/s  ETA --:--");
}

TEST(FormatProgressTest, CompleteIsAFullBar) {
  ProgressView v{.done = 1000, .total = 1000, .bytesPerSecond = 10.0};
  EXPECT_EQ(formatProgress(v, 4), "100% [====] 1000 B / 1000 B  10 B/s  ETA 0:00");
}

TEST(FormatProgressTest, MoreThanTheTotalStaysAtAHundredPercent) {
  ProgressView v{.done = 1500, .total = 1000, .bytesPerSecond = 10.0};
  EXPECT_EQ(formatProgress(v, 4).substr(0, 11), "100% [====]");
}

TEST(EtaTest, RoundsUpTheSecondsLeft) {
  EXPECT_EQ(etaOf({.done = 0, .total = 10, .bytesPerSecond = 3.0}), 4s);
  EXPECT_EQ(etaOf({.done = 0, .total = 10, .bytesPerSecond = 0.0}), std::nullopt);
  EXPECT_EQ(etaOf({.done = 0, .total = 0, .bytesPerSecond = 3.0}), std::nullopt);
}

TEST(RateMeterTest, RateNeedsTwoSamplesApart) {
  RateMeter sut;
  const auto t0 = Clock::time_point{} + 100s;
  EXPECT_EQ(sut.rate(), std::nullopt);
  sut.add(t0, 0);
  EXPECT_EQ(sut.rate(), std::nullopt);
  sut.add(t0 + 2s, 2000);
  ASSERT_TRUE(sut.rate());
  EXPECT_DOUBLE_EQ(*sut.rate(), 1000.0);
}

TEST(RateMeterTest, OldSamplesLeaveTheWindow) {
  RateMeter sut(3s);
  const auto t0 = Clock::time_point{} + 100s;
  sut.add(t0, 0);
  sut.add(t0 + 1s, 10'000);  // a fast start
  sut.add(t0 + 5s, 10'000);
  sut.add(t0 + 8s, 13'000);  // 1000 B/s over the last 3 s
  ASSERT_TRUE(sut.rate());
  EXPECT_DOUBLE_EQ(*sut.rate(), 1000.0);
}

TEST(RateMeterTest, AStallBringsTheRateDown) {
  RateMeter sut(2s);
  const auto t0 = Clock::time_point{} + 100s;
  sut.add(t0, 0);
  sut.add(t0 + 1s, 1000);
  sut.add(t0 + 4s, 1000);
  ASSERT_TRUE(sut.rate());
  EXPECT_DOUBLE_EQ(*sut.rate(), 0.0);
}

/// The bar's output, through a memory stream.
class ProgressBarTest : public ::testing::Test {
 protected:
  void SetUp() override { out = ::open_memstream(&buf, &len); }
  void TearDown() override {
    if (out) std::fclose(out);
    std::free(buf);
  }
  std::string written() {
    std::fflush(out);
    return std::string(buf, len);
  }
  std::FILE* out = nullptr;
  char* buf = nullptr;
  size_t len = 0;
};

TEST_F(ProgressBarTest, RedrawsInPlaceAtMostEveryInterval) {
  ProgressBar sut(out, true);
  const auto t0 = Clock::time_point{} + 100s;
  sut.update(0, 0, t0);
  sut.update(10, 0, t0 + 10ms);  // too soon: not drawn
  sut.update(20, 0, t0 + ProgressBar::REDRAW_INTERVAL);
  std::string w = written();
  EXPECT_EQ(std::count(w.begin(), w.end(), '\r'), 2);
  EXPECT_EQ(w.find('\n'), std::string::npos);
}

TEST_F(ProgressBarTest, FinishDrawsOnceMoreAndEndsTheLine) {
  ProgressBar sut(out, true);
  const auto t0 = Clock::time_point{} + 100s;
  sut.update(0, 100, t0);
  sut.finish(100, 100, t0 + 1ms);
  sut.finish(100, 100, t0 + 2ms);  // idempotent
  std::string w = written();
  EXPECT_EQ(std::count(w.begin(), w.end(), '\r'), 2);
  ASSERT_FALSE(w.empty());
  EXPECT_EQ(w.back(), '\n');
  EXPECT_NE(w.find("100%"), std::string::npos);
}

TEST_F(ProgressBarTest, AShorterLineCoversTheLongerOne) {
  ProgressBar sut(out, true);
  const auto t0 = Clock::time_point{} + 100s;
  sut.update(1ull << 30, 0, t0);  // "1.0 GiB  --- B/s"
  sut.update(0, 0, t0 + 1s);      // shorter figures (cannot happen for real; the padding can)
  std::string w = written();
  auto second = w.rfind('\r');
  auto first = w.find('\r');
  EXPECT_EQ(w.size() - second, second - first);
}

TEST_F(ProgressBarTest, DisabledDrawsNothing) {
  ProgressBar sut(out, false);
  sut.update(1, 2, Clock::now());
  sut.finish(2, 2, Clock::now());
  EXPECT_EQ(written(), "");
}

}  // namespace
}  // namespace page_client
