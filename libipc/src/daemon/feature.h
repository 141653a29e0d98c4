// The seam for whole mechanisms in the daemon (BroadcastChannel now; Background Sync, Background
// Fetch, federation next). A Feature is started by the service worker when it begins to serve and
// gets everything it may touch through its FeatureHost: the event loop (its own fds and timers),
// the client table, dispatch registration for the envelope kinds it owns, a detach hook, the
// outbound sender, and its state directory. Nothing in the daemon's core names a feature: a
// kind no feature registered is a ProtocolViolation, as any unknown kind.
//
// Lifetime: start() once the service worker listens (the loop exists, no client is attached
// yet); stop() when it stops serving (every client already detached); start() again if it
// serves again. What a feature registered through the host is forgotten after stop().
// A feature may also serve service-worker code before start() (BroadcastChannel objects made
// before listen()), as long as that needs none of the host.
//
// @concurrent: single-threaded; everything runs on the daemon's loop thread.
#pragma once

#include <string>
#include <string_view>

#include "core/event_loop.h"
#include "daemon/client_table.h"
#include "daemon/dispatch.h"
#include "daemon/outbound.h"
#include "envelope.capnp.h"
#include "swipc/error.h"
#include "swipc/service_worker.h"

namespace swipc::daemon {

class FeatureHost {
 public:
  virtual ~FeatureHost() = default;

  /// The daemon's loop: watch fds, add timers, post tasks (all on the loop thread).
  virtual core::EventLoop& loop() = 0;
  /// Every attached client; ClientTable::violation() disconnects one that broke the protocol.
  virtual ClientTable& clients() = 0;
  /// How to send a client anything (envelopes, errors, the fast lane).
  virtual Outbound& outbound() = 0;
  /// Routes envelopes of `kind` to the feature (general path; `plain`, when set, the fast lane).
  virtual void handle(schema::Envelope::Which kind, Dispatch::Handler handler,
                      Dispatch::PlainHandler plain = nullptr) = 0;
  /// Runs `hook` for every client that detaches, before its connection closes.
  virtual void onDetach(ClientTable::DetachHook hook) = 0;
  /// The scope's durable state directory (ServiceWorkerOptions::stateDir, else
  /// $XDG_STATE_HOME/swipc/<scope>, else ~/.local/state/swipc/<scope>), created 0700 on first
  /// call; a named error when it cannot be. A feature keeps its files there under its own name.
  virtual Result<std::string> stateDir() = 0;
  virtual const ServiceWorkerOptions& options() const = 0;
  /// The counters tools read (SIGUSR1, the inspector).
  virtual Counters& counters() = 0;
  /// How service-worker code decodes typed payloads.
  virtual const TypeRegistry& types() const = 0;
  /// Something happened for a client: the daemon's spin phase keeps polling a while longer.
  virtual void markActive() = 0;
};

class Feature {
 public:
  virtual ~Feature() = default;
  /// A short name, for logs ("broadcast-channel").
  virtual std::string_view name() const = 0;
  /// Registers what the feature handles; an error stops the service worker from listening.
  virtual Result<void> start(FeatureHost& host) = 0;
  virtual void stop() = 0;
};

}  // namespace swipc::daemon
