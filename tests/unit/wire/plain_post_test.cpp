// wire: the plain-post fast lane. What it writes, Cap'n Proto reads; what Cap'n Proto writes, it
// reads; and whatever it accepts (including from corrupted bytes), the general path accepts with
// the same result. Anything else it declines, so the general path decides.
#include "wire/plain_post.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
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

// The lane's post without ports, in the shape most of these tests take.
using PlainPost = PlainMessage;

PlainMessage postHeader(schema::Envelope::Which kind, uint64_t seq, bool wantAck) {
  PlainMessage m;
  m.kind = kind;
  m.seq = seq;
  m.wantAck = wantAck;
  return m;
}

size_t plainPostBytes(const Value& data, bool wantAck) { return plainBytes(postHeader(CONTROLLER_POST, 0, wantAck), data); }

void writePlainPost(schema::Envelope::Which kind, uint64_t seq, bool wantAck, const Value& data, uint8_t* dst,
                    size_t bytes) {
  writePlain(postHeader(kind, seq, wantAck), data, dst, bytes);
}

/// readPlain() for one post kind, declining a post that carries a port.
bool readPlainPost(const capnp::word* words, size_t count, const capnp::ReaderOptions& options,
                   schema::Envelope::Which kind, PlainPost& out, Value& data) {
  return readPlain(words, count, options, kindBit(kind), out, data) && !out.hasPort;
}

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

// ---- the other shapes: a post registering one fresh port, a port message, a port close ----

constexpr auto PORT_MESSAGE = schema::Envelope::PORT_MESSAGE;
constexpr auto PORT_CLOSE = schema::Envelope::PORT_CLOSE;
constexpr auto BC_POST = schema::Envelope::BC_POST;
constexpr auto BC_MESSAGE = schema::Envelope::BC_MESSAGE;
constexpr uint32_t ALL_KINDS = kindBit(CONTROLLER_POST) | kindBit(CLIENT_POST) | kindBit(PORT_MESSAGE) |
                               kindBit(PORT_CLOSE) | kindBit(BC_POST) | kindBit(BC_MESSAGE);

/// A controller post registering a fresh pair, as messageSW sends it (`port` goes, its peer stays).
PlainMessage postWithPort(uint64_t seq, bool wantAck, PlainPort port) {
  PlainMessage m = postHeader(CONTROLLER_POST, seq, wantAck);
  m.hasPort = true;
  m.port = port;
  return m;
}

PlainMessage portMessage(uint64_t seq, uint64_t to, uint64_t portSeq) {
  PlainMessage m;
  m.kind = PORT_MESSAGE;
  m.seq = seq;
  m.to = to;
  m.portSeq = portSeq;
  return m;
}

PlainMessage portClose(uint64_t seq, uint64_t port, uint64_t recvNext) {
  PlainMessage m;
  m.kind = PORT_CLOSE;
  m.seq = seq;
  m.to = port;
  m.portSeq = recvNext;
  return m;
}

/// A page's BroadcastChannel post from object `objectId`.
PlainMessage bcPost(uint64_t seq, uint32_t objectId, bool wantAck) {
  PlainMessage m;
  m.kind = BC_POST;
  m.seq = seq;
  m.objectId = objectId;
  m.wantAck = wantAck;
  return m;
}

/// A channel ring record.
PlainMessage bcMessage(uint64_t seq) {
  PlainMessage m;
  m.kind = BC_MESSAGE;
  m.seq = seq;
  return m;
}

const PlainPort SAMPLE_PORT{0x1111'2222'3333'4444ull, 0x5555'6666'7777'8888ull, 3, 7, true};

/// `m` carrying `v` (ignored for a port close) as the generated builders write it; `tweak`, when
/// given, then changes the envelope (to make something the fast lane must decline).
std::vector<capnp::word> capnpMessage(const PlainMessage& m, const Value& v,
                                      const std::function<void(schema::Envelope::Builder)>& tweak = {}) {
  capnp::MallocMessageBuilder mb;
  auto env = mb.initRoot<schema::Envelope>();
  env.setSchemaVersion(schema::SCHEMA_VERSION);
  env.setSeq(m.seq);
  switch (m.kind) {
    case PORT_MESSAGE: {
      auto pm = env.initPortMessage();
      pm.setTo(m.to);
      pm.setSeq(m.portSeq);
      writeValue(v, pm.initPayload().initValue());
      break;
    }
    case PORT_CLOSE: {
      auto pc = env.initPortClose();
      pc.setPort(m.to);
      pc.setRecvNext(m.portSeq);
      break;
    }
    case BC_POST: {
      auto bp = env.initBcPost();
      bp.setObjectId(m.objectId);
      bp.setWantAck(m.wantAck);
      writeValue(v, bp.initPayload().initValue());
      break;
    }
    case BC_MESSAGE: writeValue(v, env.initBcMessage().initPayload().initValue()); break;
    default: {
      auto post = m.kind == CLIENT_POST ? env.initClientPost() : env.initControllerPost();
      post.setWantAck(m.wantAck);
      post.setReplyId(m.replyId);
      writeValue(v, post.initPayload().initValue());
      if (m.hasPort) {
        auto d = post.initPorts(1)[0];
        d.setPortId(m.port.portId);
        d.setPeerId(m.port.peerId);
        d.setSendSeq(m.port.sendSeq);
        d.setRecvNext(m.port.recvNext);
        d.setRegister(true);
        d.setSilentPeer(m.port.silentPeer);
      }
      break;
    }
  }
  if (tweak) tweak(env);
  auto a = capnp::messageToFlatArray(mb);
  return std::vector<capnp::word>(a.begin(), a.end());
}

std::vector<capnp::word> fastMessage(const PlainMessage& m, const Value& v) {
  const size_t bytes = plainBytes(m, v);
  EXPECT_EQ(bytes % sizeof(capnp::word), 0u);
  std::vector<capnp::word> words(bytes / sizeof(capnp::word));
  std::memset(static_cast<void*>(words.data()), 0xEE, bytes);  // the writer must not rely on a zeroed destination
  writePlain(m, v, reinterpret_cast<uint8_t*>(words.data()), bytes);
  return words;
}

bool fastReadAny(const std::vector<capnp::word>& words, uint32_t kinds, Fast& out) {
  out = Fast{};
  return readPlain(words.data(), words.size(), OPTIONS, kinds, out, out.data);
}

/// Everything the general path (Inbound + generated readers) sees in `words`, whatever the kind.
struct GeneralMessage {
  bool ok = false;  // a valid envelope whose Value (where its kind has one) decodes
  schema::Envelope::Which kind = CONTROLLER_POST;
  uint64_t seq = 0;
  bool wantAck = false;
  uint64_t replyId = 0;
  unsigned ports = 0;  // descriptors in the post's or port message's transfer list
  // The first descriptor, when there is one.
  uint64_t portId = 0, peerId = 0, sendSeq = 0, recvNext = 0;
  bool reg = false, peerClosed = false, silentPeer = false;
  unsigned queued = 0;
  uint64_t to = 0, portSeq = 0;
  uint32_t objectId = 0;
  bool valuePayload = false;
  Value data;
};

GeneralMessage readEnvelope(schema::Envelope::Reader env) {
  GeneralMessage g;
  try {
    g.kind = env.which();
    g.seq = env.getSeq();
    auto takePorts = [&](capnp::List<schema::PortDescriptor>::Reader ds) {
      g.ports = ds.size();
      if (ds.size() == 0) return;
      auto d = ds[0];
      g.portId = d.getPortId();
      g.peerId = d.getPeerId();
      g.sendSeq = d.getSendSeq();
      g.recvNext = d.getRecvNext();
      g.reg = d.getRegister();
      g.peerClosed = d.getPeerClosed();
      g.silentPeer = d.getSilentPeer();
      g.queued = d.getQueued().size();
    };
    auto takeValue = [&](schema::Payload::Reader payload) {
      g.valuePayload = payload.isValue();
      if (!g.valuePayload) return false;
      auto v = readValue(payload.getValue());
      if (!v) return false;
      g.data = std::move(*v);
      return true;
    };
    switch (g.kind) {
      case CONTROLLER_POST:
      case CLIENT_POST: {
        auto post = g.kind == CLIENT_POST ? env.getClientPost() : env.getControllerPost();
        g.wantAck = post.getWantAck();
        g.replyId = post.getReplyId();
        takePorts(post.getPorts());
        g.ok = takeValue(post.getPayload());
        break;
      }
      case PORT_MESSAGE: {
        auto pm = env.getPortMessage();
        g.to = pm.getTo();
        g.portSeq = pm.getSeq();
        takePorts(pm.getPorts());
        g.ok = takeValue(pm.getPayload());
        break;
      }
      case PORT_CLOSE:
        g.to = env.getPortClose().getPort();
        g.portSeq = env.getPortClose().getRecvNext();
        g.ok = true;
        break;
      case BC_POST:
        g.objectId = env.getBcPost().getObjectId();
        g.wantAck = env.getBcPost().getWantAck();
        g.ok = takeValue(env.getBcPost().getPayload());
        break;
      case BC_MESSAGE: g.ok = takeValue(env.getBcMessage().getPayload()); break;
      default: break;
    }
  } catch (const kj::Exception&) {
    g.ok = false;
  }
  return g;
}

GeneralMessage readGeneral(const std::vector<capnp::word>& words) {
  auto in = Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(words.data()), words.size() * sizeof(capnp::word),
                                  OPTIONS);
  if (in) return readEnvelope(in->envelope());
  // A BroadcastChannel post is not plain: Inbound walks all of it, and refuses one with a bad
  // pointer where no reader looks. The lane reads only what the daemon uses (and re-encodes that
  // for the ring), so for this kind it is held to what the generated readers read.
  try {
    capnp::FlatArrayMessageReader reader(kj::arrayPtr(words.data(), words.size()), OPTIONS);
    auto env = reader.getRoot<schema::Envelope>();
    if (env.getSchemaVersion() == schema::SCHEMA_VERSION && env.isBcPost()) return readEnvelope(env);
  } catch (const kj::Exception&) {
  }
  return GeneralMessage{};
}

/// The general path's reading of what the fast lane accepted as `p` is the same in every field.
::testing::AssertionResult sameAsGeneral(const Fast& p, const GeneralMessage& g) {
  if (!g.ok) return ::testing::AssertionFailure() << "the fast lane accepted what the general path refuses";
  if (g.kind != p.kind) return ::testing::AssertionFailure() << "kind " << p.kind << " vs " << g.kind;
  if (g.seq != p.seq) return ::testing::AssertionFailure() << "seq " << p.seq << " vs " << g.seq;
  switch (p.kind) {
    case PORT_CLOSE:
      if (g.to != p.to || g.portSeq != p.portSeq) return ::testing::AssertionFailure() << "port or recvNext differ";
      return ::testing::AssertionSuccess();
    case PORT_MESSAGE:
      if (g.to != p.to || g.portSeq != p.portSeq) return ::testing::AssertionFailure() << "to or seq differ";
      if (g.ports != 0) return ::testing::AssertionFailure() << "a port message with " << g.ports << " ports";
      break;
    case BC_POST:
      if (g.objectId != p.objectId || g.wantAck != p.wantAck)
        return ::testing::AssertionFailure() << "objectId or wantAck differ";
      break;
    case BC_MESSAGE: break;
    default:
      if (g.wantAck != p.wantAck) return ::testing::AssertionFailure() << "wantAck differs";
      if (g.replyId != p.replyId) return ::testing::AssertionFailure() << "replyId differs";
      if (g.ports != (p.hasPort ? 1u : 0u)) return ::testing::AssertionFailure() << g.ports << " ports, hasPort " << p.hasPort;
      if (p.hasPort &&
          (g.portId != p.port.portId || g.peerId != p.port.peerId || g.sendSeq != p.port.sendSeq ||
           g.recvNext != p.port.recvNext || g.silentPeer != p.port.silentPeer || !g.reg || g.peerClosed || g.queued != 0))
        return ::testing::AssertionFailure() << "the descriptor differs";
      break;
  }
  if (!g.valuePayload || g.data != p.data) return ::testing::AssertionFailure() << "the Value differs";
  return ::testing::AssertionSuccess();
}

TEST(PlainPostTest, WhatItWritesInEveryShapeCapnpReads) {
  for (const Value& v : {Value{}, Value::map({{"type", "NOOP"}}), sample()}) {
    for (bool ack : {false, true}) {
      for (bool silent : {false, true}) {
        PlainPort port = SAMPLE_PORT;
        port.silentPeer = silent;
        auto words = fastMessage(postWithPort(42, ack, port), v);
        GeneralMessage g = readGeneral(words);
        ASSERT_TRUE(g.ok);
        EXPECT_EQ(g.kind, CONTROLLER_POST);
        EXPECT_EQ(g.seq, 42u);
        EXPECT_EQ(g.wantAck, ack);
        EXPECT_EQ(g.replyId, 0u);
        ASSERT_EQ(g.ports, 1u);
        EXPECT_EQ(g.portId, SAMPLE_PORT.portId);
        EXPECT_EQ(g.peerId, SAMPLE_PORT.peerId);
        EXPECT_EQ(g.sendSeq, SAMPLE_PORT.sendSeq);
        EXPECT_EQ(g.recvNext, SAMPLE_PORT.recvNext);
        EXPECT_TRUE(g.reg);
        EXPECT_EQ(g.silentPeer, silent);
        EXPECT_FALSE(g.peerClosed);
        EXPECT_EQ(g.queued, 0u);
        EXPECT_EQ(g.data, v);
        auto in = Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(words.data()),
                                        words.size() * sizeof(capnp::word), OPTIONS);
        ASSERT_TRUE(in);
        EXPECT_TRUE(in->checkAll());
      }
    }
    {
      auto words = fastMessage(portMessage(43, 0xABCD'EF01'2345'6789ull, 17), v);
      GeneralMessage g = readGeneral(words);
      ASSERT_TRUE(g.ok);
      EXPECT_EQ(g.kind, PORT_MESSAGE);
      EXPECT_EQ(g.seq, 43u);
      EXPECT_EQ(g.to, 0xABCD'EF01'2345'6789ull);
      EXPECT_EQ(g.portSeq, 17u);
      EXPECT_EQ(g.ports, 0u);
      EXPECT_EQ(g.data, v);
      auto in = Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(words.data()),
                                      words.size() * sizeof(capnp::word), OPTIONS);
      ASSERT_TRUE(in);
      EXPECT_TRUE(in->checkAll());
    }
  }
  auto words = fastMessage(portClose(44, 0x0102'0304'0506'0708ull, 99), Value{"ignored"});
  EXPECT_EQ(words.size(), fastMessage(portClose(44, 1, 2), Value{}).size()) << "a close carries no Value";
  GeneralMessage g = readGeneral(words);
  ASSERT_TRUE(g.ok);
  EXPECT_EQ(g.kind, PORT_CLOSE);
  EXPECT_EQ(g.seq, 44u);
  EXPECT_EQ(g.to, 0x0102'0304'0506'0708ull);
  EXPECT_EQ(g.portSeq, 99u);
  auto in = Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(words.data()), words.size() * sizeof(capnp::word),
                                  OPTIONS);
  ASSERT_TRUE(in);
  EXPECT_TRUE(in->checkAll());
}

TEST(PlainPostTest, WhatCapnpWritesInEveryShapeItReads) {
  for (const Value& v : {Value{}, Value{int64_t{7}}, Value::map({{"type", "NOOP"}}), sample()}) {
    for (bool ack : {false, true}) {
      for (bool silent : {false, true}) {
        PlainPort port = SAMPLE_PORT;
        port.silentPeer = silent;
        for (const auto& words : {capnpMessage(postWithPort(9, ack, port), v), fastMessage(postWithPort(9, ack, port), v)}) {
          Fast p;
          ASSERT_TRUE(fastReadAny(words, kindBit(CONTROLLER_POST), p));
          EXPECT_EQ(p.kind, CONTROLLER_POST);
          EXPECT_EQ(p.seq, 9u);
          EXPECT_EQ(p.wantAck, ack);
          EXPECT_EQ(p.replyId, 0u);
          ASSERT_TRUE(p.hasPort);
          EXPECT_EQ(p.port.portId, SAMPLE_PORT.portId);
          EXPECT_EQ(p.port.peerId, SAMPLE_PORT.peerId);
          EXPECT_EQ(p.port.sendSeq, SAMPLE_PORT.sendSeq);
          EXPECT_EQ(p.port.recvNext, SAMPLE_PORT.recvNext);
          EXPECT_EQ(p.port.silentPeer, silent);
          EXPECT_EQ(p.data, v);
        }
      }
    }
    for (const auto& words : {capnpMessage(portMessage(10, 0xFEDC'BA98'7654'3210ull, 5), v),
                              fastMessage(portMessage(10, 0xFEDC'BA98'7654'3210ull, 5), v)}) {
      Fast p;
      ASSERT_TRUE(fastReadAny(words, kindBit(PORT_MESSAGE), p));
      EXPECT_EQ(p.kind, PORT_MESSAGE);
      EXPECT_EQ(p.seq, 10u);
      EXPECT_EQ(p.to, 0xFEDC'BA98'7654'3210ull);
      EXPECT_EQ(p.portSeq, 5u);
      EXPECT_EQ(p.data, v);
    }
  }
  for (const auto& words : {capnpMessage(portClose(11, 0x77ull << 56, 123), Value{}),
                            fastMessage(portClose(11, 0x77ull << 56, 123), Value{})}) {
    Fast p;
    ASSERT_TRUE(fastReadAny(words, kindBit(PORT_CLOSE), p));
    EXPECT_EQ(p.kind, PORT_CLOSE);
    EXPECT_EQ(p.seq, 11u);
    EXPECT_EQ(p.to, 0x77ull << 56);
    EXPECT_EQ(p.portSeq, 123u);
  }
  // An empty queue (rather than a null one) is nothing queued too.
  Fast p;
  ASSERT_TRUE(fastReadAny(capnpMessage(postWithPort(12, false, SAMPLE_PORT), Value{},
                                       [](schema::Envelope::Builder env) {
                                         env.getControllerPost().getPorts()[0].initQueued(0);
                                       }),
                          ALL_KINDS, p));
  EXPECT_TRUE(p.hasPort);
  EXPECT_EQ(p.port.portId, SAMPLE_PORT.portId);
}

TEST(PlainPostTest, BroadcastPostsAndRingRecordsGoBothWays) {
  for (const Value& v : {Value{}, Value{int64_t{7}}, Value::map({{"type", "NOOP"}}), sample()}) {
    for (bool ack : {false, true}) {
      for (uint32_t object : {0u, 1u, 0xFFFF'FFFFu}) {
        const PlainMessage m = bcPost(21, object, ack);
        GeneralMessage g = readGeneral(fastMessage(m, v));
        ASSERT_TRUE(g.ok);
        EXPECT_EQ(g.kind, BC_POST);
        EXPECT_EQ(g.seq, 21u);
        EXPECT_EQ(g.objectId, object);
        EXPECT_EQ(g.wantAck, ack);
        EXPECT_EQ(g.data, v);
        for (const auto& words : {capnpMessage(m, v), fastMessage(m, v)}) {
          Fast p;
          ASSERT_TRUE(fastReadAny(words, kindBit(BC_POST), p));
          EXPECT_EQ(p.kind, BC_POST);
          EXPECT_EQ(p.seq, 21u);
          EXPECT_EQ(p.objectId, object);
          EXPECT_EQ(p.wantAck, ack);
          EXPECT_EQ(p.data, v);
          EXPECT_FALSE(fastReadAny(words, ALL_KINDS & ~kindBit(BC_POST), p));
        }
      }
    }
    const PlainMessage r = bcMessage(22);
    auto written = fastMessage(r, v);
    GeneralMessage g = readGeneral(written);
    ASSERT_TRUE(g.ok);
    EXPECT_EQ(g.kind, BC_MESSAGE);
    EXPECT_EQ(g.data, v);
    auto in = Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(written.data()),
                                    written.size() * sizeof(capnp::word), OPTIONS);
    ASSERT_TRUE(in);
    EXPECT_TRUE(in->checkAll());
    for (const auto& words : {capnpMessage(r, v), written}) {
      Fast p;
      ASSERT_TRUE(fastReadAny(words, kindBit(BC_MESSAGE), p));
      EXPECT_EQ(p.kind, BC_MESSAGE);
      EXPECT_EQ(p.seq, 22u);
      EXPECT_EQ(p.data, v);
      EXPECT_FALSE(fastReadAny(words, ALL_KINDS & ~kindBit(BC_MESSAGE), p));
    }
  }
  // A typed payload is the general path's.
  Fast p;
  EXPECT_FALSE(fastReadAny(capnpMessage(bcMessage(1), Value{},
                                        [](schema::Envelope::Builder env) {
                                          env.getBcMessage().initPayload().initTyped().setTypeId(77);
                                        }),
                           ALL_KINDS, p));
  EXPECT_FALSE(fastReadAny(capnpMessage(bcPost(1, 3, false), Value{},
                                        [](schema::Envelope::Builder env) {
                                          env.getBcPost().initPayload().initTyped().setTypeId(77);
                                        }),
                           ALL_KINDS, p));
}

TEST(PlainPostTest, DeclinesAPortThatIsNotAFreshPair) {
  const Value v = Value::map({{"type", "GET_VERSION"}});
  const PlainMessage m = postWithPort(1, false, SAMPLE_PORT);
  Fast p;
  ASSERT_TRUE(fastReadAny(capnpMessage(m, v), ALL_KINDS, p)) << "the untouched post must be accepted";
  auto port = [](schema::Envelope::Builder env) { return env.getControllerPost().getPorts()[0]; };
  // An existing port (the general path checks its ownership).
  EXPECT_FALSE(fastReadAny(capnpMessage(m, v, [&](auto env) { port(env).setRegister(false); }), ALL_KINDS, p));
  // A port whose peer is already gone.
  EXPECT_FALSE(fastReadAny(capnpMessage(m, v, [&](auto env) { port(env).setPeerClosed(true); }), ALL_KINDS, p));
  // Messages queued at it.
  EXPECT_FALSE(fastReadAny(capnpMessage(m, v,
                                        [&](auto env) {
                                          auto q = port(env).initQueued(1)[0];
                                          q.setTo(SAMPLE_PORT.portId);
                                          q.setSeq(1);
                                          q.initPayload().initValue().setText("queued");
                                        }),
                           ALL_KINDS, p));
  // Two descriptors, each a fresh pair of its own.
  EXPECT_FALSE(fastReadAny(capnpMessage(m, v,
                                        [&](auto env) {
                                          auto ds = env.getControllerPost().initPorts(2);
                                          for (unsigned i = 0; i < 2; ++i) {
                                            ds[i].setPortId(10 + 2 * i);
                                            ds[i].setPeerId(11 + 2 * i);
                                            ds[i].setSendSeq(1);
                                            ds[i].setRecvNext(1);
                                            ds[i].setRegister(true);
                                          }
                                        }),
                           ALL_KINDS, p));
  // A client post carrying a port (only controller posts register pairs on the fast lane).
  PlainMessage client = m;
  client.kind = CLIENT_POST;
  EXPECT_FALSE(fastReadAny(capnpMessage(client, v), ALL_KINDS, p));
  // The post-only reader declines any port, fresh or not.
  for (const auto& words : {capnpMessage(m, v), fastMessage(m, v)}) {
    Fast post;
    EXPECT_FALSE(readPlainPost(words.data(), words.size(), OPTIONS, CONTROLLER_POST, post, post.data));
  }
}

TEST(PlainPostTest, DeclinesAPortMessageItDoesNotCarry) {
  const Value v = Value::map({{"type", "COUNT"}});
  const PlainMessage m = portMessage(1, 0x42, 3);
  Fast p;
  ASSERT_TRUE(fastReadAny(capnpMessage(m, v), ALL_KINDS, p)) << "the untouched message must be accepted";
  // Ports travelling with it.
  EXPECT_FALSE(fastReadAny(capnpMessage(m, v,
                                        [](schema::Envelope::Builder env) {
                                          auto d = env.getPortMessage().initPorts(1)[0];
                                          d.setPortId(5);
                                          d.setPeerId(6);
                                          d.setRegister(true);
                                        }),
                           ALL_KINDS, p));
  // A typed payload.
  EXPECT_FALSE(fastReadAny(capnpMessage(m, v,
                                        [](schema::Envelope::Builder env) {
                                          env.getPortMessage().initPayload().initTyped().setTypeId(77);
                                        }),
                           ALL_KINDS, p));
}

TEST(PlainPostTest, DeclinesAKindNotAskedFor) {
  const Value v = Value::map({{"type", "NOOP"}});
  Fast p;
  for (const auto& words : {capnpMessage(portClose(1, 0x42, 3), v), fastMessage(portClose(1, 0x42, 3), v)}) {
    ASSERT_TRUE(fastReadAny(words, kindBit(PORT_CLOSE), p));
    EXPECT_FALSE(fastReadAny(words, kindBit(CONTROLLER_POST), p));
    EXPECT_FALSE(fastReadAny(words, ALL_KINDS & ~kindBit(PORT_CLOSE), p));
  }
  for (const auto& words : {capnpMessage(portMessage(1, 0x42, 3), v), fastMessage(portMessage(1, 0x42, 3), v)}) {
    ASSERT_TRUE(fastReadAny(words, kindBit(PORT_MESSAGE), p));
    EXPECT_FALSE(fastReadAny(words, kindBit(CONTROLLER_POST) | kindBit(CLIENT_POST) | kindBit(PORT_CLOSE), p));
  }
  for (const auto& words : {capnpMessage(postWithPort(1, true, SAMPLE_PORT), v),
                            fastMessage(postWithPort(1, true, SAMPLE_PORT), v)}) {
    ASSERT_TRUE(fastReadAny(words, kindBit(CONTROLLER_POST), p));
    EXPECT_FALSE(fastReadAny(words, ALL_KINDS & ~kindBit(CONTROLLER_POST), p));
  }
}

/// A filter that records the header it was shown and answers `answer`.
struct RecordingFilter final : PlainFilter {
  bool answer = true;
  mutable int asked = 0;
  mutable PlainMessage seen;
  bool wantsValue(const PlainMessage& header) const override {
    ++asked;
    seen = header;
    return answer;
  }
};

TEST(PlainPostTest, AFilterSeesTheHeaderAndMayHandTheMessageToTheGeneralPath) {
  const Value v = Value::map({{"type", "ECHO"}, {"pad", std::string(40, 'x')}});
  for (const PlainMessage& m : {portMessage(5, 0x42, 9), postWithPort(6, true, SAMPLE_PORT), portClose(7, 0x43, 4)}) {
    for (const auto& words : {capnpMessage(m, v), fastMessage(m, v)}) {
      RecordingFilter yes;
      Fast p;
      ASSERT_TRUE(readPlain(words.data(), words.size(), OPTIONS, ALL_KINDS, p, p.data, &yes));
      EXPECT_EQ(yes.asked, 1);
      // Asked once the header is read: kind, seq and the port fields are there already.
      EXPECT_EQ(yes.seen.kind, m.kind);
      EXPECT_EQ(yes.seen.seq, m.seq);
      EXPECT_EQ(yes.seen.to, m.to);
      EXPECT_EQ(yes.seen.portSeq, m.portSeq);
      EXPECT_EQ(yes.seen.hasPort, m.hasPort);
      EXPECT_EQ(yes.seen.port.portId, m.port.portId);
      if (m.hasValue()) EXPECT_EQ(p.data, v);

      RecordingFilter no;
      no.answer = false;
      Value untouched = Value::map({{"kept", 1}});
      EXPECT_FALSE(readPlain(words.data(), words.size(), OPTIONS, ALL_KINDS, p, untouched, &no));
      EXPECT_EQ(no.asked, 1);
      // Declined before the Value: it was not decoded (the general path will decode it once).
      EXPECT_EQ(untouched, Value::map({{"kept", 1}}));
      EXPECT_TRUE(Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(words.data()),
                                        words.size() * sizeof(capnp::word), OPTIONS)
                      .ok());
    }
  }
}

/// A random message of the shape `shape` (0: a post registering a port, 1: a post, 2: a port
/// message, 3: a port close, 4: a BroadcastChannel post, 5: a channel ring record).
PlainMessage randomMessage(std::mt19937_64& rng, int shape, uint64_t seq) {
  switch (shape) {
    case 0: return postWithPort(seq, (rng() & 1) != 0, PlainPort{rng(), rng(), 1 + rng() % 8, 1 + rng() % 8, (rng() & 1) != 0});
    case 1: {
      PlainMessage m;
      m.kind = (rng() & 1) ? CONTROLLER_POST : CLIENT_POST;
      m.seq = seq;
      m.wantAck = (rng() & 1) != 0;
      return m;
    }
    case 2: return portMessage(seq, rng(), 1 + rng() % 1000);
    case 3: return portClose(seq, rng(), rng() % 1000);
    case 4: return bcPost(seq, static_cast<uint32_t>(rng() % 3 == 0 ? 0 : rng()), (rng() & 1) != 0);
    default: return bcMessage(seq);
  }
}

TEST(PlainPostTest, WhateverItAcceptsInAnyShapeTheGeneralPathAcceptsAlike) {
  std::mt19937_64 rng(20260117);
  int accepted = 0, declined = 0;
  int acceptedWithPort = 0, acceptedPortMessages = 0, acceptedPortCloses = 0, acceptedBcPosts = 0,
      acceptedBcMessages = 0;
  for (int round = 0; round < 60000; ++round) {
    const PlainMessage m = randomMessage(rng, round % 6, static_cast<uint64_t>(round) + 1);
    const Value v = m.hasValue() ? randomValue(rng, 0) : Value{};
    auto words = ((round / 6) & 1) ? fastMessage(m, v) : capnpMessage(m, v);
    // Corrupt one to three things, as above: a random bit, a random byte, or a word from elsewhere.
    auto* bytes = reinterpret_cast<uint8_t*>(words.data());
    const size_t n = words.size() * sizeof(capnp::word);
    for (int k = 0, c = 1 + static_cast<int>(rng() % 3); k < c; ++k) {
      switch (rng() % 3) {
        case 0: bytes[rng() % n] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 1: bytes[rng() % n] = static_cast<uint8_t>(rng()); break;
        default: words[rng() % words.size()] = words[rng() % words.size()]; break;
      }
    }
    Fast p;
    if (!fastReadAny(words, ALL_KINDS, p)) {
      ++declined;
      continue;
    }
    ++accepted;
    acceptedWithPort += p.kind == CONTROLLER_POST && p.hasPort;
    acceptedPortMessages += p.kind == PORT_MESSAGE;
    acceptedPortCloses += p.kind == PORT_CLOSE;
    acceptedBcPosts += p.kind == BC_POST;
    acceptedBcMessages += p.kind == BC_MESSAGE;
    ASSERT_TRUE(sameAsGeneral(p, readGeneral(words))) << "round " << round;
  }
  // Every outcome happens often, or the test shows nothing.
  EXPECT_GT(accepted, 4000);
  EXPECT_GT(declined, 4000);
  EXPECT_GT(acceptedWithPort, 1000);
  EXPECT_GT(acceptedPortMessages, 1000);
  EXPECT_GT(acceptedPortCloses, 1000);
  EXPECT_GT(acceptedBcPosts, 1000);
  EXPECT_GT(acceptedBcMessages, 1000);
}

}  // namespace
}  // namespace swipc::wire
