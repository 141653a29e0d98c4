#include "daemon/dispatch.h"

#include <kj/exception.h>
#include <sys/epoll.h>

#include <optional>
#include <string>

#include "core/log.h"
#include "swipc/error.h"

namespace swipc::daemon {

using core::Connection;

unsigned Dispatch::index(schema::Envelope::Which kind) {
  const auto k = static_cast<unsigned>(kind);
  SWIPC_REQUIRE(k < KINDS, "envelope kind " + std::to_string(k) + " beyond the dispatch table");
  return k;
}

void Dispatch::handle(schema::Envelope::Which kind, Handler handler) { handlers_[index(kind)] = std::move(handler); }

void Dispatch::handlePlain(schema::Envelope::Which kind, PlainHandler handler) {
  const unsigned k = index(kind);
  plain_[k] = handler;
  if (plain_[k])
    plainKinds_ |= wire::kindBit(kind);
  else
    plainKinds_ &= ~wire::kindBit(kind);
}

void Dispatch::remove(schema::Envelope::Which kind) {
  handle(kind, nullptr);
  handlePlain(kind, nullptr);
}

bool Dispatch::handles(schema::Envelope::Which kind) const {
  const auto k = static_cast<unsigned>(kind);
  return k < KINDS && (handlers_[k] || plain_[k]);
}

Result<void> Dispatch::connect(ClientRecord& c) {
  const ClientId id = c.id;
  auto sw = loop_.watch(c.conn->socketFd(), EPOLLIN | EPOLLRDHUP, [this, id](uint32_t ev) { onSocket(id, ev); });
  if (c.conn->wakeMode() == Connection::WakeMode::SOCKET) {
    // Socket wakes (daemon/fd_budget.h): no doorbell; onSocket() reads the ring after pumping.
    if (!sw) return sw.error();
    c.socketWatch = *sw;
    c.doorbellWatch = 0;
    return {};
  }
  auto bw = loop_.watch(c.conn->doorbellFd(), EPOLLIN | EPOLLET, [this, id](uint32_t) {
    if (auto* cr = clients_.findAlive(id)) {
      drain(*cr);
      outbound_.flushBacklog(*cr);
    }
  });
  if (!sw || !bw) {
    if (sw) loop_.unwatch(*sw);
    if (bw) loop_.unwatch(*bw);
    return !sw ? sw.error() : bw.error();
  }
  c.socketWatch = *sw;
  c.doorbellWatch = *bw;
  return {};
}

void Dispatch::onSocket(const ClientId& id, uint32_t events) {
  ClientRecord* c = clients_.findAlive(id);
  if (!c) return;
  Error err;
  bool goodbye = false;
  auto s = c->conn->pumpSocket(
      [&](wire::Inbound&& in) {
        if (in.control().isGoodbye()) goodbye = true;
      },
      err);
  if (s == core::IoStatus::FAILED) {
    if (err.code == Errc::PROTOCOL_VIOLATION) return clients_.violation(*c, err);
    core::log().error("client={} pid={}: {}; disconnecting", id.toString(), c->pid, err.describe());
    return clients_.detach(*c, err.describe());
  }
  if (s == core::IoStatus::CLOSED || goodbye || (events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR))) {
    drain(*c, /*toTheEnd=*/true);  // everything it committed before leaving is still delivered
    if (c->alive) clients_.detach(*c, goodbye ? "closed" : "hung up");
    return;
  }
  if (c->conn->wakeMode() == Connection::WakeMode::SOCKET) {
    // What the doorbell watch does for a client with wake fds: its WAKE datagrams were read above.
    drain(*c);
    if (c->alive) outbound_.flushBacklog(*c);
  }
}

void Dispatch::drain(ClientRecord& c, bool toTheEnd) {
  int handled = 0;
  // The fast lane decodes straight into ev.data. One event serves every batch (a nested drain,
  // from a handler, gets its own): a map there (what most posts carry) keeps its storage for the
  // next post, so a small post allocates nothing. Its ports go when the batch ends.
  std::optional<ExtendableMessageEvent> nested;
  ExtendableMessageEvent& ev = drainDepth_ == 0 ? batchEvent_ : nested.emplace();
  ++drainDepth_;
  struct EndBatch {
    Dispatch& self;
    ExtendableMessageEvent& ev;
    ~EndBatch() {
      --self.drainDepth_;
      ev.ports.clear();
      ev.typed.reset();
    }
  } endBatch{*this, ev};
  for (;;) {
    wire::Inbound in;
    wire::PlainMessage plain;
    Error err;
    auto s = c.conn->receive(in, plain, ev.data, plainKinds_, err);
    if (s == Connection::RecvStatus::VIOLATION) return clients_.violation(c, err);
    if (s == Connection::RecvStatus::OK || s == Connection::RecvStatus::PLAIN) {
      // A plain envelope (wire::isPlain) had every pointer outside its Value checked at receipt,
      // and its Value is decoded inside readValue's own exception boundary; a fast-lane post is
      // decoded whole before it gets here; other envelopes were walked for bounds. What a walk
      // cannot prove (a pointer of the wrong kind, a list of zero-sized elements) throws as it is
      // read, and ends here.
      bool ok = false;
      try {
        ok = s == Connection::RecvStatus::PLAIN ? plain_[static_cast<unsigned>(plain.kind)](c, plain, ev)
                                                : dispatch(c, std::move(in));
      } catch (const kj::Exception& e) {
        // The last line of defence: a read of the client's bytes that the checks at receipt did
        // not foresee (service-worker code cannot get here: callUser() catches what it throws).
        // The offender goes; the daemon and everyone else carry on.
        if (c.alive)
          clients_.violation(
              c, makeError(Errc::PROTOCOL_VIOLATION, std::string("malformed message: ") + e.getDescription().cStr()));
        ok = false;
      }
      // Its ports go now: dropping one closes it, which may write to this client and find its
      // ring broken (detaching it), so that is known before anything touches c again.
      ev.ports.clear();
      ev.typed.reset();
      if (!ok) return;
      if (!c.alive) return;
      if (handled++ == 0) lastActivity_ = Clock::now();
      // Give the space back as we go: a writer that keeps feeding us must see the ring drain
      // (and one that waits for space is woken), not only when we stop.
      if (handled % PUBLISH_EVERY == 0) c.conn->publishConsumed();
      if (handled < DRAIN_BUDGET || toTheEnd) continue;
      // Fairness: let other clients in, come back for the rest.
      c.conn->publishConsumed();
      if (!c.drainScheduled) {
        c.drainScheduled = true;
        const ClientId id = c.id;
        loop_.post([this, id] {
          if (auto* cr = clients_.findAlive(id)) {
            cr->drainScheduled = false;
            drain(*cr);
          }
        });
      }
      return;
    }
    c.conn->publishConsumed();
    if (spinning_) return;  // the spin loop re-arms before sleeping
    if (!c.conn->armAndCheck()) return;
  }
}

bool Dispatch::dispatch(ClientRecord& c, wire::Inbound&& inbound) {
  auto owner = std::make_shared<const wire::Inbound>(std::move(inbound));
  auto env = owner->envelope();
  const auto kind = static_cast<unsigned>(env.which());
  if (kind < KINDS && handlers_[kind]) return handlers_[kind](c, env, owner);
  clients_.violation(c, makeError(Errc::PROTOCOL_VIOLATION,
                                  "a client may not send envelope kind " + std::to_string(kind) + " to the daemon"));
  return false;
}

}  // namespace swipc::daemon
