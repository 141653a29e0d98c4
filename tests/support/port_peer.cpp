// port_peer: a MessagePort end built on the library (no JSON line per message), for the port
// tests that move many messages or kill a process at a chosen step. Pairs reach other processes
// through the reference service worker's RELAY_PORT (DESIGN §7): the port travels sender ->
// daemon -> the client named by --to, which gets {"type":"PORT","from":...} with the port.
//
//   port_peer send  --runtime-dir DIR --scope S --to ID --count N [--before K]
//       Creates a MessageChannel, posts messages 0..K-1 on port1 while port2 is still here (they
//       wait at port2, which is not started), ships port2 to ID (RELAY_PORT), then posts K..N-1.
//   port_peer relay --runtime-dir DIR --scope S --to ID [--after-queued K] [--die-after-relay]
//       Waits for a port (not started: messages queue at it), until K messages wait at it, then
//       ships it on to ID. --die-after-relay: SIGKILL itself right after the post returned.
//   port_peer recv  --runtime-dir DIR --scope S --count N [--hold-until-queued K]
//       Waits for a port; with K, first waits (port not started) until K messages wait at it;
//       then starts it and checks that messages 0..N-1 arrive once each, in order.
//   port_peer hold  --runtime-dir DIR --scope S --ports N
//       Creates N channels and ships every port2 to itself (RELAY_PORT to its own id), so that
//       all 2N ends live here and are registered with the daemon; posts one message on each
//       port1 and waits until every returned port2 has it. Then one stdin line: "close" closes
//       every end (half by close(), half by dropping the last handle) and reports "closed".
//
// Every message is the Value {"i": index}. stdout, one JSON object per line, flushed:
//   all:   {"event":"attached","clientId":ID}   first line
//          {"event":"close"}                    the port here got `close` (peer closed or died)
//          {"event":"error","message":"..."}    then exit 1 (exit 2 on timeout)
//   send:  {"event":"transferred","neutered":bool} port2 was posted away (and its handle here
//          says whether it is neutered); {"event":"sent","count":N}; {"event":"message","data":V}
//          for anything arriving on port1 (nothing should).
//   relay: {"event":"port"}, {"event":"relaying","queued":q}, then {"event":"relayed",
//          "neutered":bool,"ghostOk":bool} (ghostOk: posting on the neutered handle returned ok).
//   recv:  {"event":"port"}, {"event":"held","queued":q,"delivered":d} (with K), then
//          {"event":"done","received":r,"distinct":u,"dups":d,"disorder":o,"bad":b,"timeout":bool}.
//   hold:  {"event":"holding","ports":2N,"pinged":N}, {"event":"closed"}.
// After its job every mode keeps serving its loop (and reporting "close") until stdin reaches
// EOF or reads "exit".
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "swipc/client.h"
#include "swipc/json.h"
#include "swipc/message_port.h"
#include "swipc/value.h"

namespace {

using namespace std::chrono_literals;

struct Options {
  std::string mode;
  std::string runtimeDir;
  std::string scope = "default";
  std::string to;
  long count = 0;
  long before = 0;
  long afterQueued = 0;
  long holdUntilQueued = 0;
  long ports = 0;
  bool dieAfterRelay = false;
  long timeoutMs = 30000;
};

void line(const std::string& s) {
  std::fputs(s.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

std::string boolText(bool b) { return b ? "true" : "false"; }

[[noreturn]] void fail(const std::string& why, int code = 1) {
  line("{\"event\":\"error\",\"message\":" + nlohmann::json(why).dump() + "}");
  std::exit(code);
}

Options parse(int argc, char** argv) {
  Options o;
  if (argc < 2) fail("usage: port_peer send|relay|recv|hold --runtime-dir DIR --scope S ...", 2);
  o.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--die-after-relay") {
      o.dieAfterRelay = true;
      continue;
    }
    if (i + 1 >= argc) fail("missing value for " + std::string(a), 2);
    const char* v = argv[++i];
    if (a == "--runtime-dir") o.runtimeDir = v;
    else if (a == "--scope") o.scope = v;
    else if (a == "--to") o.to = v;
    else if (a == "--count") o.count = std::atol(v);
    else if (a == "--before") o.before = std::atol(v);
    else if (a == "--after-queued") o.afterQueued = std::atol(v);
    else if (a == "--hold-until-queued") o.holdUntilQueued = std::atol(v);
    else if (a == "--ports") o.ports = std::atol(v);
    else if (a == "--timeout-ms") o.timeoutMs = std::atol(v);
    else fail("unknown option " + std::string(a), 2);
  }
  return o;
}

swipc::Client connectOrFail(const Options& o) {
  swipc::ClientOptions co;
  co.scope = o.scope;
  co.runtimeDir = o.runtimeDir;
  co.reconnect = false;
  auto c = swipc::Client::connect(co);
  if (!c) fail("connect: " + c.error().describe());
  return std::move(*c);
}

swipc::Value numbered(long i) { return swipc::Value::map({{"i", int64_t{i}}}); }

/// Posts on `port`, retrying (and running the loop) while the up ring is full.
void postOrFail(swipc::Client& client, swipc::MessagePort& port, const swipc::Value& v, swipc::Deadline deadline) {
  for (;;) {
    auto r = port.postMessage(v);
    if (r) return;
    if (r.error().code != swipc::Errc::QUEUE_FULL) fail("port post: " + r.error().describe());
    if (swipc::Clock::now() >= deadline) fail("timed out posting", 2);
    client.dispatch();
  }
}

/// Ships `port` to client `to` through the reference service worker's RELAY_PORT.
void relayOrFail(swipc::Client& client, const std::string& to, swipc::MessagePort port) {
  auto* controller = client.controller();
  if (!controller) fail("no controller");
  auto r = controller->postMessage(swipc::Value::map({{"type", "RELAY_PORT"}, {"to", to}}), {std::move(port)});
  if (!r) fail("RELAY_PORT post: " + r.error().describe());
}

/// Collects the ports that RELAY_PORT delivers to this client ({"type":"PORT"} messages).
void collectRelayedPorts(swipc::Client& client, std::vector<swipc::MessagePort>& into) {
  client.onMessage([&into](const swipc::MessageEvent& e) {
    if (e.data["type"].textOr("") != "PORT") return;
    for (const auto& p : e.ports) into.push_back(p);
  });
  client.startMessages();
}

/// Keeps the loop running until stdin reaches EOF or reads "exit"; `onLine` gets other lines.
void linger(swipc::Client& client, const std::function<void(const std::string&)>& onLine = {}) {
  std::string buffer;
  for (;;) {
    pollfd fds[] = {{client.fd(), POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
    ::poll(fds, 2, 100);  // bounded: the library's loop also has timers
    client.dispatch();
    if (!fds[1].revents) continue;
    char buf[4096];
    ssize_t r = ::read(STDIN_FILENO, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;  // EOF
    buffer.append(buf, static_cast<size_t>(r));
    for (auto nl = buffer.find('\n'); nl != std::string::npos; nl = buffer.find('\n')) {
      std::string l = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      if (l == "exit") return;
      if (onLine) onLine(l);
      client.dispatch();
    }
  }
}

// ------------------------------------------------------------------------------------------------ modes

int runSend(const Options& o, swipc::Client& client, swipc::Deadline deadline) {
  if (o.to.empty() || o.count <= 0 || o.before < 0 || o.before > o.count) fail("send needs --to and --count", 2);
  auto ch = swipc::MessageChannel::create(client);
  ch.port1.onMessage([](const swipc::MessageEvent& e) {
    line("{\"event\":\"message\",\"data\":" + swipc::toJsonText(e.data) + "}");
  });
  ch.port1.onClose([] { line("{\"event\":\"close\"}"); });
  long i = 0;
  for (; i < o.before; ++i) postOrFail(client, ch.port1, numbered(i), deadline);
  swipc::MessagePort shipped = ch.port2;  // a second handle to the same port, to look at later
  relayOrFail(client, o.to, std::move(ch.port2));
  line("{\"event\":\"transferred\",\"neutered\":" + boolText(shipped.neutered()) + "}");
  for (; i < o.count; ++i) postOrFail(client, ch.port1, numbered(i), deadline);
  line("{\"event\":\"sent\",\"count\":" + std::to_string(o.count) + "}");
  linger(client);
  return 0;
}

swipc::MessagePort waitForPort(swipc::Client& client, std::vector<swipc::MessagePort>& ports,
                               swipc::Deadline deadline) {
  if (!client.runUntil([&] { return !ports.empty(); }, deadline)) fail("timed out waiting for a port", 2);
  line("{\"event\":\"port\"}");
  return ports.front();
}

int runRelay(const Options& o, swipc::Client& client, swipc::Deadline deadline) {
  if (o.to.empty()) fail("relay needs --to", 2);
  std::vector<swipc::MessagePort> ports;
  collectRelayedPorts(client, ports);
  swipc::MessagePort port = waitForPort(client, ports, deadline);
  ports.clear();
  if (!client.runUntil([&] { return port.queuedCount() >= static_cast<size_t>(o.afterQueued); }, deadline))
    fail("timed out waiting for " + std::to_string(o.afterQueued) + " queued messages (have " +
             std::to_string(port.queuedCount()) + ")",
         2);
  line("{\"event\":\"relaying\",\"queued\":" + std::to_string(port.queuedCount()) + "}");
  swipc::MessagePort kept = port;
  relayOrFail(client, o.to, std::move(port));
  if (o.dieAfterRelay) ::raise(SIGKILL);
  const bool ghostOk = kept.postMessage(swipc::Value::map({{"ghost", true}})).ok();
  line("{\"event\":\"relayed\",\"neutered\":" + boolText(kept.neutered()) + ",\"ghostOk\":" + boolText(ghostOk) +
       "}");
  linger(client);
  return 0;
}

int runRecv(const Options& o, swipc::Client& client, swipc::Deadline deadline) {
  if (o.count <= 0) fail("recv needs --count", 2);
  std::vector<swipc::MessagePort> ports;
  collectRelayedPorts(client, ports);
  swipc::MessagePort port = waitForPort(client, ports, deadline);
  ports.clear();
  bool closed = false;
  port.onClose([&closed] {
    closed = true;
    line("{\"event\":\"close\"}");
  });
  uint64_t received = 0, distinct = 0, dups = 0, disorder = 0, bad = 0;
  int64_t last = -1;
  std::vector<bool> seen(static_cast<size_t>(o.count), false);
  auto handler = [&](const swipc::MessageEvent& e) {
    ++received;
    const int64_t i = e.data["i"].intOr(-1);
    if (i < 0 || i >= o.count) {
      ++bad;
      return;
    }
    if (seen[static_cast<size_t>(i)]) {
      ++dups;
    } else {
      seen[static_cast<size_t>(i)] = true;
      ++distinct;
    }
    if (i <= last) ++disorder;
    last = std::max(last, i);
  };
  if (o.holdUntilQueued > 0) {
    if (!client.runUntil([&] { return port.queuedCount() >= static_cast<size_t>(o.holdUntilQueued); }, deadline))
      fail("timed out waiting for " + std::to_string(o.holdUntilQueued) + " held messages (have " +
               std::to_string(port.queuedCount()) + ")",
           2);
    line("{\"event\":\"held\",\"queued\":" + std::to_string(port.queuedCount()) +
         ",\"delivered\":" + std::to_string(received) + "}");
  }
  port.onMessage(handler);  // starts the port
  const bool finished = client.runUntil([&] { return received >= static_cast<uint64_t>(o.count) || closed; }, deadline);
  // Anything more that is already here (duplicates would be) gets counted too.
  client.dispatch();
  line("{\"event\":\"done\",\"received\":" + std::to_string(received) + ",\"distinct\":" + std::to_string(distinct) +
       ",\"dups\":" + std::to_string(dups) + ",\"disorder\":" + std::to_string(disorder) +
       ",\"bad\":" + std::to_string(bad) + ",\"timeout\":" + boolText(!finished) + "}");
  linger(client);
  return 0;
}

int runHold(const Options& o, swipc::Client& client, swipc::Deadline deadline) {
  if (o.ports <= 0) fail("hold needs --ports", 2);
  const size_t n = static_cast<size_t>(o.ports);
  std::vector<swipc::MessagePort> returned;
  returned.reserve(n);
  collectRelayedPorts(client, returned);
  std::vector<swipc::MessagePort> kept;
  kept.reserve(n);
  const std::string self = client.id().toString();
  constexpr size_t BATCH = 100;  // keeps the daemon's backlog for us small
  for (size_t k = 0; k < n; ++k) {
    auto ch = swipc::MessageChannel::create(client);
    kept.push_back(ch.port1);
    relayOrFail(client, self, std::move(ch.port2));
    if ((k + 1) % BATCH == 0 && !client.runUntil([&] { return returned.size() >= k + 1; }, deadline))
      fail("timed out: " + std::to_string(returned.size()) + " of " + std::to_string(k + 1) + " ports came back", 2);
  }
  if (!client.runUntil([&] { return returned.size() >= n; }, deadline))
    fail("timed out: " + std::to_string(returned.size()) + " of " + std::to_string(n) + " ports came back", 2);
  // Each end works: one message on every port1 reaches the returned port2.
  size_t pinged = 0;
  for (auto& p : returned) p.onMessage([&pinged](const swipc::MessageEvent&) { ++pinged; });
  for (size_t k = 0; k < n; ++k) postOrFail(client, kept[k], numbered(static_cast<long>(k)), deadline);
  if (!client.runUntil([&] { return pinged >= n; }, deadline))
    fail("timed out: " + std::to_string(pinged) + " of " + std::to_string(n) + " pings arrived", 2);
  line("{\"event\":\"holding\",\"ports\":" + std::to_string(2 * n) + ",\"pinged\":" + std::to_string(pinged) + "}");
  linger(client, [&](const std::string& l) {
    if (l != "close") return;
    for (size_t k = 0; k < n; k += 2) {  // even pairs: close() both ends
      kept[k].close();
      returned[k].close();
    }
    kept.clear();  // odd pairs (and the closed ones): the last handles go away
    returned.clear();
    client.dispatch();
    line("{\"event\":\"closed\"}");
  });
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const auto deadline = swipc::deadlineIn(std::chrono::milliseconds(o.timeoutMs));
  swipc::Client client = connectOrFail(o);
  line("{\"event\":\"attached\",\"clientId\":\"" + client.id().toString() + "\"}");
  if (o.mode == "send") return runSend(o, client, deadline);
  if (o.mode == "relay") return runRelay(o, client, deadline);
  if (o.mode == "recv") return runRecv(o, client, deadline);
  if (o.mode == "hold") return runHold(o, client, deadline);
  fail("unknown mode " + o.mode, 2);
}
