#include "daemon/port_service.h"

#include <cstdint>
#include <cstring>

#include "core/log.h"

namespace swipc::daemon {

namespace {

/// ClientId equality as two word compares (operator== calls memcmp; this runs per port change).
bool sameId(const ClientId& a, const ClientId& b) {
  uint64_t x[2], y[2];
  std::memcpy(x, a.bytes().data(), sizeof x);
  std::memcpy(y, b.bytes().data(), sizeof y);
  return ((x[0] ^ y[0]) | (x[1] ^ y[1])) == 0;
}

}  // namespace

PortService::PortService(ClientTable& clients, Outbound& outbound, core::EventLoop& loop, const TypeRegistry& types,
                         const ServiceWorkerOptions& options)
    : clients_(clients),
      outbound_(outbound),
      loop_(loop),
      types_(types),
      opts_(options),
      router_(std::make_unique<PortRouter>(*this, *this)) {
  // Its ports close: every surviving peer gets `close`.
  clients_.onDetach([this](ClientRecord& c) {
    router_->clientGone(c.id);
    if (counted_ == &c) counted_ = nullptr;  // it owns nothing now, and its record goes soon
  });
}

PortService::~PortService() { endLocalPorts(); }

void PortService::endLocalPorts() {
  for (auto& p : router_->takeLocalPorts()) p->hostGone();
}

void PortService::registerWith(Dispatch& dispatch) {
  dispatch.handle(schema::Envelope::PORT_POST, [this, &dispatch](ClientRecord& c, schema::Envelope::Reader env,
                                                                 const std::shared_ptr<const wire::Inbound>& owner) {
    if (!onPost(c, env, owner)) return false;
    dispatch.markActive();
    return true;
  });
  dispatch.handle(schema::Envelope::PORT_CLOSE,
                  [this](ClientRecord& c, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>&) {
                    auto pc = env.getPortClose();
                    if (auto ok = router_->onPortClose(c.id, PortId(pc.getPort()), pc.getRecvNext()); !ok) {
                      clients_.violation(c, ok.error());
                      return false;
                    }
                    return true;
                  });
  dispatch.handlePlain(schema::Envelope::PORT_CLOSE, Dispatch::PlainHandler::of<&PortService::onPlainClose>(this));
  dispatch.handle(schema::Envelope::PORT_ACK,
                  [this](ClientRecord& c, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>&) {
                    auto ack = env.getPortAck();
                    router_->onPortAck(c.id, PortId(ack.getPort()), ack.getRecvNext());
                    return true;
                  });
}

bool PortService::onPost(ClientRecord& c, schema::Envelope::Reader env,
                         const std::shared_ptr<const wire::Inbound>& owner) {
  auto post = env.getPortPost();
  size_t registrations = 0;
  if (auto ok = router_->checkPost(c.id, post, &registrations); !ok) {
    clients_.violation(c, ok.error());
    return false;
  }
  // Relayed as they are to whoever holds the peer (or the ports' next owners): they must be
  // readable there. The sender is the one at fault.
  if (auto ok = owner->checkPayloads(); !ok) {
    clients_.violation(c, ok.error());
    return false;
  }
  if (auto ok = router_->admitShipped(c.id, registrations); !ok) {
    outbound_.sendError(c, ok.error().code, ok.error().message, env.getSeq());
    router_->refuse(c.id, post.getPorts());
    return true;
  }
  router_->onPortPost(c.id, post, env.getSeq(), owner, owner->bytes());
  return true;
}

bool PortService::onPlainClose(ClientRecord& c, const wire::PlainMessage& m, ExtendableMessageEvent&) {
  if (auto ok = router_->onPortClose(c.id, PortId(m.to), m.portSeq); !ok) {
    clients_.violation(c, ok.error());
    return false;
  }
  return true;
}

// ------------------------------------------------------------------------------------------------ PortHost

Result<void> PortService::postRemote(detail::PortState& from, const core::OutgoingPayload& payload,
                                     std::vector<detail::PortPtr>& transfer) {
  return router_->postFromLocal(from, payload, transfer);
}

void PortService::closeRemote(detail::PortState& port) { router_->closeLocal(port); }
void PortService::track(const detail::PortPtr& port) { router_->trackLocal(port); }
void PortService::untrack(detail::PortState& port) { router_->untrackLocal(port); }
void PortService::later(std::function<void()> fn) { loop_.post(std::move(fn)); }

// ------------------------------------------------------------------------------------------------ Sink

std::shared_ptr<capnp::MallocMessageBuilder> PortService::newEnvelope(const ClientId& id, MessageSeq& seq) {
  ClientRecord* c = clients_.findAlive(id);
  if (!c) return nullptr;
  return outbound_.newEnvelope(*c, seq);
}

Result<void> PortService::enqueue(const ClientId& id, const std::shared_ptr<capnp::MallocMessageBuilder>& env,
                                  MessageSeq seq) {
  ClientRecord* c = clients_.findAlive(id);
  if (!c) return makeError(Errc::NOT_FOUND, "client " + id.toString() + " is gone");
  auto r = outbound_.enqueue(*c, env, seq);
  if (!r) return r.error();
  return {};
}

bool PortService::backlogFull(const ClientId& id) {
  ClientRecord* c = clients_.find(id);
  return c && outbound_.backlogFull(*c);
}

void PortService::reportError(const ClientId& id, Errc code, const std::string& message, uint64_t refSeq) {
  if (ClientRecord* c = clients_.findAlive(id)) outbound_.sendError(*c, code, message, refSeq);
}

size_t PortService::copyLimit() const {
  // What a well-behaved owner can have unread: a ring of minimal records plus a full backlog,
  // plus the acknowledgement interval.
  return opts_.maxBacklog + opts_.ringBytes / 16 + 2 * detail::PortState::ACK_EVERY;
}

void PortService::disconnect(const ClientId& id, const Error& why) {
  // Not from inside the routing that noticed it: the loop does it next.
  loop_.post([this, id, why] {
    if (ClientRecord* c = clients_.findAlive(id)) clients_.violation(*c, why);
  });
}

PortService::Direct PortService::sendPortValue(const ClientId& id, PortId to, uint64_t portSeq, const Value& data) {
  ClientRecord* c = clients_.findAlive(id);
  if (!c) return Direct::GONE;
  wire::PlainMessage m;
  m.kind = schema::Envelope::PORT_MESSAGE;
  m.to = to.value();
  m.portSeq = portSeq;
  switch (outbound_.sendDirect(*c, m, data)) {
    case Outbound::Direct::SENT: return Direct::SENT;
    case Outbound::Direct::NOT_NOW: return Direct::NOT_NOW;
    case Outbound::Direct::BROKEN: return Direct::BROKEN;
  }
  return Direct::BROKEN;
}

void PortService::portsOwned(const ClientId& id, int delta) {
  // Most changes come in pairs for one client (messageSW registers its reply port, then drops
  // it): the last record found is kept, so they cost a compare, not two table lookups.
  if (!counted_ || !sameId(counted_->id, id)) counted_ = clients_.find(id);
  ClientRecord* c = counted_;
  if (!c) return;
  SWIPC_ASSERT(delta >= 0 || c->usage.ports >= static_cast<uint64_t>(-delta),
               "client " + id.toString() + " would own fewer than no ports");
  c->usage.ports += static_cast<uint64_t>(static_cast<int64_t>(delta));
}

Result<void> PortService::admitPorts(const ClientId& id, size_t more) {
  ClientRecord* c = clients_.find(id);
  if (!c || opts_.maxPortsPerClient == 0 || c->usage.ports + more <= opts_.maxPortsPerClient) return {};
  // Live ports and tombstones alike: a client that never answers portClosed fills its own quota.
  core::log().warn("quota: client={} would own {} ports (it owns {}; --max-ports-per-client {}): message refused",
                   id.toString(), c->usage.ports + more, c->usage.ports, opts_.maxPortsPerClient);
  return makeError(Errc::QUOTA_EXCEEDED, "more than " + std::to_string(opts_.maxPortsPerClient) +
                                             " ports registered by this client (--max-ports-per-client); message refused");
}

}  // namespace swipc::daemon
