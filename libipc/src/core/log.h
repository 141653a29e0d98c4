// spdlog setup shared by the binaries; the library logs through spdlog's default logger.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

#include "swipc/error.h"

namespace swipc::core {

/// stderr logger named `name`, one line per event: time, level, name, message.
/// `level` is trace|debug|info|warn|error|critical|off; TypeError otherwise.
Result<void> initLogging(const std::string& name, const std::string& level);

}  // namespace swipc::core
