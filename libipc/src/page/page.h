// Page: one page's modules, wired together. swipc::Client is this plus its public front door.
//
//   HeldQueue        when events run (held until startMessages, deferred past blocking calls)
//   PageEvents       the page's callbacks
//   OpTable          envelope kind -> handler; each module below registers the kinds it owns
//   ConnectionState  attach, re-attach with backoff, reading, who the page is to its daemon
//   Sender           the one way out; delivery accounting; acks and errors
//   PagePorts        the MessagePort host
//   ControllerOps    controller.postMessage, messageSW, the service worker's messages
//   FeatureSet       features on the page seam (page/feature.h), added by whoever composes the
//                    page (Client adds the BroadcastChannel, page/broadcast.h); the Page knows
//                    none of them
//
// Modules depend downward in that order (a module takes references to the ones above it); the
// Page is their ConnectionState::Events: it routes what arrives, and when the daemon goes it
// ends what was tied to it, in this order: delivery outcomes settled, the features' shared
// memory read out, the connection dropped, pending messageSW calls failed, remote ports closed,
// outcomes reported, controllerchange, re-attach timed.
#pragma once

#include <memory>
#include <string>

#include "core/event_loop.h"
#include "page/connection_state.h"
#include "page/controller_ops.h"
#include "page/feature.h"
#include "page/held_queue.h"
#include "page/op_table.h"
#include "page/page_events.h"
#include "page/ports.h"
#include "page/sender.h"

namespace swipc::page {

/// @concurrent: single-threaded (the page's loop thread); loop().post() and loop().wake() are
/// thread-safe.
class Page final : private ConnectionState::Events {
 public:
  /// `attach` replaces core::attachToDaemon (tests attach in-process).
  static Result<std::unique_ptr<Page>> create(const ClientOptions& opts, ConnectionState::AttachFn attach = nullptr);
  Page(const ClientOptions& opts, std::unique_ptr<core::EventLoop> loop, ConnectionState::AttachFn attach);
  ~Page();
  Page(const Page&) = delete;
  Page& operator=(const Page&) = delete;

  /// Attaches (see ConnectionState::start). Add features before: they hear re-attaches only.
  Result<void> start();
  /// Detaches gracefully (Goodbye) and ends every port and feature object. Idempotent.
  void close();
  /// One step of the loop: deferred events, deferred wake-ups, ready fds and timers (until
  /// `until`), deferred events again.
  void dispatchOnce(Deadline until);

  core::EventLoop& loop() { return *loop_; }
  TypeRegistry& types() { return types_; }
  HeldQueue& queue() { return queue_; }
  PageEvents& events() { return events_; }
  OpTable& ops() { return ops_; }
  ConnectionState& link() { return link_; }
  Sender& sender() { return sender_; }
  PagePorts& ports() { return ports_; }
  ControllerOps& controllerOps() { return controllerOps_; }
  FeatureSet& features() { return features_; }

 private:
  // ---- ConnectionState::Events
  void plain(const wire::PlainMessage& m, Value& data) override;
  void envelope(wire::Inbound&& in) override;
  void drained() override;
  void reattached() override;
  void lost(const std::string& reason) override;

  std::unique_ptr<core::EventLoop> loop_;
  TypeRegistry types_;
  HeldQueue queue_;
  PageEvents events_{queue_};
  OpTable ops_;
  ConnectionState link_;
  Sender sender_{link_, queue_, events_, *loop_, ops_};
  PagePorts ports_{link_, sender_, queue_, *loop_, types_, ops_};
  ControllerOps controllerOps_{link_, sender_, ports_, queue_, events_, *loop_, types_, ops_};
  FeatureSet features_{PageContext{*loop_, link_, sender_, queue_, ops_, types_,
                                   [this](Deadline until) { dispatchOnce(until); }}};
};

}  // namespace swipc::page
