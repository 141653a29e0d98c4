// What a node reads back from JetStream for Background Sync (federation/js_queue.h): the
// registration records and tokens other nodes wrote. They come from another host, so hostile or
// foreign bytes must be refused with a named error, never taken for a registration.
#include "federation/js_queue.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

namespace swipc::federation {
namespace {

Result<JsRecord> parse(const std::string& s) { return JsRecord::parse(s.data(), static_cast<int>(s.size())); }
std::optional<JsToken> token(const std::string& s) { return parseToken(s.data(), static_cast<int>(s.size())); }

TEST(JsQueueTest, RecordRoundTripsEveryField) {
  JsRecord r;
  r.tag = std::string("caf\xc3\xa9 \"quoted\" \\ tag", 20);
  r.order = 1733000000123456789;
  r.state = "firing";
  r.attempts = 2;
  r.gen = 7;
  r.refire = true;
  r.nextMs = 1733000000999;
  r.node = "host-1";
  r.token = 42;
  auto back = parse(r.toJson());
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_EQ(back->tag, r.tag);
  EXPECT_EQ(back->order, r.order);
  EXPECT_EQ(back->state, "firing");
  EXPECT_EQ(back->attempts, 2);
  EXPECT_EQ(back->gen, 7u);
  EXPECT_TRUE(back->refire);
  EXPECT_EQ(back->nextMs, r.nextMs);
  EXPECT_EQ(back->node, "host-1");
  EXPECT_EQ(back->token, 42u);
  EXPECT_TRUE(back->live());
  r.state = "removed";
  EXPECT_FALSE(parse(r.toJson())->live());
}

TEST(JsQueueTest, HostileRecordsAreRefusedByName) {
  JsRecord ok;
  ok.tag = "t";
  const std::string good = ok.toJson();
  for (const std::string& bad : {std::string(), std::string("\x00\xff\xfe", 3), std::string("[1,2]"), std::string("{}"),
                                 std::string("{\"v\":2}"), std::string("{\"v\":1,\"tag\":\"t\"}"), good.substr(0, good.size() / 2)}) {
    auto r = parse(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, Errc::INVALID_STATE) << bad;
  }
  auto edit = [&](const std::string& field, const nlohmann::json& value) {
    auto j = nlohmann::json::parse(good);
    j[field] = value;
    return parse(j.dump());
  };
  EXPECT_FALSE(edit("state", "exploded"));
  EXPECT_FALSE(edit("attempts", -1));
  EXPECT_FALSE(edit("gen", "one"));
  EXPECT_FALSE(edit("tag", 5));
  EXPECT_TRUE(edit("attempts", 3));
}

TEST(JsQueueTest, TokensAreCheckedBeforeUse) {
  const std::string h(32, 'a');
  auto t = token("{\"v\":1,\"h\":\"" + h + "\",\"gen\":3}");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->h, h);
  EXPECT_EQ(t->gen, 3u);
  EXPECT_FALSE(token(""));
  EXPECT_FALSE(token("not json"));
  EXPECT_FALSE(token("{\"v\":2,\"h\":\"" + h + "\",\"gen\":3}"));
  EXPECT_FALSE(token("{\"v\":1,\"h\":\"" + h + "\",\"gen\":-3}"));
  EXPECT_FALSE(token("{\"v\":1,\"h\":\"" + h + "\"}"));
  EXPECT_FALSE(token("{\"v\":1,\"h\":\"short\",\"gen\":3}"));
  EXPECT_FALSE(token("{\"v\":1,\"h\":\"" + std::string(31, 'a') + ">\",\"gen\":3}"));  // not a subject token
  EXPECT_FALSE(token("{\"v\":1,\"h\":\"" + std::string(32, 'A') + "\",\"gen\":3}"));
}

TEST(JsQueueTest, TagKeyIsAStableSubjectTokenForAnyTag) {
  const std::string longest(10240, 'x');
  const std::string binary("\x00\x01.>* \xff", 7);
  std::set<std::string> keys;
  for (const std::string& tag : {std::string("a"), std::string("b"), longest, binary, std::string("a.b"), std::string("a>b")}) {
    const std::string k = tagKey(tag);
    EXPECT_EQ(k.size(), 32u);
    EXPECT_EQ(k.find_first_not_of("0123456789abcdef"), std::string::npos) << k;
    EXPECT_EQ(k, tagKey(tag));
    keys.insert(k);
  }
  EXPECT_EQ(keys.size(), 6u);
}

}  // namespace
}  // namespace swipc::federation
