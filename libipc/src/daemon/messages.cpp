#include "daemon/messages.h"

#include "core/log.h"
#include "core/user_code.h"
#include "wire/codec.h"

namespace swipc::daemon {

void Messages::registerWith(Dispatch& dispatch) {
  dispatch.handle(schema::Envelope::CONTROLLER_POST,
                  [this](ClientRecord& c, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>& owner) {
                    return onPost(c, env, owner);
                  });
  dispatch.handlePlain(schema::Envelope::CONTROLLER_POST, Dispatch::PlainHandler::of<&Messages::onPlainPost>(this));
}

bool Messages::onPost(ClientRecord& c, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>& owner) {
  auto post = env.getControllerPost();
  const MessageSeq seq = env.getSeq();
  const ClientId id = c.id;
  switch (admitPost(c, seq, post.getReplyId())) {
    case Gate::DELIVER: break;
    case Gate::REFUSED: return true;
    case Gate::VIOLATION: return false;
  }
  PortRouter& router = ports_.router();
  size_t registrations = 0;
  if (auto ok = router.checkShipped(id, post.getPorts(), {}, &registrations); !ok) {
    clients_.violation(c, ok.error());
    return false;
  }
  // The messages queued at the ports it ships go on to wherever service-worker code sends the
  // ports (RELAY_PORT): readable there, or the sender's violation now.
  if (auto ok = owner->checkPayloads(); !ok) {
    clients_.violation(c, ok.error());
    return false;
  }
  if (auto ok = router.admitShipped(id, registrations); !ok) {
    outbound_.sendError(c, ok.error().code, ok.error().message, seq);
    router.refuse(id, post.getPorts());
    return true;
  }
  ExtendableMessageEvent ev;
  // The ports are the service worker's now, whatever becomes of the payload.
  for (auto& p : router.toServiceWorker(id, post.getPorts())) ev.ports.emplace_back(p);
  if (auto r = core::readPayload(post.getPayload(), owner, types_, ev); !r) {
    // A plain envelope's Value is checked only as it is decoded: malformed bytes are still a
    // protocol violation, a value this build cannot represent is a messageerror.
    if (auto whole = owner->checkAll(); !whole) {
      clients_.violation(c, whole.error());
      return false;
    }
    ++counters_.messageErrors;
    core::log().warn("messageerror from client={} seq={}: {}", id.toString(), seq, r.error().describe());
    if (onMessageError_)
      core::callUser("onMessageError",
                     [&] { onMessageError_(MessageErrorEvent{"serviceworker", r.error()}, api_.handleFor(c)); });
    ackIfWanted(id, seq, post.getWantAck());
    return true;
  }
  deliverPost(c, seq, post.getWantAck(), ev);
  return true;
}

bool Messages::onPlainPost(ClientRecord& c, const wire::PlainMessage& m, ExtendableMessageEvent& ev) {
  switch (admitPost(c, m.seq, m.replyId)) {
    case Gate::DELIVER: break;
    case Gate::REFUSED: return true;
    case Gate::VIOLATION: return false;
  }
  if (m.hasPort) {
    if (auto ok = ports_.router().admitShipped(c.id, 1); !ok) {
      outbound_.sendError(c, ok.error().code, ok.error().message, m.seq);
      return true;  // the pair was never registered: nothing to close
    }
    // The port is the service worker's now (the general path's checkShipped + toServiceWorker).
    auto port = ports_.router().adoptRegistered(c.id, PortId(m.port.portId), PortId(m.port.peerId), m.port.sendSeq,
                                                m.port.recvNext, m.port.silentPeer);
    if (!port) {
      clients_.violation(c, port.error());
      return false;
    }
    ev.ports.emplace_back(std::move(*port));
  }
  deliverPost(c, m.seq, m.wantAck, ev);
  return true;
}

Messages::Gate Messages::admitPost(ClientRecord& c, MessageSeq seq, uint64_t replyId) {
  ++counters_.messagesIn;  // (the drain loop marks activity once per batch)
  if (!c.controlled) {
    // Rejected, not consumed: the error (not an ack) is the outcome the sender sees.
    outbound_.sendError(c, Errc::INVALID_STATE, "client is not controlled by this service worker", seq);
    return Gate::REFUSED;
  }
  if (replyId != 0) {
    clients_.violation(c, makeError(Errc::PROTOCOL_VIOLATION, "one-shot reply ids are gone since protocol 2 (use a port)"));
    return Gate::VIOLATION;
  }
  return Gate::DELIVER;
}

void Messages::deliverPost(ClientRecord& c, MessageSeq seq, bool wantAck, ExtendableMessageEvent& ev) {
  const ClientId id = c.id;  // the handler may detach c
  api_.refreshHandle(ev.source, c);
  if (onMessage_) core::callUser("the service worker's message handler", [&] { onMessage_(ev); });
  ackIfWanted(id, seq, wantAck);
}

void Messages::ackIfWanted(const ClientId& id, MessageSeq seq, bool wantAck) {
  if (!wantAck) return;
  if (auto* cr = clients_.findAlive(id)) {
    MessageSeq s;
    auto mb = outbound_.newEnvelope(*cr, s);
    mb->getRoot<schema::Envelope>().initAck().setSeq(seq);
    (void)outbound_.enqueue(*cr, std::move(mb), s);
  }
}

Result<MessageSeq> Messages::postToClient(const ClientId& id, const core::OutgoingPayload& payload,
                                          TransferList& transfer) {
  auto ports = detail::checkTransfer(nullptr, ports_, transfer);
  if (!ports) return ports.error();
  ClientRecord* c = clients_.findAlive(id);
  if (!c) {
    ++counters_.undelivered;
    return makeError(Errc::NOT_FOUND, "client " + id.toString() + " is gone");
  }
  if (auto ok = outbound_.admitPost(*c); !ok) return ok.error();
  if (ports->empty() && payload.value) {
    wire::PlainMessage m;
    m.kind = schema::Envelope::CLIENT_POST;
    switch (outbound_.sendDirect(*c, m, *payload.value)) {
      case Outbound::Direct::SENT: return m.seq;
      case Outbound::Direct::BROKEN: return makeError(Errc::DISCONNECTED, "client disconnected");
      case Outbound::Direct::NOT_NOW: break;
    }
  }
  MessageSeq seq;
  auto mb = outbound_.newEnvelope(*c, seq);
  auto post = mb->getRoot<schema::Envelope>().initClientPost();
  core::writePayload(payload, post.initPayload());
  if (!ports->empty()) {
    if (wire::encodedBytes(*mb) > ports_.maxMessageBytes()) {
      ++counters_.oversize;
      return makeError(Errc::QUOTA_EXCEEDED, "message larger than --max-message-bytes; nothing sent");
    }
    ports_.router().shipToClient(id, *ports, post.initPorts(static_cast<unsigned>(ports->size())));
    auto r = outbound_.enqueue(*c, mb, seq);
    if (!r) ports_.router().undeliverable(id, mb->getRoot<schema::Envelope>().asReader().getClientPost().getPorts());
    return r;
  }
  return outbound_.enqueue(*c, std::move(mb), seq);
}

}  // namespace swipc::daemon
