// The reference service worker (DESIGN §7): the handlers the shipped sw_daemon runs.
#pragma once

#include <memory>

#include "swipc/service_worker.h"

namespace swipc::daemon {

/// The reference service worker's state (the shared counter, the count-channel object).
class ReferenceServiceWorker {
 public:
  /// Installs the handlers on `sw` (call before sw.run(); after sw.listen()).
  explicit ReferenceServiceWorker(ServiceWorker& sw);
  ~ReferenceServiceWorker();

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace swipc::daemon
