#include "federation/bundle.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>

#include "federation/remote_post.h"

namespace swipc::federation {
namespace {

std::vector<std::string> sampleItems() {
  return {std::string("a"), std::string(8, 'x'), std::string("\0\1\2\3\4\5\6\7\x08", 9), std::string(1000, 'z')};
}

std::vector<std::string_view> views(const std::vector<std::string>& items) {
  return {items.begin(), items.end()};
}

TEST(BundleTest, RoundTripsItemsOfEveryLengthInOrder) {
  const auto items = sampleItems();
  const auto bundle = encodeBundle(views(items));
  ASSERT_TRUE(looksLikeBundle(bundle.data(), bundle.size()));
  size_t expected = BUNDLE_HEADER_BYTES;
  for (const auto& i : items) expected += bundleItemBytes(i.size());
  EXPECT_EQ(bundle.size(), expected);
  auto sut = decodeBundle(bundle.data(), bundle.size());
  ASSERT_TRUE(sut.has_value());
  ASSERT_EQ(sut->size(), items.size());
  for (size_t i = 0; i < items.size(); ++i) EXPECT_EQ(std::string((*sut)[i]), items[i]) << "item " << i;
}

TEST(BundleTest, NoOtherFrameLooksLikeABundle) {
  std::vector<uint8_t> env(16, 0);
  const auto post = encodeRemotePost("n1", 1, ChannelName("c"), 1, env.data(), env.size());
  EXPECT_FALSE(looksLikeBundle(post.data(), post.size()));
  const std::string hb = encodeHeartbeat(Heartbeat{"n1", 1, 1000, {}});
  EXPECT_FALSE(looksLikeBundle(reinterpret_cast<const uint8_t*>(hb.data()), hb.size()));
  EXPECT_FALSE(looksLikeBundle(nullptr, 0));
}

TEST(BundleTest, RefusesEveryTruncationAndEveryExtension) {
  const auto items = sampleItems();
  const auto bundle = encodeBundle(views(items));
  for (size_t n = 0; n < bundle.size(); ++n)
    EXPECT_FALSE(decodeBundle(bundle.data(), n)) << "accepted the first " << n << " bytes";
  auto longer = bundle;
  longer.resize(bundle.size() + 8, 0);
  EXPECT_FALSE(decodeBundle(longer.data(), longer.size())) << "accepted trailing bytes";
}

TEST(BundleTest, RefusesHostileCountsLengthsAndPadding) {
  const std::vector<std::string> items{"abc", "defgh"};
  const auto good = encodeBundle(views(items));
  ASSERT_TRUE(decodeBundle(good.data(), good.size()));
  auto patch32 = [&](size_t at, uint32_t v) {
    auto b = good;
    std::memcpy(b.data() + at, &v, sizeof v);
    return b;
  };
  const size_t first = BUNDLE_HEADER_BYTES;
  const size_t second = first + bundleItemBytes(3);
  struct Case {
    const char* what;
    std::vector<uint8_t> bytes;
  };
  const std::vector<Case> cases{
      {"count 0", patch32(8, 0)},
      {"count 1 (a single message is never wrapped)", patch32(8, 1)},
      {"count larger than the message holds", patch32(8, 0xffffffffu)},
      {"count one more than present", patch32(8, 3)},
      {"reserved header word", patch32(12, 1)},
      {"item length past the end", patch32(first, 0xfffffff0u)},
      {"item length one past its room", patch32(second, static_cast<uint32_t>(good.size() - second - 7))},
      {"reserved item word", patch32(first + 4, 1)},
      {"an empty item (never sent: an empty message travels alone)", [&] {
         // "abc" becomes an empty item, and its 8 bytes of data are taken up by a longer second
         // item, so every length still adds up.
         auto b = patch32(first, 0);
         const uint32_t longer = 5 + 8 + 3;
         std::memcpy(b.data() + first + BUNDLE_ITEM_HEADER_BYTES, &longer, 4);
         return b;
       }()},
      {"non-zero padding", [&] {
         auto b = good;
         b[first + BUNDLE_ITEM_HEADER_BYTES + 3] = 0xaa;  // "abc" is padded with 5 zeros
         return b;
       }()},
      {"wrong version", [&] {
         auto b = good;
         b[4] = 2;
         return b;
       }()},
  };
  for (const auto& c : cases) EXPECT_FALSE(decodeBundle(c.bytes.data(), c.bytes.size())) << c.what;
}

TEST(BundleTest, MutatedBundlesNeverCrashOrOverread) {
  // Every byte of valid bundles flipped at random, lengths included: under ASan (the sanitizer
  // pass) a read past the message would be reported. Some mutations keep a bundle decodable
  // (a payload byte); every item of those must lie inside the message.
  std::mt19937 rng(19);
  size_t decoded = 0;
  for (int round = 0; round < 4000; ++round) {
    std::vector<std::string> items(2 + rng() % 4);
    for (auto& item : items) item.assign(1 + rng() % 40, static_cast<char>(rng()));
    auto b = encodeBundle(views(items));
    for (int flips = 1 + static_cast<int>(rng() % 3); flips > 0; --flips) b[rng() % b.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    auto got = decodeBundle(b.data(), b.size());
    if (!got) continue;
    ++decoded;
    for (auto item : *got) {
      EXPECT_FALSE(item.empty());
      EXPECT_GE(reinterpret_cast<const uint8_t*>(item.data()), b.data() + BUNDLE_HEADER_BYTES);
      EXPECT_LE(reinterpret_cast<const uint8_t*>(item.data()) + item.size(), b.data() + b.size());
    }
  }
  EXPECT_GT(decoded, 0u);        // the item walk ran on mutated input
  EXPECT_LT(decoded, 4000u);     // and the checks refused some
}

}  // namespace
}  // namespace swipc::federation
