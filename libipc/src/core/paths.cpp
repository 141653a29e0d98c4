#include "core/paths.h"

#include <sys/stat.h>

#include "common/sys_error.h"
#include "swipc/types.h"

namespace swipc::core {

Result<ScopePaths> scopePaths(const std::string& runtimeDir, const std::string& scope) {
  if (!isValidScope(scope))
    return makeError(Errc::TYPE, "invalid scope name '" + scope + "' (want [A-Za-z0-9._-]{1,64})");
  ScopePaths p;
  std::string root = runtimeDir.empty() ? defaultRuntimeDir() : runtimeDir;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
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

}  // namespace swipc::core
