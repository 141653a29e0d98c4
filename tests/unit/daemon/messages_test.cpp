// daemon: Messages. A controller post (either lane) reaches onMessage with event.source set, and is
// acknowledged after it when asked; a post from a client this service worker does not control is
// refused (InvalidStateError), a one-shot reply id is a violation; messageSW's port arrives in
// event.ports; a post of service-worker code to a client takes the fast lane, and reports a gone
// client (NotFoundError) and a full backlog (QueueFull).
#include "daemon/messages.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "daemon_rig.h"

namespace swipc::daemon {
namespace {

using testing::DaemonRig;
using testing::Page;

class MessagesTest : public ::testing::Test {
 protected:
  MessagesTest() {
    api.registerWith(rig.dispatch);
    ports.registerWith(rig.dispatch);
    sut.registerWith(rig.dispatch);
    sut.onMessage([this](ExtendableMessageEvent& e) {
      seen.push_back(e.data.textOr("?"));
      sources.push_back(e.source ? e.source->id() : ClientId());
      portCounts.push_back(e.ports.size());
    });
  }
  Result<MessageSeq> postTo(const ClientId& id, const Value& v) {
    core::OutgoingPayload p;
    p.value = &v;
    TransferList none;
    return sut.postToClient(id, p, none);
  }

  DaemonRig rig;
  TypeRegistry types;
  ClientsApi api{nullptr, rig.clients, rig.outbound, rig.counters};
  PortService ports{rig.clients, rig.outbound, *rig.loop, types, rig.opts};
  Messages sut{rig.clients, rig.outbound, api, ports, rig.counters, types};
  std::vector<std::string> seen;
  std::vector<ClientId> sources;
  std::vector<size_t> portCounts;
};

TEST_F(MessagesTest, FastLanePostReachesOnMessageWithItsSource) {
  Page a = rig.attach();
  a.sendPlainPost(Value("hello"));
  rig.dispatch.drain(rig.record(a));
  EXPECT_EQ(seen, std::vector<std::string>{"hello"});
  EXPECT_EQ(sources, std::vector<ClientId>{a.id});
  EXPECT_EQ(rig.counters.messagesIn, 1u);
}

TEST_F(MessagesTest, GeneralPathPostReachesOnMessageToo) {
  Page a = rig.attach();
  a.send([](schema::Envelope::Builder e) {
    wire::writeValue(Value("general"), e.initControllerPost().initPayload().initValue());
  });
  rig.dispatch.drain(rig.record(a));
  EXPECT_EQ(seen, std::vector<std::string>{"general"});
}

TEST_F(MessagesTest, WantAckPostIsAcknowledgedAfterTheHandler) {
  Page a = rig.attach();
  auto seq = a.sendPlainPost(Value("ack me"), /*wantAck=*/true);
  rig.dispatch.drain(rig.record(a));
  ASSERT_EQ(seen.size(), 1u);
  auto in = a.next();
  ASSERT_TRUE(in.has_value());
  ASSERT_TRUE(in->envelope().isAck());
  EXPECT_EQ(in->envelope().getAck().getSeq(), seq);
}

TEST_F(MessagesTest, PostFromAnUncontrolledClientIsRefusedWithInvalidState) {
  Page a = rig.attach(ClientType::WINDOW, /*controlled=*/false);
  auto seq = a.sendPlainPost(Value("not yours"));
  rig.dispatch.drain(rig.record(a));
  EXPECT_TRUE(seen.empty());
  auto in = a.next();
  ASSERT_TRUE(in.has_value());
  ASSERT_TRUE(in->envelope().isError());
  EXPECT_EQ(std::string(in->envelope().getError().getName().cStr()), "InvalidStateError");
  EXPECT_EQ(in->envelope().getError().getRefSeq(), seq);
  EXPECT_TRUE(rig.record(a).alive);
}

TEST_F(MessagesTest, OneShotReplyIdIsAViolation) {
  Page a = rig.attach();
  a.send([](schema::Envelope::Builder e) {
    auto p = e.initControllerPost();
    p.setReplyId(7);
    wire::writeValue(Value("old"), p.initPayload().initValue());
  });
  rig.dispatch.drain(rig.record(a));
  EXPECT_TRUE(seen.empty());
  EXPECT_FALSE(rig.record(a).alive);
}

TEST_F(MessagesTest, MessageSwPortArrivesInEventPortsAndIsOwnedByThePage) {
  Page a = rig.attach();
  wire::PlainMessage m;
  m.kind = schema::Envelope::CONTROLLER_POST;
  m.seq = a.nextSeq++;
  m.hasPort = true;
  m.port = wire::PlainPort{.portId = 100, .peerId = 101, .sendSeq = 1, .recvNext = 1, .silentPeer = true};
  ASSERT_EQ(a.conn->sendValue(m, Value("request")), core::Connection::ValueStatus::SENT);
  rig.dispatch.drain(rig.record(a));
  EXPECT_EQ(portCounts, std::vector<size_t>{1});
  // Unanswered, the service worker's end closed with the batch: the page's end is told, and is
  // the page's (a tombstone) until it answers.
  EXPECT_EQ(ports.router().size(), 1u);
  EXPECT_EQ(rig.record(a).usage.ports, 1u);
  auto in = a.next();
  ASSERT_TRUE(in.has_value());
  ASSERT_TRUE(in->envelope().isPortClosed());
  EXPECT_EQ(in->envelope().getPortClosed().getPort(), 101u);
}

TEST_F(MessagesTest, PostToAClientTakesTheFastLane) {
  Page a = rig.attach();
  auto seq = postTo(a.id, Value("to the page"));
  ASSERT_TRUE(seq.ok()) << seq.error().describe();
  auto in = a.next();
  ASSERT_TRUE(in.has_value());
  EXPECT_TRUE(in->envelope().isClientPost());
  EXPECT_EQ(in->envelope().getSeq(), *seq);
  EXPECT_EQ(testing::postValue(*in).textOr(""), "to the page");
}

TEST_F(MessagesTest, PostToAGoneClientIsNotFoundAndCountedUndelivered) {
  Page a = rig.attach();
  rig.clients.detach(rig.record(a), "test");
  auto r = postTo(a.id, Value("late"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::NOT_FOUND);
  EXPECT_EQ(rig.counters.undelivered, 1u);
}

TEST_F(MessagesTest, PostToAClientWhoseBacklogIsFullIsQueueFull) {
  Page a = rig.attach();
  const Value filler(Bytes{std::vector<uint8_t>(600, 1)});
  Result<MessageSeq> r = MessageSeq{0};
  for (int i = 0; i < 100 && r.ok(); ++i) r = postTo(a.id, filler);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::QUEUE_FULL);
  EXPECT_EQ(rig.record(a).backlog.size(), rig.opts.maxBacklog);
}

}  // namespace
}  // namespace swipc::daemon
