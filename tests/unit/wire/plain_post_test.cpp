// wire: the plain-post fast lane. What it writes, Cap'n Proto reads; what Cap'n Proto writes, it
// reads; and whatever it accepts (including from corrupted bytes), the general path accepts with
// the same result. Anything else it declines, so the general path decides.
#include "wire/plain_post.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "wire/codec.h"
#include "wire/limits.h"
#include "wire/value_codec.h"

namespace swipc::wire {
namespace {

const capnp::ReaderOptions OPTIONS = readerOptions(DEFAULT_MAX_MESSAGE_BYTES);
constexpr auto CONTROLLER_POST = schema::Envelope::CONTROLLER_POST;
constexpr auto CLIENT_POST = schema::Envelope::CLIENT_POST;

std::vector<capnp::word> capnpPost(schema::Envelope::Which kind, uint64_t seq, bool wantAck, const Value& v,
                                   unsigned firstSegmentWords = 1024) {
  capnp::MallocMessageBuilder mb(firstSegmentWords, capnp::AllocationStrategy::FIXED_SIZE);
  auto env = mb.initRoot<schema::Envelope>();
  env.setSchemaVersion(schema::SCHEMA_VERSION);
  env.setSeq(seq);
  auto post = kind == CLIENT_POST ? env.initClientPost() : env.initControllerPost();
  post.setWantAck(wantAck);
  writeValue(v, post.initPayload().initValue());
  auto a = capnp::messageToFlatArray(mb);
  return std::vector<capnp::word>(a.begin(), a.end());
}

std::vector<capnp::word> fastPost(schema::Envelope::Which kind, uint64_t seq, bool wantAck, const Value& v) {
  const size_t bytes = plainPostBytes(v, wantAck);
  EXPECT_EQ(bytes % sizeof(capnp::word), 0u);
  std::vector<capnp::word> words(bytes / sizeof(capnp::word));
  std::memset(words.data(), 0xEE, bytes);  // the writer must not rely on a zeroed destination
  writePlainPost(kind, seq, wantAck, v, reinterpret_cast<uint8_t*>(words.data()), bytes);
  return words;
}

/// What the general path (Inbound + generated readers) makes of `words` as a post of `kind`.
struct General {
  bool ok = false;
  uint64_t seq = 0;
  bool wantAck = false;
  uint64_t replyId = 0;
  Value data;
};
General general(const std::vector<capnp::word>& words, schema::Envelope::Which kind) {
  General g;
  auto in = Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(words.data()), words.size() * sizeof(capnp::word),
                                  OPTIONS);
  if (!in) return g;
  try {
    auto env = in->envelope();
    if (env.which() != kind) return g;
    auto post = kind == CLIENT_POST ? env.getClientPost() : env.getControllerPost();
    if (post.getPorts().size() != 0 || !post.getPayload().isValue()) return g;
    auto v = readValue(post.getPayload().getValue());
    if (!v) return g;
    g.seq = env.getSeq();
    g.wantAck = post.getWantAck();
    g.replyId = post.getReplyId();
    g.data = std::move(*v);
    g.ok = true;
  } catch (const kj::Exception&) {
  }
  return g;
}

/// A plain post and its Value, as the fast lane reads them.
struct Fast : PlainPost {
  Value data;
};

bool fastRead(const std::vector<capnp::word>& words, schema::Envelope::Which kind, Fast& out) {
  out.data = Value{};
  return readPlainPost(words.data(), words.size(), OPTIONS, kind, out, out.data);
}

Value sample() {
  return Value::map({{"type", "ECHO"},
                     {"n", nullptr},
                     {"yes", true},
                     {"no", false},
                     {"i", int64_t{-123456789012345}},
                     {"f", -0.125},
                     {"inf", HUGE_VAL},
                     {"empty", ""},
                     {"nul", std::string("a\0b", 3)},
                     {"long", std::string(300, 'x')},
                     {"bytes", Bytes{{0, 1, 2, 3, 4, 5, 6, 7, 8}}},
                     {"nobytes", Bytes{}},
                     {"list", Value::list({1, "two", Value::list({}), Value::map({}), Value::list({3.5})})},
                     {"nulls", Value::list({nullptr, nullptr})},
                     {"bools", Value::list({true, false})},
                     {"map", Value::map({{"k", Value::map({{"deeper", Value::list({nullptr, true})}})}})}});
}

TEST(PlainPostTest, WhatItWritesCapnpReads) {
  for (auto kind : {CONTROLLER_POST, CLIENT_POST}) {
    for (const Value& v : {Value{}, Value{"NOOP"}, Value::map({{"type", "NOOP"}}), sample()}) {
      auto words = fastPost(kind, 42, true, v);
      General g = general(words, kind);
      ASSERT_TRUE(g.ok);
      EXPECT_EQ(g.seq, 42u);
      EXPECT_TRUE(g.wantAck);
      EXPECT_EQ(g.replyId, 0u);
      EXPECT_EQ(g.data, v);
      // And the whole message is well formed for a full walk too.
      auto in = Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(words.data()),
                                      words.size() * sizeof(capnp::word), OPTIONS);
      ASSERT_TRUE(in);
      EXPECT_TRUE(in->checkAll());
    }
  }
}

TEST(PlainPostTest, WhatCapnpWritesItReads) {
  for (auto kind : {CONTROLLER_POST, CLIENT_POST}) {
    for (const Value& v : {Value{}, Value{int64_t{7}}, Value::map({{"type", "NOOP"}}), sample()}) {
      Fast p;
      ASSERT_TRUE(fastRead(capnpPost(kind, 9, false, v), kind, p));
      EXPECT_EQ(p.seq, 9u);
      EXPECT_FALSE(p.wantAck);
      EXPECT_EQ(p.data, v);
      ASSERT_TRUE(fastRead(fastPost(kind, 10, true, v), kind, p));
      EXPECT_EQ(p.seq, 10u);
      EXPECT_TRUE(p.wantAck);
      EXPECT_EQ(p.data, v);
    }
  }
}

TEST(PlainPostTest, WritesStructsNoLargerThanWhatIsSet) {
  // A small post is what throughput is made of: every word saved is a cache line less per few
  // messages. The fast lane writes the smallest structs; the generated builder writes full ones.
  const Value noop = Value::map({{"type", "NOOP"}});
  for (bool ack : {false, true}) {
    const size_t fast = plainPostBytes(noop, ack);
    const size_t full = capnpPost(CONTROLLER_POST, 1, ack, noop).size() * sizeof(capnp::word);
    EXPECT_LT(fast, full) << "wantAck=" << ack;
  }
  EXPECT_LT(plainPostBytes(noop, false), plainPostBytes(noop, true));
  EXPECT_LT(plainPostBytes(Value{}, false), plainPostBytes(Value{int64_t{1}}, false));
}

TEST(PlainPostTest, DecodingIntoAValueInUseReplacesIt) {
  // The daemon decodes each post into the event of the one before (a map lends its storage).
  Value data = Value::map({{"old", 1}, {"type", "stale"}, {"more", Value::list({1, 2})}});
  PlainPost p;
  for (const Value& v : {Value::map({{"type", "NOOP"}}), Value::map({}), Value{"text"}, sample(),
                         Value::map({{"a", 1}}), Value{}, Value::map({{"type", "NOOP"}})}) {
    auto words = fastPost(CONTROLLER_POST, 1, false, v);
    ASSERT_TRUE(readPlainPost(words.data(), words.size(), OPTIONS, CONTROLLER_POST, p, data));
    EXPECT_EQ(data, v);
  }
}

TEST(PlainPostTest, RepeatedKeysResolveAsInTheGeneralPath) {
  capnp::MallocMessageBuilder mb;
  auto env = mb.initRoot<schema::Envelope>();
  env.setSchemaVersion(schema::SCHEMA_VERSION);
  auto map = env.initControllerPost().initPayload().initValue().initMap(3);
  const char* keys[] = {"a", "b", "a"};
  for (unsigned i = 0; i < 3; ++i) {
    map[i].setKey(keys[i]);
    map[i].initValue().setInt(i);
  }
  auto a = capnp::messageToFlatArray(mb);
  std::vector<capnp::word> words(a.begin(), a.end());
  Fast p;
  ASSERT_TRUE(fastRead(words, CONTROLLER_POST, p));
  EXPECT_EQ(p.data, Value::map({{"a", 2}, {"b", 1}}));
  EXPECT_EQ(p.data, general(words, CONTROLLER_POST).data);
  // The same into a value in use (its entries are overwritten in place, the rest cut off).
  Value used = Value::map({{"x", 1}, {"y", Value::list({1, 2})}, {"a", "old"}, {"w", 4}});
  ASSERT_TRUE(readPlainPost(words.data(), words.size(), OPTIONS, CONTROLLER_POST, p, used));
  EXPECT_EQ(used, Value::map({{"a", 2}, {"b", 1}}));
}

TEST(PlainPostTest, DeclinesWhatIsNotAPlainPost) {
  Fast p;
  const Value v = Value::map({{"type", "NOOP"}});
  // Another kind than the one asked for.
  EXPECT_FALSE(fastRead(capnpPost(CLIENT_POST, 1, false, v), CONTROLLER_POST, p));
  // Ports in the transfer list.
  {
    capnp::MallocMessageBuilder mb;
    auto env = mb.initRoot<schema::Envelope>();
    env.setSchemaVersion(schema::SCHEMA_VERSION);
    auto post = env.initControllerPost();
    writeValue(v, post.initPayload().initValue());
    post.initPorts(1)[0].setPortId(5);
    auto a = capnp::messageToFlatArray(mb);
    EXPECT_FALSE(readPlainPost(a.begin(), a.size(), OPTIONS, CONTROLLER_POST, p, p.data));
  }
  // A typed payload.
  {
    capnp::MallocMessageBuilder mb;
    auto env = mb.initRoot<schema::Envelope>();
    env.setSchemaVersion(schema::SCHEMA_VERSION);
    env.initControllerPost().initPayload().initTyped().setTypeId(77);
    auto a = capnp::messageToFlatArray(mb);
    EXPECT_FALSE(readPlainPost(a.begin(), a.size(), OPTIONS, CONTROLLER_POST, p, p.data));
  }
  // Another schema version (the general path names it VersionMismatch).
  {
    auto words = fastPost(CONTROLLER_POST, 1, false, v);
    reinterpret_cast<uint64_t*>(words.data())[2] ^= 0xFF;  // schemaVersion is in the envelope's first data word
    EXPECT_FALSE(fastRead(words, CONTROLLER_POST, p));
    auto in = Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(words.data()),
                                    words.size() * sizeof(capnp::word), OPTIONS);
    ASSERT_FALSE(in);
    EXPECT_EQ(in.error().code, Errc::VERSION_MISMATCH);
  }
  // More than one segment (far pointers are the general path's business).
  {
    auto words = capnpPost(CONTROLLER_POST, 1, false, sample(), 8);
    ASSERT_NE(reinterpret_cast<const uint32_t*>(words.data())[0], 0u) << "expected a multi-segment message";
    EXPECT_FALSE(fastRead(words, CONTROLLER_POST, p));
    EXPECT_TRUE(general(words, CONTROLLER_POST).ok);
  }
  // Truncated framing.
  {
    auto words = fastPost(CONTROLLER_POST, 1, false, v);
    words.resize(words.size() - 1);
    EXPECT_FALSE(fastRead(words, CONTROLLER_POST, p));
    words.resize(1);
    EXPECT_FALSE(fastRead(words, CONTROLLER_POST, p));
  }
}

TEST(PlainPostTest, DeclinesTextWithoutItsNul) {
  auto words = fastPost(CONTROLLER_POST, 1, false, Value{"abcdefg"});  // 7 bytes + NUL: one word
  auto* w = reinterpret_cast<uint64_t*>(words.data());
  const size_t last = words.size() - 1;
  ASSERT_EQ(std::memcmp(&w[last], "abcdefg", 8), 0);
  reinterpret_cast<char*>(&w[last])[7] = 'h';
  Fast p;
  EXPECT_FALSE(fastRead(words, CONTROLLER_POST, p));
  EXPECT_FALSE(general(words, CONTROLLER_POST).ok);
}

TEST(PlainPostTest, DeclinesNestingTheDecoderRefuses) {
  Value deep = 1;
  for (int i = 0; i < MAX_NESTING + 2; ++i) deep = Value::list({deep});
  Fast p;
  EXPECT_FALSE(fastRead(capnpPost(CONTROLLER_POST, 1, false, deep), CONTROLLER_POST, p));
  Value shallow = 1;
  for (int i = 0; i < 8; ++i) shallow = Value::list({shallow});
  ASSERT_TRUE(fastRead(capnpPost(CONTROLLER_POST, 1, false, shallow), CONTROLLER_POST, p));
  EXPECT_EQ(p.data, shallow);
}

TEST(PlainPostTest, DeclinesAPointerThatAliasesPastTheBudget) {
  // A map of many entries whose values all point at one large shared text: small on the wire,
  // large to traverse. The fast lane's budget stops it; the general path decides.
  auto words = fastPost(CONTROLLER_POST, 1, false,
                        Value::map({{"a", std::string(4000, 'a')}, {"b", "b"}, {"c", "c"}, {"d", "d"}}));
  auto* w = reinterpret_cast<uint64_t*>(words.data());
  // Find the long text's list pointer, then point every other byte-list pointer at its bytes.
  size_t longPtr = 0;
  int64_t longTarget = 0;
  for (size_t i = 1; i < words.size(); ++i) {
    const uint64_t p = w[i];
    if ((p & 3) == 1 && ((p >> 32) & 7) == 2 && (p >> 35) == 4001) {
      longPtr = i;
      longTarget = static_cast<int64_t>(i) + 1 + (static_cast<int32_t>(static_cast<uint32_t>(p)) >> 2);
    }
  }
  ASSERT_NE(longPtr, 0u);
  int redirected = 0;
  for (size_t i = 1; i < words.size(); ++i) {
    const uint64_t p = w[i];
    if (i == longPtr || (p & 3) != 1 || ((p >> 32) & 7) != 2 || (p >> 35) != 2) continue;
    const int64_t off = longTarget - static_cast<int64_t>(i) - 1;
    w[i] = (static_cast<uint64_t>(static_cast<uint32_t>(off) << 2) | 1) | (uint64_t{2} << 32) | (uint64_t{4001} << 35);
    ++redirected;
  }
  ASSERT_GE(redirected, 3);
  Fast p;
  EXPECT_FALSE(fastRead(words, CONTROLLER_POST, p));
}

// ---- differential: corrupted bytes ----

Value randomValue(std::mt19937_64& rng, int depth) {
  const int kinds = depth > 3 ? 6 : 8;
  std::uniform_int_distribution<int> kind(0, kinds - 1);
  std::uniform_int_distribution<int> len(0, 20);
  switch (kind(rng)) {
    case 0: return Value{};
    case 1: return Value{(rng() & 1) != 0};
    case 2: return Value{static_cast<int64_t>(rng())};
    case 3: return Value{static_cast<double>(static_cast<int64_t>(rng() % 100000)) / 7.0};
    case 4: return Value{std::string(static_cast<size_t>(len(rng)), static_cast<char>('a' + rng() % 26))};
    case 5: return Value{Bytes{std::vector<uint8_t>(static_cast<size_t>(len(rng)), static_cast<uint8_t>(rng()))}};
    case 6: {
      Value::List l;
      for (int i = 0, n = static_cast<int>(rng() % 5); i < n; ++i) l.push_back(randomValue(rng, depth + 1));
      return Value{std::move(l)};
    }
    default: {
      Value m = Value::map({});
      for (int i = 0, n = static_cast<int>(rng() % 5); i < n; ++i)
        m.set(std::string(1, static_cast<char>('a' + rng() % 6)), randomValue(rng, depth + 1));
      return m;
    }
  }
}

TEST(PlainPostTest, WhateverItAcceptsTheGeneralPathAcceptsAlike) {
  std::mt19937_64 rng(20261202);
  int accepted = 0, declined = 0;
  for (int round = 0; round < 40000; ++round) {
    const Value v = randomValue(rng, 0);
    const auto kind = (round & 1) ? CONTROLLER_POST : CLIENT_POST;
    auto words = (round & 2) ? fastPost(kind, round + 1, (round & 4) != 0, v)
                             : capnpPost(kind, round + 1, (round & 4) != 0, v);
    // Corrupt one to three things: a random bit, a random byte, or a whole word from elsewhere.
    auto* bytes = reinterpret_cast<uint8_t*>(words.data());
    const size_t n = words.size() * sizeof(capnp::word);
    for (int k = 0, m = 1 + static_cast<int>(rng() % 3); k < m; ++k) {
      switch (rng() % 3) {
        case 0: bytes[rng() % n] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 1: bytes[rng() % n] = static_cast<uint8_t>(rng()); break;
        default: words[rng() % words.size()] = words[rng() % words.size()]; break;
      }
    }
    Fast p;
    if (!fastRead(words, kind, p)) {
      ++declined;
      continue;
    }
    ++accepted;
    General g = general(words, kind);
    ASSERT_TRUE(g.ok) << "round " << round << ": the fast lane accepted what the general path refuses";
    EXPECT_EQ(p.seq, g.seq) << "round " << round;
    EXPECT_EQ(p.wantAck, g.wantAck) << "round " << round;
    EXPECT_EQ(p.replyId, g.replyId) << "round " << round;
    ASSERT_EQ(p.data, g.data) << "round " << round;
  }
  // Both outcomes happen often, or the test shows nothing.
  EXPECT_GT(accepted, 4000);
  EXPECT_GT(declined, 4000);
}

TEST(PlainPostTest, DecodingRandomValuesIntoOneValueMatchesFreshDecodes) {
  // The reused event's storage (maps, lists, text overwritten in place, the rest cut off) must
  // never leak into the next message, whatever the shapes of the two.
  std::mt19937_64 rng(7);
  Value reused = Value::map({{"type", "NOOP"}});
  Fast fresh;
  PlainPost p;
  for (int round = 0; round < 3000; ++round) {
    const Value v = randomValue(rng, 0);
    auto words = (round & 1) ? fastPost(CONTROLLER_POST, 1, false, v) : capnpPost(CONTROLLER_POST, 1, false, v);
    ASSERT_TRUE(readPlainPost(words.data(), words.size(), OPTIONS, CONTROLLER_POST, p, reused)) << "round " << round;
    ASSERT_TRUE(fastRead(words, CONTROLLER_POST, fresh));
    ASSERT_EQ(reused, fresh.data) << "round " << round;
    ASSERT_EQ(reused, v) << "round " << round;
  }
}

}  // namespace
}  // namespace swipc::wire
