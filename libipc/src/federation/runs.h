// When a channel's run may end (remote_post.h: runs). Ending a run takes its channel out of this
// node's announcements, and the other nodes forget it when they see that. What they have not
// learnt by then they never learn: a post of the run's tail that one of them missed would go
// unreported. So a run ends only when every other node that may still come back has, while it
// was heard without a break, had the run's last mark in MARK_REPEATS of this node's
// announcements (each announcement names every run in use, so repeats cost nothing extra):
//   - a node silent now (not heard for SILENT_AFTER) holds every run back: it may have missed
//     the tail and the marks, and needs the mark when it comes back;
//   - a node heard again after a silence (or new, or restarted), or one whose announcement says
//     its NATS client lost messages or its connection since the one before (receiveBreaks),
//     counts its repeats from then;
//   - a node that left, or has not been heard for PEER_GONE, holds nothing back (it is gone for
//     good; a node cut off that long may not learn of a tail it missed).
// Only the heartbeat's own announcements count (a second apart, so a cut shorter than
// SILENT_AFTER misses a few, never all), and only when the link took them (a full queue
// refuses them).
//
// @concurrent: pure functions.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "swipc/types.h"

namespace swipc::federation::runs {

/// How many announcements carry a run's last mark, while every other node hears them, before it ends.
inline constexpr uint64_t MARK_REPEATS = 5;
/// A node not heard for this long is gone for good: it holds no run back (one that left that
/// long ago is forgotten).
inline constexpr std::chrono::milliseconds PEER_GONE{3600000};

/// What this node knows of another node's hearing.
struct Hearing {
  bool left = false;          // it announced that it stops
  Clock::duration quiet{};    // since its last announcement
  uint64_t heardSince = 0;    // this node's announcements count when it was last heard after a silence
};

/// The count of announcements after which the runs whose last post came before it may end, or
/// nullopt-like UINT64_MAX while some other node is silent (and not gone). `silentAfter`: how
/// long a node may be unheard before it counts as silent.
inline uint64_t heardByAllSince(const std::vector<Hearing>& peers, Clock::duration silentAfter) {
  uint64_t since = 0;
  for (const auto& p : peers) {
    if (p.left || p.quiet >= PEER_GONE) continue;
    if (p.quiet > silentAfter) return UINT64_MAX;
    since = std::max(since, p.heardSince);
  }
  return since;
}

/// Whether a run may end: not posted on for `idleTicks` ticks (`idleFor` so far), its last post
/// made when `announcedAtPost` announcements had gone out, `announced` now, and every other node
/// heard without a break since `heardSince` (heardByAllSince()).
inline bool mayEnd(uint64_t idleFor, uint64_t idleTicks, uint64_t announcedAtPost, uint64_t announced,
                   uint64_t heardSince) {
  if (idleFor < idleTicks || heardSince == UINT64_MAX) return false;
  const uint64_t from = std::max(announcedAtPost, heardSince);
  return announced >= from && announced - from >= MARK_REPEATS;
}

}  // namespace swipc::federation::runs
