// Inspecting a running daemon from another process (what swctl does, DESIGN §17): one bounded
// request on the scope's attach socket, never counted as a client.
#pragma once

#include <string>

#include "swipc/error.h"
#include "swipc/types.h"

namespace swipc {

/// The daemon of `scope` (under `runtimeDir`; empty: the default runtime dir) answers `command`
/// ("status", "clients", "channels", "ports", "sync", "fetches") with one JSON document.
/// NoDaemonError / AttachTimeoutError when none answers by `deadline`; InvalidAccessError when it
/// belongs to another user.
Result<std::string> inspectDaemon(const std::string& runtimeDir, const std::string& scope, const std::string& command,
                                  Deadline deadline);

}  // namespace swipc
