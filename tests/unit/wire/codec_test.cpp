// wire: Value <-> Cap'n Proto, and what Inbound checks at receipt (plain envelopes are checked as
// they are decoded; every other envelope is walked whole first).
#include "wire/codec.h"

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "shm/memfd.h"
#include "wire/limits.h"
#include "wire/value_codec.h"

namespace swipc::wire {
namespace {

const capnp::ReaderOptions OPTIONS = readerOptions(DEFAULT_MAX_MESSAGE_BYTES);

std::vector<capnp::word> flatten(capnp::MessageBuilder& mb) {
  auto a = capnp::messageToFlatArray(mb);
  return std::vector<capnp::word>(a.begin(), a.end());
}

Result<Inbound> receive(const std::vector<capnp::word>& words) {
  return Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(words.data()), words.size() * sizeof(capnp::word),
                               OPTIONS);
}

schema::Envelope::Builder envelope(capnp::MallocMessageBuilder& mb) {
  auto env = mb.initRoot<schema::Envelope>();
  env.setSchemaVersion(schema::SCHEMA_VERSION);
  env.setSeq(1);
  return env;
}

/// Makes the list pointer to the text `marker` claim 0x1FFFFFFF bytes (past the segment's end).
void breakTextPointer(std::vector<capnp::word>& words, const std::string& marker) {
  auto* w = reinterpret_cast<uint64_t*>(words.data());
  size_t target = 0;
  for (size_t i = 1; i < words.size() && !target; ++i)
    if (std::memcmp(&w[i], marker.data(), 8) == 0) target = i;
  ASSERT_NE(target, 0u);
  for (size_t i = 1; i < words.size(); ++i) {
    const uint64_t p = w[i];
    const int64_t offset = static_cast<int32_t>(static_cast<uint32_t>(p)) >> 2;
    if ((p & 3) == 1 && ((p >> 32) & 7) == 2 && static_cast<int64_t>(i) + 1 + offset == static_cast<int64_t>(target)) {
      w[i] = (p & 0xFFFFFFFFull) | (uint64_t{2} << 32) | (uint64_t{0x1FFFFFFF} << 35);
      return;
    }
  }
  FAIL() << "no text pointer to the marker";
}

TEST(ValueCodecTest, RoundTripsEveryKind) {
  const Value v = Value::map({{"n", nullptr},
                              {"b", true},
                              {"i", int64_t{-7}},
                              {"f", 2.5},
                              {"t", "text"},
                              {"y", Bytes{{1, 2, 3}}},
                              {"l", Value::list({1, "two", Value::list({})})},
                              {"m", Value::map({{"k", "v"}})}});
  capnp::MallocMessageBuilder mb;
  writeValue(v, mb.initRoot<schema::Value>());
  auto back = readValue(mb.getRoot<schema::Value>().asReader());
  ASSERT_TRUE(back.ok()) << back.error().describe();
  EXPECT_EQ(*back, v);
}

/// A map whose wire form repeats keys: the later value wins, in the first one's place.
void expectLaterDuplicateWins(unsigned entries) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<schema::Value>().initMap(entries + 1);
  for (unsigned i = 0; i < entries; ++i) {
    m[i].setKey("k" + std::to_string(i));
    m[i].initValue().setInt(i);
  }
  m[entries].setKey("k0");
  m[entries].initValue().setText("again");
  auto back = readValue(mb.getRoot<schema::Value>().asReader());
  ASSERT_TRUE(back.ok()) << back.error().describe();
  ASSERT_EQ(back->asMap().size(), entries);
  EXPECT_EQ(back->asMap()[0].first, "k0");
  EXPECT_EQ(back->asMap()[0].second, Value("again"));
  EXPECT_EQ((*back)["k" + std::to_string(entries - 1)], Value(int64_t{entries - 1}));
}

TEST(ValueCodecTest, RepeatedKeyInASmallMapReplacesInPlace) { expectLaterDuplicateWins(3); }
TEST(ValueCodecTest, RepeatedKeyInALargeMapReplacesInPlace) { expectLaterDuplicateWins(5000); }

TEST(ValueCodecTest, NestingPastTheLimitIsADataCloneError) {
  capnp::MallocMessageBuilder mb;
  auto v = mb.initRoot<schema::Value>();
  for (int i = 0; i < MAX_NESTING + 2; ++i) v = v.initList(1)[0];
  v.setInt(1);
  auto back = readValue(mb.getRoot<schema::Value>().asReader());
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.error().code, Errc::DATA_CLONE);
}

TEST(InboundTest, APlainPostIsNotWalkedAndAPostWithQueuedPortMessagesIs) {
  capnp::MallocMessageBuilder plain;
  auto post = envelope(plain).initControllerPost();
  post.initPayload().initValue().setText("hello");
  post.initPorts(1)[0].setPortId(5);
  auto a = receive(flatten(plain));
  ASSERT_TRUE(a.ok()) << a.error().describe();
  EXPECT_FALSE(a->walked());

  capnp::MallocMessageBuilder queued;
  auto q = envelope(queued).initControllerPost();
  q.initPayload().initValue().setText("hello");
  q.initPorts(1)[0].initQueued(1)[0].initPayload().initValue().setText("held");
  auto b = receive(flatten(queued));
  ASSERT_TRUE(b.ok()) << b.error().describe();
  EXPECT_TRUE(b->walked());
}

TEST(InboundTest, MalformedValueInAPlainPostIsAcceptedAtReceiptAndCaughtByDecodeAndCheckAll) {
  capnp::MallocMessageBuilder mb;
  auto map = envelope(mb).initControllerPost().initPayload().initValue().initMap(1);
  map[0].setKey("note");
  map[0].initValue().setText("MARKER-0123456789");
  auto words = flatten(mb);
  breakTextPointer(words, "MARKER-0123456789");
  auto in = receive(words);
  ASSERT_TRUE(in.ok()) << "plain envelopes are not walked at receipt: " << in.error().describe();
  auto decoded = readValue(in->envelope().getControllerPost().getPayload().getValue());
  EXPECT_FALSE(decoded.ok());
  auto whole = in->checkAll();
  ASSERT_FALSE(whole.ok());
  EXPECT_EQ(whole.error().code, Errc::PROTOCOL_VIOLATION);
}

/// An envelope whose Value is a list (elemKind 6) or map (7) of `count` zero-sized elements:
/// a few dozen bytes that claim millions of elements.
std::vector<capnp::word> zeroSizedElements(bool map, uint32_t count) {
  capnp::MallocMessageBuilder mb;
  auto v = envelope(mb).initControllerPost().initPayload().initValue();
  if (map)
    v.initMap(1)[0].setKey("k");
  else
    v.initList(1)[0].setInt(1);
  auto words = flatten(mb);
  auto* w = reinterpret_cast<uint64_t*>(words.data());
  for (size_t i = 1; i < words.size(); ++i) {
    const uint64_t p = w[i];
    if ((p & 3) != 1 || ((p >> 32) & 7) != 7) continue;  // the inline-composite list pointer
    const int64_t offset = static_cast<int32_t>(static_cast<uint32_t>(p)) >> 2;
    const size_t tag = static_cast<size_t>(static_cast<int64_t>(i) + 1 + offset);
    EXPECT_LT(tag, words.size());
    w[i] = p & 0x7FFFFFFFFull;                // the list now spans 0 words after its tag
    w[tag] = uint64_t{count} << 2;            // `count` elements of 0 data and 0 pointer words
    return words;
  }
  ADD_FAILURE() << "no inline-composite list in the message";
  return words;
}

void expectZeroSizedRefusedAsMalformedValue(bool map) {
  auto in = receive(zeroSizedElements(map, 16'000'000));
  ASSERT_TRUE(in.ok()) << in.error().describe();
  auto decoded = readValue(in->envelope().getControllerPost().getPayload().getValue());
  ASSERT_FALSE(decoded.ok()) << "decoded " << (map ? decoded->asMap().size() : decoded->asList().size());
  EXPECT_EQ(decoded.error().code, Errc::DATA_CLONE);
  EXPECT_NE(decoded.error().message.find("zero-sized"), std::string::npos) << decoded.error().message;
}

TEST(ValueCodecTest, AListOfMillionsOfZeroSizedElementsIsRefusedBeforeDecoding) {
  expectZeroSizedRefusedAsMalformedValue(false);
}
TEST(ValueCodecTest, AMapOfMillionsOfZeroSizedEntriesIsRefusedBeforeDecoding) {
  expectZeroSizedRefusedAsMalformedValue(true);
}

TEST(InboundTest, MalformedTextInAWalkedEnvelopeIsRefusedAtReceipt) {
  capnp::MallocMessageBuilder mb;
  auto e = envelope(mb).initError();
  e.setName("MARKER-0123456789");
  auto words = flatten(mb);
  breakTextPointer(words, "MARKER-0123456789");
  auto in = receive(words);
  ASSERT_FALSE(in.ok());
  EXPECT_EQ(in.error().code, Errc::PROTOCOL_VIOLATION);
}

TEST(InboundTest, WellFormedPlainEnvelopePassesCheckAll) {
  capnp::MallocMessageBuilder mb;
  envelope(mb).initPortAck().setPort(9);
  auto in = receive(flatten(mb));
  ASSERT_TRUE(in.ok());
  EXPECT_FALSE(in->walked());
  EXPECT_TRUE(in->checkAll().ok());
}

// ---------------------------------------------------------------- out of line

TEST(OutOfLineRecordTest, RingBytesAreTheSeqThenTheSize) {
  const OutOfLineRecord sut{0x0102030405060708ull, 4096};
  uint8_t bytes[16];
  std::memcpy(bytes, &sut, sizeof sut);
  uint64_t seq = 0;
  uint64_t size = 0;
  std::memcpy(&seq, bytes, 8);
  std::memcpy(&size, bytes + 8, 8);
  EXPECT_EQ(seq, sut.seq);
  EXPECT_EQ(size, 4096u);
}

/// A sealed memfd holding an envelope whose controller post carries `text`, and its size.
std::pair<UniqueFd, size_t> sealedPost(const std::string& text) {
  capnp::MallocMessageBuilder mb;
  envelope(mb).initControllerPost().initPayload().initValue().setText(text);
  const size_t bytes = encodedBytes(mb);
  auto fd = encodeToSealedMemfd(mb, bytes);
  EXPECT_TRUE(fd.ok()) << fd.error().describe();
  return {fd.ok() ? std::move(*fd) : UniqueFd(), bytes};
}

void expectMapRefused(Result<Inbound> sut, const std::string& says) {
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::PROTOCOL_VIOLATION);
  EXPECT_NE(sut.error().message.find(says), std::string::npos) << sut.error().describe();
}

TEST(InboundTest, MapEnvelopeReadsASealedMemfd) {
  auto [fd, bytes] = sealedPost(std::string(100'000, 'x'));
  auto sut = Inbound::mapEnvelope(std::move(fd), bytes, OPTIONS);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  EXPECT_EQ(sut->bytes(), bytes);
  auto v = readValue(sut->envelope().getControllerPost().getPayload().getValue());
  ASSERT_TRUE(v.ok()) << v.error().describe();
  EXPECT_EQ(*v, Value(std::string(100'000, 'x')));
}

TEST(InboundTest, MapEnvelopeRefusesAnUnsealedMemfd) {
  capnp::MallocMessageBuilder mb;
  envelope(mb).initPortAck().setPort(1);
  auto flat = capnp::messageToFlatArray(mb);
  auto fd = shm::createMemfd("codec-test", flat.asBytes().size());
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(::pwrite(fd->get(), flat.asBytes().begin(), flat.asBytes().size(), 0),
            static_cast<ssize_t>(flat.asBytes().size()));
  expectMapRefused(Inbound::mapEnvelope(std::move(*fd), flat.asBytes().size(), OPTIONS), "not sealed immutable");
}

TEST(InboundTest, MapEnvelopeRefusesASizeLargerThanTheMemfd) {
  auto [fd, bytes] = sealedPost("short");
  expectMapRefused(Inbound::mapEnvelope(std::move(fd), bytes + 4096, OPTIONS), "smaller than announced");
}

TEST(InboundTest, MapEnvelopeRefusesASizeThatIsNotWholeWords) {
  auto [fd, bytes] = sealedPost("short");
  expectMapRefused(Inbound::mapEnvelope(std::move(fd), bytes - 3, OPTIONS), "whole number of words");
}

TEST(InboundTest, MapEnvelopeRefusesAnFdThatIsNotAMemfd) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ::close(p[1]);
  expectMapRefused(Inbound::mapEnvelope(UniqueFd(p[0]), 64, OPTIONS), "not a memfd");
}

}  // namespace
}  // namespace swipc::wire

namespace swipc::wire {
namespace {

/// A Value payload (tag VALUE) whose Value pointer is a text: what the receipt walk cannot judge.
void setWrongKindPayload(schema::Payload::Builder payload) {
  payload.initValue();
  capnp::AnyStruct::Builder(kj::mv(payload)).getPointerSection()[0].setAs<capnp::Text>("I am not a Value");
}

TEST(RelayCheckTest, AWrongKindPortPostPassesReceiptAndFailsCheckPayloads) {
  capnp::MallocMessageBuilder mb;
  auto post = envelope(mb).initPortPost();
  post.setFrom(7);
  post.setSeq(1);
  setWrongKindPayload(post.initPayload());
  auto in = receive(flatten(mb));
  ASSERT_TRUE(in.ok()) << in.error().describe();
  auto r = in->checkPayloads();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::PROTOCOL_VIOLATION);
}

TEST(RelayCheckTest, AWrongKindQueuedMessageFailsCheckPayloads) {
  capnp::MallocMessageBuilder mb;
  auto post = envelope(mb).initControllerPost();
  post.initPayload().initValue().setText("RELAY_PORT");
  auto d = post.initPorts(1)[0];
  d.setPortId(1);
  d.setPeerId(2);
  d.setRegister(true);
  setWrongKindPayload(d.initQueued(1)[0].initPayload());
  auto in = receive(flatten(mb));
  ASSERT_TRUE(in.ok()) << in.error().describe();
  auto r = in->checkPayloads();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::PROTOCOL_VIOLATION);
}

TEST(RelayCheckTest, WellFormedPayloadsAndPortsPass) {
  capnp::MallocMessageBuilder mb;
  auto post = envelope(mb).initPortPost();
  post.setFrom(7);
  writeValue(Value::map({{"a", Value::list({1, "two", Bytes{{3}}})}}), post.initPayload().initValue());
  auto q = post.initPorts(1)[0].initQueued(1)[0];
  q.initPayload().initValue().setText("queued");
  auto in = receive(flatten(mb));
  ASSERT_TRUE(in.ok());
  EXPECT_TRUE(in->checkPayloads().ok());
}

TEST(RelayCheckTest, AWrongKindPortMessageIsWalkedAtReceiptNotRefused) {
  // At a page: the payload came from another endpoint, so it is that message's messageerror
  // (core::readPayload), not the daemon's protocol violation.
  capnp::MallocMessageBuilder mb;
  auto pm = envelope(mb).initPortMessage();
  pm.setTo(1);
  setWrongKindPayload(pm.initPayload());
  auto in = receive(flatten(mb));
  ASSERT_TRUE(in.ok()) << in.error().describe();
  EXPECT_TRUE(in->walked());
}

}  // namespace
}  // namespace swipc::wire
