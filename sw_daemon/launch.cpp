#include "launch.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace sw_daemon {

namespace {
constexpr int LISTEN_FDS_START = 3;  // SD_LISTEN_FDS_START

swipc::Error systemError(const std::string& what) {
  return swipc::makeError(swipc::Errc::SYSTEM, what + ": " + std::strerror(errno));
}
}  // namespace

swipc::Result<int> takeActivationSocket() {
  const char* pid = std::getenv("LISTEN_PID");
  const char* fds = std::getenv("LISTEN_FDS");
  const std::string pidText = pid ? pid : "", fdsText = fds ? fds : "";
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  if (pidText.empty() || fdsText.empty() || fdsText == "0" || pidText != std::to_string(::getpid())) return -1;
  if (fdsText != "1")
    return swipc::makeError(swipc::Errc::TYPE, "socket activation passed LISTEN_FDS=" + fdsText +
                                                   " sockets; sw_daemon serves exactly one");
  if (::fcntl(LISTEN_FDS_START, F_SETFD, FD_CLOEXEC) == -1) return systemError("fd 3 from socket activation");
  return LISTEN_FDS_START;
}

swipc::Result<void> redirectLog(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd == -1) return systemError("open --log-file " + path);
  struct stat st {};
  if (::fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) {
    ::close(fd);
    return swipc::makeError(swipc::Errc::INVALID_ACCESS, path + " is not a regular file of ours: refusing to log to it");
  }
  const int moved = ::dup2(fd, STDERR_FILENO);
  ::close(fd);
  if (moved == -1) return systemError("dup2 --log-file " + path);
  return {};
}

}  // namespace sw_daemon
