// Value: swipc's structured clone.
#include "swipc/value.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

namespace swipc {
namespace {

TEST(ValueTest, DefaultIsNull) {
  Value sut;
  EXPECT_TRUE(sut.isNull());
  EXPECT_EQ(sut.kind(), Value::Kind::NONE);
  EXPECT_EQ(Value(nullptr), sut);
}

TEST(ValueTest, BoolConstructsBool) {
  Value sut(true);
  ASSERT_TRUE(sut.isBool());
  EXPECT_TRUE(sut.asBool());
  EXPECT_FALSE(Value(false).asBool());
}

TEST(ValueTest, IntegersOfEveryWidthConstructInt) {
  EXPECT_EQ(Value(-5).asInt(), -5);
  EXPECT_EQ(Value(std::numeric_limits<int64_t>::min()).asInt(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(Value(std::numeric_limits<int64_t>::max()).asInt(), std::numeric_limits<int64_t>::max());
  Value sut(std::numeric_limits<uint32_t>::max());
  ASSERT_TRUE(sut.isInt());
  EXPECT_EQ(sut.asInt(), int64_t{4294967295});
}

TEST(ValueTest, DoubleConstructsFloat) {
  Value sut(1.5);
  ASSERT_TRUE(sut.isFloat());
  EXPECT_FALSE(sut.isInt());
  EXPECT_DOUBLE_EQ(sut.asFloat(), 1.5);
}

TEST(ValueTest, TextConstructsFromEveryStringType) {
  std::string s = "abc";
  std::string_view sv = "abc";
  EXPECT_TRUE(Value("abc").isText());  // const char* must not decay to bool
  EXPECT_EQ(Value("abc").asText(), "abc");
  EXPECT_EQ(Value(s).asText(), "abc");
  EXPECT_EQ(Value(sv).asText(), "abc");
  EXPECT_EQ(Value(std::string("a\0b", 3)).asText().size(), 3u);
}

TEST(ValueTest, BytesConstructsBytes) {
  Value sut(Bytes{{0, 1, 255}});
  ASSERT_TRUE(sut.isBytes());
  EXPECT_EQ(sut.asBytes().data, (std::vector<uint8_t>{0, 1, 255}));
  EXPECT_FALSE(sut.isText());
}

TEST(ValueTest, ListKeepsItemsInOrder) {
  Value sut = Value::list({1, "two", 3.0, nullptr});
  ASSERT_TRUE(sut.isList());
  const auto& l = sut.asList();
  ASSERT_EQ(l.size(), 4u);
  EXPECT_EQ(l[0].asInt(), 1);
  EXPECT_EQ(l[1].asText(), "two");
  EXPECT_TRUE(l[2].isFloat());
  EXPECT_TRUE(l[3].isNull());
}

TEST(ValueTest, MapKeepsInsertionOrder) {
  Value sut = Value::map({{"z", 1}, {"a", 2}, {"m", 3}});
  ASSERT_TRUE(sut.isMap());
  const auto& m = sut.asMap();
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].first, "z");
  EXPECT_EQ(m[1].first, "a");
  EXPECT_EQ(m[2].first, "m");
}

TEST(ValueTest, MapFactoryKeepsLastOfDuplicateKeysAtFirstPosition) {
  Value sut = Value::map({{"k", 1}, {"other", 2}, {"k", 3}});
  const auto& m = sut.asMap();
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].first, "k");
  EXPECT_EQ(m[0].second.asInt(), 3);
}

TEST(ValueTest, SetAppendsNewKeyAtEnd) {
  Value sut = Value::map({{"a", 1}});
  sut.set("b", 2);
  ASSERT_EQ(sut.asMap().size(), 2u);
  EXPECT_EQ(sut.asMap()[1].first, "b");
  EXPECT_EQ(sut["b"].asInt(), 2);
}

TEST(ValueTest, SetReplacesExistingKeyInPlace) {
  Value sut = Value::map({{"a", 1}, {"b", 2}});
  Value& slot = sut.set("a", "new");
  EXPECT_EQ(slot.asText(), "new");
  ASSERT_EQ(sut.asMap().size(), 2u);
  EXPECT_EQ(sut.asMap()[0].first, "a");
  EXPECT_EQ(sut["a"].asText(), "new");
}

TEST(ValueTest, SetTurnsNullIntoMap) {
  Value sut;
  sut.set("x", true);
  ASSERT_TRUE(sut.isMap());
  EXPECT_TRUE(sut["x"].asBool());
}

TEST(ValueTest, IndexOnMissingKeyGivesNull) {
  Value sut = Value::map({{"a", 1}});
  EXPECT_TRUE(sut["missing"].isNull());
  EXPECT_EQ(sut.find("missing"), nullptr);
}

TEST(ValueTest, IndexOnNonMapGivesNull) {
  EXPECT_TRUE(Value(5)["a"].isNull());
  EXPECT_TRUE(Value::list({1})["a"].isNull());
  EXPECT_EQ(Value("a").find("a"), nullptr);
}

TEST(ValueTest, FindReturnsPointerToEntry) {
  Value sut = Value::map({{"a", Value::list({1, 2})}});
  const Value* v = sut.find("a");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->asList().size(), 2u);
}

TEST(ValueTest, FallbacksApplyOnlyToOtherKinds) {
  EXPECT_EQ(Value("t").textOr("fb"), "t");
  EXPECT_EQ(Value(1).textOr("fb"), "fb");
  EXPECT_EQ(Value(9).intOr(-1), 9);
  EXPECT_EQ(Value(9.0).intOr(-1), -1);
}

TEST(ValueTest, EqualityComparesKindAndContent) {
  EXPECT_EQ(Value(1), Value(int64_t{1}));
  EXPECT_NE(Value(1), Value(1.0));  // INT and FLOAT differ even when numerically equal
  EXPECT_NE(Value(1), Value(true));
  EXPECT_NE(Value("1"), Value(1));
  EXPECT_NE(Value(Bytes{{'a'}}), Value("a"));
  EXPECT_EQ(Value::list({1, "a"}), Value::list({1, "a"}));
  EXPECT_NE(Value::list({1, "a"}), Value::list({"a", 1}));
  EXPECT_EQ(Value::map({{"a", 1}, {"b", Value::map({{"c", nullptr}})}}),
            Value::map({{"a", 1}, {"b", Value::map({{"c", nullptr}})}}));
  EXPECT_NE(Value::map({{"a", 1}}), Value::map({{"a", 2}}));
  EXPECT_NE(Value(), Value(false));
}

TEST(ValueTest, CopyIsDeep) {
  Value original = Value::map({{"list", Value::list({1})}});
  Value sut = original;
  sut.set("list", Value::list({2}));
  EXPECT_EQ(original["list"].asList()[0].asInt(), 1);
  EXPECT_EQ(sut["list"].asList()[0].asInt(), 2);
}

TEST(ValueDeathTest, AbortsWhenWrongAccessorUsed) {
  Value sut(1);
  EXPECT_DEATH((void)sut.asText(), "not text");
}

TEST(ValueDeathTest, AbortsWhenSetOnNonMap) {
  Value sut(1);
  EXPECT_DEATH(sut.set("a", 1), "non-map");
}

}  // namespace
}  // namespace swipc
