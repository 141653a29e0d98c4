// Seeded chaos (issue 14): one real sw_daemon, a few long-lived "survivor" pages and a stream of
// "victim" pages, all page_client processes in script mode. Survivors exchange numbered messages
// over a BroadcastChannel, over MessagePorts (a ring of ports between them, relayed through the
// reference service worker's RELAY_PORT), and with the controller (post ECHO, messageSW ECHO /
// GET_VERSION). Victims join the same channel, hand ports to survivors, post on everything, and
// are kill -9'd, SIGSTOP'ed and SIGCONT'ed at seeded random moments. At the end:
//   - every op that carried an id got exactly one outcome (ok or error), on every page;
//   - per (receiver, sender, stream) the numbers arrive strictly increasing: nothing duplicated or
//     reordered, for survivors and victims alike (a stopped victim may be lapped, never misled);
//   - between survivors nothing is lost: a receiver has exactly the numbers whose post reported ok;
//   - from victims: every BroadcastChannel post / ECHO that reported ok arrived, none that reported
//     an error did;
//   - the daemon is healthy: its fd count back to the baseline, RSS growth bounded, it answers
//     GET_VERSION, its counters agree (clients, ports, channels, no protocol violation), and
//     there is no new /dev/shm entry.
// The seed comes from SWIPC_CHAOS_SEED (default fixed) and is printed with every failure.
// Random delays between actions only pick the moment of the next action; every wait for an
// outcome is a deadline on an event.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "process.h"
#include "test_scope.h"

namespace swipc::testing {
namespace {

using nlohmann::json;

constexpr uint32_t DEFAULT_SEED = 20240614;
constexpr int SURVIVORS = 4;        // >= 3: each survivor's two ring ports lead to different pages
constexpr int MAX_LIVE_VICTIMS = 6;
constexpr int TOTAL_VICTIMS = 40;
constexpr int CHAOS_STEPS = 1000;
constexpr const char* SW_VERSION = "chaos-sw";
constexpr const char* CHANNEL = "chaos";

#if defined(__SANITIZE_ADDRESS__)
constexpr auto SETTLE = 40s;  // ASan on a loaded 2-core machine
#else
constexpr auto SETTLE = 20s;
#endif

uint32_t chaosSeed() {
  const char* s = std::getenv("SWIPC_CHAOS_SEED");
  return s && *s ? static_cast<uint32_t>(std::strtoul(s, nullptr, 10)) : DEFAULT_SEED;
}

/// What an op with an id was, so its outcome can be checked and booked.
struct PendingOp {
  std::string stream;  // "bc", "port:<port name>", "echo", or "" (no numbered message)
  int64_t n = -1;      // the number the message carried
  json expectData;     // messageSW: the reply it must resolve with (null: not checked)
};

/// One page_client as the test models it.
struct Page {
  int index = 0;  // the sender number "s" in every payload it posts
  bool survivor = false;
  std::unique_ptr<ScriptClient> sc;
  std::string id;
  enum class State { RUNNING, STOPPED, GONE } state = State::RUNNING;

  int nextOpId = 1;
  std::map<int, PendingOp> outstanding;
  // Outcomes of numbered posts, per stream ("bc", "echo", "port:<name>"): numbers that reported
  // ok / error, in the order they were posted.
  std::map<std::string, std::vector<int64_t>> okSeqs, errSeqs;
  std::map<std::string, int64_t> nextSeq;  // per stream

  // Received numbers, per "<kind>:<sender index>" (kind: bc, port, echo).
  std::map<std::string, std::vector<int64_t>> got;
  // Names of ports here and the index of the page at their other end.
  std::map<std::string, int> portPeer;
  std::set<std::string> ringPorts;     // survivor-survivor ports: their close is a failure
  std::vector<std::string> openPorts;  // ports leading to victims (survivors post on them too)
  int relayedOk = 0;                   // {"relayed":true} answers to its RELAY_PORTs
};

class ChaosTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = chaosSeed();
    rng_.seed(seed_);
    std::printf("chaos seed %u (rerun with SWIPC_CHAOS_SEED=%u)\n", seed_, seed_);
    // A private state dir: two runs of this test at once (plain and ASan) share the scope name.
    daemon_ = std::make_unique<Daemon>(
        dir_.path(), scope_, std::vector<std::string>{"--sw-version", SW_VERSION, "--state-dir", dir_.path() + "/state"});
    ASSERT_TRUE(daemon_->waitReady()) << daemon_->log();
  }

  void TearDown() override {
    if (HasFailure())
      std::printf("chaos failed with seed %u: rerun with SWIPC_CHAOS_SEED=%u\n", seed_, seed_);
  }

  // ---------------------------------------------------------------------------------------- ops

  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng_); }

  /// Sends `op` with a fresh id, remembering what it was.
  void sendOp(Page& p, json op, PendingOp what = {}) {
    const int id = p.nextOpId++;
    op["id"] = id;
    p.outstanding[id] = std::move(what);
    p.sc->send(op);
  }

  /// A numbered payload from `p` on `stream` (the number is booked when its outcome arrives).
  json numbered(Page& p, const std::string& stream, int64_t& n, size_t pad = 0) {
    n = p.nextSeq[stream]++;
    json data = json::object();
    data["s"] = p.index;
    data["n"] = n;
    if (pad) data["p"] = std::string(pad, 'x');
    return data;
  }

  /// Padding for controller and port posts: mostly small, sometimes past a ring record (the
  /// out-of-line memfd path, whose fds must all come back).
  size_t randomPad() {
    const int r = uniform(0, 99);
    if (r < 4) return static_cast<size_t>(uniform(70'000, 300'000));
    if (r < 20) return static_cast<size_t>(uniform(100, 4000));
    return 0;
  }

  void bcPost(Page& p) {
    int64_t n;
    json data = numbered(p, "bc", n, chance(0.1) ? static_cast<size_t>(uniform(10, 1500)) : 0);
    json op = json::object();
    op["op"] = "bc.post";
    op["bc"] = "b";
    op["data"] = data;
    sendOp(p, op, {"bc", n, nullptr});
  }

  void portPost(Page& p, const std::string& port) {
    int64_t n;
    json data = numbered(p, "port:" + port, n, randomPad());
    json op = json::object();
    op["op"] = "port.post";
    op["port"] = port;
    op["data"] = data;
    sendOp(p, op, {"port:" + port, n, nullptr});
  }

  /// controller.postMessage({"type":"ECHO",...}): the service worker replies to event.source.
  void echoPost(Page& p) {
    int64_t n;
    json data = numbered(p, "echo", n, randomPad());
    data["type"] = "ECHO";
    json op = json::object();
    op["op"] = "post";
    op["data"] = data;
    sendOp(p, op, {"echo", n, nullptr});
  }

  void messageSw(Page& p, bool version) {
    json data = json::object();
    json expect;
    if (version) {
      data["type"] = "GET_VERSION";
      expect = SW_VERSION;
    } else {
      int64_t n;
      data = numbered(p, "msw", n, randomPad());
      data["type"] = "ECHO";
      expect = data;
    }
    json op = json::object();
    op["op"] = "messageSW";
    op["data"] = data;
    op["timeoutMs"] = p.survivor ? 30000 : 3000;
    sendOp(p, op, {"", -1, p.survivor ? expect : json()});
  }

  /// Creates a MessageChannel in `p` (both ends named), starts `keep`, and ships `give` to
  /// page `to` through RELAY_PORT.
  void relayNewPort(Page& p, const std::string& keep, const std::string& give, const Page& to) {
    json create = json::object();
    create["op"] = "channel.create";
    create["port1"] = keep;
    create["port2"] = give;
    sendOp(p, create);
    json start = json::object();
    start["op"] = "port.start";
    start["port"] = keep;
    sendOp(p, start);
    p.portPeer[keep] = to.index;
    json relay = json::object();
    relay["op"] = "post";
    relay["data"] = json::object();
    relay["data"]["type"] = "RELAY_PORT";
    relay["data"]["to"] = to.id;
    relay["transfer"] = json::array({give});
    sendOp(p, relay);
  }

  // ---------------------------------------------------------------------------------------- events

  void problem(const Page& p, const std::string& what) {
    problems_.push_back((p.survivor ? "survivor " : "victim ") + std::to_string(p.index) + ": " + what);
  }

  /// The page index a client id belongs to, or -1.
  int indexOf(const std::string& clientId) const {
    auto it = idToIndex_.find(clientId);
    return it == idToIndex_.end() ? -1 : it->second;
  }
  bool isSurvivorIndex(int i) const { return i >= 0 && i < SURVIVORS; }

  /// Books one numbered message received on `key` ("<kind>:<sender>").
  void received(Page& p, const std::string& kind, const json& data) {
    if (!data.is_object() || !data.contains("s") || !data.contains("n")) {
      problem(p, kind + " without a number: " + data.dump().substr(0, 200));
      return;
    }
    p.got[kind + ":" + std::to_string(data["s"].get<int>())].push_back(data["n"].get<int64_t>());
  }

  void onResult(Page& p, const json& ev) {
    const bool ok = ev.value("event", "") == "ok";
    if (!ev.contains("id") || !ev["id"].is_number_integer()) {
      // Every op carries an id, so an error without one is a page-side failure of its own.
      if (p.survivor) problem(p, "outcome without an op id: " + ev.dump().substr(0, 300));
      return;
    }
    const int id = ev["id"].get<int>();
    auto it = p.outstanding.find(id);
    if (it == p.outstanding.end()) {
      problem(p, "second or unknown outcome for op " + std::to_string(id) + ": " + ev.dump().substr(0, 200));
      return;
    }
    PendingOp op = std::move(it->second);
    p.outstanding.erase(it);
    if (!op.stream.empty()) (ok ? p.okSeqs : p.errSeqs)[op.stream].push_back(op.n);
    if (!ok && p.survivor) {
      // Survivors live through the whole run next to a healthy daemon: nothing they do may fail.
      problem(p, "op failed: " + ev.dump().substr(0, 300));
    }
    if (ok && !op.expectData.is_null() && ev.value("data", json()) != op.expectData)
      problem(p, "messageSW resolved with the wrong data: " + ev.value("data", json()).dump().substr(0, 200));
  }

  /// A message from the service worker: a relayed port, an ECHO reply, or a RELAY_PORT answer.
  void onMessage(Page& p, const json& ev) {
    const json data = ev.value("data", json());
    const std::string type = data.is_object() ? data.value("type", "") : "";
    if (type == "PORT") {
      const auto ports = ev.value("ports", json::array());
      if (ports.size() != 1) return problem(p, "PORT with " + std::to_string(ports.size()) + " ports");
      const std::string name = ports[0].get<std::string>();
      const int from = indexOf(data.value("from", ""));
      p.portPeer[name] = from;
      if (isSurvivorIndex(from) && p.survivor) p.ringPorts.insert(name);
      else p.openPorts.push_back(name);
      json start = json::object();
      start["op"] = "port.start";
      start["port"] = name;
      sendOp(p, start);
    } else if (type == "ECHO") {
      received(p, "echo", data);
    } else if (data.is_object() && data.contains("relayed")) {
      if (data["relayed"] == true) ++p.relayedOk;
      else if (p.survivor) problem(p, "RELAY_PORT refused: " + data.dump());
    } else {
      problem(p, "unexpected message " + ev.dump().substr(0, 200));
    }
  }

  void onPortMessage(Page& p, const json& ev) {
    const std::string port = ev.value("port", "");
    const json data = ev.value("data", json());
    auto peer = p.portPeer.find(port);
    if (peer != p.portPeer.end() && data.is_object() && data.value("s", -2) != peer->second)
      problem(p, "message from page " + std::to_string(data.value("s", -2)) + " on port " + port +
                     " whose peer is page " + std::to_string(peer->second));
    received(p, "port", data);
  }

  void handle(Page& p, const json& ev) {
    const std::string e = ev.value("event", "");
    if (e == "ok" || e == "error") return onResult(p, ev);
    if (e == "bc.message") return received(p, "bc", ev.value("data", json()));
    if (e == "port.message") return onPortMessage(p, ev);
    if (e == "message") return onMessage(p, ev);
    if (e == "attached") return;
    if (e == "port.close") {
      const std::string port = ev.value("port", "");
      if (p.ringPorts.count(port)) problem(p, "ring port " + port + " closed");
      return;
    }
    // Lapped readers, undecodable payloads and controller changes are legitimate for a victim
    // that was stopped (or disconnected as unresponsive); a survivor must never see them.
    if (p.survivor) problem(p, "unexpected event " + ev.dump().substr(0, 300));
  }

  /// Reads and handles what `p` printed, until it is quiet (or `maxLines`).
  void pump(Page& p, int maxLines = 400) {
    if (p.state == Page::State::GONE) return;
    for (int i = 0; i < maxLines; ++i) {
      // (2 ms: waitFor hands readLine what is left of its timeout in whole milliseconds)
      auto ev = p.sc->waitFor([](const json&) { return true; }, 2ms);
      if (!ev) return;
      handle(p, *ev);
    }
  }

  void pumpAll() {
    for (auto& p : pages_) pump(*p);
  }

  /// Drains every page until `pred` holds or the timeout passes.
  bool pumpUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
    const auto deadline = TestClock::now() + timeout;
    for (;;) {
      pumpAll();
      if (pred()) return true;
      if (TestClock::now() >= deadline) return false;
    }
  }

  /// Keeps draining for `d` (the seeded pause before the next chaos action).
  void pumpFor(std::chrono::milliseconds d) {
    const auto until = TestClock::now() + d;
    do pumpAll();
    while (TestClock::now() < until);
  }

  // ---------------------------------------------------------------------------------------- pages

  Page& spawn(bool survivor) {
    auto p = std::make_unique<Page>();
    p->index = static_cast<int>(pages_.size());
    p->survivor = survivor;
    p->sc = std::make_unique<ScriptClient>(dir_.path(), scope_);
    p->id = p->sc->clientId();
    if (p->id.empty()) {
      problem(*p, "did not attach");
      p->state = Page::State::GONE;
    } else {
      idToIndex_[p->id] = p->index;
    }
    pages_.push_back(std::move(p));
    Page& page = *pages_.back();
    if (page.state == Page::State::GONE) return page;
    json start = json::object();
    start["op"] = "startMessages";
    sendOp(page, start);
    json open = json::object();
    open["op"] = "bc.open";
    open["bc"] = "b";
    open["name"] = CHANNEL;
    sendOp(page, open);
    return page;
  }

  std::vector<Page*> survivors() {
    std::vector<Page*> out;
    for (auto& p : pages_)
      if (p->survivor) out.push_back(p.get());
    return out;
  }
  std::vector<Page*> liveVictims() {
    std::vector<Page*> out;
    for (auto& p : pages_)
      if (!p->survivor && p->state != Page::State::GONE) out.push_back(p.get());
    return out;
  }

  /// SIGKILL (running or stopped), and the page is reaped.
  void kill9(Page& v) {
    v.sc->process().signal(SIGKILL);
    ++kills_;
    if (!v.sc->process().waitExit(10s)) problem(v, "did not die of SIGKILL");
    pump(v);  // what it printed before it died (outcomes and messages) still counts
    v.state = Page::State::GONE;
    v.outstanding.clear();  // the outcomes it never printed died with it
  }

  /// A new victim: joins the channel, ships a port to a random survivor, posts a little.
  void spawnVictim() {
    Page& v = spawn(false);
    ++victimsSpawned_;
    if (v.state == Page::State::GONE) return;
    Page& to = *survivors()[static_cast<size_t>(uniform(0, SURVIVORS - 1))];
    relayNewPort(v, "mine", "theirs", to);
    for (int i = uniform(0, 3); i > 0; --i) victimAct(v);
  }

  void victimAct(Page& v) {
    switch (uniform(0, 5)) {
      case 0:
      case 1: bcPost(v); break;
      case 2: portPost(v, "mine"); break;
      case 3: echoPost(v); break;
      case 4: messageSw(v, chance(0.5)); break;
      default: {
        json f = json::object();
        f["op"] = "setFocus";
        f["focused"] = chance(0.5);
        sendOp(v, f);
      }
    }
  }

  void survivorAct(Page& s) {
    switch (uniform(0, 9)) {
      case 0:
      case 1:
      case 2: bcPost(s); break;
      case 3:
      case 4: {
        // One of its two ring ports (to the next survivor, or back to the previous one).
        std::vector<std::string> ring(s.ringPorts.begin(), s.ringPorts.end());
        portPost(s, ring[static_cast<size_t>(uniform(0, static_cast<int>(ring.size()) - 1))]);
        break;
      }
      case 5: echoPost(s); break;
      case 6: messageSw(s, chance(0.3)); break;
      case 7:
      case 8:
        // A port whose other end is (or was) a victim: posting there must never hurt us.
        if (!s.openPorts.empty())
          portPost(s, s.openPorts[static_cast<size_t>(uniform(0, static_cast<int>(s.openPorts.size()) - 1))]);
        else
          bcPost(s);
        break;
      default: {
        json f = json::object();
        f["op"] = "setVisibility";
        f["state"] = chance(0.5) ? "visible" : "hidden";
        sendOp(s, f);
      }
    }
  }

  /// One seeded chaos action. New victims are paced over the run, so some live at its end.
  void chaosStep(int step) {
    auto victims = liveVictims();
    const int r = uniform(0, 99);
    const bool mayRunVictim = victimsSpawned_ < 3 + (step + 1) * (TOTAL_VICTIMS - 3) / CHAOS_STEPS &&
                              static_cast<int>(victims.size()) < MAX_LIVE_VICTIMS;
    if (r < 12 && mayRunVictim) {
      spawnVictim();
      return;
    }
    if (r < 50 || victims.empty()) {
      survivorAct(*survivors()[static_cast<size_t>(uniform(0, SURVIVORS - 1))]);
      return;
    }
    Page& v = *victims[static_cast<size_t>(uniform(0, static_cast<int>(victims.size()) - 1))];
    if (r < 80) {
      if (v.state == Page::State::RUNNING) victimAct(v);  // (ops to a stopped one pile up in its pipe)
    } else if (r < 88) {
      if (v.state == Page::State::RUNNING) {
        v.sc->process().signal(SIGSTOP);
        v.state = Page::State::STOPPED;
        ++stops_;
      } else {
        v.sc->process().signal(SIGCONT);
        ++conts_;
        v.state = Page::State::RUNNING;
      }
    } else if (r < 93) {
      kill9(v);
    } else if (v.state == Page::State::STOPPED) {
      v.sc->process().signal(SIGCONT);
      v.state = Page::State::RUNNING;
    } else {
      victimAct(v);
    }
  }

  // ---------------------------------------------------------------------------------------- checks

  /// No number twice, none out of order, on every stream every page received.
  void checkOrder() {
    for (auto& p : pages_)
      for (const auto& [key, seqs] : p->got)
        for (size_t i = 1; i < seqs.size(); ++i)
          if (seqs[i] <= seqs[i - 1]) {
            problem(*p, key + ": " + std::to_string(seqs[i]) + " after " + std::to_string(seqs[i - 1]));
            break;
          }
  }

  /// The numbers survivor `r` must have received from survivor `s`, per kind.
  std::map<std::string, std::vector<int64_t>> expectedFromSurvivor(const Page& s, const Page& r) {
    std::map<std::string, std::vector<int64_t>> want;
    const std::string tag = ":" + std::to_string(s.index);
    if (&s == &r) {
      auto it = s.okSeqs.find("echo");
      if (it != s.okSeqs.end() && !it->second.empty()) want["echo" + tag] = it->second;
      return want;
    }
    if (auto it = s.okSeqs.find("bc"); it != s.okSeqs.end() && !it->second.empty()) want["bc" + tag] = it->second;
    for (const auto& [port, peer] : s.portPeer)
      if (peer == r.index)
        if (auto it = s.okSeqs.find("port:" + port); it != s.okSeqs.end() && !it->second.empty())
          want["port" + tag] = it->second;
    return want;
  }

  /// Between survivors: every number whose post reported ok arrived (and only those).
  bool survivorsComplete(bool report) {
    bool all = true;
    for (Page* r : survivors())
      for (Page* s : survivors())
        for (const auto& [key, want] : expectedFromSurvivor(*s, *r)) {
          const auto it = r->got.find(key);
          const std::vector<int64_t> have = it == r->got.end() ? std::vector<int64_t>{} : it->second;
          if (have == want) continue;
          all = false;
          if (report)
            problem(*r, key + ": received " + std::to_string(have.size()) + " of " + std::to_string(want.size()) +
                            " (first difference at " +
                            std::to_string(std::mismatch(have.begin(), have.end(), want.begin(), want.end()).first -
                                           have.begin()) +
                            ")");
        }
    return all;
  }

  /// From victims: what reported ok on the channel (in the ring) or as ECHO (consumed) arrived;
  /// what reported an error did not.
  void checkVictimOutcomes() {
    for (auto& v : pages_) {
      if (v->survivor) continue;
      const std::string tag = ":" + std::to_string(v->index);
      for (Page* r : survivors()) {
        auto got = r->got.count("bc" + tag) ? r->got["bc" + tag] : std::vector<int64_t>{};
        std::set<int64_t> have(got.begin(), got.end());
        for (int64_t n : v->okSeqs["bc"])
          if (!have.count(n)) problem(*r, "bc" + tag + ": #" + std::to_string(n) + " reported ok but never arrived");
        for (int64_t n : v->errSeqs["bc"])
          if (have.count(n)) problem(*r, "bc" + tag + ": #" + std::to_string(n) + " reported an error but arrived");
      }
      // ECHO replies go back to the victim itself.
      auto echoes = v->got["echo" + tag];
      std::set<int64_t> have(echoes.begin(), echoes.end());
      for (int64_t n : v->errSeqs["echo"])
        if (have.count(n)) problem(*v, "ECHO #" + std::to_string(n) + " reported an error but was answered");
    }
  }

  std::string problemText() const {
    std::string t;
    for (const auto& p : pages_) {
      if (!p->survivor || p->outstanding.empty()) continue;
      t += "  survivor " + std::to_string(p->index) + ": " + std::to_string(p->outstanding.size()) + " ops open, last events:\n";
      const auto& seen = p->sc->seen();
      for (size_t i = seen.size() > 6 ? seen.size() - 6 : 0; i < seen.size(); ++i)
        t += "    " + seen[i].dump().substr(0, 200) + "\n";
    }
    for (size_t i = 0; i < problems_.size() && i < 40; ++i) t += "  " + problems_[i] + "\n";
    if (problems_.size() > 40) t += "  ... " + std::to_string(problems_.size() - 40) + " more\n";
    return t;
  }

  TempDir dir_;  // first: destroyed after the processes that use it
  std::string scope_ = testScope();
  std::unique_ptr<Daemon> daemon_;
  uint32_t seed_ = DEFAULT_SEED;
  std::mt19937 rng_;
  std::vector<std::unique_ptr<Page>> pages_;
  std::map<std::string, int> idToIndex_;
  std::vector<std::string> problems_;
  int victimsSpawned_ = 0;
  int kills_ = 0, stops_ = 0, conts_ = 0, exits_ = 0;  // what the chaos did (printed at the end)
};

TEST_F(ChaosTest, SeededChaosLosesNothingAmongSurvivorsAndLeavesTheDaemonClean) {
  SCOPED_TRACE("chaos seed " + std::to_string(seed_) + " (SWIPC_CHAOS_SEED)");
  const auto t0 = TestClock::now();
  const pid_t dpid = daemon_->pid();
  const auto shmBefore = devShmEntries();

  // Survivors: attach, join the channel, and link up in a ring of relayed ports.
  for (int i = 0; i < SURVIVORS; ++i) spawn(true);
  ASSERT_TRUE(problems_.empty()) << problemText();
  auto ss = survivors();
  for (int i = 0; i < SURVIVORS; ++i) {
    Page& s = *ss[static_cast<size_t>(i)];
    relayNewPort(s, "next", "give", *ss[static_cast<size_t>((i + 1) % SURVIVORS)]);
    s.ringPorts.insert("next");
  }
  ASSERT_TRUE(pumpUntil(
      [&] {
        for (Page* s : ss)
          if (s->ringPorts.size() != 2 || s->relayedOk != 1 || !s->outstanding.empty()) return false;
        return true;
      },
      SETTLE))
      << "survivor ring not set up\n" << problemText() << daemon_->log();

  // Warm-up (lazily created daemon state, allocator pools): a few victims come and go.
  for (int i = 0; i < 3; ++i) spawnVictim();
  pumpFor(50ms);
  for (Page* v : liveVictims()) kill9(*v);
  ASSERT_TRUE(eventually(
      [&] {
        auto c = readCounters(*daemon_);
        return c && c->value("clients", -1) == SURVIVORS;
      },
      SETTLE))
      << daemon_->log();
  pumpAll();
  const int baselineFds = openFdCount(dpid);
  const long baselineRss = rssKiB(dpid);
  const auto baseCounters = readCounters(*daemon_);
  ASSERT_TRUE(baseCounters.has_value());

  // Chaos.
  for (int step = 0; step < CHAOS_STEPS; ++step) {
    chaosStep(step);
    pumpFor(std::chrono::milliseconds(uniform(0, 12)));
    if (!daemon_->process().running()) FAIL() << "daemon died at step " << step << "\n" << daemon_->log();
  }
  const int spawned = victimsSpawned_;

  // Victims still alive: let them finish what they were doing (every op gets its outcome), then
  // end them, half by kill -9 and half by a graceful exit.
  for (Page* v : liveVictims())
    if (v->state == Page::State::STOPPED) {
      v->sc->process().signal(SIGCONT);
      v->state = Page::State::RUNNING;
    }
  const bool victimsSettled = pumpUntil(
      [&] {
        for (Page* v : liveVictims())
          if (!v->outstanding.empty()) return false;
        return true;
      },
      SETTLE);
  for (Page* v : liveVictims())
    if (!v->outstanding.empty()) problem(*v, std::to_string(v->outstanding.size()) + " ops never got an outcome");
  EXPECT_TRUE(victimsSettled);
  for (Page* v : liveVictims()) {
    if (chance(0.5)) {
      kill9(*v);
    } else {
      json op = json::object();
      op["op"] = "exit";
      op["code"] = 0;
      v->sc->send(op);
      ++exits_;
      if (v->sc->process().waitExitCode(10s) != 0) problem(*v, "graceful exit failed");
      pump(*v);
      v->state = Page::State::GONE;
    }
  }

  // Survivors: every op answered and every message between them arrived.
  const bool settled = pumpUntil(
      [&] {
        for (Page* s : ss)
          if (!s->outstanding.empty()) return false;
        return survivorsComplete(false);
      },
      SETTLE);
  for (Page* s : ss)
    if (!s->outstanding.empty()) problem(*s, std::to_string(s->outstanding.size()) + " ops never got an outcome");
  if (!settled) survivorsComplete(true);
  checkOrder();
  checkVictimOutcomes();
  EXPECT_TRUE(problems_.empty()) << problems_.size() << " problems:\n" << problemText();

  // The daemon: still serving, everything the victims held reclaimed.
  EXPECT_TRUE(daemon_->process().running()) << daemon_->log();
  messageSw(*ss[0], true);
  EXPECT_TRUE(pumpUntil([&] { return ss[0]->outstanding.empty(); }, SETTLE)) << "no answer to GET_VERSION";
  std::optional<json> counters;
  EXPECT_TRUE(eventually(
      [&] {
        counters = readCounters(*daemon_);
        return counters && counters->value("clients", -1) == SURVIVORS &&
               counters->value("portsOpen", -1) == baseCounters->value("portsOpen", -2) &&
               counters->value("channelsOpen", -1) == baseCounters->value("channelsOpen", -2);
      },
      SETTLE))
      << "counters now " << (counters ? counters->dump() : "none") << "\nat baseline " << baseCounters->dump();
  ASSERT_TRUE(counters.has_value());
  EXPECT_EQ(counters->value("protocolViolations", -1), 0);
  EXPECT_GE(counters->value("attached", 0), baseCounters->value("attached", 0) + spawned - 3);
  EXPECT_GE(counters->value("broadcastsPosted", 0), baseCounters->value("broadcastsPosted", 0));
  EXPECT_TRUE(eventually([&] { return openFdCount(dpid) <= baselineFds + 4; }, SETTLE))
      << "daemon fds " << openFdCount(dpid) << " vs baseline " << baselineFds;
  const long rssGrowthKiB = rssKiB(dpid) - baselineRss;
  EXPECT_LT(rssGrowthKiB, 64 * 1024) << "daemon RSS " << rssKiB(dpid) << " KiB vs baseline " << baselineRss;
  std::vector<std::string> added;
  for (const auto& e : devShmEntries())
    if (std::find(shmBefore.begin(), shmBefore.end(), e) == shmBefore.end()) added.push_back(e);
  EXPECT_TRUE(added.empty()) << "new /dev/shm entry: " << added.front();

  size_t fromSurvivors = 0, fromVictims = 0;
  for (Page* s : ss)
    for (const auto& [key, seqs] : s->got)
      (isSurvivorIndex(std::stoi(key.substr(key.find(':') + 1))) ? fromSurvivors : fromVictims) += seqs.size();
  std::printf("chaos seed %u: %d victims, %d kill -9, %d SIGSTOP, %d SIGCONT, %d exits; survivors received %zu messages "
              "from survivors, %zu from victims; daemon fds %d (baseline %d), RSS +%ld KiB, %lld ms\n",
              seed_, spawned, kills_, stops_, conts_, exits_, fromSurvivors, fromVictims, openFdCount(dpid), baselineFds,
              rssGrowthKiB, static_cast<long long>(msSince(t0)));
}

}  // namespace
}  // namespace swipc::testing
