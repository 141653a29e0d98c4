// Conformance: DESIGN §9 "MessagePort", one line per test, with a real sw_daemon (the reference
// service worker) and page_client `script` pages. Two pages obtain an entangled pair the way the
// web does it through a service worker: page A creates a MessageChannel and posts RELAY_PORT
// with port2 in the transfer list; page B gets {"type":"PORT","from":A} with the port as in1.
//
// Every wait has a deadline; nothing sleeps to synchronise. "Nothing arrived (yet)" is shown by a
// later message arriving first on the same path: one page's up ring is FIFO and the daemon routes
// what it reads in order, so a post that A makes after its port posts reaches B after them.
#include <gtest/gtest.h>
#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "process.h"
#include "json_events.h"
#include "test_scope.h"

namespace swipc::testing {
namespace {

using nlohmann::json;

bool isPortMessage(const json& ev, const std::string& port) {
  return ev.value("event", "") == "port.message" && ev.value("port", "") == port;
}

/// The data of every port.message at `port` among the events `p` has printed so far, in order.
std::vector<json> portMessagesSeen(const ScriptClient& p, const std::string& port) {
  std::vector<json> out;
  for (const auto& ev : p.seen())
    if (isPortMessage(ev, port)) out.push_back(ev["data"]);
  return out;
}

/// Events of `p` so far, one per line, for failure messages.
std::string describeSeen(const ScriptClient& p) {
  std::string s;
  for (const auto& ev : p.seen()) s += "  | " + ev.dump() + "\n";
  return s;
}

/// Two ends of one entangled pair: `a` names the end on page A, `b` the end on page B.
struct Pair {
  std::string a;
  std::string b;
};

class MessagePortTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon = std::make_unique<Daemon>(dir.path(), scope);
    ASSERT_TRUE(daemon->waitReady()) << daemon->log();
  }

  /// An attached page_client `script` page whose client message queue is started (so that
  /// RELAY_PORT deliveries reach it).
  std::unique_ptr<ScriptClient> page() {
    auto p = std::make_unique<ScriptClient>(dir.path(), scope);
    EXPECT_EQ(p->clientId().size(), 32u) << "page did not attach: " << p->process().stderrText();
    expectOk(*p, {{"op", "startMessages"}});
    return p;
  }

  /// Sends `o` with a fresh id; its ok/error event (or {"event":"timeout"}).
  json op(ScriptClient& p, json o) {
    const int id = nextId_++;
    o["id"] = id;
    p.send(o);
    auto r = p.waitResult(id, 10s);
    return r ? *r : json{{"event", "timeout"}, {"op", o}};
  }
  void expectOk(ScriptClient& p, const json& o) {
    auto r = op(p, o);
    EXPECT_EQ(r.value("event", ""), "ok") << o.dump() << " -> " << r.dump() << "\ndaemon log:\n" << daemon->log();
  }
  /// The op fails with error `name`.
  void expectError(ScriptClient& p, const json& o, const std::string& name) {
    auto r = op(p, o);
    EXPECT_EQ(r.value("event", ""), "error") << o.dump() << " -> " << r.dump();
    EXPECT_EQ(r.value("name", ""), name) << o.dump() << " -> " << r.dump();
  }

  void createChannel(ScriptClient& p, const std::string& port1, const std::string& port2) {
    expectOk(p, {{"op", "channel.create"}, {"port1", port1}, {"port2", port2}});
  }
  void postOn(ScriptClient& p, const std::string& port, const json& data, const json& transfer = json::array()) {
    expectOk(p, {{"op", "port.post"}, {"port", port}, {"data", data}, {"transfer", transfer}});
  }
  void start(ScriptClient& p, const std::string& port) { expectOk(p, {{"op", "port.start"}, {"port", port}}); }

  /// `from` ships its port `port` to page `to` through the service worker (RELAY_PORT); the name
  /// `to` gave the port it received ("" when none arrived).
  std::string relay(ScriptClient& from, const std::string& port, ScriptClient& to) {
    expectOk(
        from,
        {{"op", "post"}, {"data", {{"type", "RELAY_PORT"}, {"to", to.clientId()}}}, {"transfer", json::array({port})}});
    // The service worker tells the sender how it went.
    auto answer = from.waitFor(
        [](const json& ev) { return ev.value("event", "") == "message" && ev["data"].contains("relayed"); }, 10s);
    EXPECT_TRUE(answer && (*answer)["data"]["relayed"] == true) << (answer ? answer->dump() : "no RELAY_PORT answer");
    auto m = to.waitFor([](const json& ev) { return messageType(ev) == "PORT"; }, 10s);
    if (!m) {
      ADD_FAILURE() << "no PORT message reached the receiving page\n" << describeSeen(to) << daemon->log();
      return {};
    }
    EXPECT_EQ((*m)["data"].value("from", ""), from.clientId()) << m->dump();
    if (!(*m)["ports"].is_array() || (*m)["ports"].size() != 1u) {
      ADD_FAILURE() << "expected exactly one port in " << m->dump();
      return {};
    }
    return (*m)["ports"][0].get<std::string>();
  }

  /// An entangled pair across two pages: A creates it (`a`, `aShipped`) and ships `aShipped` to B.
  Pair pair(ScriptClient& a, ScriptClient& b, const std::string& name = "p") {
    createChannel(a, name + "1", name + "2");
    return {name + "1", relay(a, name + "2", b)};
  }

  /// The data of the next port.message at `port` (null json on timeout).
  json nextOn(ScriptClient& p, const std::string& port, std::chrono::milliseconds timeout = 10s) {
    auto m = p.waitFor([&](const json& ev) { return isPortMessage(ev, port); }, timeout);
    return m ? (*m)["data"] : json();
  }
  /// Waits for port.close at `port`.
  bool waitClose(ScriptClient& p, const std::string& port, std::chrono::milliseconds timeout = 10s) {
    return p
        .waitFor([&](const json& ev) { return ev.value("event", "") == "port.close" && ev.value("port", "") == port; },
                 timeout)
        .has_value();
  }

  /// `from` asks the service worker to post `data` to page `to` (client.postMessage): it lands
  /// in `to`'s ring after everything `from` posted before.
  void postThroughServiceWorker(ScriptClient& from, ScriptClient& to, const json& data) {
    auto r = op(from, {{"op", "messageSW"},
                       {"data", {{"type", "POST_TO"}, {"id", to.clientId()}, {"data", data}}},
                       {"timeoutMs", 5000}});
    EXPECT_EQ(r.value("event", ""), "ok") << r.dump();
    EXPECT_TRUE(r.contains("data") && r["data"].is_object() && r["data"].value("delivered", false)) << r.dump();
  }
  /// Waits for the `message` event whose data is `data`.
  bool waitMessage(ScriptClient& p, const json& data, std::chrono::milliseconds timeout = 10s) {
    return p.waitFor([&](const json& ev) { return ev.value("event", "") == "message" && ev["data"] == data; }, timeout)
        .has_value();
  }

  TempDir dir;
  std::string scope = testScope();
  std::unique_ptr<Daemon> daemon;
  int nextId_ = 1;
};

// ------------------------------------------------------------------------------------------------ delivery

TEST_F(MessagePortTest, PostArrivesAtEntangledPeerOnly) {
  auto a = page(), b = page(), c = page();
  const Pair toB = pair(*a, *b, "b");
  const Pair toC = pair(*a, *c, "c");
  ASSERT_FALSE(toB.b.empty());
  ASSERT_FALSE(toC.b.empty());
  start(*a, toB.a);
  start(*a, toC.a);
  start(*b, toB.b);
  start(*c, toC.b);

  postOn(*a, toB.a, kv("for", "b"));
  postOn(*a, toC.a, kv("for", "c"));
  EXPECT_EQ(nextOn(*b, toB.b), kv("for", "b")) << describeSeen(*b);
  EXPECT_EQ(nextOn(*c, toC.b), kv("for", "c")) << describeSeen(*c);
  // Each receiver answers on its end; the answer is the first thing A's end sees: A's own posts
  // never came back to it, and neither went to the other pair.
  postOn(*b, toB.b, "b-answer");
  postOn(*c, toC.b, "c-answer");
  EXPECT_EQ(nextOn(*a, toB.a), json("b-answer")) << describeSeen(*a);
  EXPECT_EQ(nextOn(*a, toC.a), json("c-answer")) << describeSeen(*a);
  EXPECT_EQ(portMessagesSeen(*a, toB.a), std::vector<json>{"b-answer"}) << describeSeen(*a);
  EXPECT_EQ(portMessagesSeen(*a, toC.a), std::vector<json>{"c-answer"}) << describeSeen(*a);
  EXPECT_EQ(portMessagesSeen(*b, toB.b), std::vector<json>{kv("for", "b")}) << describeSeen(*b);
  EXPECT_EQ(portMessagesSeen(*c, toC.b), std::vector<json>{kv("for", "c")}) << describeSeen(*c);
  for (const auto* p : {a.get(), b.get(), c.get()})
    for (const auto& ev : p->seen())
      EXPECT_FALSE(ev.value("event", "") == "message" && ev["data"].contains("for"))
          << "a port post surfaced as a client message: " << ev.dump();
}

TEST_F(MessagePortTest, PostsArriveInOrder) {
  constexpr int N = 200;
  auto a = page(), b = page();
  const Pair p = pair(*a, *b);
  ASSERT_FALSE(p.b.empty());
  start(*a, p.a);
  start(*b, p.b);
  for (int i = 0; i < N; ++i) {
    a->send({{"op", "port.post"}, {"port", p.a}, {"data", {{"i", i}}}});
    b->send({{"op", "port.post"}, {"port", p.b}, {"data", {{"j", i}}}});
  }
  for (int i = 0; i < N; ++i) {
    ASSERT_EQ(nextOn(*b, p.b), kv("i", i)) << "message " << i << " at B\n" << describeSeen(*b);
    ASSERT_EQ(nextOn(*a, p.a), kv("j", i)) << "message " << i << " at A\n" << describeSeen(*a);
  }
  for (const auto* q : {a.get(), b.get()})
    for (const auto& ev : q->seen()) EXPECT_NE(ev.value("event", ""), "error") << ev.dump();
}

TEST_F(MessagePortTest, MessagesAreHeldUntilStartNotLost) {
  constexpr int N = 20;
  auto a = page(), b = page();
  const Pair p = pair(*a, *b);
  ASSERT_FALSE(p.b.empty());
  for (int i = 0; i < N; ++i) postOn(*a, p.a, kv("i", i));
  // A's port posts reach B's ring before this client message does.
  postThroughServiceWorker(*a, *b, kv("marker", 1));
  ASSERT_TRUE(waitMessage(*b, kv("marker", 1))) << describeSeen(*b);
  EXPECT_TRUE(portMessagesSeen(*b, p.b).empty()) << "delivered before port.start:\n" << describeSeen(*b);

  start(*b, p.b);
  for (int i = 0; i < N; ++i) ASSERT_EQ(nextOn(*b, p.b), kv("i", i)) << "message " << i << "\n" << describeSeen(*b);
}

// ------------------------------------------------------------------------------------------------ transfer

TEST_F(MessagePortTest, TransferredPortArrivesInPortsAndSenderObjectIsNeutered) {
  auto a = page(), b = page();
  createChannel(*a, "p1", "p2");
  // relay() checks the delivery: a `message` {"type":"PORT","from":A} whose ports list names it.
  const std::string received = relay(*a, "p2", *b);
  ASSERT_EQ(received, "in1");
  // Posting on the neutered object is a no-op that succeeds...
  postOn(*a, "p2", "ghost");
  start(*a, "p1");
  start(*b, received);
  // ...and delivers nowhere: not to p1 (its old peer, here), not to the port's new owner.
  postOn(*b, received, "from-b");
  EXPECT_EQ(nextOn(*a, "p1"), json("from-b")) << describeSeen(*a);
  postOn(*a, "p1", "from-a");
  EXPECT_EQ(nextOn(*b, received), json("from-a")) << describeSeen(*b);
  EXPECT_EQ(portMessagesSeen(*a, "p1"), std::vector<json>{"from-b"}) << describeSeen(*a);
  EXPECT_EQ(portMessagesSeen(*b, received), std::vector<json>{"from-a"}) << describeSeen(*b);
  EXPECT_TRUE(portMessagesSeen(*a, "p2").empty()) << describeSeen(*a);
}

TEST_F(MessagePortTest, RetransferOfNeuteredPortFailsWithDataCloneError) {
  auto a = page(), b = page();
  const Pair p = pair(*a, *b);
  ASSERT_FALSE(p.b.empty());
  createChannel(*a, "q1", "q2");
  start(*a, "q2");
  // "p2" was shipped to B: neither kind of post may take it along again.
  expectError(*a, {{"op", "post"}, {"data", {{"type", "ECHO"}}}, {"transfer", json::array({"p2"})}}, "DataCloneError");
  expectError(*a, {{"op", "port.post"}, {"port", "q1"}, {"data", "with-p2"}, {"transfer", json::array({"p2"})}},
              "DataCloneError");
  // Nothing was sent: the next post on q1 is the first thing q2 sees.
  postOn(*a, "q1", "plain");
  EXPECT_EQ(nextOn(*a, "q2"), json("plain")) << describeSeen(*a);
  EXPECT_EQ(portMessagesSeen(*a, "q2"), std::vector<json>{"plain"}) << describeSeen(*a);
}

TEST_F(MessagePortTest, PortTransferredOnAPortArrivesInThePortMessagePorts) {
  auto a = page(), b = page();
  const Pair p = pair(*a, *b);
  ASSERT_FALSE(p.b.empty());
  start(*b, p.b);
  createChannel(*a, "q1", "q2");
  start(*a, "q1");
  postOn(*a, p.a, "carrying q2", json::array({"q2"}));
  auto m = b->waitFor([&](const json& ev) { return isPortMessage(ev, p.b); }, 10s);
  ASSERT_TRUE(m.has_value()) << describeSeen(*b);
  EXPECT_EQ((*m)["data"], json("carrying q2"));
  ASSERT_EQ((*m)["ports"], json::array({"in2"})) << m->dump();  // B's second received port
  start(*b, "in2");
  postOn(*b, "in2", "over q");
  EXPECT_EQ(nextOn(*a, "q1"), json("over q")) << describeSeen(*a);
  postOn(*a, "q1", "back over q");
  EXPECT_EQ(nextOn(*b, "in2"), json("back over q")) << describeSeen(*b);
}

TEST_F(MessagePortTest, MessagesQueuedAtOrInFlightToAMovingPortFollowIt) {
  auto a = page(), b = page(), c = page();
  createChannel(*a, "p1", "p2");
  int next = 0;
  // 0..4 wait at p2 while it is still in A (not started)...
  for (; next < 5; ++next) postOn(*a, "p1", kv("i", next));
  const std::string atB = relay(*a, "p2", *b);
  ASSERT_FALSE(atB.empty());
  // ...5..9 wait at B's end (not started; the marker after them shows they reached B)...
  for (; next < 10; ++next) postOn(*a, "p1", kv("i", next));
  postThroughServiceWorker(*a, *b, kv("marker", 1));
  ASSERT_TRUE(waitMessage(*b, kv("marker", 1))) << describeSeen(*b);
  // ...and 10..19 are posted while B ships the port on to C: in flight to a moving port.
  const int relayId = nextId_++;
  b->send({{"op", "post"},
           {"id", relayId},
           {"data", {{"type", "RELAY_PORT"}, {"to", c->clientId()}}},
           {"transfer", json::array({atB})}});
  for (; next < 20; ++next) a->send({{"op", "port.post"}, {"port", "p1"}, {"data", {{"i", next}}}});
  auto relayed = b->waitResult(relayId, 10s);
  ASSERT_TRUE(relayed && (*relayed)["event"] == "ok") << (relayed ? relayed->dump() : "timeout");

  auto m = c->waitFor([](const json& ev) { return messageType(ev) == "PORT"; }, 10s);
  ASSERT_TRUE(m.has_value()) << describeSeen(*c) << daemon->log();
  EXPECT_EQ((*m)["data"].value("from", ""), b->clientId());
  ASSERT_EQ((*m)["ports"].size(), 1u) << m->dump();
  const std::string atC = (*m)["ports"][0];
  start(*c, atC);
  for (int i = 0; i < 20; ++i)
    ASSERT_EQ(nextOn(*c, atC), kv("i", i)) << "message " << i << " at C\n" << describeSeen(*c);
  // Once more through the end A still has: the 21st arrives after all of them, and none twice.
  postOn(*a, "p1", kv("i", 20));
  EXPECT_EQ(nextOn(*c, atC), kv("i", 20)) << describeSeen(*c);
  EXPECT_EQ(portMessagesSeen(*c, atC).size(), 21u) << describeSeen(*c);
  EXPECT_TRUE(portMessagesSeen(*b, atB).empty()) << describeSeen(*b);
  for (const auto* p : {a.get(), b.get(), c.get()})
    for (const auto& ev : p->seen()) EXPECT_NE(ev.value("event", ""), "error") << ev.dump();
}

TEST_F(MessagePortTest, TransferringThePostingPortItselfFailsWithDataCloneError) {
  auto a = page(), b = page();
  const Pair p = pair(*a, *b);
  ASSERT_FALSE(p.b.empty());
  start(*b, p.b);
  expectError(*a, {{"op", "port.post"}, {"port", p.a}, {"data", "self"}, {"transfer", json::array({p.a})}},
              "DataCloneError");
  // Nothing was sent and the port is not neutered: the next post is the first B sees.
  postOn(*a, p.a, "after");
  EXPECT_EQ(nextOn(*b, p.b), json("after")) << describeSeen(*b);
  EXPECT_EQ(portMessagesSeen(*b, p.b), std::vector<json>{"after"}) << describeSeen(*b);
}

TEST_F(MessagePortTest, TransferringTheSamePortTwiceFailsWithDataCloneError) {
  auto a = page(), b = page();
  const Pair p = pair(*a, *b);
  ASSERT_FALSE(p.b.empty());
  start(*b, p.b);
  createChannel(*a, "q1", "q2");
  start(*a, "q2");
  expectError(*a, {{"op", "port.post"}, {"port", p.a}, {"data", "dup"}, {"transfer", json::array({"q1", "q1"})}},
              "DataCloneError");
  expectError(*a, {{"op", "post"}, {"data", {{"type", "ECHO"}}}, {"transfer", json::array({"q1", "q1"})}},
              "DataCloneError");
  // Nothing was sent and q1 is still A's: it can be transferred once, and works at B.
  postOn(*a, p.a, "carry", json::array({"q1"}));
  auto m = b->waitFor([&](const json& ev) { return isPortMessage(ev, p.b); }, 10s);
  ASSERT_TRUE(m.has_value()) << describeSeen(*b);
  EXPECT_EQ((*m)["data"], json("carry")) << "the failed post was delivered: " << m->dump();
  ASSERT_EQ((*m)["ports"].size(), 1u) << m->dump();
  const std::string q = (*m)["ports"][0];
  postOn(*b, q, "via q");
  EXPECT_EQ(nextOn(*a, "q2"), json("via q")) << describeSeen(*a);
  for (const auto& ev : a->seen())  // the failed post never reached the service worker: no ECHO reply
    EXPECT_FALSE(messageType(ev) == "ECHO") << ev.dump();
}

// ------------------------------------------------------------------------------------------------ close

TEST_F(MessagePortTest, CloseMakesLaterPostsNoOpsAndPeerGetsClose) {
  auto a = page(), b = page();
  const Pair p = pair(*a, *b);
  ASSERT_FALSE(p.b.empty());
  start(*a, p.a);
  start(*b, p.b);
  postOn(*a, p.a, "before");
  ASSERT_EQ(nextOn(*b, p.b), json("before")) << describeSeen(*b);
  expectOk(*a, {{"op", "port.close"}, {"port", p.a}});
  EXPECT_TRUE(waitClose(*b, p.b, 5s)) << describeSeen(*b) << daemon->log();
  // Later posts on either end succeed and do nothing.
  postOn(*a, p.a, "after close");
  postOn(*b, p.b, "to a closed peer");
  EXPECT_EQ(portMessagesSeen(*b, p.b), std::vector<json>{"before"}) << describeSeen(*b);
  EXPECT_TRUE(portMessagesSeen(*a, p.a).empty()) << describeSeen(*a);
  for (const auto& ev : a->seen())
    EXPECT_FALSE(ev.value("event", "") == "port.close" && ev.value("port", "") == p.a)
        << "the closing end itself got close: " << ev.dump();
}

// A port that is closed before it arrives, at a page whose messages are held (startMessages
// not called yet): the message carrying it is delivered later, and only then does the page set
// the port's close listener. `close` waits for that listener instead of firing into nobody.
TEST_F(MessagePortTest, PortThatArrivesClosedWhileMessagesAreHeldGetsCloseOnceDelivered) {
  auto a = page();
  auto b = std::make_unique<ScriptClient>(dir.path(), scope);  // messages held
  ASSERT_EQ(b->clientId().size(), 32u) << b->process().stderrText();
  createChannel(*a, "p1", "p2");
  expectOk(*a, {{"op", "port.close"}, {"port", "p1"}});
  const json relay = {{"type", "RELAY_PORT"}, {"to", b->clientId()}};
  expectOk(*a, {{"op", "post"}, {"data", relay}, {"transfer", json::array({"p2"})}});
  auto answer = a->waitFor(
      [](const json& ev) { return ev.value("event", "") == "message" && ev["data"].contains("relayed"); }, 10s);
  ASSERT_TRUE(answer && (*answer)["data"]["relayed"] == true) << (answer ? answer->dump() : "no RELAY_PORT answer");
  // The PORT message is in B's ring now; a reply to B comes behind it on the same ring, so once
  // B has the reply it has read (and held) the PORT message, and the port in it is B's.
  auto echo = op(*b, {{"op", "messageSW"}, {"data", {{"type", "ECHO"}}}, {"timeoutMs", 5000}});
  ASSERT_EQ(echo.value("event", ""), "ok") << echo.dump();
  for (const auto& ev : b->seen()) ASSERT_NE(ev.value("event", ""), "message") << "not held: " << ev.dump();

  expectOk(*b, {{"op", "startMessages"}});
  auto m = b->waitFor([](const json& ev) { return messageType(ev) == "PORT"; }, 10s);
  ASSERT_TRUE(m && (*m)["ports"].is_array() && (*m)["ports"].size() == 1u) << describeSeen(*b);
  const std::string received = (*m)["ports"][0];
  EXPECT_TRUE(waitClose(*b, received, 5s)) << "no port.close for the port that arrived closed\n" << describeSeen(*b);
}

TEST_F(MessagePortTest, CloseOfOneEndClosesItsPeerInTheSameProcess) {
  auto a = page();
  createChannel(*a, "p1", "p2");
  start(*a, "p2");
  expectOk(*a, {{"op", "port.close"}, {"port", "p1"}});
  EXPECT_TRUE(waitClose(*a, "p2", 5s)) << describeSeen(*a);
  postOn(*a, "p1", "after close");
  postOn(*a, "p2", "to a closed peer");
}

TEST_F(MessagePortTest, PeerProcessDeathClosesTheSurvivor) {
  auto a = page(), b = page();
  const Pair p = pair(*a, *b);
  ASSERT_FALSE(p.b.empty());
  start(*a, p.a);
  start(*b, p.b);
  postOn(*b, p.b, "alive");
  ASSERT_EQ(nextOn(*a, p.a), json("alive")) << describeSeen(*a);

  const auto t0 = TestClock::now();
  b->process().signal(SIGKILL);
  ASSERT_TRUE(waitClose(*a, p.a, 2s)) << "no port.close within 2 s of the peer's kill -9\n"
                                      << describeSeen(*a) << daemon->log();
  const auto ms = msSince(t0);
  std::printf("[          ] port.close %lld ms after kill -9 of the peer (target <= 100 ms)\n", ms);
  postOn(*a, p.a, "to a dead peer");
  EXPECT_TRUE(daemon->process().running()) << daemon->log();
}

TEST_F(MessagePortTest, PeerProcessExitClosesTheSurvivor) {
  auto a = page(), b = page();
  const Pair p = pair(*a, *b);
  ASSERT_FALSE(p.b.empty());
  start(*a, p.a);
  b->send({{"op", "exit"}});
  EXPECT_TRUE(waitClose(*a, p.a, 2s)) << describeSeen(*a) << daemon->log();
  EXPECT_EQ(b->process().waitExitCode(5s), 0);
}

// ------------------------------------------------------------------------------------------------ messageSW

// messageSW sends a real port for the reply; a service worker that ignores the message (no
// handler for its type) drops that port unanswered. Without a deadline the request would wait
// forever: it fails with AbortError as soon as the daemon reports the dropped port.
TEST_F(MessagePortTest, MessageSwWithoutDeadlineFailsWithAbortErrorWhenTheServiceWorkerIgnoresIt) {
  auto a = page();
  const auto t0 = TestClock::now();
  auto r = op(*a, {{"op", "messageSW"}, {"data", {{"type", "IGNORED_BY_THE_SW"}}}});  // no timeoutMs
  EXPECT_EQ(r.value("event", ""), "error") << r.dump();
  EXPECT_EQ(r.value("name", ""), "AbortError") << r.dump();
  EXPECT_LT(msSince(t0), 5000) << r.dump();
  // The page is fine afterwards: the next request is answered.
  auto echo = op(*a, {{"op", "messageSW"}, {"data", {{"type", "ECHO"}, {"n", 1}}}});
  EXPECT_EQ(echo.value("event", ""), "ok") << echo.dump();
  EXPECT_EQ(echo["data"], json({{"type", "ECHO"}, {"n", 1}})) << echo.dump();
}

// With a deadline the deadline decides, even though the dropped port is reported long before.
TEST_F(MessagePortTest, MessageSwWithDeadlineFailsWithTimeoutErrorWhenTheServiceWorkerIgnoresIt) {
  auto a = page();
  const auto t0 = TestClock::now();
  auto r = op(*a, {{"op", "messageSW"}, {"data", {{"type", "IGNORED_BY_THE_SW"}}}, {"timeoutMs", 300}});
  EXPECT_EQ(r.value("event", ""), "error") << r.dump();
  EXPECT_EQ(r.value("name", ""), "TimeoutError") << r.dump();
  EXPECT_GE(msSince(t0), 300) << r.dump();
}

}  // namespace
}  // namespace swipc::testing
