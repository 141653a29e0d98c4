// memfd segments: create, seal, inspect. No named /dev/shm objects anywhere in swipc.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/unique_fd.h"
#include "swipc/error.h"

namespace swipc::shm {

/// Seals that make a segment's size fixed (receivers cannot SIGBUS the creator).
inline constexpr unsigned SEALS_FIXED_SIZE = 0x0002 /*F_SEAL_SHRINK*/ | 0x0004 /*F_SEAL_GROW*/;

/// Creates an anonymous memfd of `bytes` bytes that allows sealing (MFD_CLOEXEC).
Result<UniqueFd> createMemfd(const char* debugName, size_t bytes);
/// Adds seals (F_ADD_SEALS).
Result<void> addSeals(int fd, unsigned seals);
/// Current seals (F_GET_SEALS); SystemError for an fd that is not a memfd.
Result<unsigned> getSeals(int fd);
/// The file's size from fstat.
Result<size_t> fileSize(int fd);

}  // namespace swipc::shm
