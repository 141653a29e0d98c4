// The reference service worker (DESIGN §7): the handlers the shipped sw_daemon runs.
#pragma once

#include "swipc/service_worker.h"

namespace swipc::daemon {

/// Installs the reference handlers on `sw`.
void installReferenceServiceWorker(ServiceWorker& sw);

}  // namespace swipc::daemon
