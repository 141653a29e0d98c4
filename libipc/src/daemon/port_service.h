// PortService: the port router put to work in the daemon. It is the router's Sink (how it
// reaches clients: envelopes, backlog, fast lane, disconnects, accounting), the PortHost of the
// MessagePorts service-worker code holds, and it takes the clients' port envelopes (portPost,
// portClose, portAck) from Dispatch; a client that leaves has its ports closed. What a client
// sends on to another endpoint is checked here first (wire::Inbound::checkPayloads): a payload
// another client could not read is its sender's ProtocolViolation, never its receiver's crash.
//
// @concurrent: single-threaded; the daemon's loop thread.
#pragma once

#include <memory>

#include "core/event_loop.h"
#include "core/port_state.h"
#include "daemon/client_table.h"
#include "daemon/dispatch.h"
#include "daemon/outbound.h"
#include "daemon/port_router.h"
#include "swipc/service_worker.h"

namespace swipc::daemon {

class PortService final : public detail::PortHost, public PortRouter::Sink {
 public:
  /// Registers a detach hook: a leaving client's ports close (their peers get `close`).
  PortService(ClientTable& clients, Outbound& outbound, core::EventLoop& loop, const TypeRegistry& types,
              const ServiceWorkerOptions& options);
  ~PortService() override;
  PortService(const PortService&) = delete;
  PortService& operator=(const PortService&) = delete;

  /// Takes portPost, portClose (both lanes) and portAck; a portPost counts as activity.
  void registerWith(Dispatch& dispatch);
  PortRouter& router() { return *router_; }
  const PortRouter& router() const { return *router_; }
  /// Every port service-worker code still holds ends (closed, no callbacks): the host is going.
  void endLocalPorts();

  // ---- detail::PortHost: service-worker code's ports
  Result<void> postRemote(detail::PortState& from, const core::OutgoingPayload& payload,
                          std::vector<detail::PortPtr>& transfer) override;
  void closeRemote(detail::PortState& port) override;
  void ackRemote(detail::PortState&) override {}
  void track(const detail::PortPtr& port) override;
  void untrack(detail::PortState& port) override;
  void later(std::function<void()> fn) override;
  void deliver(std::function<void()> fn) override { fn(); }
  bool shieldsUserCode() const override { return true; }
  const TypeRegistry& types() const override { return types_; }
  uint64_t maxMessageBytes() const override { return opts_.maxMessageBytes; }
  uint64_t maxQueuedBytes() const override { return opts_.maxPortQueueBytes; }

  // ---- PortRouter::Sink: the router's view of clients
  std::shared_ptr<capnp::MallocMessageBuilder> newEnvelope(const ClientId& id, MessageSeq& seq) override;
  Result<void> enqueue(const ClientId& id, const std::shared_ptr<capnp::MallocMessageBuilder>& env,
                       MessageSeq seq) override;
  bool backlogFull(const ClientId& id) override;
  void reportError(const ClientId& id, Errc code, const std::string& message, uint64_t refSeq) override;
  size_t copyLimit() const override;
  void disconnect(const ClientId& id, const Error& why) override;
  Direct sendPortValue(const ClientId& id, PortId to, uint64_t portSeq, const Value& data) override;
  void portsOwned(const ClientId& id, int delta) override;
  Result<void> admitPorts(const ClientId& id, size_t more) override;

 private:
  /// A port post: checked (ownership, every payload it relays, the sender's port quota), then
  /// routed. False when the sender was disconnected for it.
  bool onPost(ClientRecord& c, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>& owner);
  /// A portClose read by the fast lane.
  bool onPlainClose(ClientRecord& c, const wire::PlainMessage& m, ExtendableMessageEvent& ev);

  ClientTable& clients_;
  Outbound& outbound_;
  core::EventLoop& loop_;
  const TypeRegistry& types_;
  const ServiceWorkerOptions& opts_;
  std::unique_ptr<PortRouter> router_;
  ClientRecord* counted_ = nullptr;  // the record portsOwned() last found (cleared at its detach)
};

}  // namespace swipc::daemon
