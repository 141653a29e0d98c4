#include "daemon/port_router.h"

#include <algorithm>

#include "core/log.h"
#include "wire/codec.h"
#include "wire/value_decode.h"

namespace swipc::daemon {

namespace {

constexpr int MAX_PORT_NESTING = 16;
constexpr size_t MAX_PORTS_PER_MESSAGE = 4096;
/// First-segment size of the small builders made per message (they grow when needed): a big
/// first segment costs a calloc + memset on every message.
constexpr unsigned DESCRIPTOR_WORDS = 32;
constexpr unsigned MESSAGE_WORDS = 64;

Error violation(const std::string& what) { return makeError(Errc::PROTOCOL_VIOLATION, what); }

}  // namespace

PortRouter::Entry* PortRouter::find(PortId id) {
  auto it = table_.find(id.value());
  return it == table_.end() ? nullptr : &it->second;
}

const PortRouter::Entry* PortRouter::find(PortId id) const {
  auto it = table_.find(id.value());
  return it == table_.end() ? nullptr : &it->second;
}

bool PortRouter::canRegister(uint64_t id, uint64_t peer) const {
  return id != 0 && peer != 0 && peer != id && !table_.count(id) && !table_.count(peer);
}

void PortRouter::registerPair(PortId id, PortId peer, const Owner& dest, const Owner& from, bool silentPeer) {
  Entry shipped;
  shipped.peer = peer;
  shipped.owner = dest;
  table_.emplace(id.value(), std::move(shipped));
  countOwned(dest, 1);
  Entry stays;
  stays.peer = id;
  stays.owner = from;
  stays.silent = !from.local && silentPeer;
  if (from.local) {
    if (auto it = localStates_.find(peer.value()); it != localStates_.end()) stays.state = it->second;
  }
  table_.emplace(peer.value(), std::move(stays));
  countOwned(from, 1);
}

void PortRouter::setOwner(Entry& e, const Owner& owner) {
  countOwned(e.owner, -1);
  e.owner = owner;
  countOwned(owner, 1);
}

void PortRouter::eraseEntry(std::unordered_map<uint64_t, Entry>::iterator it) {
  const Owner owner = it->second.owner;
  table_.erase(it);
  countOwned(owner, -1);
}

void PortRouter::erase(PortId id) {
  auto it = table_.find(id.value());
  if (it == table_.end()) return;
  eraseEntry(it);
  ++stats_.closed;
}

// ------------------------------------------------------------------------------------------------ checks

bool PortRouter::IdSet::insert(uint64_t id) {
  if (contains(id)) return false;
  if (size_ < INLINE) {
    inline_[size_++] = id;
    return true;
  }
  if (many_.empty()) many_.insert(inline_, inline_ + INLINE);
  many_.insert(id);
  ++size_;
  return true;
}

bool PortRouter::IdSet::contains(uint64_t id) const {
  if (size_ > INLINE) return many_.count(id) != 0;
  for (size_t i = 0; i < size_; ++i)
    if (inline_[i] == id) return true;
  return false;
}

Result<void> PortRouter::checkShipped(const ClientId& from, PortList::Reader ds, PortId postingPort,
                                      size_t* registrations) const {
  CheckContext ctx;
  if (!postingPort.empty()) {
    ctx.seen.insert(postingPort.value());
    if (const Entry* e = find(postingPort)) ctx.seen.insert(e->peer.value());
  }
  auto r = checkList(from, ds, ctx, 0);
  if (registrations) *registrations = ctx.registered;
  return r;
}

Result<void> PortRouter::checkList(const ClientId& from, PortList::Reader ds, CheckContext& ctx, int depth) const {
  if (depth > MAX_PORT_NESTING) return violation("ports nested deeper than " + std::to_string(MAX_PORT_NESTING));
  // No encoder writes a list whose elements take no space; a sender that does claims millions of
  // elements in a few bytes, for the router to allocate and loop over.
  if (wire::decode::zeroSized(ds)) return violation("a transfer list of zero-sized descriptors");
  for (auto d : ds) {
    const uint64_t id = d.getPortId();
    if (id == 0) return violation("port id 0 in a transfer list");
    if (!ctx.seen.insert(id))
      return violation("port " + PortId(id).toString() + " transferred twice, or with the port that posts it");
    if (++ctx.count > MAX_PORTS_PER_MESSAGE) return violation("more than 4096 ports in one message");
    if (d.getRegister()) {
      const uint64_t peer = d.getPeerId();
      if (!canRegister(id, peer) || ctx.seen.contains(peer) || ctx.registeredPeers.contains(peer) ||
          ctx.registeredPeers.contains(id))
        return violation("invalid registration of port pair " + PortId(id).toString() + "/" + PortId(peer).toString());
      ctx.registeredPeers.insert(peer);
      ++ctx.registered;
    } else if (d.getPeerClosed()) {
      // Disentangled: unknown here, or a tombstone of the sender's whose portClose is still to come.
      const Entry* e = find(PortId(id));
      if (e && (!e->owner.is(from) || !e->closed)) return violation("a registered port shipped as disentangled");
    } else if (!ctx.registeredPeers.contains(id)) {
      const Entry* e = find(PortId(id));
      if (!e || !e->owner.is(from) || e->peer.value() != d.getPeerId())
        return violation("ships port " + PortId(id).toString() + " that it does not own");
      // A port registered as silentPeer (messageSW's reply port) stays where it is: its messages
      // go straight into its owner's ring with no copy kept for a move.
      if (e->silent) return violation("ships port " + PortId(id).toString() + ", registered to stay (silentPeer)");
    }
    const auto queued = d.getQueued();
    if (wire::decode::zeroSized(queued)) return violation("a port queue of zero-sized messages");
    for (auto q : queued)
      if (auto r = checkList(from, q.getPorts(), ctx, depth + 1); !r) return r;
  }
  return {};
}

Result<void> PortRouter::checkPost(const ClientId& from, schema::PortPost::Reader post, size_t* registrations) const {
  const Entry* e = find(PortId(post.getFrom()));
  // Unknown: closed meanwhile (the client may have answered a portClosed while this post waited
  // for ring space) — a no-op post. Owned by someone else: a lie.
  if (e && !e->owner.is(from)) return violation("posts on port " + PortId(post.getFrom()).toString() + " that it does not own");
  return checkShipped(from, post.getPorts(), PortId(post.getFrom()), registrations);
}

void PortRouter::refuse(const ClientId& from, PortList::Reader ds) {
  ++stats_.dropped;
  closeOwned(from, ds);
}

void PortRouter::closeOwned(const ClientId& from, PortList::Reader ds) {
  // checkShipped passed: every descriptor registers a pair (nothing to undo: it never was), ships
  // a port `from` owns, or ships one disentangled (a tombstone of its, or unknown).
  for (auto d : ds) {
    if (!d.getRegister()) {
      const PortId id(d.getPortId());
      if (Entry* e = find(id); e && e->owner.is(from)) {
        const bool tombstone = e->closed;
        const PortId peer = e->peer;
        e->copies.clear();  // the ports in them were routed to `from`: closed with the rest
        erase(id);
        if (!tombstone) notifyPeerClosed(peer);
      }
    }
    for (auto q : d.getQueued()) closeOwned(from, q.getPorts());
  }
}

// ------------------------------------------------------------------------------------------------ moving ports

void PortRouter::route(PortList::Reader ds, const Owner& from, const Owner& dest, PortList::Builder out) {
  for (unsigned i = 0; i < ds.size(); ++i) routeOne(ds[i], from, dest, out[i]);
}

void PortRouter::routeOne(schema::PortDescriptor::Reader d, const Owner& from, const Owner& dest,
                          schema::PortDescriptor::Builder out) {
  const PortId id(d.getPortId());
  const PortId peer(d.getPeerId());
  ++stats_.transferred;
  out.setPortId(id.value());
  out.setPeerId(peer.value());
  out.setSendSeq(d.getSendSeq());
  bool peerClosed = d.getPeerClosed();
  std::vector<Copy> unreceived;
  if (d.getRegister()) {
    registerPair(id, peer, dest, from, d.getSilentPeer());
  } else {
    if (Entry* e = find(id)) {
      for (auto& c : e->copies)
        if (c.seq >= d.getRecvNext()) unreceived.push_back(std::move(c));
      e->copies.clear();
      if (e->closed) {
        peerClosed = true;  // its peer went while it moved: it arrives closed, with what came before
        eraseEntry(table_.find(id.value()));
      } else {
        setOwner(*e, dest);
        e->state.reset();
      }
    }
  }
  out.setPeerClosed(peerClosed);
  // The list is read once: every getQueued() charges its whole size to the reader's traversal
  // budget, so one per message made a long queue quadratic (and the reader throw).
  const auto queued = d.getQueued();
  const unsigned own = queued.size();
  auto q = out.initQueued(own + static_cast<unsigned>(unreceived.size()));
  for (unsigned i = 0; i < own; ++i) copyMessage(queued[i], from, dest, q[i]);
  uint64_t recvNext = d.getRecvNext();
  for (unsigned i = 0; i < unreceived.size(); ++i) {
    // What the old owner never read follows the port, in order (the copy's ports were routed to
    // the old owner, who never saw them: they move too).
    auto msg = unreceived[i].env->getRoot<schema::Envelope>().asReader().getPortMessage();
    copyMessage(msg, from, dest, q[own + i]);
    recvNext = msg.getSeq() + 1;
  }
  out.setRecvNext(recvNext);
}

void PortRouter::copyMessage(schema::PortMessage::Reader in, const Owner& from, const Owner& dest,
                             schema::PortMessage::Builder out) {
  out.setTo(in.getTo());
  out.setSeq(in.getSeq());
  out.setPayload(in.getPayload());
  route(in.getPorts(), from, dest, out.initPorts(in.getPorts().size()));
}

std::vector<detail::PortPtr> PortRouter::toServiceWorker(const ClientId& from, PortList::Reader ds) {
  if (ds.size() == 0) return {};
  auto mb = std::make_shared<capnp::MallocMessageBuilder>(DESCRIPTOR_WORDS);
  auto root = mb->initRoot<schema::PortMessage>();
  Owner src{false, from};
  route(ds, src, Owner{true, {}}, root.initPorts(ds.size()));
  return detail::adoptDescriptors(local_, root.asReader().getPorts(), mb);
}

Result<detail::PortPtr> PortRouter::adoptRegistered(const ClientId& from, PortId id, PortId peer, uint64_t sendSeq,
                                                    uint64_t recvNext, bool silentPeer) {
  if (!canRegister(id.value(), peer.value()))
    return violation("invalid registration of port pair " + id.toString() + "/" + peer.toString());
  ++stats_.transferred;
  registerPair(id, peer, Owner{true, {}}, Owner{false, from}, silentPeer);
  auto s = std::make_shared<detail::PortState>(&local_, id, peer, detail::PortState::Mode::REMOTE);
  s->sendSeq = sendSeq;
  s->recvNext = recvNext;
  local_.track(s);
  return s;
}

void PortRouter::dropPorts(const Owner& from, PortList::Reader ds) {
  if (ds.size() == 0) return;
  // Adopt them here and let them go: each one closes, so its peer hears `close`.
  auto mb = std::make_shared<capnp::MallocMessageBuilder>(DESCRIPTOR_WORDS);
  auto root = mb->initRoot<schema::PortMessage>();
  route(ds, from, Owner{true, {}}, root.initPorts(ds.size()));
  auto ports = detail::adoptDescriptors(local_, root.asReader().getPorts(), mb);
  ports.clear();
}

void PortRouter::dropCopies(const Owner& owner, std::vector<Copy>& copies, uint64_t recvNext) {
  std::vector<Copy> taken;
  taken.swap(copies);
  for (auto& c : taken) {
    if (c.seq < recvNext) continue;
    ++stats_.dropped;
    dropPorts(owner, c.env->getRoot<schema::Envelope>().asReader().getPortMessage().getPorts());
  }
}

// ------------------------------------------------------------------------------------------------ client -> daemon

void PortRouter::onPortPost(const ClientId& from, schema::PortPost::Reader post, MessageSeq envSeq,
                            const std::shared_ptr<const void>& owner, uint64_t bytes) {
  const Owner src{false, from};
  Entry* self = find(PortId(post.getFrom()));
  if (!self || self->closed) {  // the peer is gone: a no-op, like a post on a disentangled port
    ++stats_.dropped;
    dropPorts(src, post.getPorts());
    return;
  }
  const PortId to = self->peer;
  Entry* dst = find(to);
  if (!dst) {
    ++stats_.dropped;
    dropPorts(src, post.getPorts());
    return;
  }
  ++stats_.routed;
  if (dst->owner.local) {
    auto state = dst->state.lock();
    detail::QueuedPortMessage m;
    m.seq = post.getSeq();
    m.bytes = bytes;
    if (post.getPorts().size() == 0) {
      m.keepAlive = owner;
      m.payload = post.getPayload();
    } else {
      auto mb = std::make_shared<capnp::MallocMessageBuilder>(MESSAGE_WORDS);
      auto root = mb->initRoot<schema::PortMessage>();
      root.setPayload(post.getPayload());
      route(post.getPorts(), src, Owner{true, {}}, root.initPorts(post.getPorts().size()));
      m.payload = root.asReader().getPayload();
      m.ports = detail::adoptDescriptors(local_, root.asReader().getPorts(), mb);
      m.keepAlive = std::move(mb);
    }
    if (!state) {
      ++stats_.dropped;  // its last handle is going away right now; the ports in it close
    } else if (!state->receive(std::move(m), true)) {
      // Service-worker code has not started the port and too much waits there: the sender hears it.
      ++stats_.dropped;
      sink_.reportError(from, Errc::QUOTA_EXCEEDED,
                        "the port's owner has not started it and holds too many bytes at it; message dropped", envSeq);
    }
    return;
  }
  const ClientId target = dst->owner.client;
  if (sink_.backlogFull(target)) {
    ++stats_.dropped;
    sink_.reportError(from, Errc::QUEUE_FULL, "the port's owner is not draining its queue; message not delivered",
                      envSeq);
    dropPorts(src, post.getPorts());
    return;
  }
  MessageSeq seq = 0;
  auto env = sink_.newEnvelope(target, seq);
  if (!env) {
    dropPorts(src, post.getPorts());
    return;
  }
  auto pm = env->getRoot<schema::Envelope>().initPortMessage();
  pm.setTo(to.value());
  pm.setSeq(post.getSeq());
  pm.setPayload(post.getPayload());
  route(post.getPorts(), src, Owner{false, target}, pm.initPorts(post.getPorts().size()));
  if (auto r = deliver(target, to, env, seq, post.getSeq()); !r) {
    core::log().warn("port message to client={} not delivered: {}", target.toString(), r.error().describe());
    sink_.reportError(from, r.error().code, "port message not delivered: " + r.error().message, envSeq);
  }
}

Result<void> PortRouter::deliver(const ClientId& target, PortId to, const std::shared_ptr<capnp::MallocMessageBuilder>& env,
                                 MessageSeq envSeq, uint64_t portSeq) {
  if (auto r = sink_.enqueue(target, env, envSeq); !r) {
    // Never handed over (too big, or the client broke): the ports in it close, the peer hears it.
    ++stats_.dropped;
    undeliverable(target, env->getRoot<schema::Envelope>().asReader().getPortMessage().getPorts());
    return r;
  }
  Entry* dst = find(to);
  if (!dst || !dst->owner.is(target)) return {};  // the enqueue made it go (the client broke)
  dst->copies.push_back(Copy{portSeq, env});
  dst->received = true;
  if (dst->copies.size() > sink_.copyLimit()) {
    // A client that reads its ring but never acknowledges pins every message: cut it off.
    sink_.disconnect(target, violation("never acknowledges port messages (" + std::to_string(dst->copies.size()) +
                                       " unacknowledged on port " + to.toString() + ")"));
  }
  return {};
}

void PortRouter::undeliverable(const ClientId& to, PortList::Reader ds) { dropPorts(Owner{false, to}, ds); }

Result<void> PortRouter::onPortClose(const ClientId& from, PortId port, uint64_t recvNext) {
  Entry* e = find(port);
  if (!e) return {};  // closed meanwhile by both sides
  if (!e->owner.is(from)) return violation("closes port " + port.toString() + " that it does not own");
  dropCopies(e->owner, e->copies, recvNext);
  e = find(port);  // dropping may have changed the table
  if (!e) return {};
  const bool tombstone = e->closed;
  const PortId peer = e->peer;
  erase(port);
  if (!tombstone) notifyPeerClosed(peer);
  return {};
}

void PortRouter::onPortAck(const ClientId& from, PortId port, uint64_t recvNext) {
  Entry* e = find(port);
  if (!e || !e->owner.is(from)) return;  // moved or closed meanwhile
  auto firstKept = std::find_if(e->copies.begin(), e->copies.end(), [&](const Copy& c) { return c.seq >= recvNext; });
  e->copies.erase(e->copies.begin(), firstKept);
}

void PortRouter::clientGone(const ClientId& id) {
  std::vector<uint64_t> owned;
  for (const auto& [pid, e] : table_)
    if (e.owner.is(id)) owned.push_back(pid);
  for (uint64_t pid : owned) {
    Entry* e = find(PortId(pid));
    if (!e || !e->owner.is(id)) continue;
    const bool tombstone = e->closed;
    const PortId peer = e->peer;
    e->copies.clear();  // the ports inside them were routed to this client: in `owned` too
    erase(PortId(pid));
    if (!tombstone) notifyPeerClosed(peer);
  }
}

void PortRouter::notifyPeerClosed(PortId peer) {
  Entry* e = find(peer);
  if (!e || e->closed) return;
  if (e->silent && e->received) {  // messageSW's reply port, answered: its owner closes it itself
    erase(peer);
    return;
  }
  if (e->owner.local) {
    auto state = e->state.lock();
    erase(peer);
    if (state) state->peerClosed(false);
    return;
  }
  e->closed = true;  // until its owner answers with portClose
  const ClientId owner = e->owner.client;
  MessageSeq seq = 0;
  auto env = sink_.newEnvelope(owner, seq);
  if (!env) return;
  env->getRoot<schema::Envelope>().initPortClosed().setPort(peer.value());
  (void)sink_.enqueue(owner, env, seq);
}

// ------------------------------------------------------------------------------------------------ service worker

void PortRouter::trackLocal(const detail::PortPtr& port) {
  localStates_[port->id.value()] = port;
  if (Entry* e = find(port->id); e && e->owner.local) e->state = port;
}

void PortRouter::untrackLocal(detail::PortState& port) {
  auto it = localStates_.find(port.id.value());
  if (it == localStates_.end()) return;
  auto cur = it->second.lock();
  if (!cur || cur.get() == &port) localStates_.erase(it);
}

std::vector<detail::PortPtr> PortRouter::takeLocalPorts() {
  std::vector<detail::PortPtr> all;
  for (auto& [id, w] : localStates_)
    if (auto p = w.lock()) all.push_back(std::move(p));
  localStates_.clear();
  return all;
}

void PortRouter::shipToClient(const ClientId& to, std::vector<detail::PortPtr>& ports, PortList::Builder out) {
  capnp::MallocMessageBuilder tmp(256);
  auto root = tmp.initRoot<schema::PortMessage>();
  detail::ShipContext ctx;
  detail::describeAll(ports, root.initPorts(static_cast<unsigned>(ports.size())), ctx);
  route(root.asReader().getPorts(), Owner{true, {}}, Owner{false, to}, out);
  detail::commitAll(ports);
}

Result<void> PortRouter::postFromLocal(detail::PortState& from, const core::OutgoingPayload& payload,
                                       std::vector<detail::PortPtr>& transfer) {
  Entry* self = find(from.id);
  if (!self) return {};  // closed meanwhile
  Entry* dst = find(self->peer);
  if (!dst) return {};
  const PortId to = self->peer;
  if (dst->owner.local) {
    auto state = dst->state.lock();
    auto m = detail::encodeLocal(payload, local_.maxMessageBytes());
    if (!m) return m.error();
    m->seq = from.sendSeq++;
    for (auto& p : transfer) m->ports.push_back(p->moveHere());
    ++stats_.routed;
    if (state) state->receive(std::move(*m), false);
    return {};
  }
  const ClientId target = dst->owner.client;
  if (sink_.backlogFull(target)) return makeError(Errc::QUEUE_FULL, "the port's owner is not draining its queue");
  if (dst->silent && transfer.empty() && payload.value) {
    // messageSW's reply port: its owner never moves it (checkList refuses that), so no copy is
    // kept for a move, and this message carries no ports to close: straight into the ring.
    switch (sink_.sendPortValue(target, to, from.sendSeq, *payload.value)) {
      case Sink::Direct::SENT:
        ++from.sendSeq;
        ++stats_.routed;
        dst->received = true;
        return {};
      case Sink::Direct::GONE: return {};  // as the general path: its owner is gone, the port closes
      case Sink::Direct::BROKEN: return makeError(Errc::DISCONNECTED, "the port's owner disconnected");
      case Sink::Direct::NOT_NOW: break;
    }
  }
  MessageSeq seq = 0;
  auto env = sink_.newEnvelope(target, seq);
  if (!env) return {};
  auto pm = env->getRoot<schema::Envelope>().initPortMessage();
  pm.setTo(to.value());
  pm.setSeq(from.sendSeq);
  core::writePayload(payload, pm.initPayload());
  if (wire::encodedBytes(*env) > local_.maxMessageBytes())
    return makeError(Errc::QUOTA_EXCEEDED, "message larger than --max-message-bytes; nothing sent");
  if (!transfer.empty()) shipToClient(target, transfer, pm.initPorts(static_cast<unsigned>(transfer.size())));
  const uint64_t portSeq = from.sendSeq++;
  ++stats_.routed;
  return deliver(target, to, env, seq, portSeq);
}

void PortRouter::closeLocal(detail::PortState& port) {
  Entry* e = find(port.id);
  if (!e || !e->owner.local) return;
  const PortId peer = e->peer;
  erase(port.id);
  notifyPeerClosed(peer);
}

size_t PortRouter::inTransit() const {
  size_t n = 0;
  for (const auto& [id, e] : table_)
    if (!e.copies.empty()) ++n;
  return n;
}

}  // namespace swipc::daemon
