// A user's multi-process test, written with swipc::testing: a private daemon, two page_client
// pages driven by JSON lines, a kill -9.
#include <swipc/testing.h>

#include <string>

namespace {

using nlohmann::json;
using namespace std::chrono_literals;

/// Whether a call() came back as {"event":"ok",…}.
bool isOk(const std::optional<json>& result) { return result && result->value("event", "") == "ok"; }

class ChatTest : public swipc::testing::ScopeFixture {
 protected:
  // The daemon's flags, chosen by the test.
  swipc::testing::ScopeOptions scopeOptions() override { return {.daemonArgs = {"--sw-version", "chat-1"}}; }

  /// The ids clients.matchAll() lists, asked through `page`.
  static std::vector<std::string> clientIds(swipc::testing::ScriptClient& page) {
    std::vector<std::string> ids;
    auto r = page.call({{"op", "messageSW"}, {"data", {{"type", "MATCH_ALL"}}}, {"timeoutMs", 5000}});
    if (isOk(r))
      for (const auto& c : (*r)["data"]["clients"]) ids.push_back(c.value("id", ""));
    return ids;
  }
};

TEST_F(ChatTest, APostOnAChannelReachesTheOtherPage) {
  auto& alice = page();
  auto& bob = page();
  ASSERT_TRUE(isOk(bob.call({{"op", "bc.open"}, {"bc", "chat"}, {"name", "chat"}})));
  ASSERT_TRUE(isOk(alice.call({{"op", "bc.open"}, {"bc", "chat"}, {"name", "chat"}})));

  alice.send({{"op", "bc.post"}, {"bc", "chat"}, {"data", {{"text", "hi bob"}}}});

  auto got = bob.waitEvent("bc.message", 5s);
  ASSERT_TRUE(got) << "bob got no bc.message";
  EXPECT_EQ((*got)["data"]["text"], "hi bob");
}

TEST_F(ChatTest, TheWorkerAnswersWithTheVersionTheTestChose) {
  auto r = page().call({{"op", "messageSW"}, {"data", {{"type", "GET_VERSION"}}}, {"timeoutMs", 5000}});
  ASSERT_TRUE(isOk(r));
  EXPECT_EQ((*r)["data"], "chat-1");
}

TEST_F(ChatTest, APageKilledWithKillNineLeavesMatchAll) {
  auto& alice = page();
  auto& bob = page();
  const std::string bobId = bob.clientId();
  ASSERT_EQ(clientIds(alice).size(), 2u);

  ASSERT_TRUE(bob.kill9());

  EXPECT_TRUE(swipc::testing::eventually([&] { return clientIds(alice).size() == 1; }, 5s));
  EXPECT_NE(clientIds(alice).at(0), bobId);
}

TEST_F(ChatTest, PagesComeBackAfterADaemonRestart) {
  auto& alice = page();
  scope().restartDaemon();
  auto back = alice.waitFor(
      [](const json& e) { return e.value("event", "") == "controllerchange" && e.value("controlled", false); }, 10s);
  ASSERT_TRUE(back);
  EXPECT_EQ(clientIds(alice).size(), 1u);
}

}  // namespace
