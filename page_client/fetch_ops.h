// Background Fetch from page_client (DESIGN §15): the `bgfetch.*` script ops, their
// `bgfetch.progress` events, and the `fetch ID URL... [--download-total N] [--detach]` subcommand.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cli_support.h"
#include "event_writer.h"
#include "swipc/background_fetch.h"
#include "swipc/client.h"

namespace page_client {

/// R of DESIGN §15: {"id","uploadTotal","uploaded","downloadTotal","downloaded","result",
/// "failureReason","recordsAvailable"}, in that order.
nlohmann::ordered_json registrationJson(const swipc::BackgroundFetchState& s);

/// A request of an op's "requests": a URL string, or {url, method, headers, body} where headers
/// is {name: value} or [[name, value], ...] and body is text or {"$bytes": base64}. TypeError
/// for anything else.
swipc::Result<swipc::BackgroundFetchRequest> requestFromJson(const nlohmann::json& j);

/// The script ops of Background Fetch. Each op with an id is answered by exactly one ok/error
/// event, once the daemon has answered. Every registration this page fetched or got prints
/// {"event":"bgfetch.progress","fetchId":F,...R} for each of its progress events, the final one
/// included (once per registration, however often it was got).
///
/// abort and match act on the registration the page holds for F (the last fetch or get of F that
/// answered one); for an F it holds none of, the op first gets it (as the web needs a
/// registration object): none then is NotFoundError for match, false for abort.
class FetchOps {
 public:
  FetchOps(swipc::Client& client, EventWriter& out) : client_(client), out_(out) {}

  /// Runs `name` when it is one of ours; false when it is not a bgfetch op.
  bool handle(const std::string& name, const nlohmann::json& op, const OpId& id);
  /// Calls sent, not yet answered (a graceful exit waits for them).
  size_t pending() const { return pending_; }

 private:
  using WithRegistration = std::function<void(swipc::Result<std::optional<swipc::BackgroundFetchRegistration>>)>;

  void opFetch(const nlohmann::json& op, const OpId& id);
  void opGet(const nlohmann::json& op, const OpId& id);
  void opGetIds(const OpId& id);
  void opAbort(const nlohmann::json& op, const OpId& id);
  void opMatch(const nlohmann::json& op, const OpId& id);
  /// The registration held for `fetchId`, else the answer of get (nullopt: none).
  void withRegistration(const std::string& fetchId, WithRegistration fn);
  /// Holds `reg` as F's and prints its progress events (hooked once per registration).
  void hold(const swipc::BackgroundFetchRegistration& reg);
  /// Counts a call pending; the returned function uncounts it.
  std::function<void()> started();

  swipc::Client& client_;
  EventWriter& out_;
  size_t pending_ = 0;
  std::map<std::string, swipc::BackgroundFetchRegistration> held_;  // by fetch id: the latest handle
  std::vector<swipc::BackgroundFetchRegistration> hooked_;          // every registration printing events
  std::set<const swipc::BackgroundFetchState*> hookedStates_;       // their identities
};

/// `page_client fetch ID URL... [--download-total N] [--detach]`: registers, follows progress
/// (a bar on stderr when it is a terminal) and prints the final R as one JSON line: exit 0 on
/// success, 1 on failure, abort or an error, 2 without a daemon. With `detach`: prints the
/// registration's first R and exits 0 once registered.
int runFetch(const GlobalOptions& opts, const std::string& id, const std::vector<std::string>& urls,
             uint64_t downloadTotal, bool detach);

}  // namespace page_client
