// Turning errno into a named swipc Error with context.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>

#include "swipc/error.h"

namespace swipc {

/// SystemError "<what>: <strerror(errno)>"; call right after the failing syscall.
inline Error sysError(const std::string& what, int err = errno) {
  return makeError(Errc::SYSTEM, what + ": " + std::strerror(err));
}

}  // namespace swipc

/// Evaluates a syscall expression; on -1 returns sysError from the enclosing function.
#define SWIPC_SYSCALL(expr, what)                            \
  do {                                                       \
    if ((expr) == -1) return ::swipc::sysError((what));      \
  } while (0)
