#include "daemon/outbound.h"

#include <malloc.h>

#include "core/log.h"
#include "core/user_code.h"
#include "wire/codec.h"

namespace swipc::daemon {

using core::Connection;

namespace {

/// Above this many bytes handed back at once, the allocator is asked to return free memory to the
/// system (a flood's backlog would otherwise stay in the daemon's RSS after its client left).
constexpr uint64_t TRIM_AFTER_BYTES = 1 << 20;

std::string mib(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

}  // namespace

Outbound::Outbound(ClientTable& clients, Counters& counters, core::EventLoop& loop, const ServiceWorkerOptions& options)
    : clients_(clients), counters_(counters), loop_(loop), opts_(options) {
  clients_.onDetach([this](ClientRecord& c) { dropBacklog(c); });
}

bool Outbound::backlogFull(const ClientRecord& c) const {
  return c.usage.queuedMessages >= opts_.maxBacklog || c.usage.queuedBytes >= opts_.maxBacklogBytes ||
         uidBacklogBytes(c.uid) >= opts_.maxBacklogBytesPerUid;
}

uint64_t Outbound::uidBacklogBytes(uid_t uid) const {
  auto it = uidBytes_.find(uid);
  return it == uidBytes_.end() ? 0 : it->second;
}

void Outbound::chargeUid(uid_t uid, int64_t bytes) {
  auto& total = uidBytes_[uid];
  total = static_cast<uint64_t>(static_cast<int64_t>(total) + bytes);
  if (total == 0) uidBytes_.erase(uid);
}

std::shared_ptr<capnp::MallocMessageBuilder> Outbound::newEnvelope(ClientRecord& c, MessageSeq& seq) {
  auto mb = std::make_shared<capnp::MallocMessageBuilder>(64);  // grows when needed
  auto env = mb->initRoot<schema::Envelope>();
  env.setSchemaVersion(schema::SCHEMA_VERSION);
  seq = c.nextSeq++;
  env.setSeq(seq);
  return mb;
}

bool Outbound::pushBacklog(ClientRecord& c, std::shared_ptr<capnp::MallocMessageBuilder> mb, MessageSeq seq) {
  const uint64_t bytes = wire::encodedBytes(*mb);
  // The hard bound: twice each soft one. One message always fits an empty backlog (a message up
  // to --max-message-bytes must be deliverable).
  if (!c.backlog.empty() && (c.usage.queuedMessages + 1 > 2 * opts_.maxBacklog ||
                             c.usage.queuedBytes + bytes > 2 * opts_.maxBacklogBytes ||
                             uidBacklogBytes(c.uid) + bytes > 2 * opts_.maxBacklogBytesPerUid)) {
    disconnectUnresponsive(c, "its backlog would pass twice its bound (" + std::to_string(c.usage.queuedMessages) +
                                  " messages, " + mib(c.usage.queuedBytes) + " waiting)");
    return false;
  }
  if (c.backlog.empty()) c.lastDrained = Clock::now();  // the wait for this backlog starts now
  c.backlog.push_back(Outgoing{std::move(mb), seq, bytes});
  ++c.usage.queuedMessages;
  c.usage.queuedBytes += bytes;
  chargeUid(c.uid, static_cast<int64_t>(bytes));
  if (backlogFull(c)) markUnresponsive(c);
  return true;
}

void Outbound::popBacklog(ClientRecord& c) {
  --c.usage.queuedMessages;
  c.usage.queuedBytes -= c.backlog.front().bytes;
  chargeUid(c.uid, -static_cast<int64_t>(c.backlog.front().bytes));
  c.backlog.pop_front();
}

Result<MessageSeq> Outbound::enqueue(ClientRecord& c, std::shared_ptr<capnp::MallocMessageBuilder> mb,
                                     MessageSeq seq) {
  if (!c.backlog.empty()) {
    if (!pushBacklog(c, std::move(mb), seq)) return makeError(Errc::DISCONNECTED, "client disconnected: unresponsive");
    flushBacklog(c);
    return seq;
  }
  switch (c.conn->send(*mb, seq)) {
    case Connection::SendStatus::OK:
      ++counters_.messagesOut;
      c.conn->wakePeerIfSleeping();
      return seq;
    case Connection::SendStatus::FULL:
      if (!pushBacklog(c, std::move(mb), seq)) return makeError(Errc::DISCONNECTED, "client disconnected: unresponsive");
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
  if (sent && c.alive) {
    c.lastDrained = Clock::now();
    c.conn->wakePeerIfSleeping();
  }
  if (c.backlog.empty() && c.unresponsive) {
    c.unresponsive = false;
    if (c.unresponsiveTimer != 0) loop_.cancelTimer(c.unresponsiveTimer);
    c.unresponsiveTimer = 0;
    core::log().info("client={} drains again", c.id.toString());
  }
}

void Outbound::markUnresponsive(ClientRecord& c) {
  // Refused only for what other clients of its uid hold: this one drains, nothing waits for it.
  if (c.unresponsive || c.backlog.empty()) return;
  c.unresponsive = true;
  ++counters_.unresponsive;
  core::log().warn("client={} pid={} unresponsive: {} messages ({}) waiting; rejecting further posts", c.id.toString(),
                   c.pid, c.usage.queuedMessages, mib(c.usage.queuedBytes));
  armUnresponsiveTimer(c, c.lastDrained + opts_.unresponsiveTimeout);
}

void Outbound::armUnresponsiveTimer(ClientRecord& c, Deadline when) {
  if (c.unresponsiveTimer != 0) loop_.cancelTimer(c.unresponsiveTimer);
  c.unresponsiveTimer = loop_.addTimer(when, [this, id = c.id] { onUnresponsiveTimer(id); });
}

void Outbound::onUnresponsiveTimer(const ClientId& id) {
  ClientRecord* c = clients_.findAlive(id);
  if (c == nullptr) return;
  c->unresponsiveTimer = 0;
  if (!c->unresponsive) return;
  const Deadline due = c->lastDrained + opts_.unresponsiveTimeout;
  if (Clock::now() < due) return armUnresponsiveTimer(*c, due);  // it drained meanwhile: not stopped
  disconnectUnresponsive(*c, "drained nothing for " + std::to_string(opts_.unresponsiveTimeout.count()) +
                                 " ms with its backlog at its bound (--unresponsive-ms)");
}

void Outbound::disconnectUnresponsive(ClientRecord& c, const std::string& why) {
  ++counters_.unresponsiveDisconnects;
  core::log().warn("client={} pid={} disconnected as unresponsive: {}; {} messages reported undelivered",
                   c.id.toString(), c.pid, why, c.usage.queuedMessages);
  clients_.detach(c, "unresponsive: " + why, /*goodbye=*/true);
}

Result<void> Outbound::admitPost(ClientRecord& c) {
  if (!backlogFull(c)) return {};
  ++counters_.queueFull;
  markUnresponsive(c);
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
  switch (c.conn->sendValue(m, data, Connection::Fit::ANY)) {
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
  chargeUid(c.uid, -static_cast<int64_t>(c.usage.queuedBytes));
  const uint64_t dropped = c.usage.queuedBytes;
  std::deque<Outgoing>().swap(c.backlog);  // the deque's own blocks go too
  c.usage.queuedMessages = 0;
  c.usage.queuedBytes = 0;
  if (c.unresponsiveTimer != 0) loop_.cancelTimer(c.unresponsiveTimer);
  c.unresponsiveTimer = 0;
  if (dropped >= TRIM_AFTER_BYTES) ::malloc_trim(0);
}

}  // namespace swipc::daemon
