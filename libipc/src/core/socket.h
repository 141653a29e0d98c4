// SOCK_SEQPACKET helpers: every call is non-blocking (MSG_DONTWAIT) so that nothing a peer does
// can block the caller, and every received fd is close-on-exec.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "swipc/error.h"
#include "swipc/types.h"

namespace swipc::core {

enum class IoStatus { OK, AGAIN, CLOSED, FAILED };

struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

/// Binds and listens at `path` (replacing a stale socket file) with the given file mode; the
/// name appears only once the socket has that mode and listens (bound elsewhere, then renamed).
Result<UniqueFd> listenSeqpacket(const std::string& path, unsigned mode);
/// Takes over a listening socket someone else made (systemd socket activation) as if
/// listenSeqpacket had made it: `fd` must be an AF_UNIX SOCK_SEQPACKET socket that listens,
/// bound to the very file at `path` (InvalidAccessError otherwise: pages would never reach it),
/// which is then set to `mode`; the fd becomes non-blocking and close-on-exec. The caller has
/// checked `path`'s directory (ensureScopeDirs). `fd` is closed on failure.
Result<UniqueFd> adoptListeningSeqpacket(UniqueFd fd, const std::string& path, unsigned mode);
/// Connects (non-blocking fd); NoDaemon when nobody listens at `path`.
Result<UniqueFd> connectSeqpacket(const std::string& path);
/// connectSeqpacket, retried (with backoff) while the daemon's accept queue is full, until
/// `deadline`.
Result<UniqueFd> waitConnectSeqpacket(const std::string& path, Deadline deadline);
/// Accepts one connection (non-blocking, close-on-exec); AGAIN when none is pending.
IoStatus acceptConnection(int listenFd, UniqueFd& out);
/// The peer's credentials as of connect()/listen() (SO_PEERCRED).
Result<PeerCred> peerCred(int fd);
/// The peer's supplementary groups as of connect() (SO_PEERGROUPS).
Result<std::vector<gid_t>> peerGroups(int fd);

/// Sends one datagram with up to 4 fds attached.
IoStatus sendDatagram(int fd, const void* bytes, size_t n, const std::vector<int>& fds = {});

struct Datagram {
  std::vector<uint8_t> bytes;  // resized to the received length
  std::vector<UniqueFd> fds;
  bool truncated = false;      // bytes or fds did not fit: the peer is misbehaving
};
/// Receives one datagram of at most `maxBytes` bytes.
IoStatus recvDatagram(int fd, Datagram& out, size_t maxBytes);

}  // namespace swipc::core
