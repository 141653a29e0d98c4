#include "core/socket.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstddef>
#include <cstring>

#include "common/sys_error.h"

namespace swipc::core {

namespace {
constexpr size_t MAX_FDS = 4;

Result<sockaddr_un> address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) return makeError(Errc::TYPE, "socket path too long: " + path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}
}  // namespace

Result<UniqueFd> listenSeqpacket(const std::string& path, unsigned mode) {
  // The socket must never be reachable with a wider mode than `mode`. bind() creates the file
  // with 0777 & ~umask, and umask is process-wide (the daemon has threads by now), so instead the
  // socket is bound under a private temporary name in the same directory (ours, 0700/0750, so
  // nobody else can reach that name), narrowed, listening, and only then renamed over the
  // public name: rename() is atomic, so a connecting page sees the stale socket or this one,
  // never a missing or a too-open one. The caller holds the scope lock: any old file is stale.
  auto a = address(path);
  if (!a) return a.error();
  static unsigned serial = 0;
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, ".%d.%u.tmp", static_cast<int>(::getpid()), ++serial);
  const std::string temp = path + suffix;
  auto t = address(temp);
  if (!t) return t.error();
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return sysError("socket");
  ::unlink(temp.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&*t), sizeof *t) == -1) return sysError("bind " + temp);
  auto fail = [&](const std::string& what) {
    Error e = sysError(what);
    ::unlink(temp.c_str());
    return e;
  };
  // fchmodat without AT_SYMLINK_NOFOLLOW follows links, but we just bound this name ourselves
  // in a directory only we can write to.
  if (::fchmodat(AT_FDCWD, temp.c_str(), mode, 0) == -1) return fail("chmod " + temp);
  if (::listen(fd.get(), 512) == -1) return fail("listen");
  if (::rename(temp.c_str(), path.c_str()) == -1) return fail("rename " + temp + " -> " + path);
  return fd;
}

Result<UniqueFd> adoptListeningSeqpacket(UniqueFd fd, const std::string& path, unsigned mode) {
  const std::string what = "inherited socket (fd " + std::to_string(fd.get()) + ")";
  int domain = 0, type = 0, accepting = 0;
  auto option = [&](int name, int& out) {
    socklen_t len = sizeof out;
    return ::getsockopt(fd.get(), SOL_SOCKET, name, &out, &len) == 0;
  };
  if (!option(SO_DOMAIN, domain) || !option(SO_TYPE, type) || !option(SO_ACCEPTCONN, accepting))
    return sysError("getsockopt on the " + what);
  if (domain != AF_UNIX || type != SOCK_SEQPACKET || !accepting)
    return makeError(Errc::INVALID_ACCESS, what + " is not a listening AF_UNIX SOCK_SEQPACKET socket");
  // Same file, not same string: the unit may name the directory through a symlink.
  sockaddr_un bound{};
  socklen_t len = sizeof bound;
  SWIPC_SYSCALL(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len), "getsockname on the " + what);
  const size_t pathBytes = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
  const std::string boundPath(bound.sun_path, ::strnlen(bound.sun_path, pathBytes));
  struct stat at {}, want {};
  if (boundPath.empty() || ::lstat(boundPath.c_str(), &at) == -1 || ::lstat(path.c_str(), &want) == -1 ||
      !S_ISSOCK(want.st_mode) || at.st_dev != want.st_dev || at.st_ino != want.st_ino)
    return makeError(Errc::INVALID_ACCESS, what + " is bound to '" + boundPath + "', not to " + path +
                                               ", where this scope's pages connect");
  if (want.st_uid != ::geteuid())
    return makeError(Errc::INVALID_ACCESS, path + " is owned by uid " + std::to_string(want.st_uid) + ", not by us");
  // Not a symlink (lstat above), in a directory only we can write to: chmod by name is safe.
  if ((want.st_mode & 07777) != mode) SWIPC_SYSCALL(::fchmodat(AT_FDCWD, path.c_str(), mode, 0), "chmod " + path);
  const int flags = ::fcntl(fd.get(), F_GETFL);
  SWIPC_SYSCALL(flags == -1 ? -1 : ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK), "O_NONBLOCK on the " + what);
  SWIPC_SYSCALL(::fcntl(fd.get(), F_SETFD, FD_CLOEXEC), "FD_CLOEXEC on the " + what);
  return fd;
}

namespace {
/// One connect(); `busy` says the daemon's accept queue was full (EAGAIN).
Result<UniqueFd> connectOnce(const std::string& path, bool& busy) {
  busy = false;
  auto a = address(path);
  if (!a) return a.error();
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return sysError("socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&*a), sizeof *a) == -1) {
    if (errno == ENOENT || errno == ECONNREFUSED || errno == ENOTDIR)
      return makeError(Errc::NO_DAEMON, "no sw_daemon is listening at " + path);
    if (errno == EAGAIN) {
      busy = true;
      return makeError(Errc::NO_DAEMON, "sw_daemon at " + path + " is not accepting connections");
    }
    return sysError("connect " + path);
  }
  return fd;
}
}  // namespace

Result<UniqueFd> connectSeqpacket(const std::string& path) {
  bool busy;
  return connectOnce(path, busy);
}

Result<UniqueFd> waitConnectSeqpacket(const std::string& path, Deadline deadline) {
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    bool busy;
    auto fd = connectOnce(path, busy);
    // Busy: the daemon lives but its accept queue is full (a flood of connections, which it
    // refuses as fast as it accepts them): try again, backing off, until the deadline.
    if (fd || !busy) return fd;
    auto now = Clock::now();
    if (now >= deadline) return fd;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    ::poll(nullptr, 0, static_cast<int>(std::min(pause, left).count()) + 1);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

IoStatus acceptConnection(int listenFd, UniqueFd& out) {
  int fd = ::accept4(listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? IoStatus::AGAIN : IoStatus::FAILED;
  out.reset(fd);
  return IoStatus::OK;
}

Result<PeerCred> peerCred(int fd) {
  ucred c{};
  socklen_t len = sizeof c;
  SWIPC_SYSCALL(::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len), "SO_PEERCRED");
  return PeerCred{c.pid, c.uid, c.gid};
}

Result<std::vector<gid_t>> peerGroups(int fd) {
  // SO_PEERGROUPS (Linux 4.13) reports the groups the peer had when it connected, with no race
  // against the peer exec'ing or exiting (unlike reading /proc/<pid>/status).
  std::vector<gid_t> groups(64);
  for (;;) {
    socklen_t len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
      groups.resize(len / sizeof(gid_t));
      return groups;
    }
    if (errno != ERANGE || len <= groups.size() * sizeof(gid_t)) return sysError("SO_PEERGROUPS");
    groups.resize(len / sizeof(gid_t));
  }
}

IoStatus sendDatagram(int fd, const void* bytes, size_t n, const std::vector<int>& fds) {
  SWIPC_REQUIRE(fds.size() <= MAX_FDS, "too many fds in one datagram");
  iovec iov{const_cast<void*>(bytes), n};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  if (!fds.empty()) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    ssize_t r = ::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r >= 0) return IoStatus::OK;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return IoStatus::AGAIN;
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) return IoStatus::CLOSED;
    return IoStatus::FAILED;
  }
}

IoStatus recvDatagram(int fd, Datagram& out, size_t maxBytes) {
  // One receive buffer per thread, sized once: resizing `out.bytes` up to maxBytes would zero
  // 8 KiB for every one-byte wake-up.
  thread_local std::vector<uint8_t> buffer;
  if (buffer.size() < maxBytes) buffer.resize(maxBytes);
  out.fds.clear();
  out.truncated = false;
  iovec iov{buffer.data(), maxBytes};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t r;
  for (;;) {
    r = ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (r >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return IoStatus::AGAIN;
    if (errno == ECONNRESET || errno == ENOTCONN) return IoStatus::CLOSED;
    return IoStatus::FAILED;
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int rfd;
        std::memcpy(&rfd, CMSG_DATA(c) + i * sizeof(int), sizeof rfd);
        out.fds.emplace_back(rfd);
      }
    }
  }
  if (r == 0 && out.fds.empty()) return IoStatus::CLOSED;  // SEQPACKET: zero-length read = hang-up
  out.truncated = (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
  out.bytes.assign(buffer.data(), buffer.data() + r);
  return IoStatus::OK;
}

}  // namespace swipc::core
