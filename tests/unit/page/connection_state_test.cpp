// page: ConnectionState. Attach, losing the daemon, re-attaching with backoff and the resume
// token, close, and the kinds that change who the page is (controllerChange, navigate, focus).
// Driven through a fake daemon and a recording Events, without the rest of the page.
#include "page/connection_state.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "page_rig.h"

namespace swipc::page {
namespace {

using namespace std::chrono_literals;
using testing::FakeDaemon;

/// Events that record, and end a lost connection the way the page does (without the modules).
struct Recording : ConnectionState::Events {
  ConnectionState* link = nullptr;
  std::vector<std::string> log;
  void plain(const wire::PlainMessage& m, Value& data) override { log.push_back("plain " + data.asText()); }
  void envelope(wire::Inbound&& in) override { ops->dispatch(std::move(in)); }
  void drained() override {}
  void lost(const std::string& reason) override {
    log.push_back("lost: " + reason);
    link->stopWatching();
    const bool was = link->release();
    if (was && !link->closed()) events->controllerChange(false);
    link->scheduleReconnect();
  }
  void reattached() override { log.push_back("reattached"); }
  OpTable* ops = nullptr;
  PageEvents* events = nullptr;
};

struct ConnectionStateTest : ::testing::Test {
  explicit ConnectionStateTest(ClientOptions opts = testing::testOptions())
      : loop(makeLoop()), sut(opts, *loop, events, ops, daemon.attachFn()) {
    rec.link = &sut;
    rec.ops = &ops;
    rec.events = &events;
    sut.setEvents(&rec);
    events.onControllerChange([this](bool c) { rec.log.push_back(c ? "controllerchange true" : "controllerchange false"); });
  }
  static std::unique_ptr<core::EventLoop> makeLoop() {
    auto loop = core::EventLoop::create();
    EXPECT_TRUE(loop.ok());
    return std::move(*loop);
  }
  template <typename Done>
  bool runUntil(Done done, std::chrono::milliseconds guard = 5s) {
    return testing::runUntil(*loop, done, guard);
  }

  FakeDaemon daemon;
  std::unique_ptr<core::EventLoop> loop;
  HeldQueue queue;
  PageEvents events{queue};
  OpTable ops;
  ConnectionState sut;
  Recording rec;
};

TEST_F(ConnectionStateTest, StartSendsAHelloWithTheDefaultUrlAndTakesTheWelcome) {
  ASSERT_TRUE(sut.start().ok());
  ASSERT_EQ(daemon.hellos.size(), 1u);
  EXPECT_EQ(daemon.hellos[0].url, "app://page-unit/");
  EXPECT_EQ(daemon.hellos[0].type, ClientType::WINDOW);
  EXPECT_TRUE(daemon.hellos[0].controlled);
  EXPECT_FALSE(daemon.hellos[0].resumeToken.has_value());
  EXPECT_TRUE(sut.attached());
  EXPECT_TRUE(sut.controlled());
  EXPECT_EQ(sut.swVersion(), "fake-1");
  EXPECT_FALSE(sut.id().empty());
  EXPECT_EQ(sut.url(), "app://page-unit/");
}

TEST_F(ConnectionStateTest, StartFailsWhenTheDaemonRefuses) {
  daemon.refuse = 1;
  auto r = sut.start();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::NO_DAEMON);
  EXPECT_FALSE(sut.attached());
}

TEST_F(ConnectionStateTest, HangUpIsReportedAsLostOnce) {
  ASSERT_TRUE(sut.start().ok());
  const uint64_t gen = sut.generation();
  daemon.refuse = 100;  // stays away
  daemon.hangUp();
  ASSERT_TRUE(runUntil([&] { return !sut.attached(); }));
  EXPECT_EQ(rec.log, (std::vector<std::string>{"lost: daemon hung up", "controllerchange false"}));
  EXPECT_GT(sut.generation(), gen);
  EXPECT_FALSE(sut.controlled());
}

TEST_F(ConnectionStateTest, ReattachPresentsTheResumeTokenAndKeepsTheId) {
  ASSERT_TRUE(sut.start().ok());
  const ClientId id = sut.id();
  daemon.hangUp();
  ASSERT_TRUE(runUntil([&] { return daemon.hellos.size() == 2 && sut.attached(); }));
  ASSERT_TRUE(daemon.hellos[1].resumeToken.has_value());
  EXPECT_EQ(core::clientIdForToken(*daemon.hellos[1].resumeToken), id);
  EXPECT_EQ(sut.id(), id);
}

TEST_F(ConnectionStateTest, ReattachTellsTheModulesBeforeControllerChange) {
  ASSERT_TRUE(sut.start().ok());
  daemon.hangUp();
  ASSERT_TRUE(runUntil([&] { return rec.log.size() == 4; }));
  EXPECT_EQ(rec.log, (std::vector<std::string>{"lost: daemon hung up", "controllerchange false", "reattached",
                                               "controllerchange true"}));
}

TEST_F(ConnectionStateTest, ReattachBacksOffWhileTheDaemonIsAway) {
  ASSERT_TRUE(sut.start().ok());
  daemon.refuse = 3;
  daemon.hangUp();
  ASSERT_TRUE(runUntil([&] { return !sut.attached(); }));
  ASSERT_TRUE(runUntil([&] { return sut.attached(); }));
  ASSERT_EQ(daemon.attachTimes.size(), 5u);  // start, 3 refused, 1 accepted
  // 50 ms, then doubling: 100, 200, 400 (capped).
  EXPECT_GE(daemon.attachTimes[2] - daemon.attachTimes[1], 100ms);
  EXPECT_GE(daemon.attachTimes[3] - daemon.attachTimes[2], 200ms);
  EXPECT_GE(daemon.attachTimes[4] - daemon.attachTimes[3], 400ms);
}

TEST_F(ConnectionStateTest, AClosedPageNeverReattaches) {
  ASSERT_TRUE(sut.start().ok());
  EXPECT_TRUE(sut.beginClose());
  EXPECT_FALSE(sut.beginClose());
  daemon.hangUp();
  ASSERT_TRUE(runUntil([&] { return !sut.attached(); }));
  runUntil([] { return false; }, 200ms);
  EXPECT_EQ(daemon.hellos.size(), 1u);
  EXPECT_EQ(rec.log, (std::vector<std::string>{"lost: daemon hung up"}));  // no controllerchange either
}

TEST_F(ConnectionStateTest, GoodbyeEndsTheLinkWithItsReason) {
  ASSERT_TRUE(sut.start().ok());
  daemon.refuse = 100;
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Control>().initGoodbye().setReason("shutting down");
  ASSERT_TRUE(daemon.conn().sendControl(mb));
  ASSERT_TRUE(runUntil([&] { return !sut.attached(); }));
  EXPECT_EQ(rec.log.front(), "lost: daemon said goodbye: shutting down");
}

TEST_F(ConnectionStateTest, ControllerChangeFiresOnlyWhenItChanges) {
  daemon.controlled = false;
  ASSERT_TRUE(sut.start().ok());
  EXPECT_FALSE(sut.controlled());
  daemon.send([](auto e) { e.initControllerChange().setControlled(true); });
  daemon.send([](auto e) { e.initControllerChange().setControlled(true); });
  ASSERT_TRUE(runUntil([&] { return sut.controlled(); }));
  runUntil([&] { return daemon.conn().outConsumed() == daemon.conn().outPublished(); });
  EXPECT_EQ(rec.log, (std::vector<std::string>{"controllerchange true"}));
  EXPECT_TRUE(sut.options().controlled);  // a claimed page stays controlled across re-attaches
}

TEST_F(ConnectionStateTest, NavigateChangesTheUrlBeforeTheEvent) {
  ASSERT_TRUE(sut.start().ok());
  std::string seenUrl;
  events.onNavigate([&](const std::string& url) { seenUrl = url + " / " + sut.url(); });
  daemon.send([](auto e) { e.initNavigate().setUrl("app://page-unit/next"); });
  ASSERT_TRUE(runUntil([&] { return !seenUrl.empty(); }));
  EXPECT_EQ(seenUrl, "app://page-unit/next / app://page-unit/next");
}

TEST_F(ConnectionStateTest, FocusFromTheDaemonMarksTheWindowFocused) {
  ASSERT_TRUE(sut.start().ok());
  bool focused = false;
  events.onFocus([&] { focused = true; });
  daemon.send([](auto e) { e.setFocus(); });
  ASSERT_TRUE(runUntil([&] { return focused; }));
  EXPECT_TRUE(sut.focused());
}

TEST_F(ConnectionStateTest, AMalformedRingEndsTheLinkAsAProtocolViolation) {
  ASSERT_TRUE(sut.start().ok());
  daemon.refuse = 100;
  // A record that is not a Cap'n Proto envelope.
  capnp::MallocMessageBuilder mb;
  auto env = mb.initRoot<schema::Envelope>();
  env.setSchemaVersion(static_cast<uint16_t>(schema::SCHEMA_VERSION + 100));
  ASSERT_EQ(daemon.conn().send(mb, 1), core::Connection::SendStatus::OK);
  daemon.conn().wakePeer();
  ASSERT_TRUE(runUntil([&] { return !sut.attached(); }));
  EXPECT_EQ(rec.log.front().rfind("lost: ProtocolViolation", 0), 0u) << rec.log.front();
}

}  // namespace
}  // namespace swipc::page
