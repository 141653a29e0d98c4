#include "shm/mapping.h"

#include <boost/interprocess/exceptions.hpp>

namespace swipc::shm {

Result<Mapping> Mapping::map(int fd, size_t bytes, Access access) {
  Mapping m;
  try {
    auto mode = access == Access::READ_WRITE ? boost::interprocess::read_write : boost::interprocess::read_only;
    boost::interprocess::mapped_region region(FdMappable(fd), mode, 0, bytes);
    m.region_.swap(region);
  } catch (const boost::interprocess::interprocess_exception& e) {
    return makeError(Errc::SYSTEM, std::string("mapping segment: ") + e.what());
  }
  return m;
}

}  // namespace swipc::shm
