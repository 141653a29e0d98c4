// Starting a scope's daemon on demand (ClientOptions::spawnDaemon, DESIGN §17), the way a
// browser starts a service worker when a page needs it.
//
// The daemon is started detached: fork, fork again and let the middle process exit (so the
// daemon is nobody's child to reap and outlives the page), setsid() (its own session and
// process group: no terminal, no signals meant for the page's group), stdio on /dev/null, every
// other fd closed at exec, signal mask and dispositions reset, cwd "/". It runs
// `<daemon> --scope S --runtime-dir R --log-file R/S/daemon.log` and lives until SIGTERM.
// Pages that spawn at the same moment each start one: the scope's lock lets the first through,
// the others exit 1 before they touch the socket or the log, and every page attaches to the one.
//
// @concurrent: callable from any thread; between fork and exec the child calls only
// async-signal-safe functions (everything it needs is prepared before the fork).
#pragma once

#include <string>

#include "core/paths.h"
#include "swipc/error.h"

namespace swipc::page {

/// The sw_daemon to start: `requested` when given (a name without '/' is looked up on PATH),
/// else `sw_daemon` in the directory of this program's executable, else on PATH. An absolute
/// path, or NoDaemon saying where it looked.
Result<std::string> resolveDaemonPath(const std::string& requested);

/// The log file the spawned daemon of `paths` writes: <runtime-dir>/<scope>/daemon.log.
std::string daemonLogPath(const core::ScopePaths& paths);

/// Starts `daemonPath` for `scope` at `paths` as above; returns once it has been exec'd
/// (whether it then wins the scope is the caller's to find out by attaching). NoDaemon naming
/// the reason when it could not be started (exec failed, out of processes).
Result<void> spawnDaemon(const std::string& daemonPath, const std::string& scope, const core::ScopePaths& paths);

}  // namespace swipc::page
