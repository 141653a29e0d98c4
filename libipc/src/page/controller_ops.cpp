#include "page/controller_ops.h"

#include <kj/exception.h>

#include <utility>

namespace swipc::page {

uint64_t heldCost(const Value& v) {
  constexpr uint64_t NODE = sizeof(Value);
  switch (v.kind()) {
    case Value::Kind::TEXT: return NODE + v.asText().size();
    case Value::Kind::BYTES: return NODE + v.asBytes().data.size();
    case Value::Kind::LIST: {
      uint64_t n = NODE;
      for (const auto& e : v.asList()) n += heldCost(e);
      return n;
    }
    case Value::Kind::MAP: {
      uint64_t n = NODE;
      for (const auto& [k, e] : v.asMap()) n += k.size() + heldCost(e);
      return n;
    }
    default: return NODE;
  }
}

ControllerOps::ControllerOps(ConnectionState& link, Sender& sender, PagePorts& ports, HeldQueue& queue,
                             PageEvents& events, core::EventLoop& loop, const TypeRegistry& types, OpTable& ops)
    : link_(link), sender_(sender), ports_(ports), queue_(queue), events_(events), loop_(loop), types_(types) {
  queue_.setMaxHeldBytes(link_.options().maxHeldBytes);
  ops.on(schema::Envelope::CLIENT_POST, [this](schema::Envelope::Reader env, const auto& owner) {
    auto post = env.getClientPost();
    auto ev = std::make_shared<MessageEvent>();
    Result<void> r;
    // What the daemon relays (payloads, and the ports with their queues) may have been written
    // by another endpoint: what cannot be read is this message's messageerror.
    try {
      r = core::readPayload(post.getPayload(), owner, types_, *ev);
      // The ports are live at once (their messages queue at them); the event hands them over.
      for (auto& p : detail::adoptDescriptors(ports_, post.getPorts(), owner, owner->bytes()))
        ev->ports.emplace_back(p);
    } catch (const kj::Exception& e) {
      ev->ports.clear();
      r = makeError(Errc::DATA_CLONE, std::string("malformed message: ") + e.getDescription().cStr());
    }
    if (r)
      events_.message(std::move(ev), owner->bytes());
    else
      events_.messageError(r.error());
  });
  // A refused request fails at once (the daemon consumed it: no reply will come).
  sender_.onRejected([this](MessageSeq seq, const Error& err) {
    for (auto& [rid, r] : replies_) {
      if (r.seq == seq) {
        settleReply(rid, err);
        return;
      }
    }
  });
}

Result<MessageSeq> ControllerOps::post(const core::OutgoingPayload& payload, const PostOptions& opts,
                                       TransferList& transfer) {
  if (link_.closed()) return makeError(Errc::DISCONNECTED, "client is closed");
  if (!link_.attached() || !link_.controlled())
    return makeError(Errc::INVALID_STATE, "no controller: not controlled by a service worker");
  if (transfer.size() == 0 && payload.value) {
    // The fast lane: written straight into the ring (wire/plain_post.h). One that does not fit
    // in a ring record is built below and goes out of line.
    wire::PlainMessage m;
    m.kind = schema::Envelope::CONTROLLER_POST;
    m.wantAck = opts.requestAck;
    if (auto sent = sender_.sendValue(m, *payload.value, opts, true, true)) return std::move(*sent);
  }
  auto ports = detail::checkTransfer(nullptr, ports_, transfer);
  if (!ports) return ports.error();
  auto seq = sender_.sendEnvelope(
      [&](schema::Envelope::Builder e) {
        auto post = e.initControllerPost();
        core::writePayload(payload, post.initPayload());
        post.setWantAck(opts.requestAck);
        detail::ShipContext ctx;
        detail::describeAll(*ports, post.initPorts(static_cast<unsigned>(ports->size())), ctx);
      },
      opts, true);
  if (seq) detail::commitAll(*ports);  // sent: the ports now belong to the service worker
  return seq;
}

// ------------------------------------------------------------------------------------------------ messageSW

std::optional<Result<MessageSeq>> ControllerOps::sendRequestPlain(const Value& data, detail::PortPtr& port1) {
  // The same descriptor the general path would write for port2 (register, silentPeer).
  const PortId a = core::newPortId();
  PortId b = core::newPortId();
  while (b == a) b = core::newPortId();
  wire::PlainMessage m;
  m.kind = schema::Envelope::CONTROLLER_POST;
  m.hasPort = true;
  m.port = wire::PlainPort{b.value(), a.value(), 1, 1, true};
  auto seq = sender_.sendValue(m, data, PostOptions{}, true, true);
  if (seq && *seq) {
    port1 = std::make_shared<detail::PortState>(&ports_, a, b, detail::PortState::Mode::REMOTE);
    ports_.track(port1);
  }
  return seq;
}

void ControllerOps::messageSWAsync(const Value& data, std::function<void(Result<Value>)> done,
                                   std::optional<Deadline> deadline) {
  // A real MessageChannel: port2 travels with the request, the first reply on port1 wins.
  const uint64_t replyId = nextReplyId_++;
  detail::PortPtr port1;
  std::optional<Result<MessageSeq>> seq;
  if (link_.attached() && link_.controlled() && !link_.closed()) seq = sendRequestPlain(data, port1);
  if (!seq) {
    auto [p1, p2] = detail::PortState::createPair(ports_);
    p1->quietClose = true;  // marks port2's descriptor silentPeer
    core::OutgoingPayload p;
    p.value = &data;
    TransferList transfer{MessagePort(p2)};
    p2.reset();
    seq = post(p, PostOptions{}, transfer);
    port1 = std::move(p1);
  }
  if (!*seq) {
    if (port1) port1->close();
    done(seq->error());
    return;
  }
  // Its close needs no wake-up: the daemon has usually dropped port2 already; otherwise it reads
  // the close with our next message.
  port1->quietClose = true;
  port1->interceptValue = [this, replyId](Value& v) { settleReply(replyId, std::move(v)); };
  port1->intercept = [this, replyId](detail::QueuedPortMessage& m) {
    if (!replies_.count(replyId)) return;  // answered already, or timed out: not even decoded
    MessageEvent ev;
    auto r = core::readPayload(m.payload, m.keepAlive, types_, ev);
    if (r)
      settleReply(replyId, std::move(ev.data));
    else
      settleReply(replyId, r.error());
  };
  port1->interceptClose = [this, replyId] {
    auto it = replies_.find(replyId);
    if (it == replies_.end() || it->second.hasDeadline) return;  // with a deadline, the deadline decides
    settleReply(replyId, makeError(Errc::ABORT, "the service worker dropped the reply port without answering"));
  };
  PendingReply pr;
  pr.done = std::move(done);
  pr.seq = **seq;
  pr.port = std::move(port1);
  pr.hasDeadline = deadline.has_value();
  if (deadline) {
    pr.timer = loop_.addTimer(*deadline, [this, replyId] {
      auto it = replies_.find(replyId);
      if (it == replies_.end()) return;
      it->second.timer = 0;
      settleReply(replyId, makeError(Errc::TIMEOUT, "no reply from the service worker before the deadline"));
    });
  }
  replies_.emplace(replyId, std::move(pr));
}

Result<Value> ControllerOps::messageSW(const Value& data, Deadline deadline) {
  std::optional<Result<Value>> result;
  queue_.enterBlocking();
  messageSWAsync(
      data, [&result](Result<Value> r) { result.emplace(std::move(r)); },
      deadline == NO_DEADLINE ? std::nullopt : std::optional<Deadline>(deadline));
  const auto spin = link_.options().spin;
  while (!result) {
    if (spin.count() > 0 && link_.attached()) {
      // Spin phase: clear our sleeping flag so the daemon skips the wake-up, poll the ring.
      link_.conn()->disarm();
      const auto spinUntil = Clock::now() + spin;
      while (!result && link_.attached() && Clock::now() < spinUntil) {
        if (link_.conn()->hasIncoming()) link_.drainIncoming();
      }
      if (result) break;
    }
    if (link_.attached() && link_.conn()->armAndCheck()) {
      link_.drainIncoming();
      continue;
    }
    loop_.runOnce(NO_DEADLINE);
  }
  if (link_.attached()) link_.conn()->armAndCheck();
  queue_.leaveBlocking();
  if (queue_.hasDeferred()) loop_.wake();
  return std::move(*result);
}

void ControllerOps::settleReply(uint64_t replyId, Result<Value> result) {
  auto it = replies_.find(replyId);
  if (it == replies_.end()) return;
  PendingReply pr = std::move(it->second);
  replies_.erase(it);
  if (pr.timer) loop_.cancelTimer(pr.timer);
  if (pr.port) pr.port->close();
  pr.done(std::move(result));
}

std::vector<uint64_t> ControllerOps::pendingReplies() const {
  std::vector<uint64_t> ids;
  ids.reserve(replies_.size());
  for (const auto& [rid, r] : replies_) ids.push_back(rid);
  return ids;
}

void ControllerOps::failReplies(const std::vector<uint64_t>& ids, const std::string& reason) {
  for (uint64_t rid : ids)
    settleReply(rid, makeError(Errc::DISCONNECTED, "the service worker went away before replying (" + reason + ")"));
}

}  // namespace swipc::page
