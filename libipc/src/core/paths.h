// Where a scope's daemon lives on disk: <runtime-dir>/<scope>/{daemon.sock,daemon.lock}, and the
// identity checks on those directories (DESIGN §3): a directory that already exists must be ours
// (or root's) and writable by nobody else, or a squatter in /tmp would get our pages.
#pragma once

#include <string>

#include "common/unique_fd.h"
#include "swipc/error.h"

namespace swipc::core {

struct ScopePaths {
  std::string root;  // the runtime dir
  std::string dir;   // root/scope
  std::string socket;
  std::string lock;
};

/// Paths for `scope` under `runtimeDir` (empty = defaultRuntimeDir()). TypeError for a bad scope.
Result<ScopePaths> scopePaths(const std::string& runtimeDir, const std::string& scope);
/// Creates the directory and its parents with mode 0700 (existing ones are left as they are).
Result<void> ensurePrivateDir(const std::string& dir);

/// Daemon side: creates the runtime dir and the scope dir with `mode` (0700, or 0750 with
/// --allow-group), or checks the existing ones with checkTrustedDir; the scope dir, ours, is then
/// set to exactly `mode`. InvalidAccessError for a directory we must not use.
Result<void> ensureScopeDirs(const ScopePaths& paths, unsigned mode);
/// Page side: the runtime dir and the scope dir, where they exist, pass checkTrustedDir (a
/// missing one is left to connect(), which says NoDaemon).
Result<void> checkScopeDirs(const ScopePaths& paths);
/// InvalidAccessError unless `dir` is a real directory (not a symlink) owned by our euid or root
/// and writable by neither its group nor others.
Result<void> checkTrustedDir(const std::string& dir);

/// Opens (creating 0600) the scope's lock file without following a symlink; InvalidAccessError
/// for a symlink or anything but a regular file of ours.
Result<UniqueFd> openLockFile(const std::string& path);

}  // namespace swipc::core
