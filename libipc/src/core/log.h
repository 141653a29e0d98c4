// spdlog setup shared by the binaries; the library logs through spdlog's default logger.
#pragma once

#include <spdlog/spdlog.h>

#include <string>
#include <string_view>

#include "swipc/error.h"

namespace swipc::core {

/// `text` with every control character (newline, CR, ESC, ...) written as an escape (`\n`, `\r`,
/// `\t`, `\xNN`), so that what a client sent (a url, a channel name, a tag) can never start a
/// log line of its own or drive a terminal.
std::string escapeLogText(std::string_view text);

/// stderr logger named `name`, one line per event: time, level, name, message. Every message
/// goes through escapeLogText as it is formatted: one event is one line whatever it carries.
/// `level` is trace|debug|info|warn|error|critical|off; TypeError otherwise.
/// Also becomes the library's logger (log()).
Result<void> initLogging(const std::string& name, const std::string& level);

/// The logger the library writes to: stderr, level warn, until a binary calls initLogging.
/// Library code never writes to stdout (page_client's stdout is a protocol).
spdlog::logger& log();

}  // namespace swipc::core
