// daemon: BroadcastFeature on a FeatureHost made of the real modules. start() registers exactly
// the broadcast envelope kinds and a detach hook; a page's bcJoin gets the ring over its socket
// and bcJoined in its ring, and is counted in its usage; a post with wantAck is acknowledged; a
// page that goes leaves its channels; service-worker objects work before start().
#include "daemon/broadcast_feature.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "daemon_rig.h"

namespace swipc::daemon {
namespace {

using testing::DaemonRig;
using testing::Page;

/// A FeatureHost over the rig's modules, recording what the feature registers.
class RigHost final : public FeatureHost {
 public:
  explicit RigHost(DaemonRig& rig) : rig_(rig) {}
  core::EventLoop& loop() override { return *rig_.loop; }
  ClientTable& clients() override { return rig_.clients; }
  Outbound& outbound() override { return rig_.outbound; }
  void handle(schema::Envelope::Which kind, Dispatch::Handler handler, Dispatch::PlainHandler plain) override {
    kinds.insert(kind);
    rig_.dispatch.handle(kind, std::move(handler));
    if (plain) rig_.dispatch.handlePlain(kind, plain);
  }
  void onDetach(ClientTable::DetachHook hook) override {
    ++hooks;
    rig_.clients.onDetach(std::move(hook));
  }
  Result<std::string> stateDir() override { return makeError(Errc::INVALID_STATE, "none in this test"); }
  const ServiceWorkerOptions& options() const override { return rig_.opts; }
  Counters& counters() override { return rig_.counters; }
  const TypeRegistry& types() const override { return types_; }
  void markActive() override { ++active; }

  std::set<schema::Envelope::Which> kinds;
  int hooks = 0;
  int active = 0;

 private:
  DaemonRig& rig_;
  TypeRegistry types_;
};

class BroadcastFeatureTest : public ::testing::Test {
 protected:
  BroadcastFeatureTest() { EXPECT_TRUE(sut.start(host).ok()); }

  static void join(Page& p, const std::string& name, uint32_t objectId) {
    p.send([&](schema::Envelope::Builder e) {
      auto j = e.initBcJoin();
      j.setName(name);
      j.setObjectId(objectId);
    });
  }

  DaemonRig rig;
  RigHost host{rig};
  TypeRegistry types;
  BroadcastFeature sut{BroadcastHub::Config{rig.opts.bcRingBytes, rig.opts.maxMessageBytes}, types, rig.counters};
};

TEST_F(BroadcastFeatureTest, StartRegistersTheBroadcastKindsAndADetachHook) {
  EXPECT_EQ(host.kinds, (std::set<schema::Envelope::Which>{schema::Envelope::BC_JOIN, schema::Envelope::BC_LEAVE,
                                                            schema::Envelope::BC_POST, schema::Envelope::BC_LAPPED}));
  EXPECT_EQ(host.hooks, 1);
}

TEST_F(BroadcastFeatureTest, JoinPassesTheRingAndAnswersBcJoined) {
  Page a = rig.attach();
  join(a, "news", 4);
  rig.dispatch.drain(rig.record(a));
  auto in = a.next();
  ASSERT_TRUE(in.has_value());
  ASSERT_TRUE(in->envelope().isBcJoined());
  auto j = in->envelope().getBcJoined();
  EXPECT_EQ(j.getObjectId(), 4u);
  uint64_t capacity = 0;
  UniqueFd ring = a.conn->takeRingFd(j.getRingId(), capacity);
  EXPECT_TRUE(ring.valid());
  EXPECT_EQ(capacity, rig.opts.bcRingBytes);
  EXPECT_EQ(rig.record(a).usage.channels, 1u);
}

TEST_F(BroadcastFeatureTest, WantAckPostIsAcknowledgedAndMarksActivity) {
  Page a = rig.attach();
  join(a, "news", 1);
  rig.dispatch.drain(rig.record(a));
  (void)a.drain();
  auto seq = a.send([](schema::Envelope::Builder e) {
    auto p = e.initBcPost();
    p.setObjectId(1);
    p.setWantAck(true);
    wire::writeValue(Value("hi"), p.initPayload().initValue());
  });
  rig.dispatch.drain(rig.record(a));
  auto in = a.next();
  ASSERT_TRUE(in.has_value());
  ASSERT_TRUE(in->envelope().isAck());
  EXPECT_EQ(in->envelope().getAck().getSeq(), seq);
  EXPECT_EQ(host.active, 1);
  EXPECT_EQ(rig.counters.broadcastsPosted, 1u);
}

TEST_F(BroadcastFeatureTest, PageThatGoesLeavesItsChannels) {
  Page a = rig.attach();
  join(a, "news", 1);
  rig.dispatch.drain(rig.record(a));
  ASSERT_NE(sut.hub().find(ChannelName("news")), nullptr);
  rig.clients.detach(rig.record(a), "hung up");
  EXPECT_EQ(sut.hub().find(ChannelName("news")), nullptr);
}

TEST_F(BroadcastFeatureTest, JoiningAnObjectTwiceDisconnectsThePage) {
  Page a = rig.attach();
  join(a, "news", 1);
  join(a, "news", 1);
  rig.dispatch.drain(rig.record(a));
  EXPECT_FALSE(rig.record(a).alive);
  EXPECT_EQ(rig.counters.protocolViolations, 1u);
}

TEST_F(BroadcastFeatureTest, ServiceWorkerObjectsWorkBeforeStartAndStopEndsThem) {
  Counters counters;
  BroadcastFeature idle{BroadcastHub::Config{4096, 1 << 20}, types, counters};
  auto obj = std::make_shared<detail::BcObject>();
  obj->name = "early";
  idle.localHub()->open(obj);
  EXPECT_TRUE(obj->joined);
  Value v("before listen");
  core::OutgoingPayload p;
  p.value = &v;
  EXPECT_TRUE(idle.localHub()->post(*obj, p, false).ok());
  idle.stop();
  EXPECT_FALSE(idle.localHub()->post(*obj, p, false).ok());
}

}  // namespace
}  // namespace swipc::daemon
