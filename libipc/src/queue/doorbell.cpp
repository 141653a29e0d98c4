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

}  // namespace swipc::queue
