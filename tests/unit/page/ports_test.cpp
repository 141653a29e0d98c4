// page: PagePorts, the page as a MessagePort host. What the daemon sends for a port reaches it
// (general path, or the fast lane for an intercepting port); what a REMOTE port says goes to the
// daemon (portPost, portClose, portAck); ports end when the daemon goes or the page closes.
#include "page/ports.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <capnp/any.h>

#include "page_rig.h"

namespace swipc::page {
namespace {

using testing::PageRig;

constexpr uint64_t HERE = 0x1111;   // the page's end
constexpr uint64_t THERE = 0x2222;  // its peer, somewhere the daemon knows

struct PagePortsTest : ::testing::Test {
  PagePortsTest() { rig.start(); }
  PagePorts& sut() { return rig.page->ports(); }

  /// A REMOTE port tracked by the page, started, recording its messages and close.
  detail::PortPtr remotePort(uint64_t id = HERE, uint64_t peer = THERE) {
    auto p = std::make_shared<detail::PortState>(&sut(), PortId(id), PortId(peer), detail::PortState::Mode::REMOTE);
    sut().track(p);
    p->onMessage = [this, id](const MessageEvent& e) { log.push_back(std::to_string(id) + " message " + e.data.asText()); };
    p->onClose = [this, id] { log.push_back(std::to_string(id) + " close"); };
    p->start();
    return p;
  }
  void sendPortMessage(uint64_t to, uint64_t seq, const std::string& text) {
    rig.daemon.send([&](schema::Envelope::Builder e) {
      auto pm = e.initPortMessage();
      pm.setTo(to);
      pm.setSeq(seq);
      pm.initPayload().initValue().setText(text);
    });
  }

  PageRig rig;
  std::vector<std::string> log;
};

TEST_F(PagePortsTest, APortMessageReachesItsPort) {
  auto port = remotePort();
  sendPortMessage(HERE, 1, "hello");
  ASSERT_TRUE(rig.runUntil([&] { return !log.empty(); }));
  EXPECT_EQ(log, (std::vector<std::string>{"4369 message hello"}));
  EXPECT_EQ(port->recvNext, 2u);
}

TEST_F(PagePortsTest, AnInterceptingPortTakesItsValueFromTheFastLane) {
  auto port = remotePort();
  std::string got;
  port->interceptValue = [&](Value& v) { got = v.asText(); };
  EXPECT_TRUE(sut().plainFilter()->wantsValue(wire::PlainMessage{.kind = schema::Envelope::PORT_MESSAGE, .to = HERE}));
  EXPECT_FALSE(sut().plainFilter()->wantsValue(wire::PlainMessage{.kind = schema::Envelope::PORT_MESSAGE, .to = 9}));
  sendPortMessage(HERE, 1, "reply");
  ASSERT_TRUE(rig.runUntil([&] { return !got.empty(); }));
  EXPECT_EQ(got, "reply");
}

TEST_F(PagePortsTest, AMessageForAPortNotHereIsDropped) {
  auto port = remotePort();
  sendPortMessage(0x9999, 1, "lost");
  sendPortMessage(HERE, 1, "kept");
  ASSERT_TRUE(rig.runUntil([&] { return !log.empty(); }));
  EXPECT_EQ(log, (std::vector<std::string>{"4369 message kept"}));
  EXPECT_EQ(sut().routable(0x9999), nullptr);
}

TEST_F(PagePortsTest, PortClosedIsAnsweredWithPortCloseAndFiresClose) {
  auto port = remotePort();
  rig.daemon.send([](schema::Envelope::Builder e) { e.initPortClosed().setPort(HERE); });
  ASSERT_TRUE(rig.runUntil([&] { return !log.empty(); }));
  EXPECT_EQ(log, (std::vector<std::string>{"4369 close"}));
  auto in = rig.nextSent();
  ASSERT_TRUE(in && in->envelope().isPortClose());
  EXPECT_EQ(in->envelope().getPortClose().getPort(), HERE);
  EXPECT_EQ(in->envelope().getPortClose().getRecvNext(), 1u);
  EXPECT_EQ(sut().routable(HERE), nullptr);  // disentangled
}

TEST_F(PagePortsTest, ClosingARemotePortTellsTheDaemon) {
  auto port = remotePort();
  sendPortMessage(HERE, 1, "one");
  ASSERT_TRUE(rig.runUntil([&] { return !log.empty(); }));
  port->close();
  auto in = rig.nextSent();
  ASSERT_TRUE(in && in->envelope().isPortClose());
  EXPECT_EQ(in->envelope().getPortClose().getRecvNext(), 2u);
}

TEST_F(PagePortsTest, PostsOnARemotePortCarryItsSeq) {
  auto port = remotePort();
  const Value a("a"), b("b");
  TransferList none;
  ASSERT_TRUE(port->post(core::OutgoingPayload{.value = &a}, none).ok());
  ASSERT_TRUE(port->post(core::OutgoingPayload{.value = &b}, none).ok());
  for (uint64_t seq : {1u, 2u}) {
    auto in = rig.nextSent();
    ASSERT_TRUE(in && in->envelope().isPortPost());
    EXPECT_EQ(in->envelope().getPortPost().getFrom(), HERE);
    EXPECT_EQ(in->envelope().getPortPost().getSeq(), seq);
  }
}

TEST_F(PagePortsTest, EveryAckEveryMessagesThePortTellsTheDaemon) {
  auto port = remotePort();
  for (uint64_t seq = 1; seq <= detail::PortState::ACK_EVERY; ++seq) sendPortMessage(HERE, seq, "m");
  auto in = rig.nextSent();
  ASSERT_TRUE(in && in->envelope().isPortAck());
  EXPECT_EQ(in->envelope().getPortAck().getPort(), HERE);
  EXPECT_EQ(in->envelope().getPortAck().getRecvNext(), detail::PortState::ACK_EVERY + 1);
}

TEST_F(PagePortsTest, LosingTheDaemonClosesEveryRemotePort) {
  auto a = remotePort(HERE, THERE);
  auto b = remotePort(0x3333, 0x4444);
  rig.daemon.refuse = 100;
  rig.daemon.hangUp();
  ASSERT_TRUE(rig.runUntil([&] { return log.size() == 2; }));
  std::sort(log.begin(), log.end());
  EXPECT_EQ(log, (std::vector<std::string>{"13107 close", "4369 close"}));
}

TEST_F(PagePortsTest, HostGoneEndsEveryPortWithoutCallbacks) {
  auto port = remotePort();
  sut().hostGone();
  EXPECT_EQ(port->mode, detail::PortState::Mode::CLOSED);
  EXPECT_EQ(port->host, nullptr);
  EXPECT_EQ(sut().routable(HERE), nullptr);
  rig.runUntil([] { return false; }, std::chrono::milliseconds(50));
  EXPECT_TRUE(log.empty());
}

}  // namespace
}  // namespace swipc::page

namespace swipc::page {
namespace {

using testing::PageRig;

/// A REMOTE port on `rig`'s page, not started, whose messages and errors go to `log`.
detail::PortPtr unstartedPort(PageRig& rig, std::vector<std::string>& log) {
  auto p = std::make_shared<detail::PortState>(&rig.page->ports(), PortId(HERE), PortId(THERE),
                                               detail::PortState::Mode::REMOTE);
  rig.page->ports().track(p);
  p->onMessage = [&log](const MessageEvent& e) { log.push_back("message " + e.data.asText()); };
  p->onMessageError = [&log](const MessageErrorEvent& e) { log.push_back("messageerror " + std::string(e.error.name())); };
  return p;
}

TEST(PagePortsQuotaTest, AnUnstartedPortDropsWhatIsPastItsByteBoundAndReportsItOnce) {
  ClientOptions opts = testing::testOptions();
  opts.maxPortQueueBytes = 1000;
  PageRig rig(opts);
  rig.start();
  std::vector<std::string> log;
  auto port = unstartedPort(rig, log);
  const std::string big(600, 'x');  // the first fits (an empty queue takes anything), not the rest
  for (uint64_t seq = 1; seq <= 5; ++seq)
    rig.daemon.send([&](schema::Envelope::Builder e) {
      auto pm = e.initPortMessage();
      pm.setTo(HERE);
      pm.setSeq(seq);
      pm.initPayload().initValue().setText(seq == 1 ? "first" + big : big);
    });
  ASSERT_TRUE(rig.runUntil([&] { return port->recvNext == 6; }));
  EXPECT_EQ(port->droppedOverQuota, 4u);
  EXPECT_EQ(rig.page->ports().droppedOverQuota(), 4u);
  port->start();
  ASSERT_TRUE(rig.runUntil([&] { return log.size() >= 2; }));
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0], "message first" + big);
  EXPECT_EQ(log[1], "messageerror QuotaExceededError");
}

TEST(PagePortsQuotaTest, AnUnreadablePayloadIsThatMessagesMessageerror) {
  PageRig rig;
  rig.start();
  std::vector<std::string> log;
  auto port = unstartedPort(rig, log);
  port->start();
  rig.daemon.send([&](schema::Envelope::Builder e) {
    auto pm = e.initPortMessage();
    pm.setTo(HERE);
    pm.setSeq(1);
    auto payload = pm.initPayload();
    payload.initValue();
    capnp::AnyStruct::Builder(kj::mv(payload)).getPointerSection()[0].setAs<capnp::Text>("I am not a Value");
  });
  rig.daemon.send([&](schema::Envelope::Builder e) {
    auto pm = e.initPortMessage();
    pm.setTo(HERE);
    pm.setSeq(2);
    pm.initPayload().initValue().setText("next");
  });
  ASSERT_TRUE(rig.runUntil([&] { return log.size() >= 2; }));
  EXPECT_EQ(log, (std::vector<std::string>{"messageerror DataCloneError", "message next"}));
  EXPECT_TRUE(rig.page->link().attached()) << "a relayed payload is not the daemon's protocol violation";
}

}  // namespace
}  // namespace swipc::page
