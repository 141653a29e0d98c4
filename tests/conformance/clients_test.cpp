// Conformance: DESIGN §9 "Clients", one line per test, with real sw_daemon / page_client
// processes (and, where the daemon's own view must be read, a swipc::ServiceWorker on a thread of
// this process). Every wait has a deadline; nothing sleeps to synchronise.
#include <gtest/gtest.h>
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "in_process_service_worker.h"
#include "process.h"
#include "test_scope.h"
#include "swipc/client.h"
#include "swipc/service_worker.h"

namespace swipc::testing {
namespace {

using nlohmann::json;

/// One row of /proc: a process, its parent and its state letter (R, S, T, Z, ...).
struct ProcEntry {
  pid_t pid;
  pid_t ppid;
  char state;
};

/// Every process whose parent is `parent` (zombies included), by scanning /proc/*/stat.
std::vector<ProcEntry> childrenOf(pid_t parent) {
  std::vector<ProcEntry> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/stat");
    std::string line;
    if (!std::getline(f, line)) continue;
    auto close = line.rfind(')');  // comm may hold spaces and parentheses
    if (close == std::string::npos || close + 4 > line.size()) continue;
    std::istringstream rest(line.substr(close + 2));
    char state = '?';
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) out.push_back({static_cast<pid_t>(std::stol(e->d_name)), ppid, state});
  }
  ::closedir(d);
  return out;
}

/// The state letter of `pid` from /proc/PID/stat ('?' when gone).
char processState(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return '?';
  auto close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() ? '?' : line[close + 2];
}

std::vector<std::string> idsOf(const json& clientsReply) {
  std::vector<std::string> ids;
  if (!clientsReply.is_object() || !clientsReply.contains("clients")) return ids;
  for (const auto& c : clientsReply["clients"]) ids.push_back(c.value("id", ""));
  return ids;
}

std::string describeIds(const std::vector<std::string>& ids, const std::map<std::string, std::string>& names) {
  std::string s = "[";
  for (const auto& id : ids) {
    auto it = names.find(id);
    s += (s.size() > 1 ? "," : "") + (it == names.end() ? id.substr(0, 8) : it->second);
  }
  return s + "]";
}

/// page_client `listen`: prints every event as a JSON line (the first is "attached").
class ListenPage {
 public:
  ListenPage(const std::string& runtimeDir, const std::string& scope, std::vector<std::string> extraArgs = {}) {
    std::vector<std::string> argv{pageClientPath(), "--scope", scope, "--runtime-dir", runtimeDir};
    argv.insert(argv.end(), extraArgs.begin(), extraArgs.end());
    argv.push_back("listen");
    ChildProcess::Options o;
    o.pipeStdout = true;
    proc_ = ChildProcess(argv, o);
  }
  ChildProcess& process() { return proc_; }
  pid_t pid() const { return proc_.pid(); }
  /// The next event line, parsed; nullopt on timeout or EOF.
  std::optional<json> nextEvent(std::chrono::milliseconds timeout) {
    auto deadline = TestClock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - TestClock::now());
      if (left <= 0ms) return std::nullopt;
      auto line = proc_.readLine(left);
      if (!line) return std::nullopt;
      auto j = json::parse(*line, nullptr, false);
      if (!j.is_discarded()) return j;
    }
  }
  /// The client id from the "attached" line (waits for it once).
  std::string clientId(std::chrono::milliseconds timeout = 30s) {
    if (clientId_.empty()) {
      auto deadline = TestClock::now() + timeout;
      while (clientId_.empty()) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - TestClock::now());
        auto ev = nextEvent(std::max(left, 1ms));
        if (!ev) break;
        if (ev->value("event", "") == "attached") clientId_ = ev->value("clientId", "");
      }
    }
    return clientId_;
  }

 private:
  ChildProcess proc_;
  std::string clientId_;
};

const json GET_VERSION = {{"type", "GET_VERSION"}};

/// The "attached" line a script page printed (already read by clientId()).
json attachedEvent(const ScriptClient& p) {
  for (const auto& ev : p.seen())
    if (ev.value("event", "") == "attached") return ev;
  return json::object();
}

class ClientsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    // Pages the daemon spawned (openWindow) are its children, not ours: end them explicitly.
    if (daemonPid() > 0) {
      for (const auto& c : childrenOf(daemonPid())) ::kill(c.pid, SIGKILL);
    }
  }

  void startDaemon(std::vector<std::string> extraArgs = {}) {
    daemon = std::make_unique<Daemon>(dir.path(), scope, std::move(extraArgs));
    ASSERT_TRUE(daemon->waitReady()) << daemon->log();
  }
  /// sw_daemon with exactly these arguments after --scope/--runtime-dir (Daemon always adds
  /// --log-level info, and the option may be given only once).
  void startQuietDaemon(std::vector<std::string> extraArgs = {}) {
    std::vector<std::string> argv{swDaemonPath(), "--scope", scope, "--runtime-dir", dir.path(), "--log-level", "warn"};
    argv.insert(argv.end(), extraArgs.begin(), extraArgs.end());
    quietDaemon_ = ChildProcess(argv, {});
    ClientOptions o;
    o.scope = scope;
    o.runtimeDir = dir.path();
    o.type = ClientType::WORKER;
    o.reconnect = false;
    ASSERT_TRUE(eventually([&] { return Client::connect(o).ok(); }, 5s)) << quietDaemon_.stderrText();
  }
  /// Options for a swipc::ServiceWorker in this process serving this test's scope.
  ServiceWorkerOptions inProcessOptions() const {
    ServiceWorkerOptions o;
    o.scope = scope;
    o.runtimeDir = dir.path();
    o.version = "inproc";
    o.handleSignals = false;
    return o;
  }
  pid_t daemonPid() const { return daemon ? daemon->pid() : quietDaemon_.pid(); }
  /// A page_client in script mode, attached (its clientId known) before this returns.
  ScriptClient& page(std::vector<std::string> extraArgs = {}) {
    scripts_.push_back(std::make_unique<ScriptClient>(dir.path(), scope, std::move(extraArgs)));
    auto& p = *scripts_.back();
    EXPECT_EQ(p.clientId().size(), 32u) << p.process().stderrText();
    return p;
  }
  /// The client that asks the reference service worker questions: a worker, so that it never
  /// shows up in a (default, windows-only) matchAll.
  ScriptClient& querier() {
    if (!querier_) {
      querier_ = &page({"--type", "worker"});
      names[querier_->clientId()] = "Q";
    }
    return *querier_;
  }
  /// messageSW from `from`; the reply's data, or a {"$failed":...} marker (and a test failure).
  json ask(ScriptClient& from, const json& data, std::chrono::milliseconds timeout = 5000ms) {
    std::string id = "q" + std::to_string(nextId_++);
    from.send({{"op", "messageSW"}, {"id", id}, {"data", data}, {"timeoutMs", timeout.count()}});
    auto r = from.waitResult(id, timeout + 2000ms);
    if (!r) {
      ADD_FAILURE() << "no result for messageSW " << data.dump();
      return {{"$failed", "no result"}};
    }
    if (r->value("event", "") != "ok") {
      ADD_FAILURE() << "messageSW " << data.dump() << " failed: " << r->dump();
      return {{"$failed", *r}};
    }
    return (*r)["data"];
  }
  json ask(const json& data, std::chrono::milliseconds timeout = 5000ms) { return ask(querier(), data, timeout); }
  json matchAll(const json& options = json::object()) { return ask({{"type", "MATCH_ALL"}, {"options", options}}); }
  std::vector<std::string> matchAllIds(const json& options = json::object()) { return idsOf(matchAll(options)); }
  /// Runs a script op with an id on `p` and expects "ok".
  void expectOk(ScriptClient& p, json op) {
    std::string id = "op" + std::to_string(nextId_++);
    op["id"] = id;
    p.send(op);
    auto r = p.waitResult(id);
    ASSERT_TRUE(r.has_value()) << "no result for " << op.dump();
    ASSERT_EQ(r->value("event", ""), "ok") << op.dump() << " -> " << r->dump();
  }
  /// A round trip from `p` itself: everything `p` sent before it has been handled by the daemon
  /// (one client's ring is processed in order).
  void barrier(ScriptClient& p) { ask(p, GET_VERSION); }
  void setFocus(ScriptClient& p, bool focused) {
    expectOk(p, {{"op", "setFocus"}, {"focused", focused}});
    barrier(p);
  }
  void setVisibility(ScriptClient& p, const std::string& state) {
    expectOk(p, {{"op", "setVisibility"}, {"state", state}});
    barrier(p);
  }
  std::string show(const std::vector<std::string>& ids) const { return describeIds(ids, names); }

  TempDir dir;
  std::string scope = testScope();
  std::unique_ptr<Daemon> daemon;
  std::map<std::string, std::string> names;  // client id -> short name, for failure messages

 private:
  ChildProcess quietDaemon_;
  std::vector<std::unique_ptr<ScriptClient>> scripts_;
  ScriptClient* querier_ = nullptr;
  int nextId_ = 1;
};

// ------------------------------------------------------------------------------------------------ matchAll

TEST_F(ClientsTest, MatchAllDefaultReturnsControlledWindowsOnly) {
  startDaemon();
  auto& w1 = page();
  auto& u = page({"--uncontrolled"});
  auto& k = page({"--type", "worker"});
  auto& w2 = page();
  querier();

  auto reply = matchAll();
  EXPECT_EQ(idsOf(reply), (std::vector<std::string>{w1.clientId(), w2.clientId()})) << reply.dump();
  (void)u;
  (void)k;
  ASSERT_EQ(reply["clients"].size(), 2u);
  const auto& c = reply["clients"][0];
  EXPECT_EQ(c.value("type", ""), "window");
  EXPECT_EQ(c.value("frameType", ""), "top-level");
  EXPECT_EQ(c.value("url", ""), "app://" + scope + "/");
  EXPECT_EQ(c.value("focused", true), false);
  EXPECT_EQ(c.value("visibilityState", ""), "visible");
}

TEST_F(ClientsTest, MatchAllIncludeUncontrolledAddsUncontrolledClients) {
  startDaemon();
  auto& w1 = page();
  auto& u = page({"--uncontrolled"});
  auto& w2 = page();
  querier();
  EXPECT_EQ(attachedEvent(u).value("controlled", true), false);

  EXPECT_EQ(matchAllIds({{"includeUncontrolled", true}}),
            (std::vector<std::string>{w1.clientId(), u.clientId(), w2.clientId()}));
  EXPECT_EQ(matchAllIds({{"includeUncontrolled", false}}), (std::vector<std::string>{w1.clientId(), w2.clientId()}));
  // The options beside "type" instead of inside "options" (the reference service worker takes both).
  EXPECT_EQ(idsOf(ask({{"type", "MATCH_ALL"}, {"includeUncontrolled", true}})),
            (std::vector<std::string>{w1.clientId(), u.clientId(), w2.clientId()}));
}

TEST_F(ClientsTest, MatchAllTypeSelectsWindowWorkerOrAll) {
  startDaemon();
  auto& k1 = page({"--type", "worker"});
  auto& w1 = page();
  auto& k2 = page({"--type", "worker"});
  auto& w2 = page();
  auto& q = querier();
  auto& ku = page({"--type", "worker", "--uncontrolled"});

  EXPECT_EQ(matchAllIds({{"type", "window"}}), (std::vector<std::string>{w1.clientId(), w2.clientId()}));
  EXPECT_EQ(matchAllIds({{"type", "worker"}}), (std::vector<std::string>{k1.clientId(), k2.clientId(), q.clientId()}));
  EXPECT_EQ(matchAllIds({{"type", "all"}}),
            (std::vector<std::string>{w1.clientId(), w2.clientId(), k1.clientId(), k2.clientId(), q.clientId()}));
  EXPECT_EQ(matchAllIds({{"type", "worker"}, {"includeUncontrolled", true}}),
            (std::vector<std::string>{k1.clientId(), k2.clientId(), q.clientId(), ku.clientId()}));
  EXPECT_EQ(idsOf(ask({{"type", "MATCH_ALL"}, {"clientType", "worker"}})),
            (std::vector<std::string>{k1.clientId(), k2.clientId(), q.clientId()}));
  auto workers = matchAll({{"type", "worker"}});
  ASSERT_FALSE(workers["clients"].empty());
  EXPECT_EQ(workers["clients"][0].value("type", ""), "worker");
  EXPECT_EQ(workers["clients"][0].value("frameType", ""), "none");
}

TEST_F(ClientsTest, MatchAllOrdersFocusedWindowsMostRecentFirstThenByCreation) {
  startDaemon();
  // Creation order interleaves workers and windows; the querier is the last worker.
  auto& k1 = page({"--type", "worker"});
  auto& w1 = page();
  auto& w2 = page();
  auto& w3 = page();
  auto& k2 = page({"--type", "worker"});
  auto& w4 = page();
  auto& w5 = page();
  auto& w6 = page();
  auto& q = querier();
  std::vector<ScriptClient*> windows{&w1, &w2, &w3, &w4, &w5, &w6};
  std::vector<std::string> workers{k1.clientId(), k2.clientId(), q.clientId()};
  for (size_t i = 0; i < windows.size(); ++i) names[windows[i]->clientId()] = "W" + std::to_string(i + 1);
  names[k1.clientId()] = "K1";
  names[k2.clientId()] = "K2";

  // Model: focus history (most recent first), the window focused now, hidden windows.
  std::vector<std::string> history;
  std::string focusedNow;
  std::set<std::string> hidden;
  auto check = [&](const std::string& step) {
    std::vector<std::string> expected = history;
    for (auto* w : windows)
      if (std::find(history.begin(), history.end(), w->clientId()) == history.end())
        expected.push_back(w->clientId());
    auto reply = matchAll({{"type", "all"}});
    std::vector<std::string> expectedAll = expected;
    expectedAll.insert(expectedAll.end(), workers.begin(), workers.end());
    EXPECT_EQ(idsOf(reply), expectedAll)
        << "after " << step << ": got " << show(idsOf(reply)) << ", want " << show(expectedAll);
    for (const auto& c : reply["clients"]) {
      const std::string id = c.value("id", "");
      EXPECT_EQ(c.value("focused", false), id == focusedNow) << "after " << step << ": " << names[id];
      EXPECT_EQ(c.value("visibilityState", ""), hidden.count(id) ? "hidden" : "visible")
          << "after " << step << ": " << names[id];
    }
    EXPECT_EQ(matchAllIds(), expected) << "after " << step << " (default options, windows only)";
  };
  auto focus = [&](ScriptClient& w, bool on) {
    setFocus(w, on);
    const std::string id = w.clientId();
    if (on) {
      std::erase(history, id);
      history.insert(history.begin(), id);
      focusedNow = id;
    } else if (focusedNow == id) {
      focusedNow.clear();
    }
    check(names[id] + (on ? " focus" : " blur"));
  };

  check("start");
  ASSERT_NO_FATAL_FAILURE(focus(w3, true));
  ASSERT_NO_FATAL_FAILURE(focus(w5, true));
  ASSERT_NO_FATAL_FAILURE(focus(w1, true));
  ASSERT_NO_FATAL_FAILURE(focus(w3, true));   // refocus moves it back to the front
  ASSERT_NO_FATAL_FAILURE(focus(w3, false));  // blur: still focused-ever, order unchanged, nobody focused
  ASSERT_NO_FATAL_FAILURE(focus(w6, true));
  ASSERT_NO_FATAL_FAILURE(setVisibility(w2, "hidden"));  // visibility does not reorder
  hidden.insert(w2.clientId());
  check("W2 hidden");
  ASSERT_NO_FATAL_FAILURE(setFocus(k1, true));  // a worker's focus report does not make it a focused window
  check("K1 focus");
  ASSERT_NO_FATAL_FAILURE(focus(w4, true));
  ASSERT_NO_FATAL_FAILURE(focus(w5, true));
}

// DISABLED: library bug. Client::setVisibility() resends the client's remembered focus flag
// (still true: the daemon never tells W1 it lost the focus to W2), and the daemon's ClientState
// handler treats "focused && !c.focused" as a new focus, so W1 steals the focus back.
TEST_F(ClientsTest, SetVisibilityDoesNotStealFocusBack) {
  // W1 was focused, then W2 took the focus. W1 reporting its visibility must not make W1 the
  // most recently focused window again.
  startDaemon();
  auto& w1 = page();
  auto& w2 = page();
  querier();
  names[w1.clientId()] = "W1";
  names[w2.clientId()] = "W2";
  ASSERT_NO_FATAL_FAILURE(setFocus(w1, true));
  ASSERT_NO_FATAL_FAILURE(setFocus(w2, true));
  ASSERT_EQ(matchAllIds(), (std::vector<std::string>{w2.clientId(), w1.clientId()}));

  ASSERT_NO_FATAL_FAILURE(setVisibility(w1, "hidden"));

  auto reply = matchAll();
  EXPECT_EQ(idsOf(reply), (std::vector<std::string>{w2.clientId(), w1.clientId()})) << show(idsOf(reply));
  ASSERT_EQ(reply["clients"].size(), 2u);
  EXPECT_TRUE(reply["clients"][0].value("focused", false)) << reply.dump();
  EXPECT_FALSE(reply["clients"][1].value("focused", true)) << reply.dump();
}

TEST_F(ClientsTest, MatchAllResultsAreSnapshots) {
  // The daemon's own handles keep what was true when matchAll ran.
  InProcessServiceWorker sut(inProcessOptions(),
                             [](ServiceWorker& sw) {
                               sw.onMessage([](ExtendableMessageEvent& e) {
                                 if (!e.ports.empty()) (void)e.ports[0].postMessage(Value("pong"));
                               });
                             });
  auto& w1 = page();
  auto& w2 = page();
  const std::string id1 = w1.clientId(), id2 = w2.clientId();
  auto before = sut.call([](ServiceWorker& sw) { return sw.clients().matchAll(); });
  ASSERT_EQ(before.size(), 2u);

  // Change everything matchAll reports: W2 takes the focus, W1 dies, W3 arrives.
  ASSERT_NO_FATAL_FAILURE(setFocus(w2, true));
  w1.process().signal(SIGKILL);
  ASSERT_TRUE(w1.process().waitExit(5s).has_value());
  ClientId cid1;
  ASSERT_TRUE(ClientId::parse(id1, cid1));
  ASSERT_TRUE(eventually(
      [&] { return !sut.call([&](ServiceWorker& sw) { return sw.clients().get(cid1).has_value(); }); }, 2s));
  auto& w3 = page();
  auto after = sut.call([](ServiceWorker& sw) { return sw.clients().matchAll(); });

  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].id().toString(), id2);
  EXPECT_TRUE(after[0].focused());
  EXPECT_EQ(after[1].id().toString(), w3.clientId());
  // The old snapshot is untouched.
  EXPECT_EQ(before[0].id().toString(), id1);
  EXPECT_EQ(before[1].id().toString(), id2);
  EXPECT_FALSE(before[1].focused());
  EXPECT_EQ(before[0].url(), "app://" + scope + "/");
  // A handle to a gone client stays safe to use: calls fail with NotFoundError.
  auto post = sut.call([&](ServiceWorker&) { return before[0].postMessage(Value("late")); });
  ASSERT_FALSE(post.ok());
  EXPECT_EQ(post.error().code, Errc::NOT_FOUND) << post.error().describe();
  auto focus = sut.call([&](ServiceWorker&) { return before[0].focus(); });
  ASSERT_FALSE(focus.ok());
  EXPECT_EQ(focus.error().code, Errc::NOT_FOUND) << focus.error().describe();
}

// ------------------------------------------------------------------------------------------------ get

TEST_F(ClientsTest, GetReturnsClientById) {
  startDaemon();
  auto& w = page();
  auto& u = page({"--uncontrolled"});
  auto r = ask({{"type", "GET_CLIENT"}, {"id", w.clientId()}});
  ASSERT_TRUE(r.is_object()) << r.dump();
  EXPECT_EQ(r.value("id", ""), w.clientId());
  EXPECT_EQ(r.value("type", ""), "window");
  EXPECT_EQ(r.value("url", ""), "app://" + scope + "/");
  auto ru = ask({{"type", "GET_CLIENT"}, {"id", u.clientId()}});
  ASSERT_TRUE(ru.is_object()) << "get() finds uncontrolled clients too: " << ru.dump();
  EXPECT_EQ(ru.value("id", ""), u.clientId());
}

TEST_F(ClientsTest, GetReturnsNullForUnknownId) {
  startDaemon();
  page();
  EXPECT_TRUE(ask({{"type", "GET_CLIENT"}, {"id", "0123456789abcdef0123456789abcdef"}}).is_null());
  EXPECT_TRUE(ask({{"type", "GET_CLIENT"}, {"id", "not-a-client-id"}}).is_null());
  EXPECT_TRUE(ask({{"type", "GET_CLIENT"}, {"id", 42}}).is_null());
}

TEST_F(ClientsTest, GetReturnsNullForGoneClient) {
  startDaemon();
  auto& w = page();
  const std::string id = w.clientId();
  ASSERT_TRUE(ask({{"type", "GET_CLIENT"}, {"id", id}}).is_object());
  w.process().signal(SIGKILL);
  EXPECT_TRUE(eventually([&] { return ask({{"type", "GET_CLIENT"}, {"id", id}}).is_null(); }, 2s));
}

// ------------------------------------------------------------------------------------------------ claim

TEST_F(ClientsTest, ClaimControlsUncontrolledClientsAndFiresControllerChangeAtEach) {
  startDaemon();
  auto& w = page();
  auto& u1 = page({"--uncontrolled"});
  auto& u2 = page({"--uncontrolled"});
  auto& uk = page({"--type", "worker", "--uncontrolled"});
  querier();
  for (auto* p : {&u1, &u2, &uk}) ASSERT_EQ(attachedEvent(*p).value("controlled", true), false);
  // Uncontrolled: no controller to post to.
  u1.send({{"op", "post"}, {"id", "before"}, {"data", {{"type", "GET_VERSION"}}}});
  auto before = u1.waitResult("before");
  ASSERT_TRUE(before.has_value());
  EXPECT_EQ(before->value("name", ""), "InvalidStateError") << before->dump();

  auto claimed = ask({{"type", "CLAIM"}});
  EXPECT_EQ(claimed.value("claimed", -1), 3) << claimed.dump();

  for (auto* p : {&u1, &u2, &uk}) {
    auto ev = p->waitEvent("controllerchange");
    ASSERT_TRUE(ev.has_value()) << "no controllerchange at " << p->clientId();
    EXPECT_EQ(ev->value("controlled", false), true);
    EXPECT_EQ(ask(*p, GET_VERSION), "1.0.0") << "a claimed client can use its controller";
  }
  // The already-controlled window got none: its reply comes after anything CLAIM sent it.
  barrier(w);
  for (const auto& ev : w.seen()) EXPECT_NE(ev.value("event", ""), "controllerchange") << ev.dump();
  EXPECT_EQ(matchAllIds(), (std::vector<std::string>{w.clientId(), u1.clientId(), u2.clientId()}));
  EXPECT_EQ(ask({{"type", "CLAIM"}}).value("claimed", -1), 0);
}

// ------------------------------------------------------------------------------------------------ event.source

TEST_F(ClientsTest, EventSourceIdEqualsMatchAllId) {
  std::mutex m;
  std::vector<std::pair<std::string, std::string>> sources;  // (event.source.id, data.from)
  InProcessServiceWorker sut(inProcessOptions(),
                             [&](ServiceWorker& sw) {
                               sw.onMessage([&](ExtendableMessageEvent& e) {
                                 std::lock_guard lock(m);
                                 sources.emplace_back(e.source ? e.source->id().toString() : "<none>",
                                                      e.data["from"].textOr(""));
                               });
                             });
  auto& w1 = page();
  auto& k = page({"--type", "worker"});
  auto& w2 = page();
  expectOk(w1, {{"op", "post"}, {"data", {{"from", "w1"}}}});  // ok: consumed by the daemon
  expectOk(k, {{"op", "post"}, {"data", {{"from", "k"}}}});
  expectOk(w2, {{"op", "post"}, {"data", {{"from", "w2"}}}});

  auto listed = sut.call([](ServiceWorker& sw) {
    std::vector<std::string> ids;
    for (const auto& c : sw.clients().matchAll({.type = ClientType::ALL})) ids.push_back(c.id().toString());
    return ids;
  });
  std::lock_guard lock(m);
  ASSERT_EQ(sources.size(), 3u);
  EXPECT_EQ(sources[0], std::make_pair(w1.clientId(), std::string("w1")));
  EXPECT_EQ(sources[1], std::make_pair(k.clientId(), std::string("k")));
  EXPECT_EQ(sources[2], std::make_pair(w2.clientId(), std::string("w2")));
  EXPECT_EQ(listed, (std::vector<std::string>{w1.clientId(), w2.clientId(), k.clientId()}));
}

TEST_F(ClientsTest, EchoWithoutPortRepliesToEventSource) {
  startDaemon();
  auto& w1 = page();
  auto& w2 = page();
  expectOk(w1, {{"op", "startMessages"}});
  expectOk(w2, {{"op", "startMessages"}});
  expectOk(w2, {{"op", "post"}, {"data", {{"type", "ECHO"}, {"tag", "from-w2"}}}});
  auto ev = w2.waitEvent("message");
  ASSERT_TRUE(ev.has_value());
  EXPECT_EQ((*ev)["data"], (json{{"type", "ECHO"}, {"tag", "from-w2"}}));
  // W1 got nothing: its own round trip's reply is the first thing it sees.
  barrier(w1);
  for (const auto& e : w1.seen()) EXPECT_NE(e.value("event", ""), "message") << e.dump();
}

// ------------------------------------------------------------------------------------------------ gone clients

TEST_F(ClientsTest, GoneClientDropsOutOfMatchAllAtOnce) {
  startDaemon();
  auto& w1 = page();
  auto& w2 = page();
  ASSERT_EQ(matchAllIds(), (std::vector<std::string>{w1.clientId(), w2.clientId()}));

  auto t0 = TestClock::now();
  w2.process().signal(SIGKILL);
  ASSERT_TRUE(eventually([&] { return matchAllIds() == std::vector<std::string>{w1.clientId()}; }, 1s))
      << "still listed 1 s after kill -9";
  auto ms = msSince(t0);
  RecordProperty("dropMs", static_cast<int>(ms));
  std::cout << "[          ] kill -9 -> gone from matchAll in " << ms << " ms (target 100 ms)\n";
  // DESIGN §3 targets detection within 100 ms; the hard bound above (1 s) leaves room for a
  // loaded CI machine, the measured time is reported.
  if (ms > 100) std::cout << "[          ] note: slower than the 100 ms target\n";
}

TEST_F(ClientsTest, PostToGoneClientReportsNotDelivered) {
  startDaemon();
  auto& w = page();
  const std::string id = w.clientId();
  expectOk(w, {{"op", "startMessages"}});
  EXPECT_EQ(ask({{"type", "POST_TO"}, {"id", id}, {"data", "hello"}}), (json{{"delivered", true}}));
  auto ev = w.waitEvent("message");
  ASSERT_TRUE(ev.has_value());
  EXPECT_EQ((*ev)["data"], "hello");

  w.process().signal(SIGKILL);
  ASSERT_TRUE(eventually([&] { return matchAllIds().empty(); }, 2s));
  EXPECT_EQ(ask({{"type", "POST_TO"}, {"id", id}, {"data", "late"}}), (json{{"delivered", false}}));
  EXPECT_EQ(ask({{"type", "POST_TO"}, {"id", "0123456789abcdef0123456789abcdef"}, {"data", "x"}}),
            (json{{"delivered", false}}));
}

TEST_F(ClientsTest, PostsQueuedForClientThatDiesAreReportedUndelivered) {
  // Messages the daemon accepted but still held (the page had stopped draining) when the page
  // died are reported to the daemon code, one by one, never silently dropped.
  constexpr size_t BACKLOG = 8;
  std::mutex m;
  std::vector<MessageSeq> undelivered;
  auto opts = inProcessOptions();
  opts.ringBytes = 4096;
  opts.maxBacklog = BACKLOG;
  InProcessServiceWorker sut(opts,
                             [&](ServiceWorker& sw) {
                               sw.onUndelivered([&](const ClientId&, MessageSeq seq, const Error&) {
                                 std::lock_guard lock(m);
                                 undelivered.push_back(seq);
                               });
                             });
  ListenPage p(dir.path(), scope);
  ClientId id;
  ASSERT_TRUE(ClientId::parse(p.clientId(), id));
  p.process().signal(SIGSTOP);
  ASSERT_TRUE(eventually([&] { return processState(p.pid()) == 'T'; }, 2s));

  // Post until the backlog is at its bound: the ring is full and BACKLOG messages wait.
  auto accepted = sut.call([&](ServiceWorker& sw) {
    std::vector<MessageSeq> seqs;
    auto c = sw.clients().get(id);
    for (int i = 0; c && i < 10000; ++i) {
      auto r = c->postMessage(Value(std::string(200, 'x')));
      if (!r) {
        EXPECT_EQ(r.error().code, Errc::QUEUE_FULL) << r.error().describe();
        break;
      }
      seqs.push_back(*r);
    }
    return seqs;
  });
  ASSERT_GT(accepted.size(), BACKLOG);
  std::vector<MessageSeq> held(accepted.end() - BACKLOG, accepted.end());

  p.process().signal(SIGKILL);
  ASSERT_TRUE(eventually(
      [&] {
        std::lock_guard lock(m);
        return undelivered.size() >= BACKLOG;
      },
      2s));
  std::lock_guard lock(m);
  EXPECT_EQ(undelivered, held);
}

// ------------------------------------------------------------------------------------------------ focus / navigate

TEST_F(ClientsTest, FocusUncontrolledClientFailsWithInvalidStateError) {
  startDaemon();
  auto& u = page({"--uncontrolled"});
  auto r = ask({{"type", "FOCUS"}, {"id", u.clientId()}});
  ASSERT_TRUE(r.contains("error")) << r.dump();
  EXPECT_EQ(r["error"].value("name", ""), "InvalidStateError") << r.dump();
}

TEST_F(ClientsTest, NavigateUncontrolledClientFailsWithInvalidStateError) {
  startDaemon();
  auto& u = page({"--uncontrolled"});
  auto r = ask({{"type", "NAVIGATE"}, {"id", u.clientId()}, {"url", "app://elsewhere/"}});
  ASSERT_TRUE(r.contains("error")) << r.dump();
  EXPECT_EQ(r["error"].value("name", ""), "InvalidStateError") << r.dump();
  auto listed = matchAll({{"includeUncontrolled", true}});
  ASSERT_EQ(listed["clients"].size(), 1u);
  EXPECT_EQ(listed["clients"][0].value("url", ""), "app://" + scope + "/") << "a refused navigate changes nothing";
}

TEST_F(ClientsTest, FocusWorkerFailsWithTypeError) {
  startDaemon();
  auto& k = page({"--type", "worker"});
  auto r = ask({{"type", "FOCUS"}, {"id", k.clientId()}});
  ASSERT_TRUE(r.contains("error")) << r.dump();
  EXPECT_EQ(r["error"].value("name", ""), "TypeError") << r.dump();
}

TEST_F(ClientsTest, FocusMakesWindowTheMostRecentlyFocused) {
  startDaemon();
  auto& w1 = page();
  auto& w2 = page();
  auto& w3 = page();
  auto r = ask({{"type", "FOCUS"}, {"id", w2.clientId()}});
  EXPECT_EQ(r.value("id", ""), w2.clientId()) << r.dump();
  EXPECT_EQ(r.value("focused", false), true) << r.dump();
  EXPECT_EQ(matchAllIds(), (std::vector<std::string>{w2.clientId(), w1.clientId(), w3.clientId()}));
  ask({{"type", "FOCUS"}, {"id", w3.clientId()}});
  auto listed = matchAll();
  EXPECT_EQ(idsOf(listed), (std::vector<std::string>{w3.clientId(), w2.clientId(), w1.clientId()}));
  ASSERT_EQ(listed["clients"].size(), 3u);
  EXPECT_TRUE(listed["clients"][0].value("focused", false));
  EXPECT_FALSE(listed["clients"][1].value("focused", true)) << "the focus moved away from W2";
}

TEST_F(ClientsTest, NavigateTellsThePageAndChangesItsUrl) {
  startDaemon();
  auto& w = page();
  auto& other = page();
  const std::string next = "app://" + scope + "/next?x=1";
  auto r = ask({{"type", "NAVIGATE"}, {"id", w.clientId()}, {"url", next}});
  EXPECT_EQ(r.value("id", ""), w.clientId()) << r.dump();
  EXPECT_EQ(r.value("url", ""), next) << r.dump();
  auto ev = w.waitEvent("navigate");
  ASSERT_TRUE(ev.has_value()) << "no navigate event; page stderr: " << w.process().stderrText();
  EXPECT_EQ(ev->value("url", ""), next);
  auto listed = matchAll();
  ASSERT_EQ(listed["clients"].size(), 2u);
  EXPECT_EQ(listed["clients"][0].value("url", ""), next);
  EXPECT_EQ(listed["clients"][1].value("url", ""), "app://" + scope + "/");
  (void)other;
}

// ------------------------------------------------------------------------------------------------ openWindow

TEST_F(ClientsTest, OpenWindowReturnsAuxiliaryClientListedByMatchAll) {
  startDaemon();
  querier();
  const std::string url = "app://" + scope + "/opened";
  auto r = ask({{"type", "OPEN_WINDOW"}, {"url", url}}, 10s);
  ASSERT_TRUE(r.is_object()) << r.dump() << "\n" << daemon->log();
  EXPECT_EQ(r.value("frameType", ""), "auxiliary") << r.dump();
  EXPECT_EQ(r.value("url", ""), url);
  EXPECT_EQ(r.value("type", ""), "window");
  const std::string id = r.value("id", "");
  EXPECT_EQ(id.size(), 32u);
  auto listed = matchAll();
  ASSERT_EQ(idsOf(listed), std::vector<std::string>{id}) << listed.dump();
  EXPECT_EQ(listed["clients"][0].value("frameType", ""), "auxiliary");
  EXPECT_EQ(ask({{"type", "POST_TO"}, {"id", id}, {"data", "hi"}}), (json{{"delivered", true}}));
}

TEST_F(ClientsTest, OpenWindowWithFailingCommandResolvesNullQuickly) {
  startDaemon({"--window-command", "/bin/false"});
  querier();
  auto t0 = TestClock::now();
  auto r = ask({{"type", "OPEN_WINDOW"}, {"url", "app://" + scope + "/x"}}, 10s);
  auto ms = msSince(t0);
  EXPECT_TRUE(r.is_null()) << r.dump();
  EXPECT_LT(ms, 1000) << "a page that exits is a failure at once, not at the attach timeout";
  EXPECT_TRUE(eventually([&] { return childrenOf(daemonPid()).empty(); }, 2s)) << "the exited page was not reaped";
}

TEST_F(ClientsTest, OpenWindowWithMissingCommandResolvesNull) {
  startDaemon({"--window-command", dir.path() + "/no-such-program {url}"});
  querier();
  auto r = ask({{"type", "OPEN_WINDOW"}, {"url", "app://" + scope + "/x"}}, 10s);
  EXPECT_TRUE(r.is_null()) << r.dump();
  EXPECT_TRUE(matchAllIds().empty());
}

TEST_F(ClientsTest, OpenWindowThatNeverAttachesResolvesNullAtTimeoutWithoutZombie) {
  startDaemon({"--window-command", "/bin/sleep 30", "--open-window-timeout-ms", "500"});
  querier();
  auto t0 = TestClock::now();
  auto r = ask({{"type", "OPEN_WINDOW"}, {"url", "app://" + scope + "/x"}}, 10s);
  auto ms = msSince(t0);
  EXPECT_TRUE(r.is_null()) << r.dump();
  EXPECT_GE(ms, 450);
  EXPECT_LT(ms, 2000);
  std::vector<ProcEntry> left;
  EXPECT_TRUE(eventually(
      [&] {
        left = childrenOf(daemonPid());
        return left.empty();
      },
      2s))
      << "the daemon still has " << left.size() << " child(ren), first in state "
      << (left.empty() ? '-' : left[0].state);
  EXPECT_EQ(ask(GET_VERSION), "1.0.0") << "the daemon is still serving";
}

// ------------------------------------------------------------------------------------------------ scale

TEST_F(ClientsTest, MatchAllStaysExactWhileManyClientsAreKilledInWaves) {
  constexpr size_t N = 200, WAVE = 50, WAVES = 2;
  startQuietDaemon();
  querier();
  std::vector<std::unique_ptr<ListenPage>> pages;
  pages.reserve(N);
  for (size_t i = 0; i < N; ++i)
    pages.push_back(std::make_unique<ListenPage>(dir.path(), scope, std::vector<std::string>{"--log-level", "warn"}));
  std::set<std::string> alive;
  for (auto& p : pages) {
    auto id = p->clientId(30s);
    ASSERT_EQ(id.size(), 32u) << p->process().stderrText();
    alive.insert(id);
  }
  ASSERT_EQ(alive.size(), N);
  auto listedSet = [&] {
    auto ids = matchAllIds();
    return std::set<std::string>(ids.begin(), ids.end());
  };
  std::set<std::string> listed;
  ASSERT_TRUE(eventually([&] { return (listed = listedSet()) == alive; }, 5s)) << listed.size() << " listed";

  for (size_t wave = 0; wave < WAVES; ++wave) {
    auto t0 = TestClock::now();
    for (size_t i = wave * WAVE; i < (wave + 1) * WAVE; ++i) {
      alive.erase(pages[i]->clientId());
      pages[i]->process().signal(SIGKILL);
    }
    EXPECT_TRUE(eventually([&] { return (listed = listedSet()) == alive; }, 5s))
        << "wave " << wave << ": " << listed.size() << " listed, " << alive.size() << " alive";
    std::cout << "[          ] wave " << wave << ": matchAll exact " << msSince(t0) << " ms after kill -9 of "
              << WAVE << "\n";
  }
  EXPECT_EQ(listed.size(), N - WAVE * WAVES);
}

// ------------------------------------------------------------------------------------------------ slow page

TEST_F(ClientsTest, StoppedPageNeverStallsTheDaemon) {
  startDaemon({"--max-backlog", "32"});
  ListenPage p(dir.path(), scope);
  const std::string id = p.clientId();
  ASSERT_EQ(id.size(), 32u);
  auto& q = querier();
  auto& other = page({"--type", "worker"});
  p.process().signal(SIGSTOP);
  ASSERT_TRUE(eventually([&] { return processState(p.pid()) == 'T'; }, 2s));

  const std::string pad(1024, 'x');
  std::vector<int> delivered;
  int next = 0, refused = 0;
  long long worstVersionMs = 0;
  constexpr int BATCH = 16, LIMIT = 4000;
  while (refused < BATCH && next < LIMIT) {
    std::vector<std::pair<std::string, int>> batch;
    for (int i = 0; i < BATCH; ++i, ++next) {
      std::string op = "post" + std::to_string(next);
      q.send({{"op", "messageSW"},
              {"id", op},
              {"timeoutMs", 5000},
              {"data", {{"type", "POST_TO"}, {"id", id}, {"data", {{"n", next}, {"pad", pad}}}}}});
      batch.emplace_back(op, next);
    }
    for (const auto& [op, n] : batch) {
      auto r = q.waitResult(op, 7s);
      ASSERT_TRUE(r.has_value()) << "POST_TO #" << n << " got no answer: the daemon stalled";
      ASSERT_EQ(r->value("event", ""), "ok") << r->dump();
      if ((*r)["data"].value("delivered", false))
        delivered.push_back(n);
      else
        ++refused;
    }
    auto t0 = TestClock::now();
    EXPECT_EQ(ask(other, GET_VERSION), "1.0.0");
    worstVersionMs = std::max(worstVersionMs, msSince(t0));
  }
  ASSERT_GT(refused, 0) << "POST_TO never reported delivered:false after " << next << " posts";
  EXPECT_FALSE(delivered.empty());
  EXPECT_LT(worstVersionMs, 500) << "GET_VERSION from another client was slow while the page was stopped";
  std::cout << "[          ] " << delivered.size() << " delivered, " << refused
            << " refused; slowest GET_VERSION meanwhile " << worstVersionMs << " ms\n";

  p.process().signal(SIGCONT);
  std::vector<int> printed;
  while (printed.size() < delivered.size()) {
    auto ev = p.nextEvent(10s);
    ASSERT_TRUE(ev.has_value()) << "page printed " << printed.size() << " of " << delivered.size();
    if (ev->value("event", "") != "message") continue;
    printed.push_back((*ev)["data"].value("n", -1));
  }
  EXPECT_EQ(printed, delivered);
  // Nothing refused shows up later: the next message the page prints is a fresh one.
  json end;
  ASSERT_TRUE(eventually(
      [&] {
        end = ask({{"type", "POST_TO"}, {"id", id}, {"data", {{"n", -1}}}});
        return end.value("delivered", false);
      },
      5s))
      << end.dump();
  for (;;) {
    auto ev = p.nextEvent(5s);
    ASSERT_TRUE(ev.has_value());
    if (ev->value("event", "") != "message") continue;
    EXPECT_EQ((*ev)["data"].value("n", -2), -1) << ev->dump();
    break;
  }
}

}  // namespace
}  // namespace swipc::testing
