// daemon: PortService, the router put to work. A page's portPost reaches the ring of whoever owns
// the peer; one on a port it does not own disconnects it; a page's portClose (fast lane too) ends
// its end and tells the peer; a page that goes closes its ports; messageSW's reply takes the fast
// lane; the ports a page owns are counted in its usage.
#include "daemon/port_service.h"

#include <gtest/gtest.h>

#include <vector>

#include "daemon_rig.h"

namespace swipc::daemon {
namespace {

using detail::PortPtr;
using detail::PortState;
using testing::DaemonRig;
using testing::Page;

class PortServiceTest : public ::testing::Test {
 protected:
  PortServiceTest() {
    sut.registerWith(rig.dispatch);
    pair(a, p, b, q);
  }
  ~PortServiceTest() override { sut.endLocalPorts(); }

  /// A pair made by service-worker code, one end shipped to each page: `first` at x, `second` at y.
  void pair(Page& x, PortId& first, Page& y, PortId& second) {
    auto [keep, give] = PortState::createPair(sut);
    first = give->id;
    second = keep->id;
    for (auto [to, port] : {std::pair{x.id, give}, std::pair{y.id, keep}}) {
      std::vector<PortPtr> ports{port};
      capnp::MallocMessageBuilder mb;
      sut.router().shipToClient(to, ports, mb.initRoot<schema::PortMessage>().initPorts(1));
    }
  }
  static void portPost(Page& from, PortId port, const Value& v) {
    from.send([&](schema::Envelope::Builder e) {
      auto pp = e.initPortPost();
      pp.setFrom(port.value());
      pp.setSeq(1);
      wire::writeValue(v, pp.initPayload().initValue());
    });
  }

  DaemonRig rig;
  TypeRegistry types;
  PortService sut{rig.clients, rig.outbound, *rig.loop, types, rig.opts};
  Page a = rig.attach();
  Page b = rig.attach();
  PortId p, q;  // a pair made by service-worker code: p at a, q at b
};

TEST_F(PortServiceTest, PortPostReachesTheRingOfThePeersOwner) {
  portPost(a, p, Value("over the port"));
  rig.dispatch.drain(rig.record(a));
  auto in = b.next();
  ASSERT_TRUE(in.has_value());
  ASSERT_TRUE(in->envelope().isPortMessage());
  EXPECT_EQ(in->envelope().getPortMessage().getTo(), q.value());
  EXPECT_EQ(sut.router().stats().routed, 1u);
}

TEST_F(PortServiceTest, PortPostOnAPortItDoesNotOwnDisconnectsThePage) {
  portPost(a, q, Value("not mine"));
  rig.dispatch.drain(rig.record(a));
  EXPECT_FALSE(rig.record(a).alive);
  EXPECT_EQ(rig.counters.protocolViolations, 1u);
}

TEST_F(PortServiceTest, PortCloseOnTheFastLaneTellsThePeer) {
  wire::PlainMessage m;
  m.kind = schema::Envelope::PORT_CLOSE;
  m.seq = a.nextSeq++;
  m.to = p.value();
  m.portSeq = 1;
  ASSERT_EQ(a.conn->sendValue(m, Value()), core::Connection::ValueStatus::SENT);
  rig.dispatch.drain(rig.record(a));
  auto in = b.next();
  ASSERT_TRUE(in.has_value());
  ASSERT_TRUE(in->envelope().isPortClosed());
  EXPECT_EQ(in->envelope().getPortClosed().getPort(), q.value());
  EXPECT_EQ(rig.record(a).usage.ports, 0u);
}

TEST_F(PortServiceTest, PageThatGoesClosesItsPortsAndTheirPeersHearIt) {
  rig.clients.detach(rig.record(a), "hung up");
  auto in = b.next();
  ASSERT_TRUE(in.has_value());
  ASSERT_TRUE(in->envelope().isPortClosed());
  EXPECT_EQ(in->envelope().getPortClosed().getPort(), q.value());
}

TEST_F(PortServiceTest, PortsAPageOwnsAreCountedInItsUsage) {
  PortId p2, q2;
  pair(a, p2, b, q2);
  EXPECT_EQ(rig.record(a).usage.ports, 2u);
  EXPECT_EQ(rig.record(b).usage.ports, 2u);
}

TEST_F(PortServiceTest, ReplyOnMessageSwsPortTakesTheFastLane) {
  auto port = sut.router().adoptRegistered(a.id, PortId(100), PortId(101), 1, 1, /*silentPeer=*/true);
  ASSERT_TRUE(port.ok());
  Value v("reply");
  core::OutgoingPayload payload;
  payload.value = &v;
  std::vector<PortPtr> none;
  ASSERT_TRUE(sut.postRemote(**port, payload, none).ok());
  wire::Inbound in;
  wire::PlainMessage plain;
  Value data;
  Error err;
  ASSERT_EQ(a.conn->receive(in, plain, data, wire::kindBit(schema::Envelope::PORT_MESSAGE), err),
            core::Connection::RecvStatus::PLAIN);
  EXPECT_EQ(plain.to, 101u);
  EXPECT_EQ(data.textOr(""), "reply");
  EXPECT_EQ(rig.counters.messagesOut, 1u);
}

TEST_F(PortServiceTest, PortAckFromAPageIsTaken) {
  a.send([&](schema::Envelope::Builder e) {
    auto ack = e.initPortAck();
    ack.setPort(p.value());
    ack.setRecvNext(1);
  });
  rig.dispatch.drain(rig.record(a));
  EXPECT_TRUE(rig.record(a).alive);
}

}  // namespace
}  // namespace swipc::daemon
