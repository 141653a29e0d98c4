// ClientsApi: self.clients and WindowClient on the daemon side — matchAll (DESIGN §9 order:
// windows focused at least once, most recent first; then never-focused windows by creation; then
// workers by creation), get, claim, focus, navigate — and the snapshots (ClientHandle) they
// return. It also takes the clients' own reports of their state (clientState: focus and
// visibility), registered with Dispatch.
//
// @concurrent: single-threaded; the daemon's loop thread.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "daemon/client_table.h"
#include "daemon/dispatch.h"
#include "daemon/outbound.h"
#include "swipc/clients.h"

namespace swipc::daemon {

class ClientsApi {
 public:
  /// `owner` is what the handles reach back to (their postMessage, focus, navigate).
  ClientsApi(ServiceWorker* owner, ClientTable& clients, Outbound& outbound, Counters& counters)
      : owner_(owner), clients_(clients), outbound_(outbound), counters_(counters) {}
  ClientsApi(const ClientsApi&) = delete;
  ClientsApi& operator=(const ClientsApi&) = delete;

  /// Takes clientState envelopes (a focus or visibility change the page reports).
  void registerWith(Dispatch& dispatch);

  std::vector<ClientHandle> matchAll(const MatchAllOptions& o) const;
  /// The records matchAll(o) would answer, in its order (the inspector reads more of each).
  std::vector<const ClientRecord*> matching(const MatchAllOptions& o) const;
  /// The client, or nullopt when unknown or gone.
  std::optional<ClientHandle> get(const ClientId& id) const;
  /// Takes control of every uncontrolled client (each gets controllerchange). How many it took.
  size_t claim();
  /// WindowClient.focus(): the window is told and holds the focus now.
  Result<ClientHandle> focus(const ClientId& id);
  /// WindowClient.navigate(url): the window is told and its url changes.
  Result<ClientHandle> navigate(const ClientId& id, const std::string& url);

  ClientHandle handleFor(const ClientRecord& c) const {
    ClientHandle h;
    h.sw_ = owner_;
    h.id_ = c.id;
    fillHandle(h, c);
    return h;
  }
  /// `h` becomes handleFor(c), reusing what it holds (no string copy when it already was c's).
  /// Inline: every controller post passes here.
  void refreshHandle(std::optional<ClientHandle>& h, const ClientRecord& c) const {
    // The drain loop's event keeps the handle of the message before, most often for this
    // client: brought up to date in place, it costs no string copy.
    if (!h || h->id_ != c.id || h->sw_ != owner_) {
      h = handleFor(c);
      return;
    }
    fillHandle(*h, c);
  }

 private:
  /// The snapshot fields of `h` (all but the service worker and the id) from `c`.
  static void fillHandle(ClientHandle& h, const ClientRecord& c) {
    if (h.url_ != c.url) h.url_ = c.url;
    h.type_ = c.type;
    h.frameType_ = c.frameType;
    h.focused_ = c.focused;
    h.visible_ = c.visible;
    h.controlled_ = c.controlled;
    h.pid_ = c.pid;
  }
  /// One window has the focus at a time: it moves to `c`.
  void takeFocus(ClientRecord& c);
  /// Every record (detached ones not yet erased included) in matchAll order, cached.
  const std::vector<const ClientRecord*>& roster() const;
  /// An alive, controlled window client: what focus and navigate may command.
  Result<ClientRecord*> windowToCommand(const ClientId& id);

  ServiceWorker* owner_;
  ClientTable& clients_;
  Outbound& outbound_;
  Counters& counters_;
  uint64_t focusCounter_ = 0;
  mutable std::vector<const ClientRecord*> roster_;
  mutable uint64_t rosterGeneration_ = ~uint64_t{0};
  mutable uint64_t rosterFocus_ = ~uint64_t{0};
};

}  // namespace swipc::daemon
