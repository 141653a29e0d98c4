// federation_bench: BroadcastChannel across nodes (DESIGN §16, issue 19) against raw libnats
// publish/subscribe through the same NATS cluster in the same run.
//
//   federation_bench [--daemon PATH] [--messages N] [--latency-samples N] [--pace-us N]
//                    [--large-bytes N] [--ring-bytes N] [--rounds N]
//
// Set-up, all real processes on this machine, everything removed again at the end (on failure too):
//   - a 3-server nats-server cluster on free 127.0.0.1 ports (config files in a temp dir), polled
//     until every server reports its routes to the other two (/routez on its monitoring port);
//   - sw_daemon n1 (--nats <server 1>) and n2 (--nats <server 2>) of one scope, each with its own
//     runtime and state dir, waited for until each one's log says the other "joined";
//   - sw_daemon n0 of another scope without --nats (the local figures without federation).
//
// Each measurement is one session between a sender (this process) and a receiver (this program
// re-executed with --role receiver) on one channel, the same for every path:
//   probe   the sender posts a probe every 20 ms until the receiver says it got one (the path is
//           open end to end: subscriptions and routes in place, the channel joined);
//   paced   --latency-samples posts of 64 B, one every --pace-us (the sender sleeps in between);
//           the receiver records the one-way latency (send time stamped just before the post,
//           receive time in its message callback; one CLOCK_MONOTONIC on one machine);
//   burst   --messages posts of 64 B as fast as the sender can, then as many of --large-bytes;
//           the receiver reports how many arrived and its receive rate (first to last arrival);
//           what did not arrive is the loss, and `lapped` is what the product itself reported
//           (onLapped) or libnats dropped (slow consumer) for the raw path;
//   a marker posted every 20 ms until the receiver acknowledges it separates the phases.
// Paths:
//   remote  swipc::Client + BroadcastChannel attached to n1  →  receiver attached to n2
//   raw     libnats publisher connected to server 1  →  libnats subscriber on server 2, subject
//           swipc.<scope>-raw.bc.c<hex of the channel> (the shape the daemons use, a scope no
//           daemon subscribes to), libnats' default options (the daemon's publisher adds
//           SendAsap, see raw_sendasap below), the same pending limits as the daemon's subscription
//   local   sender and receiver both on n1 (with --nats) / both on n0 (without)
// Both sides wait blocking (the client library's default, no spinning; libnats' delivery
// thread), hence "blocking" in the metric names.
//
// Results, bench "federation_bc" (with --rounds > 1: the median over the rounds):
//   remote_latency_p50_64B_blocking, …_p99…   us     vs raw
//   remote_rate_64B_blocking, remote_rate_<large>_blocking   msg/s   vs raw
//   remote_loss_64B, remote_loss_<large>      msgs   vs raw
//   remote_lapped                             msgs reported as lapped (raw: libnats' dropped)
//   raw_sendasap_latency_p50_64B_blocking, …_p99…   us   raw with natsOptions_SetSendAsap vs raw
//           with default options (libnats' flusher thread yields 1 ms before it writes, so a paced
//           post waits up to 1 ms in the publisher's buffer; the daemon publishes with SendAsap)
//   local_latency_p50_64B_blocking, …_p99…    us     with --nats (n1) vs without (n0)
//   local_rate_64B_blocking, local_loss_64B   with --nats vs without
//   local_daemon_cpu_per_post_64B             ns     n1's CPU time (all threads, /proc schedstat)
//           over the 64 B local burst per post, vs n0's (the same burst without --nats)
//   local_other_node_cpu_per_post_64B         ns     n2's over that burst (it has no object of
//           the channel), vs n0's
//   remote_sender_daemon_cpu_per_post_64B, remote_receiver_daemon_cpu_per_post_64B   ns
//           n1's and n2's over the 64 B remote burst, vs n0's
//   (CPU per post does not depend on how the machine's cores are shared, unlike the rates.)
//   remote_machine_cpu_per_post_64B, …_<large>   ns   the whole machine's busy CPU time (/proc/stat,
//           every process: pages, daemons, NATS servers) over the remote burst per post, vs raw's
//           per message; where every core is busy the rate ratio cannot exceed baseline / value
//   local_machine_cpu_per_post_64B            ns     the same for the local burst, with --nats vs without
//   remote_nats_servers_cpu_per_post_64B      ns     the three NATS servers' CPU time over the remote
//           burst per post, vs over the raw burst per message
//   remote_busiest_thread_cpu_per_post_64B, …_<large>   ns   the CPU time over the remote burst per
//           post of the busiest thread of the sender, the receiver and the daemons n1 and n2 (which
//           thread it was goes to stderr), vs raw's busiest of sender and receiver: with a core per
//           thread (not so on a 2-core machine), rate ratio ≈ baseline / value, as far as the NATS
//           servers (shared by both paths, remote_nats_servers_cpu_per_post_64B) keep up
// Goals (issue 19), reported on stderr when missed: remote rate ≥ 0.8 × raw, remote latency
// ≤ raw + 50 us, local figures unchanged with --nats.
//
// Without nats-server installed it prints one line {"bench":"federation_bc","skipped":…} and
// exits 0.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <cctype>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "baseline.h"
#include "swipc/broadcast_channel.h"
#include "swipc/client.h"
#include "swipc/value.h"

namespace sb = swipc::bench;
using namespace std::chrono_literals;

namespace {

constexpr const char* BENCH = "federation_bc";
constexpr const char* SCOPE = "fedbench";
constexpr const char* PLAIN_SCOPE = "fedbench-plain";
constexpr const char* CHANNEL = "fedbench";
constexpr size_t SMALL_BYTES = 64;
/// Probes and markers are re-sent this often until the receiver answers (a post may be lost).
constexpr auto RESEND_INTERVAL = 20ms;
constexpr auto SETUP_DEADLINE = 30s;
/// One phase (a burst, the paced run) never takes longer than this.
constexpr auto PHASE_DEADLINE = 120s;

[[noreturn]] void die(const std::string& why) { throw std::runtime_error(why); }

// ------------------------------------------------------------------------------------------------ payload

enum Phase : uint64_t { PROBE = 0, PACED = 1, MARK = 2, BURST = 3, END = 4 };

/// The first 32 bytes of every payload; the rest is padding up to the payload size.
struct Stamp {
  uint64_t index;
  uint64_t sentNs;
  uint64_t phase;
  uint64_t tag;  // MARK: marker number; BURST: which burst
};
static_assert(sizeof(Stamp) == 32);

std::vector<uint8_t> payload(size_t bytes, const Stamp& s) {
  std::vector<uint8_t> out(std::max(bytes, sizeof(Stamp)), 0);
  std::memcpy(out.data(), &s, sizeof s);
  return out;
}

std::string toHex(std::string_view s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

/// swipc.<scope>.bc.c<hex of the channel name>: the subject shape of a cross-node post.
std::string rawSubject() { return std::string("swipc.") + SCOPE + "-raw.bc.c" + toHex(CHANNEL); }

std::string sizeName(size_t bytes) {
  if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes / 1024) + "KiB";
  return std::to_string(bytes) + "B";
}

// ------------------------------------------------------------------------------------------------ processes

/// Polls `done` every few ms until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    ::usleep(10'000);
  }
}

/// A temporary directory removed (recursively) on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/swipc-fedbench.XXXXXX";
    if (!::mkdtemp(tmpl.data())) die(std::string("mkdtemp: ") + std::strerror(errno));
    path_ = tmpl;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// A child process: stdout to `stdoutFd` (or `logPath`), stderr to `logPath` (or ours); it gets
/// SIGKILL if this process dies. Destruction: SIGTERM (or SIGKILL), reaped, by pid.
class Child {
 public:
  Child(std::vector<std::string> argv, const std::string& logPath, int stdoutFd = -1, bool terminate = true)
      : terminate_(terminate) {
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    int logFd = -1;
    if (!logPath.empty()) {
      logFd = ::open(logPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (logFd < 0) die("open " + logPath + ": " + std::strerror(errno));
    }
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) die(std::string("fork: ") + std::strerror(errno));
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (logFd >= 0) ::dup2(logFd, STDERR_FILENO);
      ::dup2(stdoutFd >= 0 ? stdoutFd : STDERR_FILENO, STDOUT_FILENO);
      ::execv(cargv[0], cargv.data());
      const char msg[] = "federation_bench: execv failed\n";
      ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
      (void)ignored;
      ::_exit(127);
    }
    if (logFd >= 0) ::close(logFd);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { stop(); }

  bool alive() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }
  /// Waits up to `timeout` for the child to exit by itself; true once it has (and is reaped).
  bool waitExit(std::chrono::milliseconds timeout) {
    return eventually([&] { return !alive(); }, timeout);
  }
  pid_t pid() const { return pid_; }
  /// SIGTERM (SIGKILL when made with terminate = false, or after 5 s), then reaped.
  void stop() {
    if (!alive()) return;
    ::kill(pid_, terminate_ ? SIGTERM : SIGKILL);
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (alive()) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
        return;
      }
      // Polling for the child's exit (no event for it without a signal handler): short naps.
      ::usleep(1000);
    }
  }

 private:
  pid_t pid_ = -1;
  bool terminate_;
};

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ------------------------------------------------------------------------------------------------ NATS cluster

std::string natsServerPath() {
  for (const char* p : {"/usr/sbin/nats-server", "/usr/bin/nats-server"})
    if (::access(p, X_OK) == 0) return p;
  if (const char* path = std::getenv("PATH")) {
    std::istringstream is(path);
    for (std::string dir; std::getline(is, dir, ':');) {
      const std::string cand = dir + "/nats-server";
      if (!dir.empty() && ::access(cand.c_str(), X_OK) == 0) return cand;
    }
  }
  return "";
}

/// `count` distinct free TCP ports on 127.0.0.1 (all bound at once, then released).
std::vector<int> freePorts(size_t count) {
  std::vector<int> fds, ports;
  for (size_t i = 0; i < count; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      die("no free TCP port on 127.0.0.1");
    fds.push_back(fd);
    ports.push_back(ntohs(a.sin_port));
  }
  for (int fd : fds) ::close(fd);
  return ports;
}

/// The body (and headers) of GET `path` on 127.0.0.1:`port`; "" when it does not answer.
std::string httpGet(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

/// The "num_routes" of a /routez answer (-1 when absent).
long numRoutes(const std::string& body) {
  const std::string key = "\"num_routes\"";
  size_t at = body.find(key);
  if (at == std::string::npos) return -1;
  at = body.find(':', at + key.size());
  if (at == std::string::npos) return -1;
  return std::strtol(body.c_str() + at + 1, nullptr, 10);
}

/// N routed nats-server processes (JetStream on, as the federation tests run them), killed by
/// pid on destruction.
class NatsCluster {
 public:
  NatsCluster(const std::string& server, const std::string& dir, size_t count) {
    const auto ports = freePorts(count * 3);
    for (size_t i = 0; i < count; ++i)
      servers_.push_back({ports[i * 3], ports[i * 3 + 1], ports[i * 3 + 2], dir + "/s" + std::to_string(i + 1), nullptr});
    for (size_t i = 0; i < count; ++i) {
      Server& s = servers_[i];
      std::string routes;
      for (size_t j = 0; j < count; ++j)
        if (j != i) routes += "    nats-route://127.0.0.1:" + std::to_string(servers_[j].clusterPort) + "\n";
      std::filesystem::create_directories(s.dir);
      const std::string config = s.dir + ".conf";
      std::ofstream(config) << "server_name: s" << i + 1 << "\n"
                            << "listen: 127.0.0.1:" << s.clientPort << "\n"
                            << "http: 127.0.0.1:" << s.monitorPort << "\n"
                            << "jetstream {\n  store_dir: \"" << s.dir << "\"\n"
                            << "  max_memory_store: 64MB\n  max_file_store: 256MB\n}\n"
                            << "cluster {\n  name: swipc-bench\n  listen: 127.0.0.1:" << s.clusterPort << "\n"
                            << "  routes: [\n" << routes << "  ]\n}\n";
      s.proc = std::make_unique<Child>(std::vector<std::string>{server, "-c", config}, s.dir + ".log", -1,
                                       /*terminate=*/false);
    }
    const bool formed = eventually(
        [&] {
          for (auto& s : servers_)
            if (numRoutes(httpGet(s.monitorPort, "/routez")) < static_cast<long>(count - 1)) return false;
          return true;
        },
        SETUP_DEADLINE);
    if (!formed) die("the NATS cluster did not form:\n" + logs());
  }
  std::string url(size_t i) const { return "nats://127.0.0.1:" + std::to_string(servers_.at(i).clientPort); }
  std::vector<pid_t> pids() const {
    std::vector<pid_t> out;
    for (const auto& s : servers_) out.push_back(s.proc->pid());
    return out;
  }
  std::string logs() const {
    std::string out;
    for (const auto& s : servers_) out += "--- " + s.dir + ".log\n" + readFile(s.dir + ".log");
    return out;
  }

 private:
  struct Server {
    int clientPort, clusterPort, monitorPort;
    std::string dir;
    std::unique_ptr<Child> proc;
  };
  std::vector<Server> servers_;
};

// ------------------------------------------------------------------------------------------------ daemons

struct Config {
  std::string daemonPath;
  uint64_t messages = 50'000;
  uint64_t latencySamples = 2'000;
  uint64_t paceUs = 500;
  size_t largeBytes = 1024;
  uint64_t ringBytes = 16u << 20;
  int rounds = 1;
};

/// One sw_daemon: its own runtime and state dir under `dir`, its log (info level) in a file.
class Node {
 public:
  Node(const Config& cfg, const std::string& dir, const std::string& scope, const std::string& name,
       const std::string& natsUrl)
      : scope_(scope), runtimeDir_(dir + "/" + name + "/run"), log_(dir + "/" + name + ".log") {
    const std::string stateDir = dir + "/" + name + "/state";
    std::filesystem::create_directories(runtimeDir_);
    std::filesystem::create_directories(stateDir);
    std::vector<std::string> argv = {cfg.daemonPath, "--scope",     scope_,       "--runtime-dir",   runtimeDir_,
                                     "--state-dir",  stateDir,      "--log-level", "info", "--bc-ring-bytes",
                                     std::to_string(cfg.ringBytes)};
    if (!natsUrl.empty()) argv.insert(argv.end(), {"--nats", natsUrl, "--node", name});
    proc_ = std::make_unique<Child>(std::move(argv), log_);
  }
  const std::string& scope() const { return scope_; }
  const std::string& runtimeDir() const { return runtimeDir_; }
  std::string log() const { return readFile(log_); }
  void waitJoined(const std::string& other) {
    if (!eventually([&] { return log().find("node " + other + " joined") != std::string::npos || !proc_->alive(); },
                    SETUP_DEADLINE) ||
        !proc_->alive())
      die("the daemon's log never said node " + other + " joined:\n" + log());
  }
  bool alive() { return proc_->alive(); }
  pid_t pid() const { return proc_->pid(); }

 private:
  std::string scope_;
  std::string runtimeDir_;
  std::string log_;
  std::unique_ptr<Child> proc_;
};

/// The posts of node `from` a daemon's log says never arrived ("N post(s) of node X on ...").
uint64_t missedInLog(const std::string& log, const std::string& from) {
  const std::string tail = " post(s) of node " + from + " on ";
  uint64_t total = 0;
  for (size_t at = log.find(tail); at != std::string::npos; at = log.find(tail, at + 1)) {
    size_t begin = at;
    while (begin > 0 && std::isdigit(static_cast<unsigned char>(log[begin - 1]))) --begin;
    if (begin < at) total += std::stoull(log.substr(begin, at - begin));
  }
  return total;
}

swipc::Result<swipc::Client> connectWithRetry(const std::string& scope, const std::string& runtimeDir) {
  swipc::ClientOptions o;
  o.scope = scope;
  o.runtimeDir = runtimeDir;
  o.reconnect = false;
  const auto deadline = swipc::deadlineIn(10s);
  for (auto backoff = 1ms;; backoff = std::min(backoff * 2, std::chrono::milliseconds(50))) {
    auto c = swipc::Client::connect(o);
    if (c || swipc::Clock::now() > deadline) return c;
    ::usleep(static_cast<useconds_t>(backoff.count() * 1000));  // the daemon is still starting
  }
}

// ------------------------------------------------------------------------------------------------ receiver

/// What a receiver saw of one session; also its result line.
class Tally {
 public:
  /// Handles one payload; `say` writes a line to the sender. False once the end marker came.
  bool onPayload(const uint8_t* data, size_t bytes, const std::function<void(const std::string&)>& say) {
    if (bytes < sizeof(Stamp)) return true;
    const uint64_t now = sb::nowNs();
    Stamp s;
    std::memcpy(&s, data, sizeof s);
    switch (s.phase) {
      case PROBE:
        if (!ready_) say("r");
        ready_ = true;
        break;
      case PACED:
        latencies_.push_back(now - s.sentNs);
        break;
      case MARK:
        if (s.tag > lastMark_) say("m " + std::to_string(s.tag));
        lastMark_ = std::max(lastMark_, s.tag);
        break;
      case BURST: {
        if (bursts_.size() <= s.tag) bursts_.resize(s.tag + 1);
        Burst& b = bursts_[s.tag];
        if (b.received++ == 0) b.firstNs = now;
        b.lastNs = now;
        break;
      }
      case END:
        return false;
      default:
        break;
    }
    return true;
  }
  /// "res p50Ns p99Ns samples lapped [received rate]…"
  std::string resultLine(uint64_t lapped) {
    sb::Latency l = sb::summarize(latencies_);
    std::ostringstream os;
    os << "res " << l.p50Ns << ' ' << l.p99Ns << ' ' << l.samples << ' ' << lapped;
    for (const auto& b : bursts_) {
      const double rate = b.lastNs > b.firstNs ? static_cast<double>(b.received - 1) * 1e9 /
                                                     static_cast<double>(b.lastNs - b.firstNs)
                                               : 0.0;
      os << ' ' << b.received << ' ' << rate;
    }
    return os.str();
  }

 private:
  struct Burst {
    uint64_t received = 0;
    uint64_t firstNs = 0, lastNs = 0;
  };
  bool ready_ = false;
  uint64_t lastMark_ = 0;
  std::vector<uint64_t> latencies_;
  std::vector<Burst> bursts_;
};

void sayLine(const std::string& line) {
  const std::string s = line + "\n";
  for (size_t off = 0; off < s.size();) {
    ssize_t w = ::write(STDOUT_FILENO, s.data() + off, s.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // the sender is gone
    off += static_cast<size_t>(w);
  }
}

/// --role receiver --mode lib --scope S --runtime-dir D: a BroadcastChannel object on a client.
int libReceiver(const sb::Args& args) {
  auto c = connectWithRetry(args.getOr("--scope", SCOPE), args.getOr("--runtime-dir", ""));
  if (!c) {
    std::fprintf(stderr, "receiver: %s\n", c.error().describe().c_str());
    return 1;
  }
  swipc::BroadcastChannel bc(*c, CHANNEL);
  Tally tally;
  bool done = false;
  uint64_t lapped = 0;
  bc.onMessage([&](const swipc::MessageEvent& e) {
    if (done || !e.data.isBytes()) return;
    const auto& d = e.data.asBytes().data;
    if (!tally.onPayload(d.data(), d.size(), sayLine)) done = true;
  });
  bc.onLapped([&](uint64_t missed) { lapped += missed; });
  if (!c->runUntil([&] { return done; }, swipc::deadlineIn(PHASE_DEADLINE * 4))) {
    std::fprintf(stderr, "receiver: no end marker in time\n");
    return 1;
  }
  sayLine(tally.resultLine(lapped));
  return 0;
}

/// libnats' callback context of the raw receiver (called on libnats' delivery thread).
struct RawReceiver {
  Tally tally;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::string result;
  natsSubscription* sub = nullptr;
};

void onRawMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* r = static_cast<RawReceiver*>(closure);
  const auto* data = reinterpret_cast<const uint8_t*>(natsMsg_GetData(msg));
  const size_t bytes = static_cast<size_t>(natsMsg_GetDataLength(msg));
  std::unique_lock lock(r->mu);
  if (!r->done && !r->tally.onPayload(data, bytes, sayLine)) {
    int64_t dropped = 0;
    natsSubscription_GetDropped(r->sub, &dropped);
    r->result = r->tally.resultLine(static_cast<uint64_t>(dropped));
    r->done = true;
    r->cv.notify_all();
  }
  lock.unlock();
  natsMsg_Destroy(msg);
}

/// --role receiver --mode raw --nats URL: a libnats subscription on the raw subject.
int rawReceiver(const sb::Args& args) {
  natsConnection* nc = nullptr;
  RawReceiver r;
  const std::string url = args.getOr("--nats", "");
  natsStatus s = natsConnection_ConnectTo(&nc, url.c_str());
  if (s == NATS_OK) s = natsConnection_Subscribe(&r.sub, nc, rawSubject().c_str(), onRawMessage, &r);
  // The limits the daemon gives its subscription (libipc/src/federation/nats_link.cpp).
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(r.sub, 1 << 20, 256 << 20);
  if (s == NATS_OK) s = natsConnection_Flush(nc);
  if (s != NATS_OK) {
    std::fprintf(stderr, "receiver: NATS %s: %s\n", natsStatus_GetText(s), nats_GetLastError(nullptr));
    return 1;
  }
  std::unique_lock lock(r.mu);
  const bool ok = r.cv.wait_for(lock, PHASE_DEADLINE * 4, [&] { return r.done; });
  const std::string result = r.result;
  lock.unlock();
  natsSubscription_Unsubscribe(r.sub);
  natsSubscription_Destroy(r.sub);
  natsConnection_Destroy(nc);
  if (!ok) {
    std::fprintf(stderr, "receiver: no end marker in time\n");
    return 1;
  }
  sayLine(result);
  return 0;
}

// ------------------------------------------------------------------------------------------------ sender

/// The sending side of a session: posts payloads; waits (doing its own housekeeping) until an fd
/// is readable or a time passes.
class Sender {
 public:
  virtual ~Sender() = default;
  virtual void post(const std::vector<uint8_t>& bytes) = 0;
  /// Returns true when `fd` became readable, false at `until` (fd -1: just waits).
  virtual bool waitReadable(int fd, std::chrono::steady_clock::time_point until) = 0;
  /// Called after a burst (raw: hands libnats' buffer to the socket).
  virtual void flush() {}
};

/// ppoll on `fds` (the first `count`) until `until`; true if any is readable.
bool pollUntil(pollfd* fds, nfds_t count, std::chrono::steady_clock::time_point until) {
  for (;;) {
    const auto left = until - std::chrono::steady_clock::now();
    if (left <= 0ns) return ::poll(fds, count, 0) > 0;
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    const int n = ::ppoll(fds, count, &ts, nullptr);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) die(std::string("ppoll: ") + std::strerror(errno));
    if (n == 0) return false;
  }
}

/// swipc::Client + BroadcastChannel.
class LibSender final : public Sender {
 public:
  explicit LibSender(const Node& node) {
    auto c = connectWithRetry(node.scope(), node.runtimeDir());
    if (!c) die("sender: " + c.error().describe());
    client_ = std::make_unique<swipc::Client>(std::move(c).value());
    bc_ = std::make_unique<swipc::BroadcastChannel>(*client_, CHANNEL);
    if (!client_->runUntil([&] { return bc_->joined(); }, swipc::deadlineIn(10s))) die("sender: join timed out");
    opts_.waitForSpace = 10s;
  }
  ~LibSender() override {
    bc_.reset();
    client_->close();
  }
  void post(const std::vector<uint8_t>& bytes) override {
    auto r = bc_->postMessage(swipc::Value(swipc::Bytes{bytes}), opts_);
    if (!r) die("postMessage: " + r.error().describe());
    if ((++posts_ & 1023) == 0) client_->dispatch();  // a burst: keep the client's own side moving
  }
  bool waitReadable(int fd, std::chrono::steady_clock::time_point until) override {
    for (;;) {
      pollfd fds[2] = {{client_->fd(), POLLIN, 0}, {fd, POLLIN, 0}};
      const bool any = pollUntil(fds, 2, until);
      if (fds[0].revents) client_->dispatch();
      if (fds[1].revents) return true;
      if (!any && std::chrono::steady_clock::now() >= until) return false;
    }
  }

 private:
  std::unique_ptr<swipc::Client> client_;
  std::unique_ptr<swipc::BroadcastChannel> bc_;
  swipc::PostOptions opts_;
  uint64_t posts_ = 0;
};

/// libnats publisher with default options (as the daemon's), or with SendAsap (every publish
/// written at once instead of by libnats' flusher thread, which first yields for a millisecond).
class RawSender final : public Sender {
 public:
  RawSender(const std::string& url, bool sendAsap) : subject_(rawSubject()) {
    natsOptions* opts = nullptr;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK) s = natsOptions_SetURL(opts, url.c_str());
    if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, sendAsap);
    if (s == NATS_OK) s = natsConnection_Connect(&nc_, opts);
    if (opts) natsOptions_Destroy(opts);
    if (s != NATS_OK) die(std::string("raw sender: ") + natsStatus_GetText(s) + " " + nats_GetLastError(nullptr));
  }
  ~RawSender() override { natsConnection_Destroy(nc_); }
  void post(const std::vector<uint8_t>& bytes) override {
    natsStatus s = natsConnection_Publish(nc_, subject_.c_str(), bytes.data(), static_cast<int>(bytes.size()));
    if (s != NATS_OK) die(std::string("natsConnection_Publish: ") + natsStatus_GetText(s));
  }
  bool waitReadable(int fd, std::chrono::steady_clock::time_point until) override {
    pollfd fds[1] = {{fd, POLLIN, 0}};
    return pollUntil(fds, 1, until) && fds[0].revents;
  }
  void flush() override { natsConnection_FlushTimeout(nc_, 10'000); }

 private:
  natsConnection* nc_ = nullptr;
  std::string subject_;
};

/// Lines from a receiver's stdout.
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd) {}
  int fd() const { return fd_; }
  /// A complete line if one is buffered or readable now (never blocks).
  std::optional<std::string> tryLine() {
    for (;;) {
      if (size_t nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) return std::nullopt;
      char tmp[4096];
      ssize_t r = ::read(fd_, tmp, sizeof tmp);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) die("the receiver exited early");
      buf_.append(tmp, static_cast<size_t>(r));
    }
  }

 private:
  int fd_;
  std::string buf_;
};

struct BurstResult {
  uint64_t received = 0;
  double rate = 0;
  std::vector<double> cpuNsPerPost;  // per watched daemon: its CPU time over the burst / posts
  double machineCpuNsPerPost = 0;    // every process on the machine (/proc/stat) over the burst / posts
  double busiestThreadNsPerPost = 0; // the pipeline's busiest thread (ThreadTimes) over the burst / posts
  std::string busiestThread;         // which one: "<process>/<thread name>"
};

/// CPU time the whole machine has been busy so far, all CPUs (/proc/stat: everything but idle
/// and iowait), in ns.
uint64_t machineBusyNs() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  if (cpu != "cpu") return 0;
  static const long tick = ::sysconf(_SC_CLK_TCK);
  return (user + nice + system + irq + softirq + steal) * (1'000'000'000ull / static_cast<uint64_t>(tick));
}

/// CPU time `pid` has used so far, all its threads (the first field of each thread's schedstat,
/// in ns). Threads that ended are not counted: the daemons' threads live as long as they do.
uint64_t processCpuNs(pid_t pid) {
  uint64_t total = 0;
  std::error_code ec;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& t : std::filesystem::directory_iterator(tasks, ec)) {
    std::ifstream in(t.path() / "schedstat");
    uint64_t ns = 0;
    if (in >> ns) total += ns;
  }
  return total;
}

/// CPU time of every thread of some processes (/proc/PID/task/TID/schedstat, ns), to find the
/// busiest thread of a pipeline over a burst. With a core for each thread, a pipeline's rate is
/// bounded by its busiest thread: 1 / (its CPU time per post).
class ThreadTimes {
 public:
  /// `procs`: (label, pid) of each process of the pipeline.
  explicit ThreadTimes(std::vector<std::pair<std::string, pid_t>> procs) : procs_(std::move(procs)) { take(start_); }

  /// The thread that used the most CPU time since construction ("<label>/<comm>") and that time.
  std::pair<std::string, uint64_t> busiest() const {
    std::map<std::string, uint64_t> now;
    take(now);
    std::pair<std::string, uint64_t> best{"", 0};
    for (const auto& [key, ns] : now) {
      const auto it = start_.find(key);
      const uint64_t used = ns - (it == start_.end() ? 0 : std::min(ns, it->second));
      if (used > best.second) best = {names_.count(key) ? names_.at(key) : key, used};
    }
    return best;
  }

 private:
  void take(std::map<std::string, uint64_t>& into) const {
    for (const auto& [label, pid] : procs_) {
      std::error_code ec;
      for (const auto& t : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
        std::ifstream in(t.path() / "schedstat");
        uint64_t ns = 0;
        if (!(in >> ns)) continue;
        const std::string key = std::to_string(pid) + "/" + t.path().filename().string();
        into[key] = ns;
        if (!names_.count(key)) {
          std::ifstream c(t.path() / "comm");
          std::string comm;
          std::getline(c, comm);
          names_[key] = label + "/" + comm;
        }
      }
    }
  }

  std::vector<std::pair<std::string, pid_t>> procs_;
  std::map<std::string, uint64_t> start_;
  mutable std::map<std::string, std::string> names_;
};

struct SessionResult {
  double p50Us = 0, p99Us = 0;
  uint64_t lapped = 0;
  std::vector<BurstResult> bursts;
};

/// Posts what `make()` gives every RESEND_INTERVAL until the receiver says a line starting with
/// `expect`; returns that line.
std::string postUntilAnswered(Sender& tx, LineReader& rx, const std::function<std::vector<uint8_t>()>& make,
                              const std::string& expect, std::chrono::milliseconds patience) {
  const auto deadline = std::chrono::steady_clock::now() + patience;
  for (;;) {
    tx.post(make());
    tx.flush();
    const auto until = std::chrono::steady_clock::now() + RESEND_INTERVAL;
    while (tx.waitReadable(rx.fd(), until)) {
      while (auto line = rx.tryLine()) {
        if (line->compare(0, expect.size(), expect) == 0) return *line;
      }
    }
    if (std::chrono::steady_clock::now() > deadline) die("the receiver never answered '" + expect + "'");
  }
}

/// One session (probe, paced, bursts, end) between `tx` and a receiver started with `rxArgs`.
/// `watch`: processes whose CPU time per post each burst reports (BurstResult::cpuNsPerPost).
/// `stages`: the pipeline's processes besides the sender (this one) and the receiver, whose
/// threads BurstResult::busiestThreadNsPerPost looks at.
SessionResult runSession(const Config& cfg, Sender& tx, std::vector<std::string> rxArgs,
                         const std::vector<size_t>& burstSizes, const std::vector<pid_t>& watch = {},
                         const std::vector<std::pair<std::string, pid_t>>& stages = {}) {
  int pipeFds[2];
  if (::pipe2(pipeFds, O_CLOEXEC) != 0) die("pipe");
  std::error_code ec;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  rxArgs.insert(rxArgs.begin(), {self, "--role", "receiver"});
  Child receiver(rxArgs, "", pipeFds[1]);
  ::close(pipeFds[1]);
  struct CloseFd {
    int fd;
    ~CloseFd() { ::close(fd); }
  } closeRead{pipeFds[0]};
  LineReader rx(pipeFds[0]);
  auto stamp = [](Phase phase, uint64_t index, uint64_t tag, size_t bytes) {
    return payload(bytes, Stamp{index, sb::nowNs(), phase, tag});
  };

  postUntilAnswered(tx, rx, [&] { return stamp(PROBE, 0, 0, SMALL_BYTES); }, "r", SETUP_DEADLINE);

  uint64_t mark = 0;
  auto settle = [&] {
    ++mark;
    postUntilAnswered(tx, rx, [&] { return stamp(MARK, 0, mark, SMALL_BYTES); }, "m " + std::to_string(mark),
                      PHASE_DEADLINE);
  };

  // Paced: the sender sleeps (its loop or ppoll) until each send time.
  auto next = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < cfg.latencySamples; ++i) {
    next += std::chrono::microseconds(cfg.paceUs);
    tx.waitReadable(-1, next);
    tx.post(stamp(PACED, i, 0, SMALL_BYTES));
  }
  tx.flush();
  settle();

  std::vector<std::vector<double>> cpu(burstSizes.size());
  std::vector<double> machineCpu(burstSizes.size());
  std::vector<std::pair<std::string, double>> busiest(burstSizes.size());
  auto pipeline = stages;
  pipeline.insert(pipeline.begin(), {{"sender", ::getpid()}, {"receiver", receiver.pid()}});
  for (size_t k = 0; k < burstSizes.size(); ++k) {
    std::vector<uint64_t> before;
    for (pid_t p : watch) before.push_back(processCpuNs(p));
    const uint64_t machineBefore = machineBusyNs();
    const ThreadTimes threads(pipeline);
    for (uint64_t i = 0; i < cfg.messages; ++i) tx.post(stamp(BURST, i, k, burstSizes[k]));
    tx.flush();
    settle();  // the daemons have done the burst's work once its marker is through
    for (size_t w = 0; w < watch.size(); ++w)
      cpu[k].push_back(static_cast<double>(processCpuNs(watch[w]) - before[w]) / static_cast<double>(cfg.messages));
    machineCpu[k] = static_cast<double>(machineBusyNs() - machineBefore) / static_cast<double>(cfg.messages);
    const auto [name, ns] = threads.busiest();
    busiest[k] = {name, static_cast<double>(ns) / static_cast<double>(cfg.messages)};
  }

  const std::string res = postUntilAnswered(tx, rx, [&] { return stamp(END, 0, 0, SMALL_BYTES); }, "res ", PHASE_DEADLINE);
  std::istringstream is(res.substr(4));
  SessionResult out;
  double p50 = 0, p99 = 0;
  uint64_t samples = 0;
  is >> p50 >> p99 >> samples >> out.lapped;
  out.p50Us = p50 / 1e3;
  out.p99Us = p99 / 1e3;
  out.bursts.resize(burstSizes.size());
  for (size_t k = 0; k < out.bursts.size(); ++k) {
    is >> out.bursts[k].received >> out.bursts[k].rate;
    out.bursts[k].cpuNsPerPost = cpu[k];
    out.bursts[k].machineCpuNsPerPost = machineCpu[k];
    out.bursts[k].busiestThread = busiest[k].first;
    out.bursts[k].busiestThreadNsPerPost = busiest[k].second;
  }
  receiver.waitExit(5s);
  if (samples < cfg.latencySamples)
    std::fprintf(stderr, "federation_bench: %llu of %llu paced posts arrived\n", static_cast<unsigned long long>(samples),
                 static_cast<unsigned long long>(cfg.latencySamples));
  return out;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

/// Median over rounds of one figure of a session.
double med(const std::vector<SessionResult>& rs, const std::function<double(const SessionResult&)>& f) {
  std::vector<double> v;
  for (const auto& r : rs) v.push_back(f(r));
  return median(v);
}

void printSkipped(const std::string& why) {
  std::printf("{\"bench\":\"%s\",\"metric\":\"skipped\",\"value\":null,\"unit\":null,\"baseline\":null,"
              "\"ratio\":null,\"skipped\":\"%s\"}\n",
              BENCH, why.c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    sb::Args args(argc, argv);
    ::signal(SIGPIPE, SIG_IGN);
    if (args.getOr("--role", "") == "receiver")
      return args.getOr("--mode", "lib") == "raw" ? rawReceiver(args) : libReceiver(args);

    Config cfg;
    {
      std::error_code ec;
      auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
      cfg.daemonPath = args.getOr("--daemon", (self.parent_path().parent_path() / "sw_daemon" / "sw_daemon").string());
    }
    cfg.messages = static_cast<uint64_t>(args.getInt("--messages", 50'000));
    cfg.latencySamples = static_cast<uint64_t>(args.getInt("--latency-samples", 2'000));
    cfg.paceUs = static_cast<uint64_t>(args.getInt("--pace-us", 500));
    cfg.largeBytes = static_cast<size_t>(args.getInt("--large-bytes", 1024));
    cfg.ringBytes = static_cast<uint64_t>(args.getInt("--ring-bytes", 16 << 20));
    cfg.rounds = std::max(1, static_cast<int>(args.getInt("--rounds", 1)));
    const std::string server = natsServerPath();
    if (server.empty()) {
      printSkipped("nats-server is not installed (apt-get install nats-server)");
      return 0;
    }

    TempDir dir;  // destroyed last: the processes below are stopped before their files go
    NatsCluster cluster(server, dir.path(), 3);
    Node n1(cfg, dir.path(), SCOPE, "n1", cluster.url(0));
    Node n2(cfg, dir.path(), SCOPE, "n2", cluster.url(1));
    Node n0(cfg, dir.path(), PLAIN_SCOPE, "n0", "");
    n1.waitJoined("n2");
    n2.waitJoined("n1");

    const std::vector<size_t> remoteSizes = {SMALL_BYTES, cfg.largeBytes};
    const std::vector<size_t> localSizes = {SMALL_BYTES};
    std::vector<SessionResult> raw, rawAsap, remote, localNats, localPlain;
    std::vector<pid_t> remoteWatch = {n1.pid(), n2.pid()};  // then the NATS servers, as for raw
    for (pid_t p : cluster.pids()) remoteWatch.push_back(p);
    for (int round = 0; round < cfg.rounds; ++round) {
      {
        RawSender tx(cluster.url(0), /*sendAsap=*/false);
        raw.push_back(runSession(cfg, tx, {"--mode", "raw", "--nats", cluster.url(1)}, remoteSizes, cluster.pids()));
      }
      {
        RawSender tx(cluster.url(0), /*sendAsap=*/true);
        rawAsap.push_back(runSession(cfg, tx, {"--mode", "raw", "--nats", cluster.url(1)}, {}));
      }
      {
        LibSender tx(n1);
        remote.push_back(runSession(cfg, tx, {"--mode", "lib", "--scope", SCOPE, "--runtime-dir", n2.runtimeDir()},
                                    remoteSizes, remoteWatch, {{"n1", n1.pid()}, {"n2", n2.pid()}}));
      }
      {
        LibSender tx(n1);
        localNats.push_back(runSession(
            cfg, tx, {"--mode", "lib", "--scope", SCOPE, "--runtime-dir", n1.runtimeDir()}, localSizes,
            {n1.pid(), n2.pid()}));
      }
      {
        LibSender tx(n0);
        localPlain.push_back(runSession(
            cfg, tx, {"--mode", "lib", "--scope", PLAIN_SCOPE, "--runtime-dir", n0.runtimeDir()}, localSizes,
            {n0.pid()}));
      }
      if (!n1.alive() || !n2.alive() || !n0.alive()) die("a daemon died during the run");
    }
    // Where a loss happened: n2 logs each gap in n1's stream (posts n1 did not send because its
    // NATS queue was full, or that NATS lost); a loss beyond those is the receiving page lapped.
    if (uint64_t gaps = missedInLog(n2.log(), "n1"); gaps > 0)
      std::fprintf(stderr, "federation_bench: n2 saw %llu posts of n1 never arrive over NATS (all rounds)\n",
                   static_cast<unsigned long long>(gaps));

    const auto lost = [&](size_t k) {
      return [&, k](const SessionResult& r) { return static_cast<double>(cfg.messages - r.bursts[k].received); };
    };
    const auto rate = [](size_t k) { return [k](const SessionResult& r) { return r.bursts[k].rate; }; };
    const auto p50 = [](const SessionResult& r) { return r.p50Us; };
    const auto p99 = [](const SessionResult& r) { return r.p99Us; };
    const auto lapped = [](const SessionResult& r) { return static_cast<double>(r.lapped); };

    sb::emit(BENCH, "remote_latency_p50_64B_blocking", med(remote, p50), "us", med(raw, p50));
    sb::emit(BENCH, "remote_latency_p99_64B_blocking", med(remote, p99), "us", med(raw, p99));
    for (size_t k = 0; k < remoteSizes.size(); ++k) {
      const std::string sz = sizeName(remoteSizes[k]);
      sb::emit(BENCH, "remote_rate_" + sz + "_blocking", med(remote, rate(k)), "msg/s", med(raw, rate(k)));
      sb::emit(BENCH, "remote_loss_" + sz, med(remote, lost(k)), "msgs", med(raw, lost(k)));
    }
    sb::emit(BENCH, "remote_lapped", med(remote, lapped), "msgs", med(raw, lapped));
    // What the raw path does without libnats' flusher yield (the daemon publishes without it).
    sb::emit(BENCH, "raw_sendasap_latency_p50_64B_blocking", med(rawAsap, p50), "us", med(raw, p50));
    sb::emit(BENCH, "raw_sendasap_latency_p99_64B_blocking", med(rawAsap, p99), "us", med(raw, p99));
    sb::emit(BENCH, "local_latency_p50_64B_blocking", med(localNats, p50), "us", med(localPlain, p50));
    sb::emit(BENCH, "local_latency_p99_64B_blocking", med(localNats, p99), "us", med(localPlain, p99));
    sb::emit(BENCH, "local_rate_64B_blocking", med(localNats, rate(0)), "msg/s", med(localPlain, rate(0)));
    sb::emit(BENCH, "local_loss_64B", med(localNats, lost(0)), "msgs", med(localPlain, lost(0)));
    // CPU time per 64 B post of the daemons involved, against n0's for a local post without --nats.
    const auto cpuOf = [](size_t w) {
      return [w](const SessionResult& r) { return r.bursts[0].cpuNsPerPost.at(w); };
    };
    const double plainCpu = med(localPlain, cpuOf(0));
    sb::emit(BENCH, "local_daemon_cpu_per_post_64B", med(localNats, cpuOf(0)), "ns", plainCpu);
    sb::emit(BENCH, "local_other_node_cpu_per_post_64B", med(localNats, cpuOf(1)), "ns", plainCpu);
    sb::emit(BENCH, "remote_sender_daemon_cpu_per_post_64B", med(remote, cpuOf(0)), "ns", plainCpu);
    sb::emit(BENCH, "remote_receiver_daemon_cpu_per_post_64B", med(remote, cpuOf(1)), "ns", plainCpu);

    // The whole machine's CPU time per post (all processes: pages, daemons, NATS servers), against
    // raw NATS's per message: where every core is busy, rate ratio ≈ the inverse of this ratio.
    const auto machineCpu = [](size_t k) {
      return [k](const SessionResult& r) { return r.bursts[k].machineCpuNsPerPost; };
    };
    for (size_t k = 0; k < remoteSizes.size(); ++k)
      sb::emit(BENCH, "remote_machine_cpu_per_post_" + sizeName(remoteSizes[k]), med(remote, machineCpu(k)), "ns",
               med(raw, machineCpu(k)));
    // The NATS servers' share: raw sends each message alone, the daemons bundle a burst.
    const auto serversCpu = [](size_t first) {
      return [first](const SessionResult& r) {
        double sum = 0;
        for (size_t w = first; w < r.bursts[0].cpuNsPerPost.size(); ++w) sum += r.bursts[0].cpuNsPerPost[w];
        return sum;
      };
    };
    sb::emit(BENCH, "remote_nats_servers_cpu_per_post_64B", med(remote, serversCpu(2)), "ns", med(raw, serversCpu(0)));
    sb::emit(BENCH, "local_machine_cpu_per_post_64B", med(localNats, machineCpu(0)), "ns",
             med(localPlain, machineCpu(0)));
    // The busiest thread of each pipeline (NATS servers aside: both paths go through the same
    // servers, and the daemons' bundles make fewer NATS messages than raw's): with a core for
    // each thread, rate ratio ≈ the inverse of this ratio (capped by the servers).
    const auto busiestCpu = [](size_t k) {
      return [k](const SessionResult& r) { return r.bursts[k].busiestThreadNsPerPost; };
    };
    for (size_t k = 0; k < remoteSizes.size(); ++k) {
      const std::string sz = sizeName(remoteSizes[k]);
      sb::emit(BENCH, "remote_busiest_thread_cpu_per_post_" + sz, med(remote, busiestCpu(k)), "ns",
               med(raw, busiestCpu(k)));
      // Which threads they were, per round (a name, not a number: stderr).
      for (size_t i = 0; i < remote.size(); ++i)
        std::fprintf(stderr, "federation_bench: busiest thread, %s burst, round %zu: swipc %s (%.0f ns/post), raw %s (%.0f ns/msg)\n",
                     sz.c_str(), i + 1, remote[i].bursts[k].busiestThread.c_str(), remote[i].bursts[k].busiestThreadNsPerPost,
                     raw[i].bursts[k].busiestThread.c_str(), raw[i].bursts[k].busiestThreadNsPerPost);
    }

    // Goals (issue 19): told on stderr, never a failure (a shared machine's figures drift).
    for (size_t k = 0; k < remoteSizes.size(); ++k)
      if (const double r = med(remote, rate(k)), b = med(raw, rate(k)); b > 0 && r < 0.8 * b)
        std::fprintf(stderr, "federation_bench: remote rate %s is %.2f x raw NATS (goal >= 0.8)\n",
                     sizeName(remoteSizes[k]).c_str(), r / b);
    if (const double excess = med(remote, p50) - med(raw, p50); excess > 50)
      std::fprintf(stderr, "federation_bench: remote latency p50 is raw + %.0f us (goal <= raw + 50 us)\n", excess);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "federation_bench: %s\n", e.what());
    return 1;
  }
}
