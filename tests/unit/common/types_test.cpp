// ClientId and scope names.
#include "swipc/types.h"

#include <gtest/gtest.h>

#include <string>
#include <unordered_set>

namespace swipc {
namespace {

constexpr std::string_view SAMPLE_ID = "00112233445566778899aabbccddeeff";

TEST(ClientIdTest, ParseThenToStringRoundTrips) {
  ClientId sut;
  ASSERT_TRUE(ClientId::parse(SAMPLE_ID, sut));
  EXPECT_EQ(sut.toString(), SAMPLE_ID);
  EXPECT_EQ(sut.bytes()[0], 0x00);
  EXPECT_EQ(sut.bytes()[1], 0x11);
  EXPECT_EQ(sut.bytes()[15], 0xff);
  EXPECT_FALSE(sut.empty());
}

TEST(ClientIdTest, ToStringThenParseRoundTrips) {
  std::array<uint8_t, 16> b{};
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(0xf0 - i * 13);
  ClientId original(b);
  ClientId sut;
  ASSERT_TRUE(ClientId::parse(original.toString(), sut));
  EXPECT_EQ(sut, original);
}

TEST(ClientIdTest, ParseAcceptsUppercaseAndPrintsLowercase) {
  ClientId sut;
  ASSERT_TRUE(ClientId::parse("00112233445566778899AABBCCDDEEFF", sut));
  EXPECT_EQ(sut.toString(), SAMPLE_ID);
}

TEST(ClientIdTest, ParseRejectsWrongLength) {
  ClientId sut;
  EXPECT_FALSE(ClientId::parse(SAMPLE_ID.substr(0, 31), sut));
  EXPECT_FALSE(ClientId::parse(std::string(SAMPLE_ID) + "0", sut));
  EXPECT_FALSE(ClientId::parse("", sut));
  EXPECT_TRUE(sut.empty());  // untouched on failure
}

TEST(ClientIdTest, ParseRejectsNonHex) {
  ClientId sut;
  for (size_t pos : {size_t{0}, size_t{1}, size_t{16}, size_t{31}}) {
    for (char c : {'g', 'G', ' ', '-', 'x', '\0'}) {
      std::string bad(SAMPLE_ID);
      bad[pos] = c;
      EXPECT_FALSE(ClientId::parse(bad, sut)) << "pos " << pos << " char " << int(c);
    }
  }
  EXPECT_TRUE(sut.empty());
}

TEST(ClientIdTest, DefaultIsEmptyAndAllZeros) {
  ClientId sut;
  EXPECT_TRUE(sut.empty());
  EXPECT_EQ(sut.toString(), std::string(32, '0'));
}

TEST(ClientIdTest, OrderingAndHashDistinguishIds) {
  ClientId a, b;
  ASSERT_TRUE(ClientId::parse("00000000000000000000000000000001", a));
  ASSERT_TRUE(ClientId::parse("00000000000000000000000000000002", b));
  EXPECT_LT(a, b);
  EXPECT_NE(a, b);
  std::unordered_set<ClientId> set{a, b, a};
  EXPECT_EQ(set.size(), 2u);
}

TEST(ClientTypeTest, NamesMatchTheWeb) {
  EXPECT_EQ(clientTypeName(ClientType::WINDOW), "window");
  EXPECT_EQ(clientTypeName(ClientType::WORKER), "worker");
  EXPECT_EQ(clientTypeName(ClientType::ALL), "all");
}

TEST(ScopeTest, AcceptsEveryAllowedCharacter) {
  EXPECT_TRUE(isValidScope("abcdefghijklmnopqrstuvwxyz"));
  EXPECT_TRUE(isValidScope("ABCDEFGHIJKLMNOPQRSTUVWXYZ"));
  EXPECT_TRUE(isValidScope("0123456789"));
  EXPECT_TRUE(isValidScope("my-app_v1.2"));
  EXPECT_TRUE(isValidScope("a"));
  EXPECT_TRUE(isValidScope("..."));
  EXPECT_TRUE(isValidScope(".hidden"));
}

TEST(ScopeTest, AcceptsSixtyFourCharacters) { EXPECT_TRUE(isValidScope(std::string(64, 'a'))); }

TEST(ScopeTest, RejectsEmpty) { EXPECT_FALSE(isValidScope("")); }

TEST(ScopeTest, RejectsSixtyFiveCharacters) { EXPECT_FALSE(isValidScope(std::string(65, 'a'))); }

TEST(ScopeTest, RejectsPathComponents) {
  EXPECT_FALSE(isValidScope("/"));
  EXPECT_FALSE(isValidScope("a/b"));
  EXPECT_FALSE(isValidScope(".."));
  EXPECT_FALSE(isValidScope("."));
  EXPECT_FALSE(isValidScope("../etc"));
}

TEST(ScopeTest, RejectsSpacesAndOtherCharacters) {
  for (std::string_view bad : std::initializer_list<std::string_view>{
           " ", "a b", "a\tb", "a\n", "a:b", "a\\b", "a*", "\xc3\xa9", std::string_view("a\0b", 3)})
    EXPECT_FALSE(isValidScope(bad)) << bad;
}

}  // namespace
}  // namespace swipc
