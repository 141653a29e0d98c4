#include "federation/remote_post.h"

#include <gtest/gtest.h>

#include <cstring>

namespace swipc::federation {
namespace {

std::vector<uint8_t> envelopeBytes(size_t n) {
  std::vector<uint8_t> e(n);
  for (size_t i = 0; i < n; ++i) e[i] = static_cast<uint8_t>(i * 7);
  return e;
}

TEST(RemotePostTest, RoundTripsNodeChannelEpochSeqAndEnvelope) {
  auto env = envelopeBytes(48);
  const ChannelName ch("chat room\n\xff");
  auto frame = encodeRemotePost("n1", 77, ch, 5, env.data(), env.size(), 0xfffffff3u);
  auto sut = decodeRemotePost(frame.data(), frame.size());
  ASSERT_TRUE(sut) << sut.error().describe();
  EXPECT_EQ(sut->node, "n1");
  EXPECT_EQ(sut->channel, ch);
  EXPECT_EQ(sut->epoch, 77u);
  EXPECT_EQ(sut->seq, 5u);
  EXPECT_EQ(sut->run, 0xfffffff3u);
  ASSERT_EQ(sut->envelopeBytes, env.size());
  EXPECT_EQ(std::memcmp(sut->envelope, env.data(), env.size()), 0);
  EXPECT_EQ(static_cast<size_t>(sut->envelope - frame.data()) % 8, 0u);
}

TEST(RemotePostTest, RejectsEveryTruncationOfHeaderNamesOrEnvelopeWords) {
  auto env = envelopeBytes(16);
  auto frame = encodeRemotePost("node-a", 1, ChannelName("c"), 1, env.data(), env.size());
  const size_t prefix = frame.size() - env.size();  // header + names + padding
  for (size_t n = 0; n < frame.size(); ++n) {
    // A whole number of envelope words may be a shorter envelope: Cap'n Proto's validation
    // (wire::Inbound) is what refuses that one.
    if (n > prefix && (n - prefix) % 8 == 0) continue;
    EXPECT_FALSE(decodeRemotePost(frame.data(), n)) << "accepted the first " << n << " bytes";
  }
}

TEST(RemotePostTest, RejectsBadMagicVersionAndLengths) {
  auto env = envelopeBytes(16);
  auto good = encodeRemotePost("n1", 1, ChannelName("c"), 1, env.data(), env.size());
  auto corrupt = [&](size_t offset, uint32_t value, size_t width) {
    auto f = good;
    std::memcpy(f.data() + offset, &value, width);
    return decodeRemotePost(f.data(), f.size());
  };
  EXPECT_FALSE(corrupt(0, 0xdeadbeef, 4));         // magic
  EXPECT_FALSE(corrupt(4, 3, 2));                  // version
  // A node of the version before runs is refused by name, not misread.
  auto old = corrupt(4, 1, 2);
  ASSERT_FALSE(old);
  EXPECT_NE(old.error().describe().find("version 1 (expected 2"), std::string::npos) << old.error().describe();
  EXPECT_FALSE(corrupt(6, 0, 2));                  // no node name
  EXPECT_FALSE(corrupt(6, 65, 2));                 // node name too long
  EXPECT_FALSE(corrupt(8, 1u << 20, 4));           // channel name past the frame / too long
  EXPECT_FALSE(corrupt(24, 0, 4));                 // seq 0 (low half; high half is 0 too)
}

TEST(RemotePostTest, HeartbeatRoundTripsMarksOfAnyChannelName) {
  Heartbeat hb;
  hb.node = "n2";
  hb.epoch = 123456789012345ull;
  hb.intervalMs = 1000;
  hb.marks = {{ChannelName("a"), 3, 1}, {ChannelName(std::string("\0\x80 .*>", 6)), 9, 0xffffffffu}};
  auto sut = decodeHeartbeat(encodeHeartbeat(hb));
  ASSERT_TRUE(sut) << sut.error().describe();
  EXPECT_EQ(sut->node, "n2");
  EXPECT_EQ(sut->epoch, hb.epoch);
  EXPECT_EQ(sut->intervalMs, 1000u);
  EXPECT_EQ(sut->marks, hb.marks);
}

TEST(RemotePostTest, HeartbeatCarriesTheReceiveBreaksOfItsNode) {
  Heartbeat hb;
  hb.node = "n2";
  hb.epoch = 1;
  hb.intervalMs = 1000;
  hb.receiveBreaks = 7;
  auto sut = decodeHeartbeat(encodeHeartbeat(hb));
  ASSERT_TRUE(sut) << sut.error().describe();
  EXPECT_EQ(sut->receiveBreaks, 7u);
  sut = decodeHeartbeat(R"({"node":"n1","epoch":1,"intervalMs":1,"marks":[]})");
  ASSERT_TRUE(sut);
  EXPECT_EQ(sut->receiveBreaks, 0u);  // absent: none
  EXPECT_FALSE(decodeHeartbeat(R"({"node":"n1","epoch":1,"intervalMs":1,"marks":[],"receiveBreaks":-1})"));
  EXPECT_FALSE(decodeHeartbeat(R"({"node":"n1","epoch":1,"intervalMs":1,"marks":[],"receiveBreaks":"x"})"));
}

TEST(RemotePostTest, HeartbeatRejectsMalformedJson) {
  EXPECT_FALSE(decodeHeartbeat("not json"));
  EXPECT_FALSE(decodeHeartbeat(R"({"node":"n1"})"));
  EXPECT_FALSE(decodeHeartbeat(R"({"node":"bad name","epoch":1,"intervalMs":1,"marks":[]})"));
  EXPECT_FALSE(decodeHeartbeat(R"({"node":"n1","epoch":1,"intervalMs":1,"marks":[["zz",1,1]]})"));
  EXPECT_FALSE(decodeHeartbeat(R"({"node":"n1","epoch":1,"intervalMs":1,"marks":[["61",-1,1]]})"));
  EXPECT_TRUE(decodeHeartbeat(R"({"node":"n1","epoch":1,"intervalMs":1,"marks":[["61",1,1]]})"));
  // A mark without its run (a node of the version before runs), or with one past 32 bits.
  EXPECT_FALSE(decodeHeartbeat(R"({"node":"n1","epoch":1,"intervalMs":1,"marks":[["61",1]]})"));
  EXPECT_FALSE(decodeHeartbeat(R"({"node":"n1","epoch":1,"intervalMs":1,"marks":[["61",1,4294967296]]})"));
  EXPECT_FALSE(decodeHeartbeat(R"({"node":"n1","epoch":1,"intervalMs":1,"marks":[["61",1,-1]]})"));
}

TEST(RemotePostTest, HeartbeatCarriesInterestOrSaysNothing) {
  Heartbeat hb;
  hb.node = "n1";
  hb.epoch = 7;
  hb.intervalMs = 1000;
  hb.interest = std::vector<ChannelName>{ChannelName("chat"), ChannelName(""), ChannelName(std::string("\0>", 2))};
  auto sut = decodeHeartbeat(encodeHeartbeat(hb));
  ASSERT_TRUE(sut) << sut.error().describe();
  EXPECT_EQ(sut->interest, hb.interest);
  hb.interest = std::vector<ChannelName>{};  // no objects at all: wants nothing
  sut = decodeHeartbeat(encodeHeartbeat(hb));
  ASSERT_TRUE(sut && sut->interest);
  EXPECT_TRUE(sut->interest->empty());
  // A node that does not say (another build) wants every channel.
  sut = decodeHeartbeat(R"({"node":"n1","epoch":1,"intervalMs":1,"marks":[]})");
  ASSERT_TRUE(sut);
  EXPECT_FALSE(sut->interest.has_value());
}

TEST(RemotePostTest, HeartbeatRejectsMalformedInterest) {
  const std::string head = R"({"node":"n1","epoch":1,"intervalMs":1,"marks":[],"interest":)";
  EXPECT_FALSE(decodeHeartbeat(head + R"("61"})"));
  EXPECT_FALSE(decodeHeartbeat(head + R"([1]})"));
  EXPECT_FALSE(decodeHeartbeat(head + R"(["zz"]})"));
  EXPECT_FALSE(decodeHeartbeat(head + "[\"" + std::string(2 * (MAX_CHANNEL_NAME + 1), 'a') + "\"]}"));
  EXPECT_TRUE(decodeHeartbeat(head + R"(["61"]})"));
  // "leaving": the node's last announcement; a boolean or nothing.
  auto last = decodeHeartbeat(head + R"([],"leaving":true})");
  ASSERT_TRUE(last);
  EXPECT_TRUE(last->leaving);
  EXPECT_FALSE(decodeHeartbeat(head + R"([],"leaving":1})"));
  Heartbeat hb;
  hb.node = "n3";
  hb.leaving = true;
  auto round = decodeHeartbeat(encodeHeartbeat(hb));
  ASSERT_TRUE(round);
  EXPECT_TRUE(round->leaving);
}

TEST(RemotePostTest, SubjectsAreNatsTokensForAnyScopeAndChannel) {
  auto sut = subjectsFor("my.app-1");
  EXPECT_EQ(sut.nodes, "swipc.my~app-1.node");
  EXPECT_EQ(sut.bcWildcard, "swipc.my~app-1.bc.*");
  EXPECT_EQ(sut.everything, "swipc.my~app-1.>");
  EXPECT_EQ(sut.directFor("host.a"), "swipc-to.my~app-1.host~a");
  EXPECT_EQ(subscriptionsFor(sut, "n1"), (std::vector<std::string>{"swipc.my~app-1.>", "swipc-to.my~app-1.n1"}));
  EXPECT_EQ(sut.bcFor(ChannelName("a.b c")), "swipc.my~app-1.bc.c612e622063");
  EXPECT_EQ(sut.bcFor(ChannelName("")), "swipc.my~app-1.bc.c");
}

TEST(RemotePostTest, NodeNamesAreChecked) {
  EXPECT_TRUE(validNodeName("n1"));
  EXPECT_TRUE(validNodeName("host-a.example_1"));
  EXPECT_FALSE(validNodeName(""));
  EXPECT_FALSE(validNodeName("a b"));
  EXPECT_FALSE(validNodeName(std::string(65, 'a')));
  EXPECT_TRUE(validNodeName(defaultNodeName()));
}

}  // namespace
}  // namespace swipc::federation
