// The reference service worker's Background Sync part (DESIGN §14): `sync` / `periodicsync`
// handlers whose behaviour the tag's prefix chooses, reports on BroadcastChannel `sync-log`, and
// the SET_ONLINE / SYNC_STATE messages.
#pragma once

#include <memory>
#include <optional>

#include "swipc/broadcast_channel.h"
#include "swipc/service_worker.h"

namespace swipc::daemon {

class ReferenceSync {
 public:
  /// Installs the sync handlers on `sw`.
  explicit ReferenceSync(ServiceWorker& sw);
  ~ReferenceSync();

  /// SET_ONLINE / SYNC_STATE: the reply, or nullopt when `data` is not one of ours.
  std::optional<Value> handleMessage(const Value& data);

  struct State;

 private:
  std::shared_ptr<State> state_;  // shared: timers and abort callbacks hold it weakly
};

}  // namespace swipc::daemon
