// The one JSON <-> Value conversion (DESIGN §5).
#include "swipc/json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace swipc {
namespace {

Value parseOk(std::string_view text) {
  auto r = parseJsonValue(text);
  EXPECT_TRUE(r.ok()) << text << ": " << (r.ok() ? "" : r.error().describe());
  return r.ok() ? *r : Value{};
}

std::vector<uint8_t> bytesOf(std::string_view s) { return {s.begin(), s.end()}; }

// ---------------------------------------------------------------- numbers

TEST(JsonTest, IntegerLiteralBecomesInt) {
  Value sut = parseOk("1");
  ASSERT_TRUE(sut.isInt());
  EXPECT_EQ(sut.asInt(), 1);
  EXPECT_EQ(parseOk("-42").asInt(), -42);
  EXPECT_EQ(parseOk("0").asInt(), 0);
}

TEST(JsonTest, FractionBecomesFloatEvenWhenWhole) {
  Value sut = parseOk("1.0");
  ASSERT_TRUE(sut.isFloat());
  EXPECT_DOUBLE_EQ(sut.asFloat(), 1.0);
  EXPECT_TRUE(parseOk("-0.5").isFloat());
}

TEST(JsonTest, ExponentBecomesFloat) {
  Value sut = parseOk("1e3");
  ASSERT_TRUE(sut.isFloat());
  EXPECT_DOUBLE_EQ(sut.asFloat(), 1000.0);
  EXPECT_TRUE(parseOk("2E0").isFloat());
}

TEST(JsonTest, Int64ExtremesStayInt) {
  Value max = parseOk("9223372036854775807");
  ASSERT_TRUE(max.isInt());
  EXPECT_EQ(max.asInt(), std::numeric_limits<int64_t>::max());
  Value min = parseOk("-9223372036854775808");
  ASSERT_TRUE(min.isInt());
  EXPECT_EQ(min.asInt(), std::numeric_limits<int64_t>::min());
}

TEST(JsonTest, UnsignedAboveInt64MaxBecomesFloat) {
  Value sut = parseOk("9223372036854775808");
  ASSERT_TRUE(sut.isFloat());
  EXPECT_DOUBLE_EQ(sut.asFloat(), 9223372036854775808.0);
  Value u64max = parseOk("18446744073709551615");
  ASSERT_TRUE(u64max.isFloat());
  EXPECT_DOUBLE_EQ(u64max.asFloat(), 18446744073709551615.0);
}

TEST(JsonTest, IntegersBeyondUint64BecomeFloat) {
  EXPECT_TRUE(parseOk("18446744073709551616").isFloat());
  EXPECT_TRUE(parseOk("-9223372036854775809").isFloat());
}

TEST(JsonTest, IntAndFloatStayDistinctThroughText) {
  EXPECT_EQ(toJsonText(Value(1)), "1");
  Value sut = parseOk(toJsonText(Value(1.0)));
  EXPECT_TRUE(sut.isFloat()) << toJsonText(Value(1.0));
  EXPECT_EQ(parseOk(toJsonText(Value(0.1))), Value(0.1));
}

TEST(JsonTest, NonFiniteFloatBecomesNull) {
  EXPECT_TRUE(toJson(Value(std::nan(""))).is_null());
  EXPECT_TRUE(toJson(Value(std::numeric_limits<double>::infinity())).is_null());
}

// ---------------------------------------------------------------- bytes

TEST(JsonTest, BytesObjectBecomesBytes) {
  Value sut = parseOk(R"({"$bytes":"aGVsbG8="})");
  ASSERT_TRUE(sut.isBytes());
  EXPECT_EQ(sut.asBytes().data, bytesOf("hello"));
}

TEST(JsonTest, BytesRoundTripThroughJson) {
  std::vector<uint8_t> all(256);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint8_t>(i);
  Value original(Bytes{all});
  nlohmann::ordered_json j = toJson(original);
  ASSERT_TRUE(j.is_object());
  ASSERT_TRUE(j.contains("$bytes"));
  EXPECT_TRUE(j["$bytes"].is_string());
  auto sut = fromJson(j);
  ASSERT_TRUE(sut.ok());
  EXPECT_EQ(*sut, original);
}

TEST(JsonTest, BadBase64InBytesIsTypeError) {
  auto sut = parseJsonValue(R"({"$bytes":"not base64!"})");
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::TYPE);
}

TEST(JsonTest, BadBase64NestedDeepIsTypeError) {
  auto sut = parseJsonValue(R"({"a":[1,{"b":{"$bytes":"A==="}}]})");
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::TYPE);
}

TEST(JsonTest, BytesKeyWithSiblingsStaysMap) {
  Value sut = parseOk(R"({"$bytes":"AAAA","x":1})");
  ASSERT_TRUE(sut.isMap());
  EXPECT_EQ(sut["$bytes"].asText(), "AAAA");
}

TEST(JsonTest, BytesKeyWithNonStringStaysMap) {
  Value sut = parseOk(R"({"$bytes":5})");
  ASSERT_TRUE(sut.isMap());
  EXPECT_EQ(sut["$bytes"].asInt(), 5);
}

// ---------------------------------------------------------------- text and structure

TEST(JsonTest, InvalidTextIsTypeError) {
  for (std::string_view bad : std::initializer_list<std::string_view>{"", "{", "[1,]", "{'a':1}", "nan",
                                                                      "1 2", "tru", "\"unterminated"}) {
    auto sut = parseJsonValue(bad);
    ASSERT_FALSE(sut.ok()) << bad;
    EXPECT_EQ(sut.error().code, Errc::TYPE) << bad;
  }
}

TEST(JsonTest, ScalarsMapToTheirKinds) {
  EXPECT_TRUE(parseOk("null").isNull());
  EXPECT_EQ(parseOk("true"), Value(true));
  EXPECT_EQ(parseOk("\"x\\u00e9\""), Value("x\xc3\xa9"));
}

TEST(JsonTest, NestedRoundTripPreservesDocument) {
  const char* text = R"({
    "type": "COUNT", "count": 3, "ratio": 0.25, "big": 1e300, "neg": -7,
    "flags": [true, false, null], "nested": {"list": [[], {}, [1, [2, [3]]]], "empty": ""},
    "blob": {"$bytes": "AAEC/w=="}, "unicode": "\u00fc\u4e2d"
  })";
  nlohmann::ordered_json original = nlohmann::ordered_json::parse(text);
  auto sut = fromJson(original);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  EXPECT_EQ(toJson(*sut), original);
  EXPECT_EQ((*sut)["count"], Value(3));
  EXPECT_TRUE((*sut)["ratio"].isFloat());
  EXPECT_EQ((*sut)["blob"].asBytes().data, (std::vector<uint8_t>{0, 1, 2, 255}));
}

TEST(JsonTest, ValueRoundTripThroughTextPreservesValue) {
  Value original = Value::map({{"a", Value::list({1, 2.5, "s", nullptr, false})},
                               {"b", Value(Bytes{{9, 8, 7}})},
                               {"c", Value::map({{"d", Value::list({})}})}});
  auto sut = parseJsonValue(toJsonText(original));
  ASSERT_TRUE(sut.ok());
  EXPECT_EQ(*sut, original);  // keys a < b < c, so order survives nlohmann's sorted objects
}

TEST(JsonTest, TextIsOneLine) {
  Value v = Value::map({{"a", Value::list({1, 2})}, {"s", "line1\nline2"}});
  std::string sut = toJsonText(v);
  EXPECT_EQ(sut.find('\n'), std::string::npos) << sut;
}

TEST(JsonTest, InvalidUtf8TextIsReplacedNotThrown) {
  std::string sut;
  EXPECT_NO_THROW(sut = toJsonText(Value(std::string("\xff\xfe"))));
  EXPECT_FALSE(sut.empty());
}

// ---------------------------------------------------------------- base64

TEST(Base64Test, EncodesZeroToThreeBytes) {
  EXPECT_EQ(base64Encode({}), "");
  EXPECT_EQ(base64Encode({'f'}), "Zg==");
  EXPECT_EQ(base64Encode({'f', 'o'}), "Zm8=");
  EXPECT_EQ(base64Encode({'f', 'o', 'o'}), "Zm9v");
  EXPECT_EQ(base64Encode(bytesOf("foobar")), "Zm9vYmFy");
  EXPECT_EQ(base64Encode({0xfb, 0xff}), "+/8=");
}

TEST(Base64Test, DecodesZeroToThreeBytes) {
  std::vector<uint8_t> sut{1, 2, 3};
  ASSERT_TRUE(base64Decode("", sut));
  EXPECT_TRUE(sut.empty());
  ASSERT_TRUE(base64Decode("Zg==", sut));
  EXPECT_EQ(sut, bytesOf("f"));
  ASSERT_TRUE(base64Decode("Zm8=", sut));
  EXPECT_EQ(sut, bytesOf("fo"));
  ASSERT_TRUE(base64Decode("Zm9v", sut));
  EXPECT_EQ(sut, bytesOf("foo"));
  ASSERT_TRUE(base64Decode("Zm9vYmE=", sut));
  EXPECT_EQ(sut, bytesOf("fooba"));
}

TEST(Base64Test, RoundTripsEveryLengthAndByte) {
  for (size_t n = 0; n < 70; ++n) {
    std::vector<uint8_t> in(n);
    for (size_t i = 0; i < n; ++i) in[i] = static_cast<uint8_t>(i * 37 + n);
    std::vector<uint8_t> out;
    ASSERT_TRUE(base64Decode(base64Encode(in), out)) << n;
    EXPECT_EQ(out, in) << n;
  }
}

TEST(Base64Test, RejectsBadPadding) {
  std::vector<uint8_t> out;
  for (std::string_view bad : std::initializer_list<std::string_view>{"Z===", "====", "=Zg=", "Zg=A",
                                                                      "Z=g=", "Zg==Zm9v", "Zm8=Zm8="}) {
    EXPECT_FALSE(base64Decode(bad, out)) << bad;
  }
}

TEST(Base64Test, RejectsLengthNotMultipleOfFour) {
  std::vector<uint8_t> out;
  for (std::string_view bad : std::initializer_list<std::string_view>{"Z", "Zg", "Zg=", "Zm9", "Zm9vY"})
    EXPECT_FALSE(base64Decode(bad, out)) << bad;
}

TEST(Base64Test, RejectsCharactersOutsideAlphabet) {
  std::vector<uint8_t> out;
  for (std::string_view bad : std::initializer_list<std::string_view>{"Zm9\n", "Zm 9", "Zm9-", "Zm9_", "Zm9*",
                                                                      std::string_view("Zm\0v", 4)})
    EXPECT_FALSE(base64Decode(bad, out)) << bad;
}

}  // namespace
}  // namespace swipc
