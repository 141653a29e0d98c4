// The progress bar of `page_client fetch` (DESIGN §15): one line on stderr, redrawn in place,
// only when stderr is a terminal.
//
//    42% [===========>                ] 12.3 MiB / 29.2 MiB  4.1 MiB/s  ETA 0:04
//   12.3 MiB  4.1 MiB/s                          (no downloadTotal: bytes and rate only)
//
// The formatting is pure (formatProgress and its parts) so tests check it without a terminal;
// RateMeter takes the times it is given; ProgressBar draws at most every REDRAW_INTERVAL.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <optional>
#include <string>
#include <utility>

namespace page_client {

/// "999 B", "1.0 KiB", "12.3 MiB", "1.5 GiB" (binary units, one decimal past bytes).
std::string humanBytes(uint64_t bytes);
/// "0:04", "12:30", "1:02:03"; "--:--" for nullopt (unknown).
std::string humanDuration(std::optional<std::chrono::seconds> d);

/// What one line shows.
struct ProgressView {
  uint64_t done = 0;
  uint64_t total = 0;                // 0: unknown (no percent, no bar, no ETA)
  std::optional<double> bytesPerSecond;  // nullopt: not measured yet
};

/// Seconds left at the view's rate; nullopt when the total or the rate is unknown or the rate 0.
std::optional<std::chrono::seconds> etaOf(const ProgressView& v);

/// The line for `v`, `barWidth` cells of bar between brackets (no \r, no newline).
std::string formatProgress(const ProgressView& v, int barWidth = 30);

/// Bytes per second over a sliding window of samples.
class RateMeter {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RateMeter(std::chrono::milliseconds window = std::chrono::seconds(3)) : window_(window) {}

  /// `bytes` done at `now` (times never go back).
  void add(Clock::time_point now, uint64_t bytes);
  /// The rate over the window; nullopt with fewer than two samples or none apart in time.
  std::optional<double> rate() const;

 private:
  std::chrono::milliseconds window_;
  std::deque<std::pair<Clock::time_point, uint64_t>> samples_;
};

/// The bar on `out` (stderr). Disabled: draws nothing (stderr is not a terminal).
class ProgressBar {
 public:
  using Clock = RateMeter::Clock;
  static constexpr std::chrono::milliseconds REDRAW_INTERVAL{100};

  ProgressBar(std::FILE* out, bool enabled) : out_(out), enabled_(enabled) {}
  /// True when `fd` is a terminal (the bar is for people, never for pipes and files).
  static bool wanted(int fd);

  /// New figures at `now`: redraws when REDRAW_INTERVAL has passed since the last draw.
  void update(uint64_t done, uint64_t total, Clock::time_point now);
  /// The last figures again at `now` (the rate falls while nothing arrives): for a periodic tick.
  void tick(Clock::time_point now) { update(done_, total_, now); }
  /// The last draw, with these figures, then a newline. Idempotent; nothing if never drawn and
  /// disabled.
  void finish(uint64_t done, uint64_t total, Clock::time_point now);

 private:
  void draw(Clock::time_point now);

  std::FILE* out_;
  bool enabled_;
  bool finished_ = false;
  uint64_t done_ = 0, total_ = 0;
  RateMeter rate_;
  std::optional<Clock::time_point> lastDraw_;
  size_t lastWidth_ = 0;  // characters of the previous line (padded over when shorter)
};

}  // namespace page_client
