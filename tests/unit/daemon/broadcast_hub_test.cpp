// daemon: BroadcastHub through a fake Sink. A join passes the ring once per client and says where
// the object starts; a post goes into the ring once, tagged with its sender, and to the
// service-worker objects in creation order (never back to the posting one); the limits (object
// not open, oversized post, joined twice, long name) each have their outcome; a channel goes with
// its last object; a client that goes leaves everywhere.
#include "daemon/broadcast_hub.h"

#include <gtest/gtest.h>

#include <string>
#include <unordered_map>
#include <vector>

#include "daemon_rig.h"
#include "queue/broadcast_ring.h"
#include "wire/limits.h"
#include "wire/plain_post.h"
#include "wire/value_codec.h"

namespace swipc::daemon {
namespace {

using testing::inbound;
using testing::randomClientId;

class FakeSink final : public BroadcastHub::Sink {
 public:
  bool passRing(const ClientId& id, uint64_t ringId, uint64_t, int fd) override {
    EXPECT_GE(fd, 0);
    rings.push_back({id, ringId});
    return passOk;
  }
  void joined(const ClientId& id, const BroadcastHub::Joined& j) override { joins.push_back({id, j}); }
  void ack(const ClientId& id, MessageSeq seq) override { acks.push_back({id, seq}); }
  void reportError(const ClientId& id, Errc code, const std::string&, uint64_t refSeq) override {
    errors.push_back({id, code, refSeq});
  }
  void violation(const ClientId& id, const Error& why) override { violations.push_back({id, why.code}); }
  void channelsJoined(const ClientId& id, int delta) override { channels[id] += delta; }
  void published(bool firstSinceFlush) override {
    ++publishes;
    if (firstSinceFlush) ++flushesAsked;
  }

  struct Report {
    ClientId id;
    Errc code;
    uint64_t refSeq;
  };
  bool passOk = true;
  std::vector<std::pair<ClientId, uint64_t>> rings;
  std::vector<std::pair<ClientId, BroadcastHub::Joined>> joins;
  std::vector<std::pair<ClientId, MessageSeq>> acks;
  std::vector<Report> errors;
  std::vector<std::pair<ClientId, Errc>> violations;
  std::unordered_map<ClientId, int> channels;
  int publishes = 0;
  int flushesAsked = 0;
};

/// One record read back from a channel ring.
struct Record {
  uint64_t seq;
  uint64_t tag;
  std::string text;
};

class BroadcastHubTest : public ::testing::Test {
 protected:
  /// Client `id` posts `data` from object `objectId` (envelope seq `seq`).
  void clientPost(const ClientId& id, uint32_t objectId, const Value& data, MessageSeq seq = 9, bool wantAck = false) {
    auto in = inbound(
        [&](schema::Envelope::Builder e) {
          auto p = e.initBcPost();
          p.setObjectId(objectId);
          p.setWantAck(wantAck);
          wire::writeValue(data, p.initPayload().initValue());
        },
        seq);
    sut.clientPost(id, in->envelope().getBcPost(), seq, in);
  }
  std::shared_ptr<detail::BcObject> localObject(const std::string& name, std::vector<std::string>& got,
                                                const std::string& who) {
    auto obj = std::make_shared<detail::BcObject>();
    obj->name = name;
    obj->onMessage = [&got, who](const MessageEvent& e) { got.push_back(who + ":" + e.data.textOr("?")); };
    sut.open(obj);
    return obj;
  }
  Result<MessageSeq> localPost(detail::BcObject& obj, const std::string& text) {
    Value v(text);
    core::OutgoingPayload p;
    p.value = &v;
    return sut.post(obj, p, false);
  }
  /// The futex word channel `name`'s readers sleep on.
  uint32_t wakeWord(const std::string& name) {
    const auto* ch = sut.find(ChannelName(name));
    EXPECT_NE(ch, nullptr);
    auto region = queue::readBroadcastHeader(ch->map.data(), ch->map.size());
    EXPECT_TRUE(region.ok());
    return queue::openBroadcastReader(ch->map.data(), *region, 0).wakeWord().load();
  }
  /// Every record in channel `name`'s ring from position `from`.
  std::vector<Record> ring(const std::string& name, uint64_t from = 0) {
    const auto* ch = sut.find(ChannelName(name));
    EXPECT_NE(ch, nullptr);
    auto region = queue::readBroadcastHeader(ch->map.data(), ch->map.size());
    EXPECT_TRUE(region.ok());
    auto reader = queue::openBroadcastReader(ch->map.data(), *region, from);
    std::vector<Record> out;
    queue::BroadcastRecord r;
    while (reader.next(r) == queue::BroadcastReader::Status::OK) {
      auto in = wire::Inbound::copyEnvelope(r.bytes(), r.length, wire::readerOptions(1 << 20));
      EXPECT_TRUE(in.ok());
      auto v = wire::readValue(in->envelope().getBcMessage().getPayload().getValue());
      out.push_back({r.seq, r.tag, v.ok() ? v->textOr("?") : "?"});
    }
    return out;
  }

  FakeSink sink;
  TypeRegistry types;
  Counters counters;
  BroadcastHub sut{sink, BroadcastHub::Config{4096, 1 << 20}, types, counters};
  const ClientId a = randomClientId();
  const ClientId b = randomClientId();
};

TEST_F(BroadcastHubTest, JoinPassesTheRingOnceAndSaysWhereTheObjectStarts) {
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 5));
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 2, 6));
  ASSERT_EQ(sink.rings.size(), 1u);
  ASSERT_EQ(sink.joins.size(), 2u);
  const auto& j = sink.joins[0].second;
  EXPECT_EQ(j.objectId, 1u);
  EXPECT_EQ(j.ringId, sink.rings[0].second);
  EXPECT_EQ(j.startPos, 0u);
  EXPECT_EQ(j.startSeq, 1u);
  EXPECT_NE(j.senderTag, 0u);
  EXPECT_EQ(sink.joins[1].second.senderTag, j.senderTag);  // one prefix per client
  EXPECT_EQ(sink.channels[a], 2);
  EXPECT_EQ(counters.channelsOpen, 1u);
}

TEST_F(BroadcastHubTest, LateJoinerStartsAtTheTailWithTheNextSeq) {
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 1));
  clientPost(a, 1, Value("before"));
  ASSERT_TRUE(sut.clientJoin(b, ChannelName("c"), 1, 1));
  const auto& late = sink.joins.back().second;
  EXPECT_EQ(late.startSeq, 2u);
  EXPECT_TRUE(ring("c", late.startPos).empty());  // no replay for late joiners
  EXPECT_NE(late.senderTag, sink.joins[0].second.senderTag);
}

TEST_F(BroadcastHubTest, StatsCountMembersPostsAndRetainedBytesByName) {
  // swctl channels: members include service-worker objects; retained bytes stop at the capacity
  // once the ring has wrapped.
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 1));
  ASSERT_TRUE(sut.clientJoin(b, ChannelName("c"), 1, 1));
  std::vector<std::string> got;
  auto obj = localObject("c", got, "sw");
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("a"), 2, 2));
  clientPost(a, 1, Value("one"));
  auto s = sut.stats();
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].name, ChannelName("a"));
  EXPECT_EQ(s[0].members, 1u);
  EXPECT_EQ(s[0].posts, 0u);
  EXPECT_EQ(s[0].retainedBytes, 0u);
  EXPECT_EQ(s[1].name, ChannelName("c"));
  EXPECT_EQ(s[1].members, 3u);
  EXPECT_EQ(s[1].posts, 1u);
  EXPECT_EQ(s[1].capacity, 4096u);
  EXPECT_GT(s[1].retainedBytes, 0u);
  EXPECT_LT(s[1].retainedBytes, s[1].capacity);
  for (int i = 0; i < 500; ++i) clientPost(b, 1, Value("post " + std::to_string(i)));
  s = sut.stats();
  EXPECT_EQ(s[1].posts, 501u);
  EXPECT_EQ(s[1].retainedBytes, s[1].capacity);
  sut.close(*obj);
  EXPECT_EQ(sut.stats()[1].members, 2u);
}

TEST_F(BroadcastHubTest, JoiningTheSameObjectTwiceIsAViolation) {
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 1));
  EXPECT_FALSE(sut.clientJoin(a, ChannelName("c"), 1, 2));
  ASSERT_EQ(sink.violations.size(), 1u);
  EXPECT_EQ(sink.violations[0].second, Errc::PROTOCOL_VIOLATION);
}

TEST_F(BroadcastHubTest, ClientPostGoesIntoTheRingOnceTaggedWithItsSender) {
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 3, 1));
  ASSERT_TRUE(sut.clientJoin(b, ChannelName("c"), 1, 1));
  clientPost(a, 3, Value("hi"));
  auto records = ring("c");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].seq, 1u);
  EXPECT_EQ(records[0].tag, sink.joins[0].second.senderTag | 3);
  EXPECT_EQ(records[0].text, "hi");
  EXPECT_EQ(counters.broadcastsPosted, 1u);
  EXPECT_EQ(sink.publishes, 1);
  EXPECT_TRUE(sink.acks.empty());
}

TEST_F(BroadcastHubTest, ReadersAreWokenOncePerFlushNotOncePerPost) {
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 1));
  ASSERT_TRUE(sut.clientJoin(b, ChannelName("d"), 1, 1));
  const uint32_t c0 = wakeWord("c"), d0 = wakeWord("d");
  for (int i = 0; i < 5; ++i) clientPost(a, 1, Value("burst"));
  clientPost(b, 1, Value("other"));
  EXPECT_EQ(sink.publishes, 6);
  EXPECT_EQ(sink.flushesAsked, 1) << "the first post of a pass asks for one flush";
  EXPECT_EQ(wakeWord("c"), c0) << "no wake before the flush";
  sut.flushWakes();
  EXPECT_EQ(wakeWord("c"), c0 + 1) << "one wake for the five posts";
  EXPECT_EQ(wakeWord("d"), d0 + 1);
  sut.flushWakes();  // nothing new: nobody is woken
  EXPECT_EQ(wakeWord("c"), c0 + 1);
  clientPost(a, 1, Value("next pass"));
  EXPECT_EQ(sink.flushesAsked, 2);
  EXPECT_EQ(ring("c").size(), 6u);
}

TEST_F(BroadcastHubTest, WantAckPostIsAcknowledgedOnceInTheRing) {
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 1));
  clientPost(a, 1, Value("ack me"), 12, /*wantAck=*/true);
  ASSERT_EQ(sink.acks.size(), 1u);
  EXPECT_EQ(sink.acks[0].second, 12u);
}

TEST_F(BroadcastHubTest, PostFromAnObjectThatIsNotOpenIsAnInvalidStateError) {
  clientPost(a, 7, Value("nobody"), 4);
  ASSERT_EQ(sink.errors.size(), 1u);
  EXPECT_EQ(sink.errors[0].code, Errc::INVALID_STATE);
  EXPECT_EQ(sink.errors[0].refSeq, 4u);
}

TEST_F(BroadcastHubTest, PostLargerThanARingRecordIsRefusedWithQuotaExceeded) {
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 1));
  clientPost(a, 1, Value(Bytes{std::vector<uint8_t>(2000, 1)}), 4);
  ASSERT_EQ(sink.errors.size(), 1u);
  EXPECT_EQ(sink.errors[0].code, Errc::QUOTA_EXCEEDED);
  EXPECT_EQ(counters.oversize, 1u);
  EXPECT_TRUE(ring("c").empty());
}

TEST_F(BroadcastHubTest, AFastLanePostGoesIntoTheRingAsAGeneralOneDoes) {
  // bcPost from the fast lane (clientPostValue) and from the general path: the same record, the
  // same sender tag, the same ack and the same delivery to service-worker objects.
  std::vector<std::string> got;
  auto o1 = localObject("c", got, "o1");
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 1));
  clientPost(a, 1, Value("general"), 5, /*wantAck=*/true);
  sut.clientPostValue(a, 1, Value("fast"), /*wantAck=*/true, 6);
  sut.clientPostValue(a, 1, Value("fast, no ack"), /*wantAck=*/false, 7);
  auto records = ring("c");
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].text, "general");
  EXPECT_EQ(records[1].text, "fast");
  EXPECT_EQ(records[2].text, "fast, no ack");
  EXPECT_EQ(records[1].seq, records[0].seq + 1);
  EXPECT_EQ(records[1].tag, records[0].tag);
  ASSERT_EQ(sink.acks.size(), 2u);
  EXPECT_EQ(sink.acks[1].second, 6u);
  EXPECT_EQ(got, (std::vector<std::string>{"o1:general", "o1:fast", "o1:fast, no ack"}));
  EXPECT_TRUE(sink.errors.empty());
}

TEST_F(BroadcastHubTest, AFastLanePostKeepsTheLimits) {
  sut.clientPostValue(a, 1, Value("nobody"), false, 4);  // no open object
  ASSERT_EQ(sink.errors.size(), 1u);
  EXPECT_EQ(sink.errors[0].code, Errc::INVALID_STATE);
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 1));
  sut.clientPostValue(a, 1, Value(Bytes{std::vector<uint8_t>(2000, 1)}), true, 5);
  ASSERT_EQ(sink.errors.size(), 2u);
  EXPECT_EQ(sink.errors[1].code, Errc::QUOTA_EXCEEDED);
  EXPECT_EQ(sink.errors[1].refSeq, 5u);
  EXPECT_EQ(counters.oversize, 1u);
  EXPECT_TRUE(sink.acks.empty());
  EXPECT_TRUE(ring("c").empty());
  // The lane knows the record's exact size: the largest Value that fits goes in, one word more
  // does not.
  const size_t max = sut.find(ChannelName("c"))->writer.maxPayload();
  wire::PlainMessage record;
  record.kind = schema::Envelope::BC_MESSAGE;
  size_t fits = 0;
  while (wire::plainBytes(record, Value(Bytes{std::vector<uint8_t>(fits + 8, 2)})) <= max) fits += 8;
  ASSERT_GT(fits, 0u);
  sut.clientPostValue(a, 1, Value(Bytes{std::vector<uint8_t>(fits, 2)}), false, 6);
  EXPECT_EQ(sink.errors.size(), 2u);
  EXPECT_EQ(ring("c").size(), 1u);
  sut.clientPostValue(a, 1, Value(Bytes{std::vector<uint8_t>(fits + 8, 2)}), false, 7);
  ASSERT_EQ(sink.errors.size(), 3u);
  EXPECT_EQ(sink.errors[2].code, Errc::QUOTA_EXCEEDED);
  EXPECT_EQ(ring("c").size(), 1u);
}

TEST_F(BroadcastHubTest, ServiceWorkerObjectsGetWhatPagesGetOfAValueServiceWorkerCodePosts) {
  // Service-worker code hands over a Value as it built it; the other service-worker objects get
  // it as the pages read it from the ring: a repeated key resolved, one too deep a messageerror.
  BroadcastHub hub{sink, BroadcastHub::Config{1 << 16, 1 << 20}, types, counters};  // records for a deep Value
  auto o1 = std::make_shared<detail::BcObject>();
  auto o2 = std::make_shared<detail::BcObject>();
  o1->name = o2->name = "c";
  hub.open(o1);
  hub.open(o2);
  std::vector<Value> seen;
  std::vector<Errc> errors;
  o2->onMessage = [&](const MessageEvent& e) { seen.push_back(e.data); };
  o2->onMessageError = [&](const MessageErrorEvent& e) { errors.push_back(e.error.code); };
  Value repeated(Value::Map{{"k", Value(int64_t{1})}, {"k", Value(int64_t{2})}});
  core::OutgoingPayload p;
  p.value = &repeated;
  ASSERT_TRUE(hub.post(*o1, p, false).ok());
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].asMap().size(), 1u);
  Value deep(int64_t{0});
  for (int i = 0; i < 80; ++i) deep = Value(Value::List{deep});
  p.value = &deep;
  ASSERT_TRUE(hub.post(*o1, p, false).ok());  // written: readers decide
  EXPECT_EQ(seen.size(), 1u);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], Errc::DATA_CLONE);
}

TEST_F(BroadcastHubTest, APostFromAnotherNodeReadByTheFastLaneReachesEveryObjectWithItsNode) {
  std::vector<std::string> got;
  std::string node;
  auto o1 = localObject("c", got, "o1");
  o1->onMessage = [&](const MessageEvent& e) {
    got.push_back(e.data.textOr("?"));
    node = e.node;
  };
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 1));
  EXPECT_TRUE(sut.injectRemoteValue(ChannelName("c"), "n7", Value("remote")));
  EXPECT_EQ(got, (std::vector<std::string>{"remote"}));
  EXPECT_EQ(node, "n7");
  auto records = ring("c");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].text, "remote");
  EXPECT_NE(records[0].tag, detail::bcTag(sink.joins[0].second.senderTag, 1));  // the client object gets it too
  EXPECT_FALSE(sut.injectRemoteValue(ChannelName("nobody here"), "n7", Value("x")));
  // Larger than this node's records: reported as one missed post, to every object.
  uint64_t missed = 0;
  o1->onLapped = [&](uint64_t n) { missed += n; };
  EXPECT_FALSE(sut.injectRemoteValue(ChannelName("c"), "n7", Value(Bytes{std::vector<uint8_t>(2000, 1)})));
  EXPECT_EQ(missed, 1u);
  EXPECT_EQ(counters.oversize, 1u);
}

TEST_F(BroadcastHubTest, LapsCountEachObjectThatReportedBeingLappedAndEveryServiceWorkerObjectAtAGap) {
  // swctl channels' laps: a client object's bcLapped counts once whatever it missed; one that is
  // not a member (it left, or never joined) counts nothing; a gap from another node laps every
  // service-worker object of the channel (client objects report theirs when they read the gap).
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 1));
  ASSERT_TRUE(sut.clientJoin(b, ChannelName("d"), 1, 1));
  std::vector<std::string> got;
  uint64_t swMissed = 0;
  auto o1 = localObject("c", got, "o1");
  auto o2 = localObject("c", got, "o2");
  o1->onLapped = [&](uint64_t n) { swMissed += n; };
  sut.clientLapped(a, 1, 40);
  sut.clientLapped(a, 1, 0);   // nothing missed: not a lap
  sut.clientLapped(a, 7, 5);   // no such object
  sut.clientLapped(b, 1, 3);   // counts on d, where b's object 1 is
  auto s = sut.stats();
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].laps, 1u);
  EXPECT_EQ(s[1].laps, 1u);
  ASSERT_TRUE(sut.reportRemoteGap(ChannelName("c"), 6));
  EXPECT_EQ(swMissed, 6u);
  EXPECT_EQ(sut.stats()[0].laps, 3u);  // + o1 and o2
  sut.clientLeave(a, 1);
  sut.clientLapped(a, 1, 2);  // after its leave
  EXPECT_EQ(sut.stats()[0].laps, 3u);
}

TEST_F(BroadcastHubTest, ServiceWorkerObjectsGetPostsInCreationOrderButNeverTheirOwn) {
  std::vector<std::string> got;
  auto o1 = localObject("c", got, "o1");
  auto o2 = localObject("c", got, "o2");
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 1));
  clientPost(a, 1, Value("from a"));
  ASSERT_TRUE(localPost(*o1, "from o1").ok());
  EXPECT_EQ(got, (std::vector<std::string>{"o1:from a", "o2:from a", "o2:from o1"}));
  auto records = ring("c");
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].tag, detail::bcTag(0, o1->id));
}

TEST_F(BroadcastHubTest, ServiceWorkerPostLargerThanARecordIsQuotaExceeded) {
  std::vector<std::string> got;
  auto o1 = localObject("c", got, "o1");
  Value big(Bytes{std::vector<uint8_t>(2000, 1)});
  core::OutgoingPayload p;
  p.value = &big;
  auto r = sut.post(*o1, p, false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::QUOTA_EXCEEDED);
}

TEST_F(BroadcastHubTest, ClosedServiceWorkerObjectCannotPost) {
  std::vector<std::string> got;
  auto o1 = localObject("c", got, "o1");
  sut.close(*o1);
  EXPECT_EQ(sut.find(ChannelName("c")), nullptr);
  auto r = localPost(*o1, "late");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::INVALID_STATE);
}

TEST_F(BroadcastHubTest, LastObjectLeavingDropsTheChannel) {
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 1));
  sut.clientLeave(a, 1);
  EXPECT_EQ(sut.find(ChannelName("c")), nullptr);
  EXPECT_EQ(sink.channels[a], 0);
}

TEST_F(BroadcastHubTest, RingIsPassedAgainAfterTheClientLeftItsLastObjectOnIt) {
  std::vector<std::string> got;
  auto keeper = localObject("c", got, "sw");  // keeps the channel (and its ring) alive
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 1));
  sut.clientLeave(a, 1);
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 2, 2));
  EXPECT_EQ(sink.rings.size(), 2u);
}

TEST_F(BroadcastHubTest, GoneClientLeavesEveryChannel) {
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c1"), 1, 1));
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c2"), 2, 2));
  ASSERT_TRUE(sut.clientJoin(b, ChannelName("c2"), 1, 1));
  sut.clientGone(a);
  EXPECT_EQ(sut.find(ChannelName("c1")), nullptr);
  ASSERT_NE(sut.find(ChannelName("c2")), nullptr);
  EXPECT_EQ(sut.find(ChannelName("c2"))->members.size(), 1u);
  EXPECT_EQ(sink.channels[a], 0);
}

TEST_F(BroadcastHubTest, RingThatCannotBePassedIsReportedAndNothingJoins) {
  sink.passOk = false;
  ASSERT_TRUE(sut.clientJoin(a, ChannelName("c"), 1, 3));
  ASSERT_EQ(sink.errors.size(), 1u);
  EXPECT_EQ(sink.errors[0].code, Errc::INVALID_STATE);
  EXPECT_TRUE(sink.joins.empty());
  EXPECT_EQ(sut.find(ChannelName("c")), nullptr);
}

TEST_F(BroadcastHubTest, NameLongerThan1024BytesIsATypeError) {
  ASSERT_TRUE(sut.clientJoin(a, ChannelName(std::string(1025, 'n')), 1, 3));
  ASSERT_EQ(sink.errors.size(), 1u);
  EXPECT_EQ(sink.errors[0].code, Errc::TYPE);
}

}  // namespace
}  // namespace swipc::daemon
