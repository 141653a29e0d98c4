// daemon: PortRouter through a fake Sink (the daemon's clients) and a fake PortHost (service-worker
// code's ports): one test per row of the transition table in docs/design/port-transfer.md, then
// messageSW's reply port and the per-client accounting of owned ports.
#include "daemon/port_router.h"

#include <gtest/gtest.h>

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/identity.h"
#include "wire/value_codec.h"

namespace swipc::daemon {
namespace {

using detail::PortPtr;
using detail::PortState;

ClientId client(uint8_t n) {
  std::array<uint8_t, 16> b{};
  b[0] = n;
  return ClientId(b);
}
const ClientId A = client(1);
const ClientId B = client(2);

/// The daemon's clients as the router sees them: what it sends each, and what it reports.
class FakeSink final : public PortRouter::Sink {
 public:
  struct Sent {
    ClientId to;
    std::shared_ptr<capnp::MallocMessageBuilder> env;
    schema::Envelope::Reader envelope() const { return env->getRoot<schema::Envelope>().asReader(); }
  };

  std::shared_ptr<capnp::MallocMessageBuilder> newEnvelope(const ClientId& id, MessageSeq& seq) override {
    if (gone.count(id)) return nullptr;
    auto mb = std::make_shared<capnp::MallocMessageBuilder>();
    seq = nextSeq++;
    mb->initRoot<schema::Envelope>().setSeq(seq);
    return mb;
  }
  Result<void> enqueue(const ClientId& id, const std::shared_ptr<capnp::MallocMessageBuilder>& env, MessageSeq) override {
    if (gone.count(id)) return makeError(Errc::NOT_FOUND, "gone");
    sent.push_back(Sent{id, env});
    return {};
  }
  bool backlogFull(const ClientId& id) override { return full.count(id) != 0; }
  void reportError(const ClientId& id, Errc code, const std::string&, uint64_t refSeq) override {
    errors.push_back({id, code, refSeq});
  }
  size_t copyLimit() const override { return limit; }
  void disconnect(const ClientId& id, const Error& why) override { disconnected.push_back({id, why.code}); }
  Direct sendPortValue(const ClientId& id, PortId to, uint64_t portSeq, const Value&) override {
    if (direct == Direct::SENT) direct_.push_back({id, to, portSeq});
    return direct;
  }
  void portsOwned(const ClientId& id, int delta) override { owned[id] += delta; }
  Result<void> admitPorts(const ClientId& id, size_t more) override {
    if (owned[id] + static_cast<int>(more) <= maxPorts) return {};
    return makeError(Errc::QUOTA_EXCEEDED, "over the port quota");
  }

  /// What client `id` was sent, in order.
  std::vector<schema::Envelope::Reader> to(const ClientId& id) const {
    std::vector<schema::Envelope::Reader> out;
    for (const auto& s : sent)
      if (s.to == id) out.push_back(s.envelope());
    return out;
  }
  /// The ports client `id` was told closed.
  std::vector<uint64_t> closedAt(const ClientId& id) const {
    std::vector<uint64_t> out;
    for (auto e : to(id))
      if (e.isPortClosed()) out.push_back(e.getPortClosed().getPort());
    return out;
  }

  struct Report {
    ClientId id;
    Errc code;
    uint64_t refSeq;
  };
  struct DirectSend {
    ClientId id;
    PortId to;
    uint64_t portSeq;
  };
  std::set<ClientId> gone, full;
  std::vector<Sent> sent;
  std::vector<Report> errors;
  std::vector<std::pair<ClientId, Errc>> disconnected;
  std::vector<DirectSend> direct_;
  Direct direct = Direct::NOT_NOW;
  std::unordered_map<ClientId, int> owned;
  size_t limit = 1000;
  int maxPorts = 1 << 20;
  MessageSeq nextSeq = 1;
};

/// Service-worker code's side: its ports talk to the router; `later` work waits for run().
class FakeHost final : public detail::PortHost {
 public:
  Result<void> postRemote(PortState& from, const core::OutgoingPayload& p, std::vector<PortPtr>& t) override {
    return router->postFromLocal(from, p, t);
  }
  void closeRemote(PortState& port) override { router->closeLocal(port); }
  void ackRemote(PortState&) override {}
  void track(const PortPtr& port) override { router->trackLocal(port); }
  void untrack(PortState& port) override { router->untrackLocal(port); }
  void later(std::function<void()> fn) override { tasks.push_back(std::move(fn)); }
  void deliver(std::function<void()> fn) override { fn(); }
  const TypeRegistry& types() const override { return registry; }
  uint64_t maxMessageBytes() const override { return 1 << 20; }
  void run() {
    while (!tasks.empty()) {
      auto fn = std::move(tasks.front());
      tasks.erase(tasks.begin());
      fn();
    }
  }

  PortRouter* router = nullptr;
  TypeRegistry registry;
  std::vector<std::function<void()>> tasks;
};

/// A port descriptor as a client writes it.
struct Desc {
  uint64_t id = 0;
  uint64_t peer = 0;
  uint64_t recvNext = 1;
  bool reg = false;
  bool peerClosed = false;
  bool silent = false;
  std::vector<uint64_t> queuedSeqs;  // messages it carries (to `id`, a text payload each)
};

/// A message (a PortPost, or a descriptor list) built by a "client", kept alive with its readers.
class Wire {
 public:
  PortList::Reader ports(const std::vector<Desc>& ds) {
    auto root = mb_.initRoot<schema::PortMessage>();
    fill(root.initPorts(static_cast<unsigned>(ds.size())), ds);
    return root.asReader().getPorts();
  }
  schema::PortPost::Reader post(uint64_t from, uint64_t seq, const std::string& text, const std::vector<Desc>& ds = {}) {
    auto root = mb_.initRoot<schema::PortPost>();
    root.setFrom(from);
    root.setSeq(seq);
    wire::writeValue(Value(text), root.initPayload().initValue());
    fill(root.initPorts(static_cast<unsigned>(ds.size())), ds);
    return root.asReader();
  }

 private:
  static void fill(PortList::Builder out, const std::vector<Desc>& ds) {
    for (unsigned i = 0; i < ds.size(); ++i) {
      auto d = out[i];
      d.setPortId(ds[i].id);
      d.setPeerId(ds[i].peer);
      d.setSendSeq(1);
      d.setRecvNext(ds[i].recvNext);
      d.setRegister(ds[i].reg);
      d.setPeerClosed(ds[i].peerClosed);
      d.setSilentPeer(ds[i].silent);
      auto q = d.initQueued(static_cast<unsigned>(ds[i].queuedSeqs.size()));
      for (unsigned j = 0; j < q.size(); ++j) {
        q[j].setTo(ds[i].id);
        q[j].setSeq(ds[i].queuedSeqs[j]);
        wire::writeValue(Value("queued " + std::to_string(ds[i].queuedSeqs[j])), q[j].initPayload().initValue());
      }
    }
  }
  capnp::MallocMessageBuilder mb_;
};

std::string text(const detail::QueuedPortMessage& m) {
  auto v = wire::readValue(m.payload.getValue());
  return v.ok() ? v->textOr("?") : "?";
}
std::string text(schema::Envelope::Reader e) {
  auto v = wire::readValue(e.getPortMessage().getPayload().getValue());
  return v.ok() ? v->textOr("?") : "?";
}

class PortRouterTest : public ::testing::Test {
 protected:
  PortRouterTest() { host.router = &sut; }
  ~PortRouterTest() override {
    for (auto& p : sut.takeLocalPorts()) p->hostGone();
  }

  /// Service-worker code makes a pair and ships end `shipped` to client `to`; returns the end it keeps.
  PortPtr shipLocalPair(const ClientId& to, PortId& shipped) {
    auto [keep, give] = PortState::createPair(host);
    shipped = give->id;
    std::vector<PortPtr> ports{give};
    capnp::MallocMessageBuilder mb;
    sut.shipToClient(to, ports, mb.initRoot<schema::PortMessage>().initPorts(1));
    return keep;
  }
  /// A pair registered by the daemon with end `p` at client `a` and end `q` at client `b`.
  void clientPair(const ClientId& a, PortId& p, const ClientId& b, PortId& q) {
    auto keep = shipLocalPair(a, p);
    q = keep->id;
    std::vector<PortPtr> ports{keep};
    capnp::MallocMessageBuilder mb;
    sut.shipToClient(b, ports, mb.initRoot<schema::PortMessage>().initPorts(1));
  }
  /// Service-worker code posts `text` on its port.
  void swPost(PortState& from, const std::string& text) {
    Value v(text);
    core::OutgoingPayload p;
    p.value = &v;
    std::vector<PortPtr> none;
    ASSERT_TRUE(sut.postFromLocal(from, p, none).ok());
  }

  FakeSink sink;
  FakeHost host;
  PortRouter sut{sink, host};
};

// Row 1: A ships one end T of a local pair (register): T owned(dest), L owned(A); A's L posts
// through the daemon.
TEST_F(PortRouterTest, Row1RegisteringAPairShipsOneEndAndLeavesThePeerWithTheSender) {
  Wire w;
  auto ports = sut.toServiceWorker(A, w.ports({Desc{.id = 10, .peer = 11, .reg = true}}));
  ASSERT_EQ(ports.size(), 1u);
  EXPECT_EQ(ports[0]->id, PortId(10));
  EXPECT_EQ(sut.size(), 2u);
  EXPECT_EQ(sink.owned[A], 1);  // L
  Wire post;
  sut.onPortPost(A, post.post(11, 1, "from L"), 1, nullptr);
  ASSERT_EQ(ports[0]->queue.size(), 1u);
  EXPECT_EQ(text(ports[0]->queue[0]), "from L");
}

// Row 2: A ships a REMOTE end P it owns: it moves; the copies A never read follow it, after A's
// own queue.
TEST_F(PortRouterTest, Row2ShippingAnOwnedEndMovesItWithWhatItsOwnerNeverRead) {
  PortId p;
  auto q = shipLocalPair(A, p);
  swPost(*q, "m1");
  swPost(*q, "m2");
  swPost(*q, "m3");
  ASSERT_EQ(sink.to(A).size(), 3u);
  // A read m1 (it sits undelivered in A's queue) and never read m2, m3.
  Wire w;
  auto moved = sut.toServiceWorker(A, w.ports({Desc{.id = p.value(), .peer = q->id.value(), .recvNext = 2, .queuedSeqs = {1}}}));
  ASSERT_EQ(moved.size(), 1u);
  ASSERT_EQ(moved[0]->queue.size(), 3u);
  EXPECT_EQ(text(moved[0]->queue[0]), "queued 1");
  EXPECT_EQ(moved[0]->queue[1].seq, 2u);
  EXPECT_EQ(text(moved[0]->queue[1]), "m2");
  EXPECT_EQ(text(moved[0]->queue[2]), "m3");
  EXPECT_EQ(moved[0]->recvNext, 4u);
  EXPECT_EQ(sink.owned[A], 0);
}

// Row 3: shipping a port it does not own, registering a taken id, shipping the posting port or
// its peer, a port twice: each is a ProtocolViolation.
TEST_F(PortRouterTest, Row3LiesAboutPortsAreProtocolViolations) {
  PortId p, q;
  clientPair(A, p, B, q);
  Wire w1, w2, w3, w4, w5;
  auto notOwned = sut.checkShipped(A, w1.ports({Desc{.id = q.value(), .peer = p.value()}}));
  auto taken = sut.checkShipped(A, w2.ports({Desc{.id = p.value(), .peer = 99, .reg = true}}));
  auto twice = sut.checkShipped(A, w3.ports({Desc{.id = 20, .peer = 21, .reg = true}, Desc{.id = 20, .peer = 22, .reg = true}}));
  auto posting = sut.checkPost(A, w4.post(p.value(), 1, "x", {Desc{.id = p.value(), .peer = q.value()}}));
  auto peerOfPosting = sut.checkPost(A, w5.post(p.value(), 1, "x", {Desc{.id = q.value(), .peer = p.value()}}));
  for (auto* r : {&notOwned, &taken, &twice, &posting, &peerOfPosting}) {
    ASSERT_FALSE(r->ok());
    EXPECT_EQ(r->error().code, Errc::PROTOCOL_VIOLATION);
  }
  Wire ok;
  EXPECT_TRUE(sut.checkShipped(A, ok.ports({Desc{.id = p.value(), .peer = q.value()}})).ok());
}

// Row 4: A posts on P: routed to the owner of P's peer, a client (copy kept) or service-worker code.
TEST_F(PortRouterTest, Row4PostIsRoutedToWhereThePeerLivesNow) {
  PortId p, q;
  clientPair(A, p, B, q);
  Wire w;
  sut.onPortPost(A, w.post(p.value(), 1, "to B"), 5, nullptr);
  auto atB = sink.to(B);
  ASSERT_EQ(atB.size(), 1u);
  ASSERT_TRUE(atB[0].isPortMessage());
  EXPECT_EQ(atB[0].getPortMessage().getTo(), q.value());
  EXPECT_EQ(text(atB[0]), "to B");
  EXPECT_EQ(sut.stats().routed, 1u);

  PortId p2;
  auto local = shipLocalPair(A, p2);
  Wire w2;
  sut.onPortPost(A, w2.post(p2.value(), 1, "to the service worker"), 6, nullptr);
  ASSERT_EQ(local->queue.size(), 1u);
  EXPECT_EQ(text(local->queue[0]), "to the service worker");
}

TEST_F(PortRouterTest, InTransitCountsPortsWithMessagesNotYetAcknowledged) {
  // swctl ports: a message routed to B's end stays in transit until B acknowledges it.
  PortId p, q;
  clientPair(A, p, B, q);
  EXPECT_EQ(sut.inTransit(), 0u);
  Wire w;
  sut.onPortPost(A, w.post(p.value(), 1, "to B"), 5, nullptr);
  EXPECT_EQ(sut.inTransit(), 1u);
  EXPECT_EQ(sut.size(), 2u);
  sut.onPortAck(B, q, 2);
  EXPECT_EQ(sut.inTransit(), 0u);
}

// Row 5: the destination's backlog is at its bound: not delivered, QueueFull to A, ports in it close.
TEST_F(PortRouterTest, Row5FullDestinationRefusesThePostAndClosesItsPorts) {
  PortId p, q;
  clientPair(A, p, B, q);
  sink.full.insert(B);
  Wire w;
  sut.onPortPost(A, w.post(p.value(), 1, "dropped", {Desc{.id = 30, .peer = 31, .reg = true}}), 7, nullptr);
  EXPECT_TRUE(sink.to(B).empty());
  ASSERT_EQ(sink.errors.size(), 1u);
  EXPECT_EQ(sink.errors[0].id, A);
  EXPECT_EQ(sink.errors[0].code, Errc::QUEUE_FULL);
  EXPECT_EQ(sink.errors[0].refSeq, 7u);
  host.run();
  EXPECT_EQ(sink.closedAt(A), std::vector<uint64_t>{31});  // the end that stayed with A hears `close`
  EXPECT_EQ(sut.stats().dropped, 1u);
}

// Row 6: A closes P: B's end becomes a tombstone and B is told; copies A never read are dropped and
// the ports inside them close.
TEST_F(PortRouterTest, Row6CloseTellsThePeerAndClosesPortsInMessagesNeverRead) {
  PortId p, q;
  clientPair(A, p, B, q);
  Wire m1, m2;
  sut.onPortPost(B, m1.post(q.value(), 1, "read"), 1, nullptr);
  sut.onPortPost(B, m2.post(q.value(), 2, "never read", {Desc{.id = 40, .peer = 41, .reg = true}}), 2, nullptr);
  ASSERT_TRUE(sut.onPortClose(A, p, /*recvNext=*/2).ok());
  host.run();
  // The unread copy goes first (its port 41 closes), then p itself (q hears it).
  EXPECT_EQ(sink.closedAt(B), (std::vector<uint64_t>{41, q.value()}));
  EXPECT_EQ(sut.size(), 2u);  // two tombstones at B: q and 41
}

// Row 7: B answers portClose: its tombstone goes.
TEST_F(PortRouterTest, Row7AnsweringPortCloseRemovesTheTombstone) {
  PortId p, q;
  clientPair(A, p, B, q);
  ASSERT_TRUE(sut.onPortClose(A, p, 1).ok());
  ASSERT_EQ(sut.size(), 1u);
  const size_t sentBefore = sink.sent.size();
  ASSERT_TRUE(sut.onPortClose(B, q, 1).ok());
  EXPECT_EQ(sut.size(), 0u);
  EXPECT_EQ(sink.sent.size(), sentBefore);  // nobody to tell
  EXPECT_EQ(sink.owned[A] + sink.owned[B], 0);
}

// Row 8: A dies: everything it owned goes; live peers become tombstones and hear close (a
// service-worker port gets `close`); ports inside A's unread copies close too.
TEST_F(PortRouterTest, Row8ClientGoneClosesEverythingItOwned) {
  PortId p, q;
  clientPair(A, p, B, q);
  PortId p2;
  auto local = shipLocalPair(A, p2);
  bool localClosed = false;
  local->onClose = [&] { localClosed = true; };
  Wire w;
  sut.onPortPost(B, w.post(q.value(), 1, "carries a port", {Desc{.id = 50, .peer = 51, .reg = true}}), 1, nullptr);
  sut.clientGone(A);
  host.run();
  EXPECT_TRUE(localClosed);
  auto closed = sink.closedAt(B);
  EXPECT_EQ(std::set<uint64_t>(closed.begin(), closed.end()), (std::set<uint64_t>{q.value(), 51}));
  EXPECT_EQ(closed.size(), 2u);
  EXPECT_EQ(sink.owned[A], 0);
}

// Row 9: a tombstone is shipped on: it arrives closed, with its unread copies; the new owner
// delivers them, then fires close.
TEST_F(PortRouterTest, Row9ShippedTombstoneArrivesClosedAfterItsMessages) {
  PortId p, q;
  clientPair(A, p, B, q);
  Wire w;
  sut.onPortPost(B, w.post(q.value(), 1, "last words"), 1, nullptr);
  ASSERT_TRUE(sut.onPortClose(B, q, 1).ok());  // p is a tombstone at A now
  Wire ship;
  auto moved = sut.toServiceWorker(A, ship.ports({Desc{.id = p.value(), .peer = q.value(), .recvNext = 1}}));
  ASSERT_EQ(moved.size(), 1u);
  std::vector<std::string> events;
  moved[0]->onMessage = [&](const MessageEvent& e) { events.push_back(e.data.textOr("?")); };
  moved[0]->onClose = [&] { events.push_back("close"); };
  moved[0]->start();
  host.run();
  EXPECT_EQ(events, (std::vector<std::string>{"last words", "close"}));
  EXPECT_EQ(sut.size(), 0u);
}

// Row 10: service-worker code closes its end: as row 6.
TEST_F(PortRouterTest, Row10ServiceWorkerClosingItsEndTellsTheClient) {
  PortId p;
  auto q = shipLocalPair(A, p);
  q->close();
  EXPECT_EQ(sink.closedAt(A), std::vector<uint64_t>{p.value()});
  EXPECT_EQ(sut.size(), 1u);  // p, a tombstone until A answers
}

// Row 11: the daemon goes: every port of service-worker code ends, with no callback.
TEST_F(PortRouterTest, Row11DaemonGoingEndsEveryServiceWorkerPortQuietly) {
  PortId p;
  auto shipped = shipLocalPair(A, p);
  auto [l1, l2] = PortState::createPair(host);
  bool called = false;
  for (auto* s : {&shipped, &l1, &l2}) (*s)->onClose = [&] { called = true; };
  auto all = sut.takeLocalPorts();
  EXPECT_EQ(all.size(), 3u);
  for (auto& port : all) port->hostGone();
  host.run();
  EXPECT_FALSE(called);
  for (auto* s : {&shipped, &l1, &l2}) EXPECT_FALSE((*s)->live());
}

// messageSW's reply port: registered silentPeer, answered on the fast lane with no copy kept, and
// never shippable.
TEST_F(PortRouterTest, ReplyPortIsAnsweredDirectlyAndCannotBeShipped) {
  auto port = sut.adoptRegistered(A, PortId(60), PortId(61), 1, 1, /*silentPeer=*/true);
  ASSERT_TRUE(port.ok());
  sink.direct = PortRouter::Sink::Direct::SENT;
  swPost(**port, "reply");
  ASSERT_EQ(sink.direct_.size(), 1u);
  EXPECT_EQ(sink.direct_[0].to, PortId(61));
  EXPECT_TRUE(sink.sent.empty());
  Wire w;
  auto ship = sut.checkShipped(A, w.ports({Desc{.id = 61, .peer = 60}}));
  ASSERT_FALSE(ship.ok());
  EXPECT_EQ(ship.error().code, Errc::PROTOCOL_VIOLATION);
  (*port)->close();  // answered: the page closes its end by itself, no portClosed
  EXPECT_TRUE(sink.closedAt(A).empty());
  EXPECT_EQ(sut.size(), 0u);
}

TEST_F(PortRouterTest, OwnedCountFollowsEveryMoveAndClose) {
  PortId p, q;
  clientPair(A, p, B, q);
  EXPECT_EQ(sink.owned[A], 1);
  EXPECT_EQ(sink.owned[B], 1);
  Wire w;
  (void)sut.toServiceWorker(A, w.ports({Desc{.id = p.value(), .peer = q.value()}}));
  EXPECT_EQ(sink.owned[A], 0);
  sut.clientGone(B);
  EXPECT_EQ(sink.owned[B], 0);
}

TEST_F(PortRouterTest, ClientThatNeverAcknowledgesIsDisconnected) {
  sink.limit = 2;
  PortId p;
  auto q = shipLocalPair(A, p);
  swPost(*q, "1");
  swPost(*q, "2");
  EXPECT_TRUE(sink.disconnected.empty());
  swPost(*q, "3");
  ASSERT_EQ(sink.disconnected.size(), 1u);
  EXPECT_EQ(sink.disconnected[0].second, Errc::PROTOCOL_VIOLATION);
  sut.onPortAck(A, p, 4);  // an ack releases the copies
  swPost(*q, "4");
  EXPECT_EQ(sink.disconnected.size(), 1u);
}

}  // namespace
}  // namespace swipc::daemon

namespace swipc::daemon {
namespace {

// Issue 14, finding 7: registrations are charged to the client that keeps their other end.
TEST_F(PortRouterTest, RegisteringPastThePortQuotaIsRefusedAndRegistersNothing) {
  sink.maxPorts = 3;
  Wire w;
  size_t registrations = 0;
  auto ds = w.ports({{.id = 10, .peer = 11, .reg = true}, {.id = 12, .peer = 13, .reg = true}});
  ASSERT_TRUE(sut.checkShipped(A, ds, {}, &registrations).ok());
  EXPECT_EQ(registrations, 2u);
  ASSERT_TRUE(sut.admitShipped(A, registrations).ok());
  auto kept = sut.toServiceWorker(A, ds);
  EXPECT_EQ(sink.owned[A], 2);

  Wire more;
  auto over = more.ports({{.id = 20, .peer = 21, .reg = true}, {.id = 22, .peer = 23, .reg = true}});
  ASSERT_TRUE(sut.checkShipped(A, over, {}, &registrations).ok());
  auto r = sut.admitShipped(A, registrations);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::QUOTA_EXCEEDED);
  EXPECT_EQ(sut.stats().quotaRefused, 1u);
  const size_t before = sut.size();
  sut.refuse(A, over);
  EXPECT_EQ(sut.size(), before) << "a refused message registers nothing";
  EXPECT_EQ(sink.owned[A], 2);
}

TEST_F(PortRouterTest, ARefusedMessageClosesThePortsItShipped) {
  PortId p, q;
  clientPair(A, p, B, q);
  Wire w;
  auto ds = w.ports({{.id = p.value(), .peer = q.value()}});
  ASSERT_TRUE(sut.checkShipped(A, ds).ok());
  sut.refuse(A, ds);
  EXPECT_EQ(sink.closedAt(B), (std::vector<uint64_t>{q.value()}));
  EXPECT_EQ(sink.owned[A], 0);
}

}  // namespace
}  // namespace swipc::daemon
