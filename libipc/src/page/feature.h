// The page's feature seam: how a mechanism that is not part of every page's core (the
// BroadcastChannel today; Background Sync's and Background Fetch's page ops next) plugs into a
// Client without the Client knowing it.
//
//   PageContext   what a feature gets: the loop (fds, timers), the connection, the sender, the
//                 delivery queue, the op table to register its envelope kinds with, the types
//   PageFeature   what a feature is told: re-attached, detaching, closing
//   FeatureSet    the page's features, in the order they were added, each told in that order
//
// A feature registers the envelope kinds it handles with ctx.ops when it is made (a kind has one
// owner), sends through ctx.sender, runs user callbacks through ctx.queue.deliver() (never
// inside a blocking call) and keeps its own state. What it must tell a new daemon goes in
// reattached(); what it holds that dies with the daemon goes in detaching().
#pragma once

#include <functional>
#include <memory>
#include <typeinfo>
#include <vector>

#include "core/event_loop.h"
#include "page/connection_state.h"
#include "page/held_queue.h"
#include "page/op_table.h"
#include "page/sender.h"
#include "swipc/message_event.h"

namespace swipc::page {

/// What a feature module gets from the page it serves. Every reference outlives the feature.
struct PageContext {
  core::EventLoop& loop;      // the page's loop: watch fds, add timers (everything runs on its thread)
  ConnectionState& link;      // attached(), conn(), generation(), closed()
  Sender& sender;             // the one way out: sendEnvelope(), sendValue()
  HeldQueue& queue;           // deliver(): user callbacks run now or right after a blocking call
  OpTable& ops;               // register the envelope kinds the feature handles
  const TypeRegistry& types;  // what the page decodes typed payloads with
  /// One step of the page's loop (Page::dispatchOnce): what a feature's blocking call runs
  /// until it is answered.
  std::function<void(Deadline until)> dispatchOnce;
};

/// A feature on the page side. @concurrent: single-threaded (the page's loop thread).
class PageFeature {
 public:
  virtual ~PageFeature() = default;
  /// Attached to a daemon again: send it what it must know (joins, registrations).
  virtual void reattached() {}
  /// The daemon is going: the connection is still there (what it left in shared memory can be
  /// read) but nothing is sent any more. Drop what dies with it.
  virtual void detaching() {}
  /// The page closes: end every object of the feature; no callback of it runs after this.
  virtual void closing() {}
};

/// The page's features. Lifecycle calls reach them in the order they were added.
class FeatureSet {
 public:
  explicit FeatureSet(PageContext ctx) : ctx_(ctx) {}
  FeatureSet(const FeatureSet&) = delete;
  FeatureSet& operator=(const FeatureSet&) = delete;

  PageContext& context() { return ctx_; }

  /// Adds `feature`; returns it.
  template <typename F>
  F& add(std::unique_ptr<F> feature) {
    F& f = *feature;
    features_.push_back(std::move(feature));
    return f;
  }
  /// The feature of type F, nullptr when none was added.
  template <typename F>
  F* find() const {
    for (const auto& f : features_)
      if (auto* p = dynamic_cast<F*>(f.get())) return p;
    return nullptr;
  }
  /// The feature of type F, made (F(PageContext&)) and added on first use.
  template <typename F>
  F& get() {
    if (F* f = find<F>()) return *f;
    return add(std::make_unique<F>(ctx_));
  }

  void reattached();
  void detaching();
  void closing();

 private:
  PageContext ctx_;
  std::vector<std::unique_ptr<PageFeature>> features_;
};

}  // namespace swipc::page
