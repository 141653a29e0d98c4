// daemon: the feature seam, end to end. A ServiceWorker in this process (the stepped harness) and a
// raw page (core::attachToDaemon, envelopes written by hand): BroadcastChannel, served only as a
// Feature, answers a page's join and delivers its post to a service-worker object; a kind that no
// module or feature registered disconnects the page with ProtocolViolation; a service worker that
// stops and serves again registers its features again.
#include "daemon/feature.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "core/attach.h"
#include "core/paths.h"
#include "daemon_rig.h"
#include "in_process_service_worker.h"
#include "swipc/broadcast_channel.h"
#include "wire/value_codec.h"

namespace swipc::daemon {
namespace {

using swipc::testing::InProcessServiceWorker;
using namespace std::chrono_literals;

/// A page speaking the wire protocol by hand (daemon_rig.h's Page), attached for real.
class RawPage : public testing::Page {
 public:
  static std::unique_ptr<RawPage> attach(InProcessServiceWorker& sw) {
    auto paths = core::scopePaths(sw.runtimeDir(), sw.scope());
    EXPECT_TRUE(paths.ok());
    core::HelloInfo hello;
    hello.protocolVersion = schema::PROTOCOL_VERSION;
    hello.url = "app://raw/";
    auto attached = sw.whileDispatching([&] { return core::attachToDaemon(paths->socket, hello, deadlineIn(5s)); });
    EXPECT_TRUE(attached.ok()) << attached.error().describe();
    auto page = std::make_unique<RawPage>();
    page->id = attached->welcome.clientId;
    page->conn = std::move(attached->connection);
    return page;
  }
  /// Writes an envelope and rings the daemon.
  MessageSeq post(const std::function<void(schema::Envelope::Builder)>& fill) {
    const MessageSeq seq = send(fill);
    conn->wakePeer();
    return seq;
  }
  /// The next envelope from the daemon, dispatching the service worker until it comes (5 s).
  std::optional<wire::Inbound> next(InProcessServiceWorker& sw) {
    std::optional<wire::Inbound> got;
    sw.dispatchUntil([&] { return (got = Page::next()).has_value(); });
    return got;
  }
  /// The name of the control error the daemon sent, dispatching until it comes (5 s).
  std::string disconnectedWith(InProcessServiceWorker& sw) {
    std::string name;
    sw.dispatchUntil([&] {
      for (auto& in : controls())
        if (in.control().isError()) name = in.control().getError().getName().cStr();
      return !name.empty();
    });
    return name;
  }
};

void joinNews(RawPage& page) {
  page.post([](schema::Envelope::Builder e) {
    auto j = e.initBcJoin();
    j.setName("news");
    j.setObjectId(1);
  });
}

TEST(FeatureSeamTest, BroadcastChannelIsServedThroughTheSeam) {
  std::vector<std::string> got;
  std::unique_ptr<BroadcastChannel> channel;
  InProcessServiceWorker sw(
      {},
      [&](ServiceWorker& s) {
        channel = std::make_unique<BroadcastChannel>(s, "news");
        channel->onMessage([&](const MessageEvent& e) { got.push_back(e.data.textOr("?")); });
      },
      InProcessServiceWorker::Loop::STEPPED);
  auto page = RawPage::attach(sw);
  joinNews(*page);
  auto joined = page->next(sw);
  ASSERT_TRUE(joined.has_value());
  ASSERT_TRUE(joined->envelope().isBcJoined());
  page->post([](schema::Envelope::Builder e) {
    auto p = e.initBcPost();
    p.setObjectId(1);
    wire::writeValue(Value("extra!"), p.initPayload().initValue());
  });
  EXPECT_TRUE(sw.dispatchUntil([&] { return !got.empty(); }));
  EXPECT_EQ(got, std::vector<std::string>{"extra!"});
  channel.reset();
}

// The hub reuses its working space post after post: a service-worker handler that posts (to
// another channel, from inside the delivery of the first) must not disturb the post being
// delivered, nor its own, whatever their sizes (a large one outgrows the reused segment).
TEST(FeatureSeamTest, AHandlerThatPostsWhileItsPostIsDeliveredDisturbsNeither) {
  std::vector<std::string> witnessGot, echoGot;
  std::unique_ptr<BroadcastChannel> relay, witness, echoOut, echoIn;
  InProcessServiceWorker sw(
      {},
      [&](ServiceWorker& s) {
        relay = std::make_unique<BroadcastChannel>(s, "news");
        witness = std::make_unique<BroadcastChannel>(s, "news");
        echoOut = std::make_unique<BroadcastChannel>(s, "echo");
        echoIn = std::make_unique<BroadcastChannel>(s, "echo");
        relay->onMessage([&](const MessageEvent& e) {
          const std::string text = e.data.textOr("?");
          EXPECT_TRUE(echoOut->postMessage(Value("relayed:" + text + std::string(text.size() * 3, '+'))).ok());
        });
        witness->onMessage([&](const MessageEvent& e) { witnessGot.push_back(e.data.textOr("?")); });
        echoIn->onMessage([&](const MessageEvent& e) { echoGot.push_back(e.data.textOr("?")); });
      },
      InProcessServiceWorker::Loop::STEPPED);
  auto page = RawPage::attach(sw);
  joinNews(*page);
  auto joined = page->next(sw);
  ASSERT_TRUE(joined.has_value());
  const std::vector<std::string> sent = {"short", std::string(5000, 'L'), "after"};
  for (const auto& text : sent)
    page->post([&](schema::Envelope::Builder e) {
      auto p = e.initBcPost();
      p.setObjectId(1);
      wire::writeValue(Value(text), p.initPayload().initValue());
    });
  EXPECT_TRUE(sw.dispatchUntil([&] { return witnessGot.size() == sent.size() && echoGot.size() == sent.size(); }));
  std::vector<std::string> relayed;
  for (const auto& text : sent) relayed.push_back("relayed:" + text + std::string(text.size() * 3, '+'));
  // (Compared whole, reported by size: the long one would fill the screen.)
  auto sizes = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += std::to_string(s.size()) + " ";
    return out;
  };
  EXPECT_TRUE(witnessGot == sent) << "sizes " << sizes(witnessGot);
  EXPECT_TRUE(echoGot == relayed) << "sizes " << sizes(echoGot) << "expected " << sizes(relayed);
  relay.reset();
  witness.reset();
  echoOut.reset();
  echoIn.reset();
}

TEST(FeatureSeamTest, KindNobodyRegisteredDisconnectsThePage) {
  InProcessServiceWorker sw({}, {}, InProcessServiceWorker::Loop::STEPPED);
  auto page = RawPage::attach(sw);
  page->post([](schema::Envelope::Builder e) { e.initReply(); });  // a daemon -> page kind
  EXPECT_EQ(page->disconnectedWith(sw), "ProtocolViolation");
  EXPECT_EQ(sw.sw().counters().protocolViolations, 1u);
}

TEST(FeatureSeamTest, ServingAgainRegistersTheFeaturesAgain) {
  InProcessServiceWorker sw({}, {}, InProcessServiceWorker::Loop::STEPPED);
  sw.sw().stop();
  ASSERT_TRUE(sw.sw().run().ok());  // stops at once: every feature stops, its kinds forgotten
  ASSERT_TRUE(sw.sw().listen().ok());
  auto page = RawPage::attach(sw);
  joinNews(*page);
  auto joined = page->next(sw);
  ASSERT_TRUE(joined.has_value());
  EXPECT_TRUE(joined->envelope().isBcJoined());
}

}  // namespace
}  // namespace swipc::daemon
