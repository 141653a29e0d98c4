// daemon: Dispatch. Each envelope reaches the handler registered for its kind, on the fast lane
// when its kind has a plain handler; a kind nobody registered (or one removed) disconnects the
// client with ProtocolViolation; a handler that says stop stops the drain; a client gets
// DRAIN_BUDGET records a turn and the rest later; a read that throws is the client's violation.
#include "daemon/dispatch.h"

#include <gtest/gtest.h>
#include <kj/exception.h>

#include <string>
#include <vector>

#include "daemon_rig.h"

namespace swipc::daemon {
namespace {

using testing::DaemonRig;
using testing::Page;

class DispatchTest : public ::testing::Test {
 protected:
  /// Counts client-state envelopes (a kind that only takes the general path).
  void countClientStates() {
    sut.handle(schema::Envelope::CLIENT_STATE,
               [this](ClientRecord&, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>&) {
                 states.push_back(env.getSeq());
                 return true;
               });
  }
  static void clientState(schema::Envelope::Builder e) { e.initClientState().setVisible(true); }

  DaemonRig rig;
  Dispatch& sut = rig.dispatch;
  std::vector<MessageSeq> states;
  std::string detachedWhy;
};

TEST_F(DispatchTest, EnvelopeReachesTheHandlerOfItsKind) {
  countClientStates();
  Page a = rig.attach();
  auto s1 = a.send(clientState);
  auto s2 = a.send(clientState);
  sut.drain(rig.record(a));
  EXPECT_EQ(states, (std::vector<MessageSeq>{s1, s2}));
  EXPECT_TRUE(rig.record(a).alive);
}

TEST_F(DispatchTest, UnregisteredKindDisconnectsTheClientWithProtocolViolation) {
  Page a = rig.attach();
  rig.clients.onDetached([&](const ClientId&, const std::string& why) { detachedWhy = why; });
  a.send(clientState);
  sut.drain(rig.record(a));
  EXPECT_FALSE(rig.record(a).alive);
  EXPECT_EQ(rig.counters.protocolViolations, 1u);
  EXPECT_EQ(detachedWhy.rfind("ProtocolViolation: ", 0), 0u) << detachedWhy;
}

TEST_F(DispatchTest, RemovedKindIsAViolationAgain) {
  countClientStates();
  sut.remove(schema::Envelope::CLIENT_STATE);
  EXPECT_FALSE(sut.handles(schema::Envelope::CLIENT_STATE));
  Page a = rig.attach();
  a.send(clientState);
  sut.drain(rig.record(a));
  EXPECT_TRUE(states.empty());
  EXPECT_FALSE(rig.record(a).alive);
}

/// A fast-lane handler that records the values it was handed.
struct PlainRecorder {
  bool onPlain(ClientRecord&, const wire::PlainMessage& m, ExtendableMessageEvent& ev) {
    EXPECT_EQ(m.kind, schema::Envelope::CONTROLLER_POST);
    seen.push_back(ev.data.textOr(""));
    return true;
  }
  std::vector<std::string> seen;
};

TEST_F(DispatchTest, PlainHandlerTakesAFastLanePostWithItsValueDecoded) {
  PlainRecorder plain;
  int general = 0;
  sut.handle(schema::Envelope::CONTROLLER_POST,
             [&](ClientRecord&, schema::Envelope::Reader, const std::shared_ptr<const wire::Inbound>&) {
               ++general;
               return true;
             });
  sut.handlePlain(schema::Envelope::CONTROLLER_POST, Dispatch::PlainHandler::of<&PlainRecorder::onPlain>(&plain));
  Page a = rig.attach();
  a.sendPlainPost(Value("one"));
  a.sendPlainPost(Value("two"));
  sut.drain(rig.record(a));
  EXPECT_EQ(plain.seen, (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(general, 0);
}

TEST_F(DispatchTest, WithoutAPlainHandlerAFastLanePostTakesTheGeneralPath) {
  std::vector<std::string> general;
  sut.handle(schema::Envelope::CONTROLLER_POST,
             [&](ClientRecord&, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>&) {
               auto v = wire::readValue(env.getControllerPost().getPayload().getValue());
               general.push_back(v.ok() ? v->textOr("") : "?");
               return true;
             });
  Page a = rig.attach();
  a.sendPlainPost(Value("via general"));
  sut.drain(rig.record(a));
  EXPECT_EQ(general, std::vector<std::string>{"via general"});
}

TEST_F(DispatchTest, HandlerThatSaysStopEndsTheDrain) {
  sut.handle(schema::Envelope::CLIENT_STATE,
             [this](ClientRecord&, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>&) {
               states.push_back(env.getSeq());
               return false;
             });
  Page a = rig.attach();
  a.send(clientState);
  a.send(clientState);
  sut.drain(rig.record(a));
  EXPECT_EQ(states.size(), 1u);
}

TEST_F(DispatchTest, ClientGetsItsBudgetPerTurnAndTheRestOnTheNextTurn) {
  DaemonRig big([] {
    auto o = DaemonRig::small();
    o.ringBytes = 64 * 1024;  // room for more than a budget of small records
    return o;
  }());
  int handled = 0;
  big.dispatch.handle(schema::Envelope::CLIENT_STATE,
                      [&](ClientRecord&, schema::Envelope::Reader, const std::shared_ptr<const wire::Inbound>&) {
                        ++handled;
                        return true;
                      });
  Page a = big.attach();
  const int total = Dispatch::DRAIN_BUDGET + 10;
  for (int i = 0; i < total; ++i) a.send(clientState);
  big.dispatch.drain(big.record(a));
  EXPECT_EQ(handled, Dispatch::DRAIN_BUDGET);
  EXPECT_TRUE(big.record(a).drainScheduled);
  EXPECT_TRUE(big.runUntil([&] { return handled == total; }));
}

TEST_F(DispatchTest, ReadThatThrowsIsTheClientsViolation) {
  sut.handle(schema::Envelope::CLIENT_STATE,
             [](ClientRecord&, schema::Envelope::Reader, const std::shared_ptr<const wire::Inbound>&) -> bool {
               KJ_FAIL_REQUIRE("a pointer of the wrong kind");
             });
  Page a = rig.attach();
  a.send(clientState);
  sut.drain(rig.record(a));
  EXPECT_FALSE(rig.record(a).alive);
  EXPECT_EQ(rig.counters.protocolViolations, 1u);
}

TEST_F(DispatchTest, DrainMarksActivity) {
  countClientStates();
  Page a = rig.attach();
  const auto before = sut.lastActivity();
  a.send(clientState);
  sut.drain(rig.record(a));
  EXPECT_GT(sut.lastActivity(), before);
}

TEST_F(DispatchTest, HangUpDrainsWhatWasCommittedThenDetaches) {
  countClientStates();
  auto [rec, page] = rig.wired();
  const ClientId id = rec->id;
  ClientRecord& c = rig.clients.insert(std::move(rec));
  ASSERT_TRUE(sut.connect(c).ok());
  page.send(clientState);
  page.conn.reset();  // the page goes: its socket hangs up
  EXPECT_TRUE(rig.runUntil([&] { return rig.clients.findAlive(id) == nullptr; }));
  EXPECT_EQ(states.size(), 1u);
}

}  // namespace
}  // namespace swipc::daemon
