#include "swipc/log.h"

#include "core/log.h"

namespace swipc {

Result<void> initLogging(const std::string& name, const std::string& level) { return core::initLogging(name, level); }

spdlog::logger& logger() { return core::log(); }

}  // namespace swipc
