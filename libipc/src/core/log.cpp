#include "core/log.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace swipc::core {

namespace {
std::shared_ptr<spdlog::logger>& current() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::stderr_logger_mt("swipc");
    l->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ swipc[%P] %v");
    l->set_level(spdlog::level::warn);
    return l;
  }();
  return logger;
}
}  // namespace

spdlog::logger& log() { return *current(); }

Result<void> initLogging(const std::string& name, const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off")
    return makeError(Errc::TYPE, "unknown log level '" + level + "'");
  auto logger = spdlog::stderr_logger_mt(name + "-" + std::to_string(::getpid()));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ " + name + "[%P] %v");
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  current() = logger;
  return {};
}

}  // namespace swipc::core
