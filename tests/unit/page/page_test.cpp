// page: Page, the modules wired. What the loss of the daemon ends and in which order, a graceful
// close, and an envelope kind the page does not expect.
#include "page/page.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "page_rig.h"

namespace swipc::page {
namespace {

using namespace std::chrono_literals;
using testing::PageRig;

struct PageTest : ::testing::Test {
  PageTest() {
    rig.start();
    auto& ev = rig.page->events();
    ev.onUndelivered([this](MessageSeq s, const Error& e) { log.push_back("undelivered " + std::to_string(s)); });
    ev.onControllerChange([this](bool c) { log.push_back(c ? "controllerchange true" : "controllerchange false"); });
    ev.onMessage([this](const MessageEvent& e) { log.push_back("message " + e.data.asText()); });
  }
  Page& sut() { return *rig.page; }
  PageRig rig;
  std::vector<std::string> log;
};

TEST_F(PageTest, StartWithoutADaemonFails) {
  PageRig none;
  none.daemon.refuse = 1;
  auto r = none.page->start();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::NO_DAEMON);
}

TEST_F(PageTest, LosingTheDaemonEndsWhatWasTiedToItInOrder) {
  rig.daemon.refuse = 100;
  // A post the daemon never reads, a pending messageSW, a remote port.
  const Value v("unread");
  TransferList none;
  auto seq = sut().controllerOps().post(core::OutgoingPayload{.value = &v}, PostOptions{}, none);
  ASSERT_TRUE(seq.ok());
  sut().controllerOps().messageSWAsync(
      Value("q"), [&](Result<Value> r) { log.push_back(r ? "reply" : "reply " + std::string(errorName(r.error().code))); },
      std::nullopt);
  auto port = std::make_shared<detail::PortState>(&sut().ports(), PortId(0x51), PortId(0x52),
                                                  detail::PortState::Mode::REMOTE);
  sut().ports().track(port);
  port->onClose = [&] { log.push_back("port close"); };
  port->start();
  rig.daemon.hangUp();
  ASSERT_TRUE(rig.runUntil([&] { return log.size() == 5; }));
  EXPECT_EQ(log, (std::vector<std::string>{"reply Disconnected", "undelivered " + std::to_string(*seq),
                                           "undelivered " + std::to_string(*seq + 1), "controllerchange false",
                                           "port close"}));
  EXPECT_FALSE(sut().link().attached());
}

TEST_F(PageTest, CloseSaysGoodbyeAndNeverReattaches) {
  core::Connection& daemonSide = rig.daemon.conn();
  sut().close();
  sut().close();  // idempotent
  EXPECT_FALSE(sut().link().attached());
  EXPECT_TRUE(sut().link().closed());
  std::string goodbye;
  Error err;
  daemonSide.pumpSocket(
      [&](wire::Inbound&& in) {
        if (in.control().isGoodbye()) goodbye = in.control().getGoodbye().getReason().cStr();
      },
      err);
  EXPECT_EQ(goodbye, "client closed");
  rig.runUntil([] { return false; }, 150ms);
  EXPECT_EQ(rig.daemon.hellos.size(), 1u);
  EXPECT_TRUE(log.empty());  // a graceful close reports nothing undelivered, no controllerchange
  const Value v("late");
  TransferList none;
  auto r = sut().controllerOps().post(core::OutgoingPayload{.value = &v}, PostOptions{}, none);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::DISCONNECTED);
}

TEST_F(PageTest, AnEnvelopeKindThePageDoesNotExpectIsIgnored) {
  sut().queue().start();
  rig.daemon.send([](schema::Envelope::Builder e) { e.initReply().setReplyId(9); });        // unused since protocol 2
  rig.daemon.send([](schema::Envelope::Builder e) { e.initBcPost().setObjectId(1); });      // the other direction
  rig.daemon.send([](schema::Envelope::Builder e) { e.initClientPost().initPayload().initValue().setText("after"); });
  ASSERT_TRUE(rig.runUntil([&] { return !log.empty(); }));
  EXPECT_EQ(log, (std::vector<std::string>{"message after"}));
  EXPECT_TRUE(sut().link().attached());
}

}  // namespace
}  // namespace swipc::page
