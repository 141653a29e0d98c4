// Where a scope's daemon lives on disk: <runtime-dir>/<scope>/{daemon.sock,daemon.lock}.
#pragma once

#include <string>

#include "swipc/error.h"

namespace swipc::core {

struct ScopePaths {
  std::string dir;
  std::string socket;
  std::string lock;
};

/// Paths for `scope` under `runtimeDir` (empty = defaultRuntimeDir()). TypeError for a bad scope.
Result<ScopePaths> scopePaths(const std::string& runtimeDir, const std::string& scope);
/// Creates the directory and its parents with mode 0700 (existing ones are left as they are).
Result<void> ensurePrivateDir(const std::string& dir);

}  // namespace swipc::core
