// How sw_daemon was started, beyond its flags (DESIGN §17): by systemd socket activation (an
// inherited listening socket), or by a page's --spawn-daemon (stdio on /dev/null, logs to a file).
#pragma once

#include <string>

#include "swipc/error.h"

namespace sw_daemon {

/// sd_listen_fds(3), our own few lines, for a daemon that serves one socket: when LISTEN_PID is
/// this process and LISTEN_FDS is 1, the inherited socket (fd 3, made close-on-exec); -1 when
/// the variables are absent or meant for another process; TypeError for any other count.
/// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are unset in every case, so that the pages
/// clients.openWindow starts do not take them for their own.
swipc::Result<int> takeActivationSocket();

/// Appends stderr (spdlog's sink) to `path` from now on: opened without following a symlink,
/// created 0600, refused unless it is a regular file of ours.
swipc::Result<void> redirectLog(const std::string& path);

}  // namespace sw_daemon
