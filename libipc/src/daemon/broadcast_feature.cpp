#include "daemon/broadcast_feature.h"

#include <capnp/serialize.h>

#include "core/socket.h"

namespace swipc::daemon {

using Inbound = std::shared_ptr<const wire::Inbound>;

Result<void> BroadcastFeature::start(FeatureHost& host) {
  host_ = &host;
  host.handle(schema::Envelope::BC_JOIN, [this](ClientRecord& c, schema::Envelope::Reader env, const Inbound&) {
    auto j = env.getBcJoin();
    return hub_->clientJoin(c.id, ChannelName(j.getName().cStr()), j.getObjectId(), env.getSeq());
  });
  host.handle(schema::Envelope::BC_LEAVE, [this](ClientRecord& c, schema::Envelope::Reader env, const Inbound&) {
    hub_->clientLeave(c.id, env.getBcLeave().getObjectId());
    return true;
  });
  host.handle(schema::Envelope::BC_LAPPED, [this](ClientRecord& c, schema::Envelope::Reader env, const Inbound&) {
    auto l = env.getBcLapped();
    hub_->clientLapped(c.id, l.getObjectId(), l.getMissed());
    return true;
  });
  host.handle(
      schema::Envelope::BC_POST,
      [this](ClientRecord& c, schema::Envelope::Reader env, const Inbound& owner) {
        // Every member reads these bytes: one they could not read is the sender's violation, here.
        if (auto ok = owner->checkPayloads(); !ok) {
          host_->clients().violation(c, ok.error());
          return false;
        }
        hub_->clientPost(c.id, env.getBcPost(), env.getSeq(), owner);
        return true;
      },
      Dispatch::PlainHandler::of<&BroadcastFeature::onPlainPost>(this));
  host.onDetach([this](ClientRecord& c) { hub_->clientGone(c.id); });
  return {};
}

bool BroadcastFeature::onPlainPost(ClientRecord& c, const wire::PlainMessage& m, ExtendableMessageEvent& ev) {
  // The fast lane decoded the Value whole: the ring gets it re-encoded, never the client's bytes.
  hub_->clientPostValue(c.id, m.objectId, ev.data, m.wantAck, m.seq);
  return true;
}

void BroadcastFeature::stop() {
  hub_->clear();
  host_ = nullptr;
}

ClientRecord* BroadcastFeature::client(const ClientId& id) const {
  return host_ ? host_->clients().findAlive(id) : nullptr;
}

bool BroadcastFeature::passRing(const ClientId& id, uint64_t ringId, uint64_t capacity, int fd) {
  ClientRecord* c = client(id);
  if (!c) return false;
  capnp::MallocMessageBuilder mb(64);
  auto r = mb.initRoot<schema::Control>().initBcRing();
  r.setRingId(ringId);
  r.setCapacity(capacity);
  auto words = capnp::messageToFlatArray(mb);
  return core::sendDatagram(c->conn->socketFd(), words.begin(), words.size() * sizeof(capnp::word), {fd}) ==
         core::IoStatus::OK;
}

void BroadcastFeature::joined(const ClientId& id, const BroadcastHub::Joined& j) {
  if (ClientRecord* c = client(id)) {
    host_->outbound().sendSimple(*c, [&](schema::Envelope::Builder e) {
      auto r = e.initBcJoined();
      r.setObjectId(j.objectId);
      r.setRingId(j.ringId);
      r.setStartPos(j.startPos);
      r.setStartSeq(j.startSeq);
      r.setSenderTag(j.senderTag);
    });
  }
}

void BroadcastFeature::ack(const ClientId& id, MessageSeq seq) {
  if (ClientRecord* c = client(id))
    host_->outbound().sendSimple(*c, [&](schema::Envelope::Builder e) { e.initAck().setSeq(seq); });
}

void BroadcastFeature::reportError(const ClientId& id, Errc code, const std::string& message, uint64_t refSeq) {
  if (ClientRecord* c = client(id)) host_->outbound().sendError(*c, code, message, refSeq);
}

void BroadcastFeature::violation(const ClientId& id, const Error& why) {
  if (ClientRecord* c = client(id)) host_->clients().violation(*c, why);
}

void BroadcastFeature::channelsJoined(const ClientId& id, int delta) {
  if (!host_) return;
  if (ClientRecord* c = host_->clients().find(id)) c->usage.channels += static_cast<uint64_t>(static_cast<int64_t>(delta));
}

void BroadcastFeature::published(bool firstSinceFlush) {
  if (!host_) {
    hub_->flushWakes();  // no loop to batch on (not started): wake now
    return;
  }
  host_->markActive();
  // Posted tasks run once the loop has handled every event ready in this pass: a burst drained
  // from one client's ring wakes each channel's readers once.
  if (firstSinceFlush) host_->loop().post([hub = std::weak_ptr<BroadcastHub>(hub_)] {
    if (auto h = hub.lock()) h->flushWakes();
  });
}

}  // namespace swipc::daemon
