#include "core/port_state.h"

#include <algorithm>
#include <cstdio>

#include "core/identity.h"
#include "core/user_code.h"
#include "core/log.h"
#include "wire/codec.h"

namespace swipc {

PortId core::newPortId() {
  uint64_t v = 0;
  while (v == 0) v = randomIdU64();
  return PortId(v);
}

namespace detail {

PortState::~PortState() {
  // The last handle went away: that closes the port (the peer gets `close`).
  if (mode == Mode::LOCAL) {
    if (auto p = localPeer.lock()) p->peerClosed(false);
  } else if (mode == Mode::REMOTE && host && !peerGone) {
    host->closeRemote(*this);
  }
  if (host && live()) host->untrack(*this);
}

std::pair<PortPtr, PortPtr> PortState::createPair(PortHost& host) {
  PortId a = core::newPortId();
  PortId b = core::newPortId();
  while (b == a) b = core::newPortId();
  auto p1 = std::make_shared<PortState>(&host, a, b, Mode::LOCAL);
  auto p2 = std::make_shared<PortState>(&host, b, a, Mode::LOCAL);
  p1->localPeer = p2;
  p2->localPeer = p1;
  host.track(p1);
  host.track(p2);
  return {p1, p2};
}

Result<QueuedPortMessage> encodeLocal(const core::OutgoingPayload& payload, uint64_t maxBytes) {
  auto mb = std::make_shared<capnp::MallocMessageBuilder>(64);
  core::writePayload(payload, mb->initRoot<schema::Payload>());
  if (wire::encodedBytes(*mb) > maxBytes)
    return makeError(Errc::QUOTA_EXCEEDED, "message larger than the limit of " + std::to_string(maxBytes) + " bytes");
  QueuedPortMessage m;
  m.payload = mb->getRoot<schema::Payload>().asReader();
  m.keepAlive = std::move(mb);
  return m;
}

Result<void> PortState::post(const core::OutgoingPayload& payload, TransferList& transfer) {
  if (!host || !entangled()) return {};  // closed, neutered or disentangled: a no-op
  auto ports = checkTransfer(this, *host, transfer);
  if (!ports) return ports.error();
  if (mode == Mode::REMOTE) return host->postRemote(*this, payload, *ports);
  auto peerState = localPeer.lock();
  if (!peerState) return {};
  auto m = encodeLocal(payload, host->maxMessageBytes());
  if (!m) return m.error();
  m->seq = sendSeq++;
  for (auto& p : *ports) m->ports.push_back(p->moveHere());
  peerState->receive(std::move(*m), false);
  return {};
}

bool PortState::accept(uint64_t seq) {
  if (!live()) return false;
  if (seq < recvNext) {
    core::log().debug("port {}: duplicate message seq={} dropped", id.toString(), seq);
    return false;
  }
  recvNext = seq + 1;
  if (mode == Mode::REMOTE && host && ++unacked >= ACK_EVERY) {
    unacked = 0;
    host->ackRemote(*this);
  }
  return true;
}

bool PortState::overQuota(uint64_t bytes) const {
  const uint64_t limit = host ? host->maxQueuedBytes() : 0;
  return limit != 0 && !queue.empty() && queuedBytes + bytes > limit;
}

void PortState::dropOverQuota(QueuedPortMessage& m) {
  // The message goes (its ports close as it does). One messageerror stands for every message
  // dropped in a row, at the place where they were dropped; it is the port's to hold, not the
  // messages', so the bound holds whatever the sender does.
  ++droppedOverQuota;
  const bool firstInRun = queue.empty() || !queue[queue.size() - 1].error ||
                          queue[queue.size() - 1].error->code != Errc::QUOTA_EXCEEDED;
  if (firstInRun) {
    core::log().warn("port {}: message seq={} ({} bytes) dropped: {} bytes already wait at this port (bound {}); "
                     "{} dropped here so far",
                     id.toString(), m.seq, m.bytes, queuedBytes, host->maxQueuedBytes(), droppedOverQuota);
    QueuedPortMessage marker;
    marker.seq = m.seq;
    marker.error = makeError(Errc::QUOTA_EXCEEDED, "messages dropped: more than " +
                                                       std::to_string(host->maxQueuedBytes()) +
                                                       " bytes waited at this port before it was started");
    queue.push_back(std::move(marker));
  } else {
    core::log().debug("port {}: message seq={} dropped ({} dropped here so far)", id.toString(), m.seq,
                      droppedOverQuota);
  }
}

bool PortState::receive(QueuedPortMessage m, bool now) {
  if (!accept(m.seq)) return true;
  if (intercept) {
    auto fn = intercept;  // may close this port
    fn(m);
    return true;
  }
  if (overQuota(m.bytes)) {
    dropOverQuota(m);
    if (started) scheduleFlush(now);
    return false;
  }
  queuedBytes += m.bytes;
  queue.push_back(std::move(m));
  if (started) scheduleFlush(now);
  return true;
}

void PortState::receiveValue(uint64_t seq, Value& data) {
  if (!interceptValue || !accept(seq)) return;
  auto fn = interceptValue;  // may close this port
  fn(data);
}

void PortState::start() {
  if (!live() || started) return;
  started = true;
  if (!queue.empty() || peerGone) scheduleFlush(false);
}

void PortState::close() {
  if (!live()) return;
  const Mode was = mode;
  end(Mode::CLOSED);
  if (was == Mode::LOCAL) {
    if (auto p = localPeer.lock()) p->peerClosed(false);
    localPeer.reset();
  } else if (host && !peerGone) {
    host->closeRemote(*this);
  }
  if (host) host->untrack(*this);
}

void PortState::peerClosed(bool now) {
  if (!live() || peerGone) return;
  peerGone = true;
  localPeer.reset();
  if (interceptClose) {
    auto fn = interceptClose;
    fn();
    return;
  }
  scheduleFlush(now);
}

void PortState::closeListenerSet() {
  if (peerGone && !closeFired_) scheduleFlush(false);
}

void PortState::hostGone() {
  host = nullptr;
  end(Mode::CLOSED);
}

void PortState::end(Mode final) {
  mode = final;
  queue.clear();
  queuedBytes = 0;
  onMessage = nullptr;
  onMessageError = nullptr;
  onClose = nullptr;
  intercept = nullptr;
  interceptClose = nullptr;
  interceptValue = nullptr;
}

void PortState::scheduleFlush(bool now) {
  if (flushScheduled_ || !host) return;
  flushScheduled_ = true;
  std::weak_ptr<PortState> weak = weak_from_this();
  auto fn = [weak] {
    if (auto s = weak.lock()) s->flush();
  };
  if (now)
    host->deliver(std::move(fn));
  else
    host->later(std::move(fn));
}

namespace {
template <typename F>
void runHandler(const PortHost* host, F&& fn) {
  if (host && host->shieldsUserCode())
    core::callUser("a MessagePort handler", fn);
  else
    fn();
}
}  // namespace

void PortState::flush() {
  flushScheduled_ = false;
  auto self = shared_from_this();  // a handler may drop the last handle
  while (started && live() && !queue.empty()) {
    QueuedPortMessage m = std::move(queue.front());
    queue.pop_front();
    queuedBytes = queue.empty() ? 0 : queuedBytes - std::min(queuedBytes, m.bytes);
    dispatch(m);
  }
  // `close` comes after every message that arrived before it: a port holding messages
  // (not started) gets it once it has delivered them.
  // Fired once somebody listens: a port that arrives closed gets its handler set only later.
  if (live() && peerGone && !closeFired_ && queue.empty() && onClose) {
    closeFired_ = true;
    auto fn = onClose;
    runHandler(host, [&] { fn(); });
  }
}

void PortState::dispatch(QueuedPortMessage& m) {
  MessageEvent ev;
  auto r = m.error ? Result<void>(*m.error) : core::readPayload(m.payload, m.keepAlive, host->types(), ev);
  if (!r) {
    if (auto fn = onMessageError) runHandler(host, [&] { fn(MessageErrorEvent{"messageport", r.error()}); });
    return;
  }
  ev.ports.reserve(m.ports.size());
  for (auto& p : m.ports) ev.ports.emplace_back(p);
  m.ports.clear();
  if (auto fn = onMessage) runHandler(host, [&] { fn(ev); });  // a copy: the handler may close this port
}

void PortState::describe(schema::PortDescriptor::Builder d, ShipContext& ctx) const {
  d.setPortId(id.value());
  d.setPeerId(peer.value());
  d.setSendSeq(sendSeq);
  d.setRecvNext(recvNext);
  d.setPeerClosed(peerGone);
  if (mode == Mode::LOCAL && !peerGone && !ctx.registered.count(id.value())) {
    d.setRegister(true);  // first time the daemon hears of this pair
    if (auto p = localPeer.lock(); p && p->quietClose) d.setSilentPeer(true);
    ctx.registered.insert(id.value());
    ctx.registered.insert(peer.value());
  }
  auto q = d.initQueued(static_cast<unsigned>(queue.size()));
  for (size_t i = 0; i < queue.size(); ++i) {
    auto out = q[static_cast<unsigned>(i)];
    out.setTo(id.value());
    out.setSeq(queue[i].seq);
    out.setPayload(queue[i].payload);
    describeAll(queue[i].ports, out.initPorts(static_cast<unsigned>(queue[i].ports.size())), ctx);
  }
}

void PortState::commitShip() {
  if (mode == Mode::LOCAL) {
    if (auto p = localPeer.lock()) {
      p->mode = Mode::REMOTE;  // its posts now go through the daemon
      p->localPeer.reset();
    }
  }
  for (size_t i = 0; i < queue.size(); ++i) commitAll(queue[i].ports);
  neuter();
}

void PortState::neuter() {
  if (host) host->untrack(*this);
  localPeer.reset();
  end(Mode::NEUTERED);
}

PortPtr PortState::moveHere() {
  auto n = std::make_shared<PortState>(host, id, peer, mode);
  n->sendSeq = sendSeq;
  n->recvNext = recvNext;
  n->unacked = unacked;
  n->peerGone = peerGone;
  n->queue = std::move(queue);
  n->queuedBytes = queuedBytes;
  n->droppedOverQuota = droppedOverQuota;
  n->localPeer = localPeer;
  if (mode == Mode::LOCAL)
    if (auto p = localPeer.lock()) p->localPeer = n;
  neuter();
  if (n->host) n->host->track(n);
  return n;
}

Result<std::vector<PortPtr>> checkTransfer(const PortState* from, const PortHost& host, TransferList& transfer) {
  std::vector<PortPtr> out;
  out.reserve(transfer.size());
  for (const auto& pending : transfer.ports()) {
    const PortPtr& s = pending.state();
    if (!s) return makeError(Errc::DATA_CLONE, "transfer list holds an unbound port");
    if (s.get() == from) return makeError(Errc::DATA_CLONE, "a port cannot transfer itself");
    if (from && s->id == from->peer) return makeError(Errc::DATA_CLONE, "a port cannot transfer its own peer");
    if (!s->live()) return makeError(Errc::DATA_CLONE, "port " + s->id.toString() + " is closed or already transferred");
    if (s->host != &host) return makeError(Errc::DATA_CLONE, "port belongs to another client");
    for (const auto& o : out)
      if (o == s) return makeError(Errc::DATA_CLONE, "port " + s->id.toString() + " is in the transfer list twice");
    out.push_back(s);
  }
  return out;
}

void describeAll(const std::vector<PortPtr>& ports, capnp::List<schema::PortDescriptor>::Builder out, ShipContext& ctx) {
  for (size_t i = 0; i < ports.size(); ++i) ports[i]->describe(out[static_cast<unsigned>(i)], ctx);
}

void commitAll(const std::vector<PortPtr>& ports) {
  for (const auto& p : ports) p->commitShip();
}

std::vector<PortPtr> adoptDescriptors(PortHost& host, capnp::List<schema::PortDescriptor>::Reader ds,
                                      const std::shared_ptr<const void>& keepAlive, uint64_t envelopeBytes) {
  std::vector<PortPtr> out;
  out.reserve(ds.size());
  for (auto d : ds) {
    auto s = std::make_shared<PortState>(&host, PortId(d.getPortId()), PortId(d.getPeerId()), PortState::Mode::REMOTE);
    s->sendSeq = d.getSendSeq();
    s->recvNext = d.getRecvNext();
    for (auto q : d.getQueued()) {
      QueuedPortMessage m;
      m.seq = q.getSeq();
      m.keepAlive = keepAlive;
      m.payload = q.getPayload();
      m.ports = adoptDescriptors(host, q.getPorts(), keepAlive);
      // Released when this message leaves the queue (or the queue empties).
      m.bytes = s->queue.empty() ? envelopeBytes : 0;
      s->queuedBytes += m.bytes;
      s->queue.push_back(std::move(m));
    }
    host.track(s);
    if (d.getPeerClosed()) s->peerClosed(false);  // from the loop: the receiver sets onClose first
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace detail

}  // namespace swipc
