// Connectivity: whether the daemon is "online" for Background Sync (DESIGN §14, --connectivity).
//
//   auto    online while the host has a default route (IPv4 or IPv6). A NETLINK_ROUTE socket
//           subscribed to route changes is watched on the EventLoop; on start and after every
//           batch of changes the routing tables are dumped again and searched for a default.
//   always  online, always.
//   manual  online at start unless --offline; then whatever setOnline() says (SW code,
//           the reference SW's SET_ONLINE).
//
// @concurrent: one thread, the loop's. The listener runs on it, only on a change, after
// online() already reports the new value. After destruction no listener runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>

#include "common/unique_fd.h"
#include "core/event_loop.h"
#include "swipc/error.h"

namespace swipc::sync {

/// --connectivity auto|always|manual
enum class ConnectivityMode { AUTO, ALWAYS, MANUAL };
/// "auto" | "always" | "manual"
std::string_view connectivityModeName(ConnectivityMode mode);
/// The inverse; TYPE for anything else.
Result<ConnectivityMode> parseConnectivityMode(std::string_view name);

/// Searches a buffer of netlink messages (an RTM_GETROUTE dump reply) for a default route: a
/// unicast route with a zero-length destination. Unreachable/blackhole/prohibit defaults do not
/// count. `done` is set when the buffer holds the dump's NLMSG_DONE. SYSTEM for an NLMSG_ERROR.
Result<bool> containsDefaultRoute(std::span<const uint8_t> messages, bool& done);

class Connectivity {
 public:
  /// Told the new state on every change.
  using Listener = std::function<void(bool online)>;

  /// `startOffline` applies to manual mode only (--offline). Auto mode opens its netlink
  /// sockets and reads the routes now: SYSTEM when that fails.
  static Result<std::unique_ptr<Connectivity>> create(core::EventLoop& loop, ConnectivityMode mode,
                                                      bool startOffline, Listener listener);
  Connectivity(const Connectivity&) = delete;
  Connectivity& operator=(const Connectivity&) = delete;
  /// Stops watching; no listener call after this.
  ~Connectivity();

  ConnectivityMode mode() const { return mode_; }
  bool online() const { return online_; }

  /// Manual mode: sets the state (the listener runs when it changes). INVALID_STATE in the other
  /// modes, where the host decides.
  Result<void> setOnline(bool online);

  /// Route-change notifications seen (auto mode), for the inspector.
  uint64_t routeChanges() const { return routeChanges_; }

 private:
  Connectivity(core::EventLoop& loop, ConnectivityMode mode, Listener listener)
      : loop_(loop), mode_(mode), listener_(std::move(listener)) {}
  Result<void> startWatching();
  void onNotification();
  /// Dumps IPv4 and IPv6 routes on the query socket: true when a default route exists.
  Result<bool> dumpHasDefaultRoute();
  Result<bool> dumpFamily(uint8_t family);
  void refresh();
  void update(bool online);

  core::EventLoop& loop_;
  ConnectivityMode mode_;
  Listener listener_;
  bool online_ = false;
  UniqueFd monitor_;  // subscribed to RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
  UniqueFd query_;    // for dumps, so a dump reply never mixes with notifications
  core::EventLoop::WatchId watch_ = 0;
  uint32_t dumpSeq_ = 0;
  uint64_t routeChanges_ = 0;
};

}  // namespace swipc::sync
