#include "daemon/outbound.h"

#include "core/log.h"
#include "core/user_code.h"
#include "wire/codec.h"

namespace swipc::daemon {

using core::Connection;

Outbound::Outbound(ClientTable& clients, Counters& counters, size_t maxBacklog)
    : clients_(clients), counters_(counters), maxBacklog_(maxBacklog) {
  clients_.onDetach([this](ClientRecord& c) { dropBacklog(c); });
}

std::shared_ptr<capnp::MallocMessageBuilder> Outbound::newEnvelope(ClientRecord& c, MessageSeq& seq) {
  auto mb = std::make_shared<capnp::MallocMessageBuilder>(64);  // grows when needed
  auto env = mb->initRoot<schema::Envelope>();
  env.setSchemaVersion(schema::SCHEMA_VERSION);
  seq = c.nextSeq++;
  env.setSeq(seq);
  return mb;
}

void Outbound::pushBacklog(ClientRecord& c, std::shared_ptr<capnp::MallocMessageBuilder> mb, MessageSeq seq) {
  const uint64_t bytes = wire::encodedBytes(*mb);
  c.backlog.push_back(Outgoing{std::move(mb), seq, bytes});
  ++c.usage.queuedMessages;
  c.usage.queuedBytes += bytes;
}

void Outbound::popBacklog(ClientRecord& c) {
  --c.usage.queuedMessages;
  c.usage.queuedBytes -= c.backlog.front().bytes;
  c.backlog.pop_front();
}

Result<MessageSeq> Outbound::enqueue(ClientRecord& c, std::shared_ptr<capnp::MallocMessageBuilder> mb,
                                     MessageSeq seq) {
  if (!c.backlog.empty()) {
    pushBacklog(c, std::move(mb), seq);
    flushBacklog(c);
    return seq;
  }
  switch (c.conn->send(*mb, seq)) {
    case Connection::SendStatus::OK:
      ++counters_.messagesOut;
      c.conn->wakePeerIfSleeping();
      return seq;
    case Connection::SendStatus::FULL:
      pushBacklog(c, std::move(mb), seq);
      return seq;
    case Connection::SendStatus::TOO_BIG:
      ++counters_.oversize;
      return makeError(Errc::QUOTA_EXCEEDED, "message larger than --max-message-bytes");
    case Connection::SendStatus::BROKEN:
      downRingBroken(c);
      return makeError(Errc::DISCONNECTED, "client disconnected");
  }
  return seq;
}

void Outbound::flushBacklog(ClientRecord& c) {
  bool sent = false;
  while (!c.backlog.empty() && c.alive) {
    auto& front = c.backlog.front();
    auto s = c.conn->send(*front.message, front.seq);
    if (s == Connection::SendStatus::FULL) break;
    if (s == Connection::SendStatus::BROKEN) {
      downRingBroken(c);
      return;
    }
    if (s == Connection::SendStatus::OK) {
      ++counters_.messagesOut;
      sent = true;
    }
    popBacklog(c);
  }
  if (sent && c.alive) c.conn->wakePeerIfSleeping();
  if (c.backlog.empty() && c.unresponsive) {
    c.unresponsive = false;
    core::log().info("client={} drains again", c.id.toString());
  }
}

Result<void> Outbound::admitPost(ClientRecord& c) {
  if (!backlogFull(c)) return {};
  ++counters_.queueFull;
  if (!c.unresponsive) {
    c.unresponsive = true;
    ++counters_.unresponsive;
    core::log().warn("client={} pid={} unresponsive: {} messages waiting; rejecting further posts", c.id.toString(),
                     c.pid, c.backlog.size());
  }
  return makeError(Errc::QUEUE_FULL, "client is not draining its queue");
}

void Outbound::sendError(ClientRecord& c, Errc code, const std::string& message, uint64_t refSeq) {
  if (backlogFull(c)) {
    // A client that does not drain cannot grow our memory with error reports about its posts.
    ++counters_.undelivered;
    core::log().debug("client={} not draining: error report for seq={} dropped ({})", c.id.toString(), refSeq,
                      errorName(code));
    return;
  }
  MessageSeq seq;
  auto mb = newEnvelope(c, seq);
  auto e = mb->getRoot<schema::Envelope>().initError();
  e.setName(std::string(errorName(code)));
  e.setMessage(message);
  e.setRefSeq(refSeq);
  (void)enqueue(c, std::move(mb), seq);
}

bool Outbound::sendSimple(ClientRecord& c, const std::function<void(schema::Envelope::Builder)>& fill) {
  MessageSeq seq;
  auto mb = newEnvelope(c, seq);
  fill(mb->getRoot<schema::Envelope>());
  return enqueue(c, std::move(mb), seq).ok();
}

Outbound::Direct Outbound::sendDirect(ClientRecord& c, wire::PlainMessage& m, const Value& data) {
  if (!c.backlog.empty()) return Direct::NOT_NOW;
  m.seq = c.nextSeq;
  switch (c.conn->sendValue(m, data)) {
    case Connection::ValueStatus::SENT:
      ++c.nextSeq;
      ++counters_.messagesOut;
      c.conn->wakePeerIfSleeping();
      return Direct::SENT;
    case Connection::ValueStatus::NOT_INLINE:
    case Connection::ValueStatus::FULL:
    case Connection::ValueStatus::TOO_BIG: return Direct::NOT_NOW;  // into the backlog, or refused, there
    case Connection::ValueStatus::BROKEN:
      downRingBroken(c);
      return Direct::BROKEN;
  }
  return Direct::BROKEN;
}

void Outbound::downRingBroken(ClientRecord& c) {
  clients_.violation(c, makeError(Errc::PROTOCOL_VIOLATION, "client corrupted its down ring"));
}

void Outbound::dropBacklog(ClientRecord& c) {
  for (auto& o : c.backlog) {
    ++counters_.undelivered;
    if (undelivered_)
      core::callUser("onUndelivered", [&] {
        undelivered_(c.id, o.seq, makeError(Errc::DISCONNECTED, "client went away before it was delivered"));
      });
  }
  c.backlog.clear();
  c.usage.queuedMessages = 0;
  c.usage.queuedBytes = 0;
}

}  // namespace swipc::daemon
