#include "page/ports.h"

#include <kj/exception.h>

#include <vector>

#include "core/log.h"
#include "wire/limits.h"

namespace swipc::page {

PagePorts::PagePorts(ConnectionState& link, Sender& sender, HeldQueue& queue, core::EventLoop& loop,
                     const TypeRegistry& types, OpTable& ops)
    : link_(link), sender_(sender), queue_(queue), loop_(loop), types_(types) {
  ops.on(schema::Envelope::PORT_MESSAGE, [this](schema::Envelope::Reader env, const auto& owner) {
    auto pm = env.getPortMessage();
    auto port = routable(pm.getTo());
    if (!port) return;  // moved on or closed: the daemon re-sends or closes what it carried
    detail::QueuedPortMessage m;
    m.seq = pm.getSeq();
    m.keepAlive = owner;
    m.bytes = owner->bytes();
    // The payload and the ports in it were written by another endpoint (the daemon relays them
    // as they are): what cannot be read is this message's messageerror, in its place.
    try {
      m.payload = pm.getPayload();
      m.ports = detail::adoptDescriptors(*this, pm.getPorts(), owner, owner->bytes());
    } catch (const kj::Exception& e) {
      m.ports.clear();
      m.error = makeError(Errc::DATA_CLONE, std::string("malformed port message: ") + e.getDescription().cStr());
      core::log().warn("port {}: message seq={} unreadable: {}", port->id.toString(), m.seq, m.error->message);
    }
    if (!port->receive(std::move(m), true)) ++droppedOverQuota_;
  });
  ops.on(schema::Envelope::PORT_CLOSED, [this](schema::Envelope::Reader env, const auto&) {
    auto port = routable(env.getPortClosed().getPort());
    if (!port) return;
    // Answer, so the daemon can forget the port; it is disentangled here from now on.
    (void)sendPortClose(*port, true);
    port->peerClosed(true);
  });
}

detail::PortPtr PagePorts::routable(uint64_t id) {
  auto it = ports_.find(id);
  if (it == ports_.end()) return nullptr;
  auto p = it->second.lock();
  if (!p || p->mode != detail::PortState::Mode::REMOTE || p->peerGone) return nullptr;
  return p;
}

void PagePorts::untrack(detail::PortState& port) {
  auto it = ports_.find(port.id.value());
  if (it == ports_.end()) return;
  auto cur = it->second.lock();
  if (!cur || cur.get() == &port) ports_.erase(it);
}

void PagePorts::endRemotePorts() {
  std::vector<detail::PortPtr> remote;
  for (auto& [id, w] : ports_)
    if (auto p = w.lock(); p && p->mode == detail::PortState::Mode::REMOTE && !p->peerGone) remote.push_back(std::move(p));
  for (auto& p : remote) p->peerClosed(false);
}

void PagePorts::hostGone() {
  std::vector<detail::PortPtr> all;
  for (auto& [id, w] : ports_)
    if (auto p = w.lock()) all.push_back(std::move(p));
  ports_.clear();
  for (auto& p : all) p->hostGone();
}

uint64_t PagePorts::maxQueuedBytes() const { return link_.options().maxPortQueueBytes; }

uint64_t PagePorts::maxMessageBytes() const {
  return link_.attached() ? link_.conn()->maxMessageBytes() : wire::DEFAULT_MAX_MESSAGE_BYTES;
}

Result<void> PagePorts::postRemote(detail::PortState& from, const core::OutgoingPayload& payload,
                                   std::vector<detail::PortPtr>& transfer) {
  if (!link_.attached()) return {};  // the daemon is gone: its ports are disentangled already
  auto r = sender_.sendEnvelope(
      [&](schema::Envelope::Builder e) {
        auto pp = e.initPortPost();
        pp.setFrom(from.id.value());
        pp.setSeq(from.sendSeq);
        core::writePayload(payload, pp.initPayload());
        detail::ShipContext ctx;
        detail::describeAll(transfer, pp.initPorts(static_cast<unsigned>(transfer.size())), ctx);
      },
      PostOptions{}, true);
  if (!r) return r.error();
  ++from.sendSeq;
  detail::commitAll(transfer);
  return {};
}

Result<MessageSeq> PagePorts::sendPortClose(const detail::PortState& port, bool wake) {
  wire::PlainMessage m;
  m.kind = schema::Envelope::PORT_CLOSE;
  m.to = port.id.value();
  m.portSeq = port.recvNext;
  const Value none;
  auto sent = sender_.sendValue(m, none, PostOptions{}, false, wake);
  SWIPC_ASSERT(sent.has_value(), "a port close always fits one ring record");
  return std::move(*sent);
}

void PagePorts::closeRemote(detail::PortState& port) {
  if (!link_.attached() || link_.closed()) return;
  auto r = sendPortClose(port, !port.quietClose);
  if (!r) core::log().warn("port {}: close not sent: {}", port.id.toString(), r.error().describe());
}

void PagePorts::ackRemote(detail::PortState& port) {
  if (!link_.attached()) return;
  const uint64_t id = port.id.value();
  const uint64_t recvNext = port.recvNext;
  (void)sender_.sendEnvelope(
      [&](schema::Envelope::Builder e) {
        auto a = e.initPortAck();
        a.setPort(id);
        a.setRecvNext(recvNext);
      },
      PostOptions{.waitForSpace = std::chrono::milliseconds(0)}, false);
}

}  // namespace swipc::page
