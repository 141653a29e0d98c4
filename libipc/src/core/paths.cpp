#include "core/paths.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "common/sys_error.h"
#include "swipc/types.h"

namespace swipc::core {

Result<ScopePaths> scopePaths(const std::string& runtimeDir, const std::string& scope) {
  if (!isValidScope(scope))
    return makeError(Errc::TYPE, "invalid scope name '" + scope + "' (want [A-Za-z0-9._-]{1,64})");
  ScopePaths p;
  std::string root = runtimeDir.empty() ? defaultRuntimeDir() : runtimeDir;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  p.root = root;
  p.dir = root + "/" + scope;
  p.socket = p.dir + "/daemon.sock";
  p.lock = p.dir + "/daemon.lock";
  if (p.socket.size() >= 108) return makeError(Errc::TYPE, "socket path too long for AF_UNIX: " + p.socket);
  return p;
}

Result<void> ensurePrivateDir(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), 0700) == -1 && errno != EEXIST) return sysError("mkdir " + part);
  }
  struct stat st {};
  SWIPC_SYSCALL(::stat(dir.c_str(), &st), "stat " + dir);
  if (!S_ISDIR(st.st_mode)) return makeError(Errc::SYSTEM, dir + " is not a directory");
  return {};
}

namespace {

std::string octal(unsigned mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777);
  return buf;
}

/// checkTrustedDir on what lstat (or fstat) said about `dir`.
Result<void> checkStat(const std::string& dir, const struct stat& st) {
  if (S_ISLNK(st.st_mode)) return makeError(Errc::INVALID_ACCESS, dir + " is a symlink: refusing to use it");
  if (!S_ISDIR(st.st_mode)) return makeError(Errc::INVALID_ACCESS, dir + " is not a directory");
  if (st.st_uid != ::geteuid() && st.st_uid != 0)
    return makeError(Errc::INVALID_ACCESS, dir + " is owned by uid " + std::to_string(st.st_uid) + ", not by us (uid " +
                                               std::to_string(::geteuid()) + ") or root: refusing to use it");
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return makeError(Errc::INVALID_ACCESS, dir + " has mode " + octal(st.st_mode) +
                                               " (writable by group or others): refusing to use it");
  return {};
}

/// mkdir with exactly `mode` (umask may have narrowed it); EEXIST is fine. Whether it made it.
Result<bool> makeDir(const std::string& dir, unsigned mode) {
  if (::mkdir(dir.c_str(), mode) == -1) {
    if (errno == EEXIST) return false;
    return sysError("mkdir " + dir);
  }
  SWIPC_SYSCALL(::chmod(dir.c_str(), mode), "chmod " + dir);
  return true;
}

}  // namespace

Result<void> checkTrustedDir(const std::string& dir) {
  struct stat st {};
  SWIPC_SYSCALL(::lstat(dir.c_str(), &st), "lstat " + dir);
  return checkStat(dir, st);
}

Result<void> checkScopeDirs(const ScopePaths& paths) {
  for (const std::string* dir : {&paths.root, &paths.dir}) {
    struct stat st {};
    if (::lstat(dir->c_str(), &st) == -1) {
      if (errno == ENOENT) return {};  // connect() will say NoDaemon
      return sysError("lstat " + *dir);
    }
    if (auto r = checkStat(*dir, st); !r) return r;
  }
  return {};
}

Result<void> ensureScopeDirs(const ScopePaths& paths, unsigned mode) {
  // The runtime dir's parents (/tmp, $XDG_RUNTIME_DIR) are the system's; the runtime dir itself
  // is ours to create, or to check when it exists (a user-given one keeps its mode).
  if (size_t slash = paths.root.rfind('/'); slash != std::string::npos && slash > 0)
    if (auto r = ensurePrivateDir(paths.root.substr(0, slash)); !r) return r;
  if (auto made = makeDir(paths.root, mode); !made) return made.error();
  if (auto r = checkTrustedDir(paths.root); !r) return r;
  if (auto made = makeDir(paths.dir, mode); !made) return made.error();
  // The scope dir must be ours: we set its mode, and what sits in it (socket, lock) is ours.
  UniqueFd fd(::open(paths.dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ELOOP || errno == ENOTDIR)
      return makeError(Errc::INVALID_ACCESS, paths.dir + " is not a directory (or is a symlink): refusing to use it");
    return sysError("open " + paths.dir);
  }
  struct stat st {};
  SWIPC_SYSCALL(::fstat(fd.get(), &st), "fstat " + paths.dir);
  if (auto r = checkStat(paths.dir, st); !r) return r;
  if (st.st_uid != ::geteuid())
    return makeError(Errc::INVALID_ACCESS, paths.dir + " is owned by uid " + std::to_string(st.st_uid) +
                                               ", not by us (uid " + std::to_string(::geteuid()) + "): refusing to use it");
  if ((st.st_mode & 07777) != mode) SWIPC_SYSCALL(::fchmod(fd.get(), mode), "chmod " + paths.dir);
  return {};
}

Result<UniqueFd> openLockFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) {
    if (errno == ELOOP) return makeError(Errc::INVALID_ACCESS, path + " is a symlink: refusing to open it");
    return sysError("open " + path);
  }
  struct stat st {};
  SWIPC_SYSCALL(::fstat(fd.get(), &st), "fstat " + path);
  if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid())
    return makeError(Errc::INVALID_ACCESS, path + " is not a regular file of ours: refusing to use it");
  return fd;
}

}  // namespace swipc::core
