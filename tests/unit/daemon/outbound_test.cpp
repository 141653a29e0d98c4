// daemon: Outbound. An envelope goes into the ring while there is room, into the backlog after
// (counted in the client's usage), out again as the page drains; the backlog's bound refuses posts
// (QueueFull, unresponsive once) and drops error reports; the fast lane never overtakes a waiting
// backlog; a leaving client's backlog is reported undelivered, message by message.
// Quotas (issue 14): the bound is in bytes as well as messages, per client and per uid; the
// daemon's own traffic may take a backlog to twice its bounds, past which the client is
// disconnected as unresponsive; so is one that drains nothing for --unresponsive-ms.
#include "daemon/outbound.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "daemon_rig.h"
#include "wire/value_codec.h"

namespace swipc::daemon {
namespace {

using testing::DaemonRig;
using testing::Page;

/// A client post of `data`, built and enqueued.
Result<MessageSeq> post(Outbound& sut, ClientRecord& c, const Value& data) {
  MessageSeq seq;
  auto mb = sut.newEnvelope(c, seq);
  wire::writeValue(data, mb->getRoot<schema::Envelope>().initClientPost().initPayload().initValue());
  return sut.enqueue(c, std::move(mb), seq);
}

Value filler() { return Value(Bytes{std::vector<uint8_t>(600, 7)}); }  // two fill a 4 KiB ring's records


class OutboundTest : public ::testing::Test {
 protected:
  /// Posts until one lands in the backlog.
  void fillRing(ClientRecord& c) {
    while (c.backlog.empty()) ASSERT_TRUE(post(sut, c, filler()).ok());
  }

  DaemonRig rig;
  Outbound& sut = rig.outbound;
};

TEST_F(OutboundTest, EnvelopesGetTheClientsNextSeqs) {
  Page a = rig.attach();
  MessageSeq s1, s2;
  (void)sut.newEnvelope(rig.record(a), s1);
  (void)sut.newEnvelope(rig.record(a), s2);
  EXPECT_EQ(s2, s1 + 1);
}

TEST_F(OutboundTest, EnqueueWritesIntoTheRingWhenThereIsRoom) {
  Page a = rig.attach();
  auto seq = post(sut, rig.record(a), Value("hello"));
  ASSERT_TRUE(seq.ok());
  auto in = a.next();
  ASSERT_TRUE(in.has_value());
  EXPECT_EQ(in->envelope().getSeq(), *seq);
  EXPECT_EQ(testing::postValue(*in).textOr(""), "hello");
  EXPECT_TRUE(rig.record(a).backlog.empty());
  EXPECT_EQ(rig.counters.messagesOut, 1u);
}

TEST_F(OutboundTest, FullRingPutsTheEnvelopeInTheBacklogAndCountsItsBytes) {
  Page a = rig.attach();
  ClientRecord& c = rig.record(a);
  fillRing(c);
  EXPECT_EQ(c.usage.queuedMessages, c.backlog.size());
  EXPECT_GT(c.usage.queuedBytes, 600u);
}

TEST_F(OutboundTest, FlushBacklogSendsWhatWaitsInOrderOnceThePageDrains) {
  Page a = rig.attach();
  ClientRecord& c = rig.record(a);
  fillRing(c);
  ASSERT_TRUE(post(sut, c, Value("last")).ok());  // behind the backlog, even though it is small
  std::vector<MessageSeq> seen;
  for (int i = 0; i < 100 && !c.backlog.empty(); ++i) {
    for (auto& in : a.drain()) seen.push_back(in.envelope().getSeq());
    sut.flushBacklog(c);
  }
  for (auto& in : a.drain()) seen.push_back(in.envelope().getSeq());
  EXPECT_TRUE(c.backlog.empty());
  EXPECT_EQ(c.usage.queuedMessages, 0u);
  EXPECT_EQ(c.usage.queuedBytes, 0u);
  ASSERT_FALSE(seen.empty());
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_EQ(seen[i], seen[i - 1] + 1);
}

TEST_F(OutboundTest, PostAtTheBacklogBoundIsQueueFullAndMarksTheClientUnresponsiveOnce) {
  Page a = rig.attach();
  ClientRecord& c = rig.record(a);
  while (!sut.backlogFull(c)) ASSERT_TRUE(post(sut, c, filler()).ok());
  auto first = sut.admitPost(c);
  auto second = sut.admitPost(c);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.error().code, Errc::QUEUE_FULL);
  EXPECT_FALSE(second.ok());
  EXPECT_TRUE(c.unresponsive);
  EXPECT_EQ(rig.counters.queueFull, 2u);
  EXPECT_EQ(rig.counters.unresponsive, 1u);
}

TEST_F(OutboundTest, ErrorReportIsDroppedAndCountedWhenTheBacklogIsFull) {
  Page a = rig.attach();
  ClientRecord& c = rig.record(a);
  while (!sut.backlogFull(c)) ASSERT_TRUE(post(sut, c, filler()).ok());
  const size_t waiting = c.backlog.size();
  sut.sendError(c, Errc::INVALID_STATE, "nope", 7);
  EXPECT_EQ(c.backlog.size(), waiting);
  EXPECT_EQ(rig.counters.undelivered, 1u);
}

TEST_F(OutboundTest, ErrorReportCarriesTheNameMessageAndRefSeq) {
  Page a = rig.attach();
  sut.sendError(rig.record(a), Errc::INVALID_STATE, "nope", 7);
  auto in = a.next();
  ASSERT_TRUE(in.has_value());
  ASSERT_TRUE(in->envelope().isError());
  auto e = in->envelope().getError();
  EXPECT_EQ(std::string(e.getName().cStr()), "InvalidStateError");
  EXPECT_EQ(std::string(e.getMessage().cStr()), "nope");
  EXPECT_EQ(e.getRefSeq(), 7u);
}

TEST_F(OutboundTest, FastLaneWritesAValueThePageReads) {
  Page a = rig.attach();
  wire::PlainMessage m;
  m.kind = schema::Envelope::CLIENT_POST;
  ASSERT_EQ(sut.sendDirect(rig.record(a), m, Value("direct")), Outbound::Direct::SENT);
  auto in = a.next();
  ASSERT_TRUE(in.has_value());
  EXPECT_EQ(in->envelope().getSeq(), m.seq);
  EXPECT_EQ(testing::postValue(*in).textOr(""), "direct");
}

TEST_F(OutboundTest, FastLaneNeverOvertakesAWaitingBacklog) {
  Page a = rig.attach();
  ClientRecord& c = rig.record(a);
  fillRing(c);
  (void)a.drain();  // room in the ring now, but the backlog still waits
  wire::PlainMessage m;
  m.kind = schema::Envelope::CLIENT_POST;
  EXPECT_EQ(sut.sendDirect(c, m, Value("small")), Outbound::Direct::NOT_NOW);
}

TEST_F(OutboundTest, FastLaneSendsAValueLargerThanARecordOutOfLineWhole) {
  Page a = rig.attach();
  wire::PlainMessage m;
  m.kind = schema::Envelope::CLIENT_POST;
  const Value big(Bytes{std::vector<uint8_t>(200'000, 1)});
  ASSERT_EQ(sut.sendDirect(rig.record(a), m, big), Outbound::Direct::SENT);
  auto got = a.drain();
  ASSERT_EQ(got.size(), 1u);
  auto env = got[0].envelope();
  ASSERT_EQ(env.which(), schema::Envelope::CLIENT_POST);
  auto v = wire::readValue(env.getClientPost().getPayload().getValue());
  ASSERT_TRUE(v.ok()) << v.error().describe();
  EXPECT_EQ(*v, big);
}

TEST_F(OutboundTest, FastLaneLeavesAValueOverTheMessageLimitToTheGeneralPath) {
  Page a = rig.attach();
  wire::PlainMessage m;
  m.kind = schema::Envelope::CLIENT_POST;
  const size_t over = static_cast<size_t>(rig.record(a).conn->maxMessageBytes()) + 1;
  EXPECT_EQ(sut.sendDirect(rig.record(a), m, Value(Bytes{std::vector<uint8_t>(over, 1)})), Outbound::Direct::NOT_NOW);
  EXPECT_TRUE(a.drain().empty());
}

TEST_F(OutboundTest, DetachReportsEveryBackloggedMessageUndelivered) {
  Page a = rig.attach();
  ClientRecord& c = rig.record(a);
  fillRing(c);
  ASSERT_TRUE(post(sut, c, filler()).ok());
  std::vector<MessageSeq> expected;
  for (auto& o : c.backlog) expected.push_back(o.seq);
  std::vector<MessageSeq> reported;
  sut.onUndelivered([&](const ClientId& id, MessageSeq seq, const Error& e) {
    EXPECT_EQ(id, a.id);
    EXPECT_EQ(e.code, Errc::DISCONNECTED);
    reported.push_back(seq);
  });
  rig.clients.detach(c, "test");
  EXPECT_EQ(reported, expected);
  EXPECT_EQ(c.usage.queuedMessages, 0u);
  EXPECT_EQ(rig.counters.undelivered, expected.size());
}

TEST_F(OutboundTest, SendSimpleFillsAndSends) {
  Page a = rig.attach();
  ASSERT_TRUE(sut.sendSimple(rig.record(a), [](schema::Envelope::Builder e) { e.setFocus(); }));
  auto in = a.next();
  ASSERT_TRUE(in.has_value());
  EXPECT_TRUE(in->envelope().isFocus());
}


// ---- quotas (issue 14) ----

ServiceWorkerOptions quotaOptions(std::chrono::milliseconds unresponsive = std::chrono::hours(1)) {
  ServiceWorkerOptions o = DaemonRig::small();
  o.maxBacklog = 1000;  // so the byte bounds are what is reached
  o.maxBacklogBytes = 16 * 1024;
  o.maxBacklogBytesPerUid = 1 << 30;
  o.unresponsiveTimeout = unresponsive;
  return o;
}

/// Posts (as the daemon's own traffic would: no admitPost) until the backlog is at its bound.
void fillBacklog(DaemonRig& rig, ClientRecord& c) {
  while (!rig.outbound.backlogFull(c)) ASSERT_TRUE(post(rig.outbound, c, filler()).ok());
}

TEST(OutboundQuotaTest, BacklogBoundInBytesRefusesPosts) {
  DaemonRig rig(quotaOptions());
  Page a = rig.attach();
  ClientRecord& c = rig.record(a);
  fillBacklog(rig, c);
  EXPECT_LT(c.usage.queuedMessages, 1000u);
  EXPECT_GE(c.usage.queuedBytes, 16u * 1024);
  auto refused = rig.outbound.admitPost(c);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::QUEUE_FULL);
  EXPECT_TRUE(c.unresponsive);
}

TEST(OutboundQuotaTest, DaemonTrafficPastTwiceTheBoundDisconnectsAsUnresponsiveAndReportsTheBacklog) {
  DaemonRig rig(quotaOptions());
  std::vector<MessageSeq> undelivered;
  rig.outbound.onUndelivered([&](const ClientId&, MessageSeq seq, const Error& e) {
    EXPECT_EQ(e.code, Errc::DISCONNECTED);
    undelivered.push_back(seq);
  });
  Page a = rig.attach();
  ClientRecord& c = rig.record(a);
  // Acks and notices do not ask admitPost: they go on, up to twice the bound.
  Result<MessageSeq> last = MessageSeq{0};
  size_t waiting = 0;
  for (int i = 0; i < 10000 && last.ok(); ++i) {
    waiting = c.backlog.size();
    last = post(rig.outbound, c, filler());
  }
  ASSERT_FALSE(last.ok()) << "never refused";
  EXPECT_EQ(last.error().code, Errc::DISCONNECTED);
  EXPECT_FALSE(c.alive);
  EXPECT_EQ(rig.counters.unresponsiveDisconnects, 1u);
  EXPECT_EQ(undelivered.size(), waiting) << "every message of its backlog is reported";
  EXPECT_EQ(rig.outbound.uidBacklogBytes(0), 0u);
  bool toldWhy = false;
  for (auto& ctl : a.controls()) toldWhy |= ctl.control().isGoodbye();
  EXPECT_TRUE(toldWhy) << "the client is told it was disconnected";
}

TEST(OutboundQuotaTest, ClientsOfOneUidShareTheUidBound) {
  ServiceWorkerOptions o = quotaOptions();
  o.maxBacklogBytes = 1 << 20;
  o.maxBacklogBytesPerUid = 16 * 1024;
  DaemonRig rig(o);
  Page a = rig.attach();
  Page b = rig.attach();
  ClientRecord& ca = rig.record(a);
  ClientRecord& cb = rig.record(b);
  ASSERT_EQ(ca.uid, cb.uid);
  fillBacklog(rig, ca);
  EXPECT_TRUE(cb.backlog.empty());
  EXPECT_TRUE(rig.outbound.backlogFull(cb)) << "b is refused for what a holds: same uid";
  EXPECT_FALSE(rig.outbound.admitPost(cb).ok());
  EXPECT_FALSE(cb.unresponsive) << "b itself drains: it is not marked, nor timed out";
  cb.uid = ca.uid + 1;
  EXPECT_FALSE(rig.outbound.backlogFull(cb)) << "another uid is not";
}

TEST(OutboundQuotaTest, ClientThatDrainsNothingForTheTimeoutIsDisconnected) {
  DaemonRig rig(quotaOptions(std::chrono::milliseconds(50)));
  Page a = rig.attach();
  ClientRecord& c = rig.record(a);
  const ClientId id = c.id;
  fillBacklog(rig, c);
  ASSERT_TRUE(rig.runUntil([&] { return rig.clients.findAlive(id) == nullptr; }));
  EXPECT_EQ(rig.counters.unresponsiveDisconnects, 1u);
}

TEST(OutboundQuotaTest, ClientThatDrainsIsNotDisconnected) {
  DaemonRig rig(quotaOptions(std::chrono::milliseconds(50)));
  Page a = rig.attach();
  ClientRecord& c = rig.record(a);
  const ClientId id = c.id;
  fillBacklog(rig, c);
  ASSERT_TRUE(c.unresponsive);
  // It reads: everything waiting goes into the ring as room appears, and the mark clears.
  ASSERT_TRUE(rig.runUntil([&] {
    (void)a.drain();
    rig.outbound.flushBacklog(c);
    return c.backlog.empty();
  }));
  EXPECT_FALSE(c.unresponsive);
  // Well past the timeout, it is still here.
  EXPECT_FALSE(rig.runUntil([&] { return rig.clients.findAlive(id) == nullptr; }, std::chrono::milliseconds(200)));
  EXPECT_EQ(rig.counters.unresponsiveDisconnects, 0u);
}

}  // namespace
}  // namespace swipc::daemon
