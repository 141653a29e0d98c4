// Logging for programs built on swipc. The library logs through spdlog, one line per event, to
// stderr; a program names its logger and picks the level once, at start.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

#include "swipc/error.h"

namespace swipc {

/// Makes a stderr logger named `name` (lines: time, level, name[pid], message) the library's and
/// spdlog's default. `level` is trace|debug|info|warn|error|critical|off; TypeError otherwise.
Result<void> initLogging(const std::string& name, const std::string& level);

/// The logger the library writes to (stderr, level warn until initLogging). Never stdout:
/// page_client's stdout is a protocol.
spdlog::logger& logger();

}  // namespace swipc
