#include "queue/doorbell.h"

#include <fcntl.h>
#include <sys/eventfd.h>

#include <cstdint>

#include "common/sys_error.h"

namespace swipc::queue {

Result<Doorbell> Doorbell::create() {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return sysError("eventfd");
  return Doorbell(UniqueFd(fd));
}

void Doorbell::ring() const {
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(fd_.get(), &one, sizeof one);
}

void Doorbell::drain() const {
  uint64_t v;
  [[maybe_unused]] auto n = ::read(fd_.get(), &v, sizeof v);
}

Result<WakePipe> WakePipe::create() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return sysError("pipe2");
  WakePipe p;
  p.read_ = UniqueFd(fds[0]);
  p.write_ = UniqueFd(fds[1]);
  return p;
}

Result<WakePipe> WakePipe::adoptReadEnd(UniqueFd readEnd) {
  int flags = ::fcntl(readEnd.get(), F_GETFL);
  if (flags < 0 || (flags & O_ACCMODE) != O_RDONLY) return sysError("wake pipe read end");
  if (::fcntl(readEnd.get(), F_SETFL, flags | O_NONBLOCK) != 0) return sysError("fcntl(wake pipe)");
  WakePipe p;
  p.read_ = std::move(readEnd);
  return p;
}

void WakePipe::ring() const {
  const uint8_t wake = 'w';
  [[maybe_unused]] auto n = ::write(write_.get(), &wake, 1);
}

void WakePipe::drain() const {
  uint8_t buf[256];
  while (::read(read_.get(), buf, sizeof buf) == static_cast<ssize_t>(sizeof buf)) {
  }
}

}  // namespace swipc::queue
