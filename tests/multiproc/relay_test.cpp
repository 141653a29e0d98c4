// What one page sends on to another (issue 14, findings 1, 2, 6 and the ports half of 7), with
// real processes: a payload the daemon relays must be readable where it lands, or it is its
// SENDER's ProtocolViolation (the receiver never sees it, keeps its connection and runs on); a
// page that has not started its messages (or a port) holds a bounded number of bytes whatever
// another page posts; a client owns a bounded number of ports and tombstones.
// The hostile sender lives in tests/support/hostile_client.cpp (relay-*, port-quota modes).
#include <gtest/gtest.h>

#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "process.h"

namespace swipc::testing {
namespace {

using nlohmann::json;

constexpr const char* SCOPE = "relay";
constexpr long MAX_GROWTH_KIB = 64 * 1024;  // the victim's RSS growth under a flood
constexpr int FLOOD_MESSAGES = 1500;
constexpr size_t FLOOD_BYTES = 200 * 1000;

class RelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_.emplace(dir_.path(), SCOPE);
    ASSERT_TRUE(daemon_->waitReady()) << daemon_->log();
  }

  /// page_client listen: starts every port it receives at once (what crashed on finding 1).
  ChildProcess startListener() {
    ChildProcess::Options o;
    o.pipeStdout = true;
    return ChildProcess({pageClientPath(), "--scope", SCOPE, "--runtime-dir", dir_.path(), "listen"}, o);
  }

  /// The listener's next event line for which `pred` holds (others are kept in `seen`).
  static std::optional<json> waitLine(ChildProcess& p, std::vector<json>& seen,
                                      const std::function<bool(const json&)>& pred,
                                      std::chrono::milliseconds timeout = 5s) {
    const auto deadline = TestClock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - TestClock::now());
      if (left.count() <= 0) return std::nullopt;
      auto line = p.readLine(left);
      if (!line) return std::nullopt;
      auto j = json::parse(*line, nullptr, false);
      if (j.is_discarded()) continue;
      seen.push_back(j);
      if (pred(j)) return j;
    }
  }

  /// Runs hostile_client in `mode` against client `to`; its output lines.
  std::vector<std::string> runHostile(const std::string& mode, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{hostileClientPath(), "--runtime-dir", dir_.path(), "--scope", SCOPE,
                                  "--mode", mode, "--linger-ms", "3000"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    ChildProcess::Options o;
    o.pipeStdout = true;
    ChildProcess p(argv, o);
    std::vector<std::string> lines;
    while (auto line = p.readLine(30s)) lines.push_back(*line);
    EXPECT_EQ(p.waitExitCode(10s), 0) << p.stderrText();
    return lines;
  }

  static std::string joined(const std::vector<std::string>& lines) {
    std::string s;
    for (const auto& l : lines) s += "  | " + l + "\n";
    return s;
  }

  /// `who` posts `data` to client `to` through the reference service worker (POST_TO) and the
  /// reply says it was delivered.
  void postTo(ScriptClient& who, const std::string& to, const json& data, int id) {
    who.send({{"op", "messageSW"}, {"id", id}, {"data", {{"type", "POST_TO"}, {"id", to}, {"data", data}}},
              {"timeoutMs", 5000}});
    auto r = who.waitResult(id, 10s);
    ASSERT_TRUE(r.has_value()) << daemon_->log();
    ASSERT_EQ(r->value("event", ""), "ok") << r->dump();
  }

  /// A messageSW round trip of `who`: once it is answered, everything the daemon had queued for
  /// `who` before it has been read by `who` (one down ring, in order).
  void roundTrip(ScriptClient& who, int id) {
    who.send({{"op", "messageSW"}, {"id", id}, {"data", {{"type", "GET_VERSION"}}}, {"timeoutMs", 30000}});
    auto r = who.waitResult(id, 60s);
    ASSERT_TRUE(r.has_value()) << "no answer; daemon log:\n" << daemon_->log();
    ASSERT_EQ(r->value("event", ""), "ok") << r->dump();
  }

  /// A listener that was sent a malformed relay must still be the same attached client: a POST_TO
  /// from a well-behaved page reaches it, and it never lost its controller on the way.
  void expectListenerUnharmed(ChildProcess& listener, std::vector<json>& seen, const std::string& id) {
    ASSERT_TRUE(listener.running()) << "the receiving page died; daemon log:\n" << daemon_->log();
    ScriptClient good(dir_.path(), SCOPE);
    ASSERT_FALSE(good.clientId().empty());
    postTo(good, id, "still-here", 1);
    auto m = waitLine(listener, seen, [](const json& e) { return e.value("data", json()) == json("still-here"); });
    ASSERT_TRUE(m.has_value()) << "the receiving page no longer gets messages";
    for (const auto& e : seen)
      EXPECT_NE(e.value("event", ""), "controllerchange") << "the receiving page lost its controller: " << e.dump();
  }

  TempDir dir_;
  std::optional<Daemon> daemon_;
};

// Finding 1: a port whose queued message holds a text where the Value struct belongs. Before, the
// daemon relayed it and the listener died on an uncaught kj::Exception starting the port.
TEST_F(RelayTest, WrongKindQueuedMessageIsTheSendersViolation) {
  auto listener = startListener();
  std::vector<json> seen;
  auto attached = waitLine(listener, seen, [](const json& e) { return e.value("event", "") == "attached"; });
  ASSERT_TRUE(attached.has_value());
  const std::string victim = attached->value("clientId", "");

  auto out = runHostile("relay-wrong-kind-queued", {"--to", victim});
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), "disconnected ProtocolViolation") << joined(out);
  EXPECT_TRUE(eventually([&] { return daemon_->log().find("malformed relayed payload") != std::string::npos; }))
      << daemon_->log();
  expectListenerUnharmed(listener, seen, victim);
  for (const auto& e : seen) EXPECT_NE(e.value("event", ""), "port.message") << e.dump();
}

// Finding 2: the same payload posted on a port whose peer the listener holds. Before, the listener
// took it for its daemon's protocol violation: it dropped the connection and re-attached.
TEST_F(RelayTest, WrongKindPortPostIsTheSendersViolation) {
  auto listener = startListener();
  std::vector<json> seen;
  auto attached = waitLine(listener, seen, [](const json& e) { return e.value("event", "") == "attached"; });
  ASSERT_TRUE(attached.has_value());
  const std::string victim = attached->value("clientId", "");

  auto out = runHostile("relay-wrong-kind-post", {"--to", victim});
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), "disconnected ProtocolViolation") << joined(out);
  // The port arrived (relayed before the bad post), and closed when its sender was cut off.
  auto closed = waitLine(listener, seen, [](const json& e) { return e.value("event", "") == "port.close"; });
  EXPECT_TRUE(closed.has_value()) << "the relayed port never closed";
  expectListenerUnharmed(listener, seen, victim);
  for (const auto& e : seen) {
    EXPECT_NE(e.value("event", ""), "port.message") << e.dump();
    EXPECT_NE(e.value("event", ""), "messageerror") << e.dump();
  }
}

// Finding 6, unstarted port: another page's 1,500 x 200 kB posts on a port the victim has not
// started. Before, the victim held every one of them (295 MiB).
TEST_F(RelayTest, FloodAtUnstartedPortStaysBounded) {
  ScriptClient victim(dir_.path(), SCOPE);
  ScriptClient attacker(dir_.path(), SCOPE);
  const std::string victimId = victim.clientId();
  ASSERT_FALSE(victimId.empty());
  ASSERT_FALSE(attacker.clientId().empty());
  victim.send({{"op", "startMessages"}});
  attacker.send({{"op", "channel.create"}, {"id", 1}, {"port1", "p1"}, {"port2", "p2"}});
  ASSERT_TRUE(attacker.waitResult(1).has_value());
  attacker.send({{"op", "post"}, {"id", 2}, {"data", {{"type", "RELAY_PORT"}, {"to", victimId}}}, {"transfer", {"p2"}}});
  ASSERT_TRUE(attacker.waitResult(2).has_value());
  auto relayed = victim.waitFor([](const json& e) { return e.value("event", "") == "message" && !e["ports"].empty(); });
  ASSERT_TRUE(relayed.has_value()) << daemon_->log();
  const std::string port = relayed->at("ports")[0].get<std::string>();
  roundTrip(victim, 10);
  const long before = rssKiB(victim.pid());

  const std::string big(FLOOD_BYTES, 'x');
  for (int i = 0; i < FLOOD_MESSAGES; ++i) attacker.send({{"op", "port.post"}, {"port", "p1"}, {"data", big}});
  roundTrip(attacker, 3);  // the daemon has routed every post
  roundTrip(victim, 11);   // ...and the victim has read them all
  const long growth = rssKiB(victim.pid()) - before;
  RecordProperty("victim_rss_growth_kib", static_cast<int>(growth));
  std::printf("victim RSS growth: %ld KiB (unstarted port, %d x %zu B)\n", growth, FLOOD_MESSAGES, FLOOD_BYTES);
  if (rssFiguresHold()) EXPECT_LT(growth, MAX_GROWTH_KIB);

  // Started: what was held arrives, then one messageerror for the dropped ones; the page runs on.
  victim.send({{"op", "port.start"}, {"port", port}});
  auto err = victim.waitFor([&](const json& e) { return e.value("event", "") == "messageerror" && e.value("port", "") == port; },
                            20s);
  EXPECT_TRUE(err.has_value()) << "no messageerror for the dropped messages";
  roundTrip(victim, 12);
  int delivered = 0;
  for (const auto& e : victim.seen())
    if (e.value("event", "") == "port.message") ++delivered;
  EXPECT_GT(delivered, 0);
  EXPECT_LT(delivered, FLOOD_MESSAGES);
}

// Finding 6, before startMessages: 1,500 x 200 kB client posts (POST_TO through the service
// worker) to a page that has not started its messages. Before, it held them all.
TEST_F(RelayTest, FloodBeforeStartMessagesStaysBounded) {
  ScriptClient victim(dir_.path(), SCOPE);
  ScriptClient attacker(dir_.path(), SCOPE);
  const std::string victimId = victim.clientId();
  ASSERT_FALSE(victimId.empty());
  ASSERT_FALSE(attacker.clientId().empty());
  roundTrip(victim, 10);
  const long before = rssKiB(victim.pid());

  const std::string big(FLOOD_BYTES, 'x');
  for (int i = 0; i < FLOOD_MESSAGES; ++i)
    attacker.send({{"op", "post"}, {"data", {{"type", "POST_TO"}, {"id", victimId}, {"data", big}}}});
  roundTrip(attacker, 3);  // the service worker has posted every one
  roundTrip(victim, 11);   // ...and the victim has read them all
  const long growth = rssKiB(victim.pid()) - before;
  RecordProperty("victim_rss_growth_kib", static_cast<int>(growth));
  std::printf("victim RSS growth: %ld KiB (held, %d x %zu B)\n", growth, FLOOD_MESSAGES, FLOOD_BYTES);
  if (rssFiguresHold()) EXPECT_LT(growth, MAX_GROWTH_KIB);

  victim.send({{"op", "startMessages"}});
  auto err = victim.waitFor([](const json& e) { return e.value("event", "") == "messageerror"; }, 20s);
  EXPECT_TRUE(err.has_value()) << "no messageerror for the dropped messages";
  roundTrip(victim, 12);
  int delivered = 0;
  for (const auto& e : victim.seen())
    if (e.value("event", "") == "message") ++delivered;
  EXPECT_GT(delivered, 0);
  EXPECT_LT(delivered, FLOOD_MESSAGES);
}

// Finding 7 (ports): a client registering 20,000 pairs and never answering portClosed (so each
// end it keeps is a tombstone). Before, the daemon kept every one; now it is refused at the quota.
TEST_F(RelayTest, PortQuotaRefusesTheRequester) {
  auto out = runHostile("port-quota", {"--ports", "20000", "--linger-ms", "200"});
  ASSERT_GE(out.size(), 2u) << joined(out);
  const std::string& verdict = out[out.size() - 2];
  ASSERT_EQ(verdict.rfind("refused QuotaExceededError after ", 0), 0u) << joined(out);
  // Counted when sent: the refusal comes back while later posts are on their way.
  const long after = std::stol(verdict.substr(std::string("refused QuotaExceededError after ").size()));
  EXPECT_LT(after, 20000);
  EXPECT_EQ(out.back(), "still-connected") << "a quota refusal is not a disconnection";
  // The daemon's log line: "... would own N ports (it owns M; --max-ports-per-client 4096) ...".
  std::smatch m;
  std::string log;
  ASSERT_TRUE(eventually([&] {
    log = daemon_->log();
    return std::regex_search(log, m, std::regex(R"(it owns (\d+); --max-ports-per-client 4096)"));
  })) << log;
  EXPECT_LE(std::stol(m[1].str()), 4096);
  ScriptClient good(dir_.path(), SCOPE);
  ASSERT_FALSE(good.clientId().empty());
  roundTrip(good, 1);
}

}  // namespace
}  // namespace swipc::testing
