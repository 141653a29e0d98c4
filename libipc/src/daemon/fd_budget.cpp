#include "daemon/fd_budget.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>

#include "common/unique_fd.h"

namespace swipc::daemon {

FdBudget::FdBudget(uint64_t limit, Counter count)
    : limit_(limit), reserve_(RESERVE_BASE + limit / RESERVE_DIVISOR), count_(std::move(count)) {
  if (!count_) count_ = &FdBudget::countOpenFds;
}

void FdBudget::recount() {
  counted_ = count_();
  addedSince_ = 0;
  admitsSinceCount_ = 0;
  haveCount_ = true;
  countedAt_ = std::chrono::steady_clock::now();
}

FdBudget::Admit FdBudget::decide() {
  const uint64_t wakeShare = limit_ / WAKE_FDS_SHARE_DIVISOR;
  const uint64_t ceiling = limit_ > reserve_ ? limit_ - reserve_ : 0;
  auto near = [&](uint64_t threshold) { return inUse() + NEAR_MARGIN >= threshold && inUse() <= threshold + NEAR_MARGIN; };
  if (!haveCount_ || admitsSinceCount_ >= RECOUNT_EVERY) {
    recount();
  } else if ((near(wakeShare) || inUse() + NEAR_MARGIN >= ceiling) &&
             (admitsSinceCount_ > 0 || std::chrono::steady_clock::now() - countedAt_ >= REFUSED_RECOUNT_AFTER)) {
    // Near a threshold: the real figure, not the estimate. A flood of refused Hellos (nothing
    // admitted since the last count) counts again at most every REFUSED_RECOUNT_AFTER.
    recount();
  }
  if (inUse() + FDS_WITH_SOCKET_WAKES > ceiling) return Admit::REFUSE;
  if (inUse() + FDS_WITH_WAKE_FDS <= wakeShare) return Admit::WAKE_FDS;
  return Admit::SOCKET_WAKES;
}

void FdBudget::admitted(unsigned fds) {
  addedSince_ += fds;
  ++admitsSinceCount_;
}

FdBudget::Limits FdBudget::raiseSoftLimit() {
  Limits out;
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return out;
  out.softBefore = rl.rlim_cur;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  out.soft = rl.rlim_cur;
  out.hard = rl.rlim_max;
  return out;
}

uint64_t FdBudget::countOpenFds() {
  UniqueFd dir(::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return 0;
  // getdents64 straight into a large buffer: no DIR* (which would allocate and hold its own fd).
  alignas(8) static thread_local std::array<char, 64 * 1024> buf;
  uint64_t n = 0;
  for (;;) {
    long got = ::syscall(SYS_getdents64, dir.get(), buf.data(), buf.size());
    if (got <= 0) break;
    for (long off = 0; off < got;) {
      const auto* d = reinterpret_cast<const struct dirent64*>(buf.data() + off);
      if (d->d_name[0] != '.') ++n;
      off += d->d_reclen;
    }
  }
  return n > 0 ? n - 1 : 0;  // less the directory's own fd
}

}  // namespace swipc::daemon
