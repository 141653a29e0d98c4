#include "progress_bar.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace page_client {

std::string humanBytes(uint64_t bytes) {
  static constexpr const char* UNITS[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes) / 1024.0;
  size_t unit = 0;
  // Switch unit before the one-decimal figure would print as 1024.0.
  while (v >= 1023.95 && unit + 1 < std::size(UNITS)) {
    v /= 1024.0;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, UNITS[unit]);
  return buf;
}

std::string humanDuration(std::optional<std::chrono::seconds> d) {
  if (!d || d->count() < 0) return "--:--";
  const long long s = d->count();
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  return buf;
}

std::optional<std::chrono::seconds> etaOf(const ProgressView& v) {
  if (v.total == 0 || !v.bytesPerSecond || *v.bytesPerSecond <= 0) return std::nullopt;
  if (v.done >= v.total) return std::chrono::seconds(0);
  const double left = static_cast<double>(v.total - v.done) / *v.bytesPerSecond;
  if (left > 1e9) return std::nullopt;  // effectively stalled
  return std::chrono::seconds(static_cast<int64_t>(std::ceil(left)));
}

std::string formatProgress(const ProgressView& v, int barWidth) {
  std::string rate = v.bytesPerSecond ? humanBytes(static_cast<uint64_t>(std::max(0.0, *v.bytesPerSecond))) + "/s"
                                      : std::string("--- B/s");
  if (v.total == 0) return humanBytes(v.done) + "  " + rate;

  const double fraction = std::min(1.0, static_cast<double>(v.done) / static_cast<double>(v.total));
  const int percent = static_cast<int>(std::floor(fraction * 100.0));
  const int width = std::max(1, barWidth);
  const int filled = static_cast<int>(std::floor(fraction * width));
  std::string bar(static_cast<size_t>(width), ' ');
  for (int i = 0; i < filled; ++i) bar[static_cast<size_t>(i)] = '=';
  if (filled < width && filled > 0) bar[static_cast<size_t>(filled - 1)] = '>';  // the head of a bar under way
  if (filled == 0 && v.done > 0) bar[0] = '>';

  char pct[8];
  std::snprintf(pct, sizeof pct, "%3d%%", percent);
  return std::string(pct) + " [" + bar + "] " + humanBytes(v.done) + " / " + humanBytes(v.total) + "  " + rate +
         "  ETA " + humanDuration(etaOf(v));
}

void RateMeter::add(Clock::time_point now, uint64_t bytes) {
  samples_.emplace_back(now, bytes);
  // Keep one sample at or before the window's start, so the window is always spanned.
  while (samples_.size() > 2 && now - samples_[1].first >= window_) samples_.pop_front();
}

std::optional<double> RateMeter::rate() const {
  if (samples_.size() < 2) return std::nullopt;
  const auto& [t0, b0] = samples_.front();
  const auto& [t1, b1] = samples_.back();
  const double seconds = std::chrono::duration<double>(t1 - t0).count();
  if (seconds <= 0) return std::nullopt;
  return static_cast<double>(b1 >= b0 ? b1 - b0 : 0) / seconds;
}

bool ProgressBar::wanted(int fd) { return ::isatty(fd) == 1; }

void ProgressBar::update(uint64_t done, uint64_t total, Clock::time_point now) {
  if (!enabled_ || finished_) return;
  done_ = done;
  total_ = total;
  rate_.add(now, done);
  if (lastDraw_ && now - *lastDraw_ < REDRAW_INTERVAL) return;
  draw(now);
}

void ProgressBar::finish(uint64_t done, uint64_t total, Clock::time_point now) {
  if (!enabled_ || finished_) return;
  done_ = done;
  total_ = total;
  rate_.add(now, done);
  draw(now);
  std::fputc('\n', out_);
  std::fflush(out_);
  finished_ = true;
}

void ProgressBar::draw(Clock::time_point now) {
  lastDraw_ = now;
  std::string line = formatProgress(ProgressView{done_, total_, rate_.rate()});
  const size_t width = line.size();
  if (width < lastWidth_) line.append(lastWidth_ - width, ' ');  // cover the longer previous line
  lastWidth_ = width;
  line.insert(line.begin(), '\r');
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace page_client
