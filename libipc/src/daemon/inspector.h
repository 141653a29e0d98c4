// Inspector: what swctl sees (DESIGN §17). The attach server hands it an InspectRequest's command
// (a connection that sent that instead of a Hello); it answers one JSON object built from the
// daemon's own tables, on the loop thread, and the connection closes. An inspector is never a
// client: no id, no rings, not in matchAll, not counted against --max-clients.
//
//   status   {"pid","version","uptimeMs","counters":{...}}
//   clients  {"clients":[{"id","pid","url","type","controlled","focused","visibilityState",
//             "backlogMessages","backlogBytes"}...]}   in matchAll({includeUncontrolled, all}) order
//   channels {"channels":[{"name","members","ringFill","posts","laps"}...]}   by name
//   ports    {"open","inTransit"}
//   sync     {"tags":[{"tag","state","attempts","entries","nextAttemptMs"}...]}
//   fetches  {"fetches":[{"id","uploadTotal",...}...]}
//
// What lives above the daemon layer (counters with the features' figures, Background Sync and
// Fetch) comes through Sources, filled in by the service worker.
//
// @concurrent: single-threaded; the daemon's loop thread.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "daemon/broadcast_hub.h"
#include "daemon/client_table.h"
#include "daemon/clients_api.h"
#include "daemon/port_router.h"
#include "swipc/error.h"
#include "swipc/types.h"
#include "swipc/value.h"

namespace swipc::daemon {

class Inspector {
 public:
  struct Sources {
    std::function<Value()> counters;  // Counters::toValue of a snapshot
    std::function<Value()> syncTags;  // a list of {"tag","state","attempts","entries","nextAttemptMs"}
    std::function<Value()> fetches;   // a list of BackgroundFetchState::toValue
  };

  /// The hub and the router are reached through functions: they may be made after us.
  Inspector(const ClientsApi& clients, std::function<const BroadcastHub&()> hub,
            std::function<const PortRouter&()> router, std::string version, Sources sources);

  /// The JSON text answering `command`; TypeError naming the commands for any other.
  Result<std::string> answer(std::string_view command) const;

 private:
  std::string status() const;
  std::string clients() const;
  std::string channels() const;
  std::string ports() const;

  const ClientsApi& clients_;
  std::function<const BroadcastHub&()> hub_;
  std::function<const PortRouter&()> router_;
  std::string version_;
  Sources sources_;
  Clock::time_point started_;
};

}  // namespace swipc::daemon
