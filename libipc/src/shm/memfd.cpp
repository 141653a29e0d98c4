#include "shm/memfd.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "common/sys_error.h"

namespace swipc::shm {

Result<UniqueFd> createMemfd(const char* debugName, size_t bytes) {
  UniqueFd fd(::memfd_create(debugName, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) return sysError("memfd_create");
  if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) == -1) return sysError("ftruncate memfd");
  return fd;
}

Result<void> addSeals(int fd, unsigned seals) {
  SWIPC_SYSCALL(::fcntl(fd, F_ADD_SEALS, seals), "F_ADD_SEALS");
  return {};
}

Result<unsigned> getSeals(int fd) {
  int s = ::fcntl(fd, F_GET_SEALS);
  if (s == -1) return sysError("F_GET_SEALS");
  return static_cast<unsigned>(s);
}

Result<size_t> fileSize(int fd) {
  struct stat st {};
  SWIPC_SYSCALL(::fstat(fd, &st), "fstat");
  return static_cast<size_t>(st.st_size);
}

}  // namespace swipc::shm
