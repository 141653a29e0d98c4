// BroadcastFeature: BroadcastChannel in the daemon, as a Feature. It owns the BroadcastHub, takes
// the clients' bcJoin / bcLeave / bcPost envelopes through the FeatureHost's dispatch, has a
// leaving client's objects leave through its detach hook, and is the hub's Sink (rings passed over
// the client's socket, bcJoined / ack / errors through the host's outbound sender).
//
// @concurrent: single-threaded; the daemon's loop thread.
#pragma once

#include <memory>

#include "daemon/broadcast_hub.h"
#include "daemon/feature.h"

namespace swipc::daemon {

class BroadcastFeature final : public Feature, private BroadcastHub::Sink {
 public:
  BroadcastFeature(BroadcastHub::Config config, const TypeRegistry& types, Counters& counters)
      : hub_(std::make_shared<BroadcastHub>(static_cast<BroadcastHub::Sink&>(*this), config, types, counters)) {}

  std::string_view name() const override { return "broadcast-channel"; }
  Result<void> start(FeatureHost& host) override;
  void stop() override;

  /// What the service worker's own BroadcastChannel objects talk to (usable before start()).
  std::shared_ptr<detail::BroadcastHub> localHub() const { return hub_; }
  const BroadcastHub& hub() const { return *hub_; }

 private:
  // ---- BroadcastHub::Sink
  bool passRing(const ClientId& id, uint64_t ringId, uint64_t capacity, int fd) override;
  void joined(const ClientId& id, const BroadcastHub::Joined& joined) override;
  void ack(const ClientId& id, MessageSeq seq) override;
  void reportError(const ClientId& id, Errc code, const std::string& message, uint64_t refSeq) override;
  void violation(const ClientId& id, const Error& why) override;
  void channelsJoined(const ClientId& id, int delta) override;
  void published(bool firstSinceFlush) override;

  /// bcPost from the fast lane (wire/plain_post.h): its Value is in ev.data.
  bool onPlainPost(ClientRecord& c, const wire::PlainMessage& m, ExtendableMessageEvent& ev);
  /// The alive client `id` (nullptr before start() or when gone).
  ClientRecord* client(const ClientId& id) const;

  FeatureHost* host_ = nullptr;
  std::shared_ptr<BroadcastHub> hub_;
};

}  // namespace swipc::daemon
