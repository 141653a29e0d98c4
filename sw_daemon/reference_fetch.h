// The reference service worker's Background Fetch part (DESIGN §15): on each completion event
// (backgroundfetchsuccess / fail / abort) it reads every record's body — a chunk per loop turn,
// so a 1 GiB body never stalls the other pages' messages — then reports
// {"type":"BGFETCH","id","event","result","failureReason","downloaded","records":[{"url","status","size","sha256"}]}
// on BroadcastChannel `bgfetch-log` and to every window client. The event settles after that.
#pragma once

#include <memory>

#include "swipc/service_worker.h"

namespace swipc::daemon {

class ReferenceFetch {
 public:
  /// Installs the completion handlers on `sw`.
  explicit ReferenceFetch(ServiceWorker& sw);
  ~ReferenceFetch();

  struct State;

 private:
  std::shared_ptr<State> state_;  // shared: the reading steps hold it weakly
};

}  // namespace swipc::daemon
