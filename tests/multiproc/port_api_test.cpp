// The MessageChannel / MessagePort library API in this process: a Client on the test thread
// against a swipc::ServiceWorker running on a thread of this process (so the test can look at
// the daemon's port table), plus the transfer-list rules that fail before anything is sent.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <stdexcept>
#include <thread>

#include "process.h"
#include "test_scope.h"
#include "swipc/client.h"
#include "swipc/message_port.h"
#include "swipc/service_worker.h"

namespace swipc::testing {
namespace {

/// A ServiceWorker serving on its own thread; `onLoop` runs a function there and waits for it.
class ServiceWorkerThread {
 public:
  ServiceWorkerThread(ServiceWorkerOptions opts, const std::function<void(ServiceWorker&)>& setup)
      : sw_(std::move(opts)) {
    setup(sw_);
    auto r = sw_.listen();
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().describe());
    thread_ = std::thread([this] { (void)sw_.run(); });
  }
  ~ServiceWorkerThread() { stop(); }
  void stop() {
    if (!thread_.joinable()) return;
    sw_.post([this] { sw_.stop(); });
    thread_.join();
  }
  template <typename F>
  auto onLoop(F fn) -> decltype(fn()) {
    std::promise<decltype(fn())> p;
    auto f = p.get_future();
    sw_.post([&] { p.set_value(fn()); });
    return f.get();
  }
  Counters counters() {
    return onLoop([this] { return sw_.counters(); });
  }

 private:
  ServiceWorker sw_;
  std::thread thread_;
};

class PortApiTest : public ::testing::Test {
 protected:
  ServiceWorkerOptions swOptions() {
    ServiceWorkerOptions o;
    o.scope = scope;
    o.runtimeDir = dir.path();
    o.handleSignals = false;
    return o;
  }
  Client connect() {
    ClientOptions opts;
    opts.scope = scope;
    opts.runtimeDir = dir.path();
    auto c = Client::connect(opts);
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().describe());
    return std::move(*c);
  }

  TempDir dir;
  std::string scope = testScope();
};

Value msg(int64_t n) { return Value::map({{"n", n}}); }

TEST_F(PortApiTest, LocalPairDeliversInOrderWithoutTheDaemon) {
  ServiceWorkerThread sw(swOptions(), [](ServiceWorker&) {});
  Client sut = connect();
  auto ch = MessageChannel::create(sut);
  for (int64_t i = 0; i < 100; ++i) ASSERT_TRUE(ch.port1.postMessage(msg(i)).ok());
  EXPECT_EQ(ch.port2.queuedCount(), 100u);  // held: the port is not started
  std::vector<int64_t> got;
  ch.port2.onMessage([&](const MessageEvent& e) { got.push_back(e.data["n"].asInt()); });
  ASSERT_TRUE(sut.runUntil([&] { return got.size() == 100; }, deadlineIn(5000ms)));
  for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(got[static_cast<size_t>(i)], i);
  auto c = sw.counters();
  EXPECT_EQ(c.portMessagesRouted, 0u);
  EXPECT_EQ(c.portsOpen, 0u);
}

TEST_F(PortApiTest, TransferListRulesFailWithDataCloneErrorAndSendNothing) {
  ServiceWorkerThread sw(swOptions(), [](ServiceWorker&) {});
  Client sut = connect();
  auto a = MessageChannel::create(sut);
  auto b = MessageChannel::create(sut);
  auto self = a.port1.postMessage(msg(1), {a.port1});
  ASSERT_FALSE(self.ok());
  EXPECT_EQ(self.error().code, Errc::DATA_CLONE);
  auto peer = a.port1.postMessage(msg(1), {a.port2});
  ASSERT_FALSE(peer.ok());
  EXPECT_EQ(peer.error().code, Errc::DATA_CLONE);
  auto twice = a.port1.postMessage(msg(1), {b.port1, b.port1});
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.error().code, Errc::DATA_CLONE);
  auto twiceToSw = sut.controller()->postMessage(msg(1), {b.port1, b.port1});
  ASSERT_FALSE(twiceToSw.ok());
  EXPECT_EQ(twiceToSw.error().code, Errc::DATA_CLONE);
  b.port2.close();
  auto closed = a.port1.postMessage(msg(1), {b.port2});
  ASSERT_FALSE(closed.ok());
  EXPECT_EQ(closed.error().code, Errc::DATA_CLONE);
  EXPECT_EQ(a.port2.queuedCount(), 0u);  // nothing was sent
  EXPECT_FALSE(b.port1.neutered());       // nor moved
  EXPECT_EQ(sw.counters().portsOpen, 0u);
}

TEST_F(PortApiTest, TransferNeutersEveryHandleAndQueuedMessagesFollowThePort) {
  std::vector<int64_t> swGot;
  std::atomic<bool> swDone{false};
  ServiceWorkerThread sw(swOptions(), [&](ServiceWorker& s) {
    s.onMessage([&](ExtendableMessageEvent& e) {
      if (e.ports.empty()) return;
      MessagePort port = e.ports[0];
      port.onMessage([&, port](const MessageEvent& m) mutable {
        swGot.push_back(m.data["n"].asInt());
        if (swGot.size() == 5) {
          swDone = true;
          (void)port.postMessage(Value("all five"));
        }
      });
    });
  });
  Client sut = connect();
  auto ch = MessageChannel::create(sut);
  MessagePort copy = ch.port2;  // a second handle to the same port
  for (int64_t i = 0; i < 3; ++i) ASSERT_TRUE(ch.port1.postMessage(msg(i)).ok());  // queued at port2
  ASSERT_TRUE(sut.controller()->postMessage(Value::map({{"type", "TAKE"}}), {std::move(ch.port2)}).ok());
  EXPECT_TRUE(copy.neutered());
  auto again = sut.controller()->postMessage(Value("x"), {copy});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, Errc::DATA_CLONE);
  EXPECT_TRUE(copy.postMessage(Value("ignored")).ok());  // a no-op on a neutered port
  for (int64_t i = 3; i < 5; ++i) ASSERT_TRUE(ch.port1.postMessage(msg(i)).ok());  // now via the daemon
  std::optional<std::string> answer;
  ch.port1.onMessage([&](const MessageEvent& e) { answer = e.data.asText(); });
  ASSERT_TRUE(sut.runUntil([&] { return answer.has_value(); }, deadlineIn(5000ms)));
  EXPECT_EQ(*answer, "all five");
  ASSERT_TRUE(swDone);
  EXPECT_EQ(sw.onLoop([&] { return swGot; }), (std::vector<int64_t>{0, 1, 2, 3, 4}));
}

TEST_F(PortApiTest, APortShippedWithTwentyThousandQueuedMessagesArrivesWhole) {
  // The descriptor carries every message waiting at the port. Routing it must read that list
  // once: reading it again per message spent the reader's traversal budget quadratically, and
  // past ~1,300 queued messages the daemon died on the exception.
  constexpr int64_t N = 20000;
  std::vector<int64_t> swGot;
  ServiceWorkerThread sw(swOptions(), [&](ServiceWorker& s) {
    s.onMessage([&](ExtendableMessageEvent& e) {
      if (e.ports.empty()) return;
      MessagePort port = e.ports[0];
      port.onMessage([&, port](const MessageEvent& m) mutable {
        swGot.push_back(m.data["n"].asInt());
        if (static_cast<int64_t>(swGot.size()) == N) (void)port.postMessage(Value("all"));
      });
    });
  });
  Client sut = connect();
  auto ch = MessageChannel::create(sut);
  for (int64_t i = 0; i < N; ++i) ASSERT_TRUE(ch.port1.postMessage(msg(i)).ok());  // all queued at port2
  ASSERT_TRUE(sut.controller()->postMessage(Value::map({{"type", "TAKE"}}), {std::move(ch.port2)}).ok());
  std::optional<std::string> answer;
  ch.port1.onMessage([&](const MessageEvent& e) { answer = e.data.asText(); });
  ASSERT_TRUE(sut.runUntil([&] { return answer.has_value(); }, deadlineIn(20000ms)));
  EXPECT_EQ(*answer, "all");
  auto got = sw.onLoop([&] { return swGot; });
  ASSERT_EQ(got.size(), static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) ASSERT_EQ(got[static_cast<size_t>(i)], i) << "at " << i;
}

TEST_F(PortApiTest, AServiceWorkerPortHandlerThatThrowsNeitherEndsTheDaemonNorBlamesTheClient) {
  std::atomic<int> calls{0};
  ServiceWorkerThread sw(swOptions(), [&](ServiceWorker& s) {
    s.onMessage([&](ExtendableMessageEvent& e) {
      if (e.data["type"].textOr("") == "PING") {
        if (!e.ports.empty()) (void)e.ports[0].postMessage(Value("pong"));
        return;
      }
      if (e.ports.empty()) return;
      MessagePort port = e.ports[0];
      port.onMessage([&, port](const MessageEvent& m) mutable {
        ++calls;
        (void)port.postMessage(m.data);  // answered, then it fails
        throw std::runtime_error("a bug in the service worker");
      });
    });
  });
  Client sut = connect();
  auto ch = MessageChannel::create(sut);
  ASSERT_TRUE(sut.controller()->postMessage(Value::map({{"type", "TAKE"}}), {std::move(ch.port2)}).ok());
  for (int64_t i = 0; i < 3; ++i) ASSERT_TRUE(ch.port1.postMessage(msg(i)).ok());
  // Every message reached the handler (each throw was logged and dropped), the client is still
  // attached and served, and nobody was taken for a protocol violation.
  std::vector<int64_t> echoed;
  ch.port1.onMessage([&](const MessageEvent& e) { echoed.push_back(e.data["n"].asInt()); });
  ASSERT_TRUE(sut.runUntil([&] { return echoed.size() == 3; }, deadlineIn(5000ms)));
  EXPECT_EQ(echoed, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(calls.load(), 3);
  auto pong = sut.messageSW(Value::map({{"type", "PING"}}), deadlineIn(5000ms));
  ASSERT_TRUE(pong.ok()) << pong.error().describe();
  EXPECT_EQ(*pong, Value("pong"));
  EXPECT_EQ(sw.counters().protocolViolations, 0u);
}

TEST_F(PortApiTest, DroppingTheLastHandleClosesThePortAndThePeerGetsClose) {
  std::atomic<bool> swSawClose{false};
  ServiceWorkerThread sw(swOptions(), [&](ServiceWorker& s) {
    static std::vector<MessagePort> kept;  // lives on the loop thread
    kept.clear();
    s.onMessage([&](ExtendableMessageEvent& e) {
      for (auto& p : e.ports) {
        p.onClose([&] { swSawClose = true; });
        kept.push_back(p);
      }
    });
  });
  Client sut = connect();
  {
    auto ch = MessageChannel::create(sut);
    ASSERT_TRUE(sut.controller()->postMessage(Value("keep"), {std::move(ch.port2)}).ok());
    ASSERT_TRUE(sw.counters().portsOpen == 2 || eventually([&] { return sw.counters().portsOpen == 2; }));
  }  // port1's last handle goes here
  EXPECT_TRUE(eventually([&] { return swSawClose.load(); }));
  EXPECT_TRUE(eventually([&] { return sw.counters().portsOpen == 0; }));
}

TEST_F(PortApiTest, PortsThatWentThroughTheDaemonCloseWhenItStops) {
  auto sw = std::make_unique<ServiceWorkerThread>(swOptions(), [](ServiceWorker& s) {
    static std::vector<MessagePort> kept;
    kept.clear();
    s.onMessage([](ExtendableMessageEvent& e) {
      for (auto& p : e.ports) kept.push_back(p);
    });
  });
  Client sut = connect();
  auto viaDaemon = MessageChannel::create(sut);
  auto local = MessageChannel::create(sut);
  bool remoteClosed = false, localClosed = false;
  viaDaemon.port1.onClose([&] { remoteClosed = true; });
  local.port1.onClose([&] { localClosed = true; });
  viaDaemon.port1.start();
  local.port1.start();
  ASSERT_TRUE(sut.controller()->postMessage(Value("keep"), {std::move(viaDaemon.port2)}).ok());
  ASSERT_TRUE(eventually([&] { return sw->counters().portsOpen == 2; }));
  sw.reset();
  ASSERT_TRUE(sut.runUntil([&] { return remoteClosed; }, deadlineIn(5000ms)));
  EXPECT_FALSE(localClosed);  // a pair inside one process does not depend on the daemon
  std::optional<int64_t> got;
  local.port2.onMessage([&](const MessageEvent& e) { got = e.data["n"].asInt(); });
  ASSERT_TRUE(local.port1.postMessage(msg(7)).ok());
  ASSERT_TRUE(sut.runUntil([&] { return got.has_value(); }, deadlineIn(5000ms)));
  EXPECT_EQ(*got, 7);
}

TEST_F(PortApiTest, MessageSwLeavesNothingInThePortTable) {
  ServiceWorkerThread sw(swOptions(), [](ServiceWorker& s) {
    s.onMessage([](ExtendableMessageEvent& e) {
      if (!e.ports.empty()) (void)e.ports[0].postMessage(e.data);
    });
  });
  Client sut = connect();
  for (int64_t i = 0; i < 200; ++i) {
    auto r = sut.messageSW(msg(i), 5000ms);
    ASSERT_TRUE(r.ok()) << r.error().describe();
    ASSERT_EQ((*r)["n"].asInt(), i);
  }
  sut.dispatch();
  EXPECT_TRUE(eventually([&] { return sw.counters().portsOpen == 0; }));
}

}  // namespace
}  // namespace swipc::testing
