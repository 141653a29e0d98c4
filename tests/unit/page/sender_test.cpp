// page: Sender. Numbering, the fast lane and the envelope path, a full ring, the daemon's acks
// and errors, and what a daemon's death says about each tracked post.
#include "page/sender.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "page_rig.h"

namespace swipc::page {
namespace {

using namespace std::chrono_literals;
using testing::PageRig;

struct SenderTest : ::testing::Test {
  SenderTest() {
    rig.start();
    rig.page->events().onDelivered([this](MessageSeq s) { log.push_back("delivered " + std::to_string(s)); });
    rig.page->events().onUndelivered(
        [this](MessageSeq s, const Error& e) { log.push_back("undelivered " + std::to_string(s) + " " + std::string(errorName(e.code))); });
  }
  Sender& sut() { return rig.page->sender(); }
  Result<MessageSeq> post(const Value& v, PostOptions opts = {}) {
    wire::PlainMessage m;
    m.kind = schema::Envelope::CONTROLLER_POST;
    m.wantAck = opts.requestAck;
    auto sent = sut().sendValue(m, v, opts, true);
    EXPECT_TRUE(sent.has_value());
    return sent ? std::move(*sent) : makeError(Errc::QUOTA_EXCEEDED, "not inline");
  }

  PageRig rig;
  std::vector<std::string> log;
};

TEST_F(SenderTest, SeqsIncreaseFromOneAcrossBothPaths) {
  auto a = post(Value("a"));
  auto b = sut().sendEnvelope([](schema::Envelope::Builder e) { e.initBcLeave().setObjectId(3); }, PostOptions{}, false);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, 1u);
  EXPECT_EQ(*b, 2u);
  auto first = rig.daemon.next();
  auto second = rig.daemon.next();
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->envelope().getSeq(), 1u);
  EXPECT_EQ(std::string(first->envelope().getControllerPost().getPayload().getValue().getText().cStr()), "a");
  EXPECT_EQ(second->envelope().getSeq(), 2u);
  EXPECT_EQ(second->envelope().getBcLeave().getObjectId(), 3u);
}

TEST_F(SenderTest, AValueTooLargeForOneRecordIsLeftToTheEnvelopePath) {
  wire::PlainMessage m;
  m.kind = schema::Envelope::CONTROLLER_POST;
  const Value big(std::string(200 * 1024, 'x'));  // rings are 64 KiB
  auto sent = sut().sendValue(m, big, PostOptions{}, true);
  EXPECT_FALSE(sent.has_value());
  EXPECT_FALSE(rig.daemon.next().has_value());  // nothing was sent
  auto seq = sut().sendEnvelope([&](schema::Envelope::Builder e) { e.initControllerPost().initPayload().initValue().setText(big.asText()); },
                                PostOptions{}, true);
  ASSERT_TRUE(seq.ok()) << seq.error().describe();
  EXPECT_EQ(*seq, 1u);  // the declined attempt used no seq
}

TEST_F(SenderTest, OverTheDaemonsLimitIsQuotaExceededAndNothingIsSent) {
  PageRig small;
  small.daemon.maxMessageBytes = 4096;
  small.start();
  const Value big(std::string(8192, 'x'));
  auto seq = small.page->sender().sendEnvelope(
      [&](schema::Envelope::Builder e) { e.initControllerPost().initPayload().initValue().setText(big.asText()); },
      PostOptions{}, true);
  ASSERT_FALSE(seq.ok());
  EXPECT_EQ(seq.error().code, Errc::QUOTA_EXCEEDED);
}

TEST_F(SenderTest, AFullRingIsQueueFullAfterTheWait) {
  const PostOptions noWait{.requestAck = false, .waitForSpace = 0ms};
  Result<MessageSeq> r = MessageSeq{0};
  int sent = 0;
  while ((r = post(Value(std::string(1000, 'x')), noWait)).ok()) ++sent;  // the daemon reads nothing
  EXPECT_GT(sent, 10);
  EXPECT_EQ(r.error().code, Errc::QUEUE_FULL);
  // Once the daemon drains, the next send goes through with the next seq.
  while (rig.daemon.next()) {
  }
  auto after = post(Value("after"), noWait);
  ASSERT_TRUE(after.ok()) << after.error().describe();
  EXPECT_EQ(*after, static_cast<MessageSeq>(sent + 1));
}

TEST_F(SenderTest, AnAckReportsDelivered) {
  auto seq = post(Value("x"), PostOptions{.requestAck = true});
  ASSERT_TRUE(seq.ok());
  rig.daemon.send([&](auto e) { e.initAck().setSeq(*seq); });
  ASSERT_TRUE(rig.runUntil([&] { return !log.empty(); }));
  EXPECT_EQ(log, (std::vector<std::string>{"delivered 1"}));
}

TEST_F(SenderTest, AnErrorReportsUndeliveredAfterTheRejectHook) {
  auto seq = post(Value("x"));
  ASSERT_TRUE(seq.ok());
  sut().onRejected([&](MessageSeq s, const Error& e) { log.push_back("rejected " + std::to_string(s)); });
  rig.daemon.send([&](auto e) {
    auto err = e.initError();
    err.setName("DataCloneError");
    err.setMessage("cannot decode");
    err.setRefSeq(*seq);
  });
  ASSERT_TRUE(rig.runUntil([&] { return log.size() == 2; }));
  EXPECT_EQ(log, (std::vector<std::string>{"rejected 1", "undelivered 1 DataCloneError"}));
}

TEST_F(SenderTest, LossReportsConsumedPostsDeliveredAndTheRestUndelivered) {
  rig.daemon.refuse = 100;
  ASSERT_TRUE(post(Value("read"), PostOptions{.requestAck = true}).ok());
  ASSERT_TRUE(post(Value("read, no ack wanted")).ok());
  ASSERT_TRUE(post(Value("never read")).ok());
  ASSERT_TRUE(rig.daemon.next() && rig.daemon.next());  // consumes the first two
  rig.daemon.hangUp();
  ASSERT_TRUE(rig.runUntil([&] { return log.size() == 2; }));
  EXPECT_EQ(log, (std::vector<std::string>{"delivered 1", "undelivered 3 Disconnected"}));
}

TEST_F(SenderTest, ClosingReportsNothingUndelivered) {
  auto loss = Sender::Loss{{}, {4, 5}};
  sut().reportLoss(loss, "client closed", true);
  EXPECT_TRUE(log.empty());
  sut().reportLoss(loss, "gone", false);
  EXPECT_EQ(log, (std::vector<std::string>{"undelivered 4 Disconnected", "undelivered 5 Disconnected"}));
}

TEST_F(SenderTest, SendingWhileDetachedIsDisconnected) {
  rig.daemon.refuse = 100;
  rig.daemon.hangUp();
  ASSERT_TRUE(rig.runUntil([&] { return !rig.page->link().attached(); }));
  auto r = sut().sendEnvelope([](schema::Envelope::Builder e) { e.initBcLeave().setObjectId(1); }, PostOptions{}, false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::DISCONNECTED);
  EXPECT_TRUE(sut().sendState(true).ok());  // remembered for the next attach
}

TEST_F(SenderTest, SendStateCarriesTheWindowState) {
  rig.page->link().setFocused(true);
  rig.page->link().setVisible(false);
  ASSERT_TRUE(sut().sendState(true).ok());
  auto in = rig.daemon.next();
  ASSERT_TRUE(in && in->envelope().isClientState());
  auto st = in->envelope().getClientState();
  EXPECT_TRUE(st.getFocused());
  EXPECT_FALSE(st.getVisible());
  EXPECT_TRUE(st.getFocusChanged());
}

TEST_F(SenderTest, ReattachTellsTheNewDaemonTheWindowState) {
  rig.page->link().setVisible(false);
  rig.daemon.hangUp();
  ASSERT_TRUE(rig.runUntil([&] { return rig.daemon.links.size() == 2 && rig.page->link().attached(); }));
  auto in = rig.daemon.next();
  ASSERT_TRUE(in && in->envelope().isClientState());
  EXPECT_FALSE(in->envelope().getClientState().getVisible());
  EXPECT_FALSE(in->envelope().getClientState().getFocusChanged());
}

}  // namespace
}  // namespace swipc::page
