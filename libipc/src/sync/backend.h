// OneShotBackend: the seam for keeping one-shot Background Sync somewhere other than this
// daemon's state.db. SyncFeature uses one when it is given one (federation's JetStream backend,
// DESIGN §16: registrations and entries shared by every node of the scope, each event run on
// exactly one live node); periodic sync stays in the local SyncScheduler either way.
//
// Unlike the local store, a backend may need a network round trip to commit: registerTag answers
// through a callback once the registration is committed (or with a named error: Disconnected
// when the backend cannot reach its store, TimeoutError when the store did not answer). tags()
// and state() answer at once from what the backend knows now (a mirror kept current by the
// store), which includes every registration this node committed.
//
// @concurrent: every call on the daemon's loop thread; every callback runs there too, and none
// runs after stop() returned.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/event_loop.h"
#include "swipc/error.h"
#include "swipc/sync.h"
#include "swipc/value.h"
#include "sync/scheduler.h"

namespace swipc::sync {

class OneShotBackend {
 public:
  using Done = std::function<void(Result<void>)>;
  /// Receives each `sync` event this node is to run; settle through the event.
  using Handler = std::function<void(SyncEventPtr)>;

  virtual ~OneShotBackend() = default;

  /// Starts in the background (never waits for the network); events go to `handler` on `loop`
  /// while the backend is online. `options` are the daemon's (retry policy, event timeout).
  virtual Result<void> start(core::EventLoop& loop, const SyncOptions& options, Handler handler) = 0;
  /// Stops taking events; events in flight here are abandoned (another node takes them after the
  /// backend's ack wait). No callback runs after this returns.
  virtual void stop() = 0;

  /// sync.register (the tag already checked): `done` runs once, after the commit or with why not.
  virtual void registerTag(const std::string& tag, const std::optional<Value>& data, Done done) = 0;
  /// Registered and not finished, in registration order, across the whole backend.
  virtual std::vector<std::string> tags() const = 0;
  /// SYNC_STATE's rows, in registration order.
  virtual std::vector<SyncTagState> state() const = 0;
  /// Events are taken only while online (DESIGN §14's connectivity).
  virtual void setOnline(bool online) = 0;
  virtual SyncCounters counters() const = 0;
  /// One line for the daemon's start log ("jetstream stream=... kv=...").
  virtual std::string describe() const = 0;
};

}  // namespace swipc::sync
