// FederationFixture: what the federation tests share (DESIGN §16): a real 3-server NATS cluster
// with JetStream on 127.0.0.1 (nats_cluster.h) and sw_daemon processes of one scope as three
// hosts (each its own runtime and state dir, --nats at a different server, --node n1/n2/n3),
// with page_client pages on each. Skips when nats-server is not installed.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nats_cluster.h"
#include "swipc/testing.h"

namespace swipc::testing {

using nlohmann::json;

/// What one BroadcastChannel object of a page has received so far.
struct Received {
  std::vector<json> messages;  // data of each bc.message, in order
  uint64_t missed = 0;         // sum of bc.lapped
};

class FederationFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!NatsCluster::available()) GTEST_SKIP() << "nats-server is not installed (apt-get install nats-server)";
    cluster_ = std::make_unique<NatsCluster>(3);
    scope_ = testScope();
  }
  void TearDown() override {
    nodes_.clear();  // daemons and pages first, then the servers
    cluster_.reset();
  }

  /// Node `i` (0-based, named n<i+1>): a daemon of the shared scope with --nats at server i.
  Scope& startNode(size_t i, const std::vector<std::string>& extraArgs = {}) {
    ScopeOptions o;
    o.scope = scope_;
    // debug: each node logs which channels the others announced (see interestKnown).
    o.daemonArgs = {"--nats", cluster_->url(i), "--node", nodeName(i), "--log-level", "debug"};
    o.daemonArgs.insert(o.daemonArgs.end(), extraArgs.begin(), extraArgs.end());
    auto s = std::make_unique<Scope>(o);
    nodes_[i] = std::move(s);
    return *nodes_[i];
  }
  static std::string nodeName(size_t i) { return "n" + std::to_string(i + 1); }
  Scope& node(size_t i) { return *nodes_.at(i); }

  /// Every running node has heard every other's heartbeat (so each subscription is in place).
  bool meshFormed(std::chrono::milliseconds timeout = 20000ms) {
    return eventually(
        [&] {
          for (auto& [i, s] : nodes_)
            for (auto& [j, t] : nodes_)
              if (i != j && s->daemon().log().find("node " + nodeName(j) + " joined") == std::string::npos) return false;
          return true;
        },
        timeout);
  }

  /// Every running node knows that each other running node with an object of `channel` has one
  /// (it logged "node <n> wants '<channel>'"): posts made from now on are published to them.
  /// DESIGN §16: a remote object is a destination once its node announced it (within 1 s).
  bool interestKnown(const std::string& channel, std::chrono::milliseconds timeout = 10000ms) {
    return eventually(
        [&] {
          for (auto& [j, holder] : nodes_) {
            if (!holder->daemon().process().running() || holder->daemon().log().find("channel '" + channel + "' opened") == std::string::npos)
              continue;
            for (auto& [i, s] : nodes_)
              if (i != j && s->daemon().process().running() &&
                  s->daemon().log().find("node " + nodeName(j) + " wants '" + channel + "'") == std::string::npos)
                return false;
          }
          return true;
        },
        timeout);
  }

  /// Node `i` is past its grace after connecting: it publishes by the others' announced
  /// interest (it logged so, at debug level).
  bool publishingByInterest(size_t i, std::chrono::milliseconds timeout = 10000ms) {
    return eventually(
        [&] {
          return node(i).daemon().log().find("publishing by the other nodes' announced interest") != std::string::npos;
        },
        timeout);
  }

  static void open(ScriptClient& page, const std::string& bc, const std::string& name) {
    auto r = page.call({{"op", "bc.open"}, {"bc", bc}, {"name", name}});
    ASSERT_TRUE(r && (*r)["event"] == "ok") << (r ? r->dump() : "no answer");
  }

  /// Reads `page`'s bc events of object `bc` until `done` holds (or the deadline).
  static bool collect(ScriptClient& page, const std::string& bc, Received& into,
                      const std::function<bool(const Received&)>& done, std::chrono::milliseconds timeout = 20000ms) {
    const auto deadline = TestClock::now() + timeout;
    while (!done(into)) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - TestClock::now());
      if (left.count() <= 0) return false;
      auto e = page.waitFor(
          [&](const json& ev) {
            return (ev["event"] == "bc.message" || ev["event"] == "bc.lapped") && ev.value("bc", "") == bc;
          },
          left);
      if (!e) return done(into);
      if ((*e)["event"] == "bc.message")
        into.messages.push_back((*e)["data"]);
      else
        into.missed += (*e)["missed"].get<uint64_t>();
    }
    return true;
  }

  /// The "i" of each message from `from`, in arrival order.
  static std::vector<int> seqFrom(const Received& r, const std::string& from) {
    std::vector<int> out;
    for (const auto& m : r.messages)
      if (m.value("from", "") == from) out.push_back(m["i"].get<int>());
    return out;
  }
  static std::vector<int> range(int from, int to) {  // [from, to)
    std::vector<int> v;
    for (int i = from; i < to; ++i) v.push_back(i);
    return v;
  }
  static void post(ScriptClient& page, const std::string& bc, const std::string& from, int i) {
    page.send({{"op", "bc.post"}, {"bc", bc}, {"data", {{"from", from}, {"i", i}}}});
  }

  /// n1 and n2 up, a page on each with channel `name` open as `bc`, and each node knowing the
  /// other wants it: {the page on n1, the page on n2}. For tests that then disturb the two.
  std::pair<ScriptClient*, ScriptClient*> twoNodesSharing(const std::string& bc, const std::string& name) {
    startNode(0);
    startNode(1);
    EXPECT_TRUE(meshFormed());
    ScriptClient& a = node(0).page();
    ScriptClient& b = node(1).page();
    open(a, bc, name);
    open(b, bc, name);
    EXPECT_TRUE(interestKnown(name));
    return {&a, &b};
  }
  /// Post 1 from `sender` reaches `reader` whole, nothing missed, and both daemons still run.
  void expectServiceGoesOn(ScriptClient& sender, ScriptClient& reader, const std::string& bc) {
    post(sender, bc, "s", 1);
    Received r;
    ASSERT_TRUE(collect(reader, bc, r, [](const Received& x) { return !x.messages.empty(); }));
    EXPECT_EQ(seqFrom(r, "s"), std::vector<int>{1});
    EXPECT_EQ(r.missed, 0u);
    EXPECT_TRUE(node(0).daemon().process().running());
    EXPECT_TRUE(node(1).daemon().process().running());
  }

  /// The reference SW's answer to `data` sent by `page` (messageSW), or null.
  static json ask(ScriptClient& page, const json& data, int timeoutMs = 10000) {
    auto r = page.call({{"op", "messageSW"}, {"data", data}, {"timeoutMs", timeoutMs}},
                       std::chrono::milliseconds(timeoutMs + 5000));
    if (!r || (*r)["event"] != "ok") return nullptr;
    return (*r)["data"];
  }

  std::unique_ptr<NatsCluster> cluster_;
  std::string scope_;
  std::map<size_t, std::unique_ptr<Scope>> nodes_;
};

}  // namespace swipc::testing
