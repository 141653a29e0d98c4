// spdlog setup shared by the binaries; the library logs through spdlog's default logger.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

#include "swipc/error.h"

namespace swipc::core {

/// stderr logger named `name`, one line per event: time, level, name, message.
/// `level` is trace|debug|info|warn|error|critical|off; TypeError otherwise.
/// Also becomes the library's logger (log()).
Result<void> initLogging(const std::string& name, const std::string& level);

/// The logger the library writes to: stderr, level warn, until a binary calls initLogging.
/// Library code never writes to stdout (page_client's stdout is a protocol).
spdlog::logger& log();

}  // namespace swipc::core
