// FdBudget: how the daemon spends its file descriptors on clients (RLIMIT_NOFILE).
//
// What one attached client costs the daemon, in fds:
//
//   control socket ........................ 1   always (SOCK_SEQPACKET: control, fds, hang-up)
//   up doorbell (eventfd, client rings) ... 1   only with wake fds (see below)
//   wake pipe write end (daemon rings) .... 1   only with wake fds
//   segment memfd ......................... 0   closed once mapped and passed with the Welcome
//   wake pipe read end .................... 0   closed once passed with the Welcome
//   pidfd ................................. 0   clients have none (only pages the daemon spawns
//                                               for openWindow, while they start)
//   out-of-line memfds .................... 0   when idle; a message larger than a ring record
//                                               holds one until it is read (at most
//                                               OOL_RECEIVER_LIMIT per client)
//
// So a client costs 3 fds with its own wake fds (eventfd and pipe: the cheapest wake-ups) and 1
// without them, when wakes travel as 8-byte datagrams on its control socket (a sendmsg/recvmsg
// instead of a pipe write/read: about 0.5 µs more per wake). Nothing writable is ever shared
// between two clients: each wake fd and each socket belongs to one client, so a client can only
// wake (or fail to wake) itself.
//
// The policy, checked at each Hello:
// * a client gets its own wake fds while the fds in use stay at or below WAKE_FDS_SHARE of the
//   limit; past that, socket wakes (1 fd): 10,000 clients fit under a 20,000-fd limit;
// * a Hello that would leave fewer than reserve() fds free is refused (QuotaExceededError,
//   "file descriptor limit"): the reserve keeps room for what the daemon opens besides clients
//   (state.db and its WAL and shm, the log, inspector connections and their memfds, Background
//   Fetch bodies and sockets, out-of-line memfds in flight, pending connections, channel rings).
//   reserve() = RESERVE_BASE + limit / RESERVE_DIVISOR: 689 of a 20,000-fd limit, 96 of 1,024.
//
// Counting the fds in use reads /proc/self/fd (about 1 µs per 10 open fds): it is done at most
// once per RECOUNT_EVERY admissions while far from both thresholds, and at every Hello near one;
// in between the figure is the last count plus what the admissions since then added (detaches
// only lower it).
//
// @concurrent: single-threaded; the daemon's loop thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

namespace swipc::daemon {

class FdBudget {
 public:
  static constexpr uint64_t RESERVE_BASE = 64;
  static constexpr uint64_t RESERVE_DIVISOR = 32;
  static constexpr uint64_t WAKE_FDS_SHARE_DIVISOR = 4;  // wake fds while in use <= limit / 4
  static constexpr unsigned FDS_WITH_WAKE_FDS = 3;
  static constexpr unsigned FDS_WITH_SOCKET_WAKES = 1;
  static constexpr uint64_t RECOUNT_EVERY = 64;
  /// Within this many fds of a threshold, decide() counts again (unless nothing changed).
  static constexpr uint64_t NEAR_MARGIN = 64;
  static constexpr std::chrono::milliseconds REFUSED_RECOUNT_AFTER{50};

  /// How the next client may attach.
  enum class Admit { WAKE_FDS, SOCKET_WAKES, REFUSE };

  /// Counts the fds open in this process now.
  using Counter = std::function<uint64_t()>;

  /// `limit`: the soft RLIMIT_NOFILE; `count`: countOpenFds() unless a test gives its own.
  explicit FdBudget(uint64_t limit, Counter count = nullptr);

  uint64_t limit() const { return limit_; }
  uint64_t reserve() const { return reserve_; }
  /// The fds in use as of the last decide() (a count, or an upper estimate).
  uint64_t inUse() const { return counted_ + addedSince_; }

  /// The decision for a client attaching now; counts again when the estimate is near a threshold.
  Admit decide();
  /// The client decide() let in attached with `fds` fds (adds them to the estimate).
  void admitted(unsigned fds);

  /// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in force after.
  struct Limits {
    uint64_t softBefore = 0;
    uint64_t soft = 0;
    uint64_t hard = 0;
  };
  static Limits raiseSoftLimit();
  /// The number of fds open in this process (/proc/self/fd, the directory's own fd excluded).
  static uint64_t countOpenFds();

 private:
  void recount();

  uint64_t limit_;
  uint64_t reserve_;
  Counter count_;
  uint64_t counted_ = 0;
  uint64_t addedSince_ = 0;
  uint64_t admitsSinceCount_ = 0;
  bool haveCount_ = false;
  std::chrono::steady_clock::time_point countedAt_{};
};

}  // namespace swipc::daemon
