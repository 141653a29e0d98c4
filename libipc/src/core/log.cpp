#include "core/log.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace swipc::core {

Result<void> initLogging(const std::string& name, const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off")
    return makeError(Errc::TYPE, "unknown log level '" + level + "'");
  auto logger = spdlog::stderr_logger_mt(name + "-" + std::to_string(::getpid()));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ " + name + "[%P] %v");
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return {};
}

}  // namespace swipc::core
