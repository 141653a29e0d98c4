// The reference service worker (DESIGN §7): the handlers the shipped sw_daemon runs.
#pragma once

#include <memory>

#include "swipc/service_worker.h"

namespace swipc::daemon {

/// The reference service worker's state (the shared counter, the count-channel object, the port
/// PORT_INITIALIZATION handed over).
class ReferenceServiceWorker {
 public:
  /// Installs the handlers on `sw` (call before sw.run(); after sw.listen()).
  explicit ReferenceServiceWorker(ServiceWorker& sw);
  ~ReferenceServiceWorker();

  struct State;

 private:
  std::shared_ptr<State> state_;  // shared: port callbacks hold it weakly
};

}  // namespace swipc::daemon
