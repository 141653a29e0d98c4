// page: ControllerOps, the page's conversation with its service worker. controller.postMessage,
// messageSW (its reply, deadline, abort, refusal, the daemon's loss; the blocking form runs no
// callbacks inside), and the service worker's messages, held until startMessages().
#include "page/controller_ops.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "page_rig.h"

namespace swipc::page {
namespace {

using namespace std::chrono_literals;
using testing::PageRig;

struct ControllerOpsTest : ::testing::Test {
  ControllerOpsTest() { rig.start(); }
  ControllerOps& sut() { return rig.page->controllerOps(); }

  /// The daemon reads a messageSW request: the request's seq and the reply port (port1's id).
  struct Request {
    MessageSeq seq = 0;
    uint64_t replyTo = 0;
    std::string text;
  };
  std::optional<Request> readRequest() {
    auto in = rig.nextSent();
    if (!in || !in->envelope().isControllerPost()) return std::nullopt;
    auto post = in->envelope().getControllerPost();
    if (post.getPorts().size() != 1) return std::nullopt;
    auto d = post.getPorts()[0];
    EXPECT_TRUE(d.getRegister());
    EXPECT_TRUE(d.getSilentPeer());
    return Request{in->envelope().getSeq(), d.getPeerId(), post.getPayload().getValue().getText().cStr()};
  }
  /// Starts a messageSW whose failure lands in `failed` (SYSTEM if it got a value instead).
  void ask(std::optional<Errc>& failed, std::optional<Deadline> deadline) {
    sut().messageSWAsync(Value("q"), [&failed](Result<Value> r) { failed = r ? Errc::SYSTEM : r.error().code; },
                         deadline);
  }
  void reply(core::Connection& conn, uint64_t to, uint64_t seq, const std::string& text) {
    capnp::MallocMessageBuilder mb;
    auto env = mb.initRoot<schema::Envelope>();
    env.setSchemaVersion(schema::SCHEMA_VERSION);
    env.setSeq(100 + seq);
    auto pm = env.initPortMessage();
    pm.setTo(to);
    pm.setSeq(seq);
    pm.initPayload().initValue().setText(text);
    ASSERT_EQ(conn.send(mb, 100 + seq), core::Connection::SendStatus::OK);
    conn.wakePeer();
  }

  PageRig rig;
};

TEST_F(ControllerOpsTest, PostWithoutAControllerIsInvalidState) {
  PageRig uncontrolled;
  uncontrolled.daemon.controlled = false;
  uncontrolled.start();
  const Value v("x");
  TransferList none;
  auto r = uncontrolled.page->controllerOps().post(core::OutgoingPayload{.value = &v}, PostOptions{}, none);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::INVALID_STATE);
}

TEST_F(ControllerOpsTest, APostCarriesItsValueAndWantAck) {
  const Value v("hello");
  TransferList none;
  auto seq = sut().post(core::OutgoingPayload{.value = &v}, PostOptions{.requestAck = true}, none);
  ASSERT_TRUE(seq.ok());
  auto in = rig.nextSent();
  ASSERT_TRUE(in && in->envelope().isControllerPost());
  EXPECT_EQ(std::string(in->envelope().getControllerPost().getPayload().getValue().getText().cStr()), "hello");
  EXPECT_TRUE(in->envelope().getControllerPost().getWantAck());
  EXPECT_EQ(in->envelope().getSeq(), *seq);
}

TEST_F(ControllerOpsTest, APostShipsItsTransferListAndNeutersThePorts) {
  auto [p1, p2] = detail::PortState::createPair(rig.page->ports());
  const Value v("with a port");
  TransferList transfer{MessagePort(p2)};
  ASSERT_TRUE(sut().post(core::OutgoingPayload{.value = &v}, PostOptions{}, transfer).ok());
  auto in = rig.nextSent();
  ASSERT_TRUE(in && in->envelope().isControllerPost());
  auto ports = in->envelope().getControllerPost().getPorts();
  ASSERT_EQ(ports.size(), 1u);
  EXPECT_EQ(ports[0].getPortId(), p2->id.value());
  EXPECT_TRUE(ports[0].getRegister());
  EXPECT_EQ(p2->mode, detail::PortState::Mode::NEUTERED);
  EXPECT_EQ(p1->mode, detail::PortState::Mode::REMOTE);  // its peer is the daemon's now
}

TEST_F(ControllerOpsTest, MessageSwResolvesWithTheFirstReplyOnly) {
  std::vector<std::string> results;
  sut().messageSWAsync(Value("ping"), [&](Result<Value> r) { results.push_back(r ? r->asText() : "error"); },
                       std::nullopt);
  auto req = readRequest();
  ASSERT_TRUE(req);
  EXPECT_EQ(req->text, "ping");
  reply(rig.daemon.conn(), req->replyTo, 1, "pong");
  reply(rig.daemon.conn(), req->replyTo, 2, "late");
  ASSERT_TRUE(rig.runUntil([&] { return !results.empty(); }));
  rig.runUntil([] { return false; }, 50ms);
  EXPECT_EQ(results, (std::vector<std::string>{"pong"}));
  auto close = rig.nextSent();  // port1 closes once answered
  ASSERT_TRUE(close && close->envelope().isPortClose());
  EXPECT_EQ(close->envelope().getPortClose().getPort(), req->replyTo);
}

TEST_F(ControllerOpsTest, MessageSwTimesOutAtItsDeadline) {
  std::optional<Errc> failed;
  const auto start = Clock::now();
  ask(failed, Clock::now() + 80ms);
  ASSERT_TRUE(rig.runUntil([&] { return failed.has_value(); }));
  EXPECT_EQ(*failed, Errc::TIMEOUT);
  EXPECT_GE(Clock::now() - start, 80ms);
}

TEST_F(ControllerOpsTest, MessageSwWithoutADeadlineIsAbortedWhenTheWorkerDropsThePort) {
  std::optional<Errc> failed;
  ask(failed, std::nullopt);
  auto req = readRequest();
  ASSERT_TRUE(req);
  rig.daemon.send([&](schema::Envelope::Builder e) { e.initPortClosed().setPort(req->replyTo); });
  ASSERT_TRUE(rig.runUntil([&] { return failed.has_value(); }));
  EXPECT_EQ(*failed, Errc::ABORT);
}

TEST_F(ControllerOpsTest, ARefusedRequestFailsWithTheDaemonsError) {
  std::optional<Errc> failed;
  ask(failed, Clock::now() + 5s);
  auto req = readRequest();
  ASSERT_TRUE(req);
  rig.daemon.send([&](schema::Envelope::Builder e) {
    auto err = e.initError();
    err.setName("QuotaExceededError");
    err.setMessage("too many");
    err.setRefSeq(req->seq);
  });
  ASSERT_TRUE(rig.runUntil([&] { return failed.has_value(); }));
  EXPECT_EQ(*failed, Errc::QUOTA_EXCEEDED);
}

TEST_F(ControllerOpsTest, MessageSwFailsDisconnectedWhenTheDaemonGoes) {
  std::optional<Errc> failed;
  ask(failed, Clock::now() + 5s);
  ASSERT_TRUE(readRequest());
  rig.daemon.refuse = 100;
  rig.daemon.hangUp();
  ASSERT_TRUE(rig.runUntil([&] { return failed.has_value(); }));
  EXPECT_EQ(*failed, Errc::DISCONNECTED);
}

TEST_F(ControllerOpsTest, MessageSwWhileDetachedFailsAtOnce) {
  rig.daemon.refuse = 100;
  rig.daemon.hangUp();
  ASSERT_TRUE(rig.runUntil([&] { return !rig.page->link().attached(); }));
  std::optional<Errc> failed;
  ask(failed, std::nullopt);
  ASSERT_TRUE(failed.has_value());
  EXPECT_EQ(*failed, Errc::INVALID_STATE);
}

TEST_F(ControllerOpsTest, BlockingMessageSwRunsNoCallbackInsideIt) {
  rig.page->queue().start();
  std::vector<std::string> log;
  rig.page->events().onMessage([&](const MessageEvent& e) { log.push_back("message " + e.data.asText()); });
  // The daemon, on its own thread: a client post first, then the reply.
  core::Connection& daemonConn = rig.daemon.conn();
  std::atomic<bool> stop{false};
  std::thread daemon([&] {
    while (!stop) {
      wire::Inbound in;
      Error err;
      if (daemonConn.receive(in, err) != core::Connection::RecvStatus::OK) {
        if (!daemonConn.armAndCheck()) {  // sleep until the page rings (bounded: `stop` is checked)
          pollfd p{daemonConn.doorbellFd(), POLLIN, 0};
          if (::poll(&p, 1, 10) > 0) {
            uint64_t v;
            [[maybe_unused]] auto n = ::read(daemonConn.doorbellFd(), &v, sizeof v);
          }
        }
        continue;
      }
      daemonConn.publishConsumed();
      if (!in.envelope().isControllerPost()) continue;
      const uint64_t to = in.envelope().getControllerPost().getPorts()[0].getPeerId();
      capnp::MallocMessageBuilder mb;
      auto env = mb.initRoot<schema::Envelope>();
      env.setSchemaVersion(schema::SCHEMA_VERSION);
      env.setSeq(1);
      env.initClientPost().initPayload().initValue().setText("meanwhile");
      daemonConn.send(mb, 1);
      reply(daemonConn, to, 1, "answer");
      return;
    }
  });
  auto r = sut().messageSW(Value("q"), Clock::now() + 5s);
  log.push_back("returned");
  stop = true;
  daemon.join();
  ASSERT_TRUE(r.ok()) << r.error().describe();
  EXPECT_EQ(r->asText(), "answer");
  ASSERT_TRUE(rig.runUntil([&] { return log.size() == 2; }));
  EXPECT_EQ(log, (std::vector<std::string>{"returned", "message meanwhile"}));
}

TEST_F(ControllerOpsTest, AClientPostIsHeldUntilStartMessages) {
  std::vector<std::string> log;
  rig.page->events().onMessage([&](const MessageEvent& e) { log.push_back(e.data.asText()); });
  rig.daemon.send([](schema::Envelope::Builder e) { e.initClientPost().initPayload().initValue().setText("first"); });
  rig.daemon.send([](schema::Envelope::Builder e) { e.initClientPost().initPayload().initValue().setText("second"); });
  rig.runUntil([&] { return rig.daemon.conn().outConsumed() == rig.daemon.conn().outPublished(); });
  EXPECT_TRUE(log.empty());
  rig.page->queue().start();
  EXPECT_EQ(log, (std::vector<std::string>{"first", "second"}));
}

TEST_F(ControllerOpsTest, AClientPostOfAnUnknownSchemaIsAMessageError) {
  rig.page->queue().start();
  std::optional<Errc> error;
  rig.page->events().onMessageError([&](const MessageErrorEvent& e) { error = e.error.code; });
  rig.daemon.send([](schema::Envelope::Builder e) {
    auto typed = e.initClientPost().initPayload().initTyped();
    typed.setTypeId(0x1234);
    typed.getContent().setAs<capnp::Text>("not registered here");
  });
  ASSERT_TRUE(rig.runUntil([&] { return error.has_value(); }));
  EXPECT_EQ(*error, Errc::DATA_CLONE);
}

}  // namespace
}  // namespace swipc::page
