// Mapping: a memfd mapped through Boost.Interprocess mapped_region.
#pragma once

#include <boost/interprocess/mapped_region.hpp>
#include <cstddef>
#include <cstdint>

#include "swipc/error.h"

namespace swipc::shm {

enum class Access { READ_ONLY, READ_WRITE };

/// Adapts an fd to Boost's MemoryMappable concept (a plain fd, not XSI shm).
class FdMappable {
 public:
  explicit FdMappable(int fd) : fd_(fd) {}
  boost::interprocess::mapping_handle_t get_mapping_handle() const {  // NOLINT(Boost's name)
    boost::interprocess::mapping_handle_t h;
    h.handle = fd_;
    h.is_xsi = false;
    return h;
  }

 private:
  int fd_;
};

/// An owned view of a whole memfd. Move-only; unmaps on destruction.
class Mapping {
 public:
  Mapping() = default;
  /// Maps `bytes` bytes from offset 0. The fd may be closed afterwards.
  static Result<Mapping> map(int fd, size_t bytes, Access access);

  uint8_t* data() const { return static_cast<uint8_t*>(region_.get_address()); }
  size_t size() const { return region_.get_size(); }
  bool valid() const { return region_.get_address() != nullptr; }

 private:
  boost::interprocess::mapped_region region_;
};

}  // namespace swipc::shm
