// bc_peer: a BroadcastChannel member built on the library (no JSON lines per message), for the
// broadcast tests that move many messages: a receiver that checks order and counts gaps, and a
// sender that posts numbered messages.
//
//   bc_peer recv --runtime-dir DIR --scope S --channel NAME --senders M --per-sender C
//                [--objects K] [--report-every N] [--timeout-ms T]
//   bc_peer send --runtime-dir DIR --scope S --channel NAME --sender X --count C
//                [--batch N] [--pad BYTES] [--timeout-ms T]
//
// Every message is the Value {"s": sender index, "i": index from 0} (plus "p": BYTES of padding
// when --pad is given). stdout, one JSON object per line, flushed:
//
//   recv: {"event":"joined"}                      all K objects have joined (posts reach them now)
//         {"event":"progress","received":n}       object 0 received a multiple of --report-every
//         {"event":"lapped","object":k,"missed":n} object k fell behind the ring
//         {"event":"done","objects":[{"received":r,"missed":m,"gaps":g,"disorder":d,"bad":b,
//                                     "lapped":l},...]}
//             once every object has received + missed >= M*C. `gaps` counts the indices each
//             object never saw, per sender, including those after the last one it saw; with
//             nothing lost gaps == missed == 0, and a lapped reader has gaps == missed.
//   send: {"event":"joined"}, then {"event":"batch","sent":n} after each --batch messages (and it
//         reads one stdin line before posting the next batch), then {"event":"sent","count":C,
//         "received":r} once the daemon has consumed every post (the last one is acknowledged);
//         r counts others' posts its own object received. {"event":"lapped",...} as for recv.
//   both: {"event":"error","message":"..."} and exit 1 when something fails; exit 2 on timeout.
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "swipc/broadcast_channel.h"
#include "swipc/client.h"
#include "swipc/value.h"

namespace {

using namespace std::chrono_literals;

struct Options {
  std::string mode;
  std::string runtimeDir;
  std::string scope = "default";
  std::string channel;
  long senders = 1;
  long perSender = 0;
  long objects = 1;
  long reportEvery = 0;
  long sender = 0;
  long count = 0;
  long batch = 0;
  long pad = 0;
  long timeoutMs = 60000;
};

[[noreturn]] void fail(const std::string& why, int code = 1) {
  std::printf("{\"event\":\"error\",\"message\":\"%s\"}\n", why.c_str());
  std::fflush(stdout);
  std::exit(code);
}

Options parse(int argc, char** argv) {
  Options o;
  if (argc < 2) fail("usage: bc_peer recv|send --runtime-dir DIR --scope S --channel NAME ...", 2);
  o.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string_view a = argv[i];
    if (i + 1 >= argc) fail("missing value for " + std::string(a), 2);
    const char* v = argv[++i];
    if (a == "--runtime-dir") o.runtimeDir = v;
    else if (a == "--scope") o.scope = v;
    else if (a == "--channel") o.channel = v;
    else if (a == "--senders") o.senders = std::atol(v);
    else if (a == "--per-sender") o.perSender = std::atol(v);
    else if (a == "--objects") o.objects = std::atol(v);
    else if (a == "--report-every") o.reportEvery = std::atol(v);
    else if (a == "--sender") o.sender = std::atol(v);
    else if (a == "--count") o.count = std::atol(v);
    else if (a == "--batch") o.batch = std::atol(v);
    else if (a == "--pad") o.pad = std::atol(v);
    else if (a == "--timeout-ms") o.timeoutMs = std::atol(v);
    else fail("unknown option " + std::string(a), 2);
  }
  if (o.channel.empty()) fail("--channel is required", 2);
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

void line(const std::string& s) {
  std::fputs(s.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

// ------------------------------------------------------------------------------------------------ recv

struct ObjectStats {
  uint64_t received = 0;
  uint64_t missed = 0;
  uint64_t gaps = 0;
  uint64_t disorder = 0;
  uint64_t bad = 0;
  uint64_t lapped = 0;
  std::vector<int64_t> last;  // last index seen per sender, -1 before the first
};

int runRecv(const Options& o) {
  if (o.senders <= 0 || o.perSender <= 0 || o.objects <= 0) fail("recv needs --senders, --per-sender, --objects > 0", 2);
  const uint64_t expected = static_cast<uint64_t>(o.senders) * static_cast<uint64_t>(o.perSender);
  const auto deadline = swipc::deadlineIn(std::chrono::milliseconds(o.timeoutMs));
  swipc::Client client = connectOrFail(o);

  std::vector<ObjectStats> stats(static_cast<size_t>(o.objects));
  std::vector<std::unique_ptr<swipc::BroadcastChannel>> objects;
  for (long k = 0; k < o.objects; ++k) {
    auto& st = stats[static_cast<size_t>(k)];
    st.last.assign(static_cast<size_t>(o.senders), -1);
    auto bc = std::make_unique<swipc::BroadcastChannel>(client, o.channel);
    bc->onMessage([&st, &o, k](const swipc::MessageEvent& e) {
      const int64_t s = e.data["s"].intOr(-1);
      const int64_t i = e.data["i"].intOr(-1);
      if (s < 0 || s >= o.senders || i < 0 || i >= o.perSender) {
        ++st.bad;
        return;
      }
      int64_t& last = st.last[static_cast<size_t>(s)];
      if (i <= last) {
        ++st.disorder;
      } else {
        st.gaps += static_cast<uint64_t>(i - last - 1);
        last = i;
      }
      ++st.received;
      if (k == 0 && o.reportEvery > 0 && st.received % static_cast<uint64_t>(o.reportEvery) == 0)
        line("{\"event\":\"progress\",\"received\":" + std::to_string(st.received) + "}");
    });
    bc->onLapped([&st, k](uint64_t missed) {
      st.missed += missed;
      ++st.lapped;
      line("{\"event\":\"lapped\",\"object\":" + std::to_string(k) + ",\"missed\":" + std::to_string(missed) + "}");
    });
    objects.push_back(std::move(bc));
  }
  auto allJoined = [&] {
    for (auto& b : objects)
      if (!b->joined()) return false;
    return true;
  };
  if (!client.runUntil(allJoined, deadline)) fail("timed out joining", 2);
  line("{\"event\":\"joined\"}");

  auto done = [&] {
    for (auto& st : stats)
      if (st.received + st.missed < expected) return false;
    return true;
  };
  const bool finished = client.runUntil(done, deadline);
  std::string out = "{\"event\":\"done\",\"timeout\":" + std::string(finished ? "false" : "true") + ",\"objects\":[";
  for (size_t k = 0; k < stats.size(); ++k) {
    auto& st = stats[k];
    for (int64_t last : st.last) st.gaps += static_cast<uint64_t>(o.perSender - 1 - last);  // never seen at the end
    if (k) out += ",";
    out += "{\"received\":" + std::to_string(st.received) + ",\"missed\":" + std::to_string(st.missed) +
           ",\"gaps\":" + std::to_string(st.gaps) + ",\"disorder\":" + std::to_string(st.disorder) +
           ",\"bad\":" + std::to_string(st.bad) + ",\"lapped\":" + std::to_string(st.lapped) + "}";
  }
  line(out + "]}");
  return finished ? 0 : 2;
}

// ------------------------------------------------------------------------------------------------ send

/// Blocks until stdin has a line (or EOF); the test's "go" for the next batch.
bool readStdinLine() {
  std::string l;
  for (;;) {
    char ch;
    ssize_t r = ::read(STDIN_FILENO, &ch, 1);
    if (r == 1) {
      if (ch == '\n') return true;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    return false;
  }
}

int runSend(const Options& o) {
  if (o.count <= 0) fail("send needs --count > 0", 2);
  const auto deadline = swipc::deadlineIn(std::chrono::milliseconds(o.timeoutMs));
  swipc::Client client = connectOrFail(o);
  swipc::BroadcastChannel bc(client, o.channel);
  if (!client.runUntil([&] { return bc.joined(); }, deadline)) fail("timed out joining", 2);
  line("{\"event\":\"joined\"}");
  bc.onLapped([](uint64_t missed) { line("{\"event\":\"lapped\",\"object\":0,\"missed\":" + std::to_string(missed) + "}"); });
  uint64_t received = 0;
  bc.onMessage([&received](const swipc::MessageEvent&) { ++received; });

  std::optional<swipc::MessageSeq> lastSeq;
  bool acked = false;
  client.onDelivered([&](swipc::MessageSeq s) {
    if (lastSeq && s == *lastSeq) acked = true;
  });
  swipc::Bytes pad;
  pad.data.assign(static_cast<size_t>(o.pad), 0x5a);
  for (long i = 0; i < o.count; ++i) {
    swipc::Value msg = o.pad > 0 ? swipc::Value::map({{"s", int64_t{o.sender}}, {"i", int64_t{i}}, {"p", pad}})
                                 : swipc::Value::map({{"s", int64_t{o.sender}}, {"i", int64_t{i}}});
    swipc::PostOptions po;
    po.requestAck = i == o.count - 1;
    for (;;) {
      auto r = bc.postMessage(msg, po);
      if (r) {
        if (po.requestAck) lastSeq = *r;
        break;
      }
      if (r.error().code != swipc::Errc::QUEUE_FULL) fail("post " + std::to_string(i) + ": " + r.error().describe());
      if (swipc::Clock::now() >= deadline) fail("timed out posting", 2);
      client.dispatch();  // keep our own loop moving while the daemon drains
    }
    if (o.batch > 0 && (i + 1) % o.batch == 0 && i + 1 < o.count) {
      line("{\"event\":\"batch\",\"sent\":" + std::to_string(i + 1) + "}");
      if (!readStdinLine()) fail("stdin closed before the next batch");
    }
  }
  if (!client.runUntil([&] { return acked; }, deadline)) fail("timed out waiting for the last post's ack", 2);
  client.dispatch();  // whatever the ring holds for our own object now (others' posts; never ours)
  line("{\"event\":\"sent\",\"count\":" + std::to_string(o.count) + ",\"received\":" + std::to_string(received) +
       "}");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  if (o.mode == "recv") return runRecv(o);
  if (o.mode == "send") return runSend(o);
  fail("unknown mode " + o.mode, 2);
}
