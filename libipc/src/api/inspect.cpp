#include "swipc/inspect.h"

#include "core/attach.h"
#include "core/paths.h"

namespace swipc {

Result<std::string> inspectDaemon(const std::string& runtimeDir, const std::string& scope, const std::string& command,
                                  Deadline deadline) {
  auto paths = core::scopePaths(runtimeDir, scope);
  if (!paths) return paths.error();
  return core::inspectDaemon(paths->socket, command, deadline);
}

}  // namespace swipc
