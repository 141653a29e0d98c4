// page: OpTable. Each envelope kind goes to the one handler registered for it; a kind nobody
// registered is dropped (as the page always did with a kind it does not expect); a kind has one
// owner.
#include "page/op_table.h"

#include <gtest/gtest.h>

#include <capnp/serialize.h>

#include <memory>
#include <string>

#include "wire/limits.h"

namespace swipc::page {
namespace {

/// An envelope as the page receives it, written by `fill`.
template <typename Fill>
wire::Inbound envelope(Fill fill) {
  capnp::MallocMessageBuilder mb;
  auto env = mb.initRoot<schema::Envelope>();
  env.setSchemaVersion(schema::SCHEMA_VERSION);
  env.setSeq(1);
  fill(env);
  auto words = capnp::messageToFlatArray(mb);
  auto in = wire::Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(words.begin()), words.size() * sizeof(capnp::word),
                                        wire::readerOptions(wire::DEFAULT_MAX_MESSAGE_BYTES));
  EXPECT_TRUE(in.ok());
  return std::move(*in);
}

TEST(OpTableTest, DispatchCallsTheHandlerOfTheKind) {
  OpTable sut;
  std::string url;
  int acks = 0;
  sut.on(schema::Envelope::NAVIGATE, [&](schema::Envelope::Reader env, const auto&) {
    url = env.getNavigate().getUrl().cStr();
  });
  sut.on(schema::Envelope::ACK, [&](schema::Envelope::Reader, const auto&) { ++acks; });
  EXPECT_TRUE(sut.dispatch(envelope([](auto e) { e.initNavigate().setUrl("app://s/next"); })));
  EXPECT_EQ(url, "app://s/next");
  EXPECT_EQ(acks, 0);
}

TEST(OpTableTest, AKindNobodyRegisteredIsDropped) {
  OpTable sut;
  int calls = 0;
  sut.on(schema::Envelope::ACK, [&](schema::Envelope::Reader, const auto&) { ++calls; });
  EXPECT_FALSE(sut.handles(schema::Envelope::REPLY));
  EXPECT_FALSE(sut.dispatch(envelope([](auto e) { e.initReply().setReplyId(1); })));
  EXPECT_EQ(calls, 0);
}

TEST(OpTableTest, TheOwnerKeepsTheEnvelopesBytesAlive) {
  OpTable sut;
  std::shared_ptr<const wire::Inbound> kept;
  schema::Envelope::Reader later;
  sut.on(schema::Envelope::NAVIGATE, [&](schema::Envelope::Reader env, const auto& owner) {
    kept = owner;
    later = env;
  });
  sut.dispatch(envelope([](auto e) { e.initNavigate().setUrl("app://s/kept"); }));
  ASSERT_TRUE(kept);
  EXPECT_EQ(std::string(later.getNavigate().getUrl().cStr()), "app://s/kept");
}

TEST(OpTableTest, RegisteringAKindTwiceIsABug) {
  OpTable sut;
  sut.on(schema::Envelope::ACK, [](schema::Envelope::Reader, const auto&) {});
  EXPECT_TRUE(sut.handles(schema::Envelope::ACK));
  EXPECT_DEATH(sut.on(schema::Envelope::ACK, [](schema::Envelope::Reader, const auto&) {}), "already has a handler");
}

}  // namespace
}  // namespace swipc::page
