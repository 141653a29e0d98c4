// ports_bench: MessagePort round trips through the public client API (issue 6, DESIGN §10), each
// result with its same-run baseline.
//
//   ports_bench [--daemon PATH] [--iterations N] [--warmup N] [--max-seconds S] [--log-level L]
//               [--timeout-s S]
//
// --daemon defaults to ../sw_daemon/sw_daemon next to this executable's directory (the build tree).
// The program starts its own sw_daemon (no --spin-us) in a fresh temporary runtime directory and
// two page processes (this executable re-run with --role page-a / page-b, each a swipc::Client):
//
//   page B  attaches, prints its client id, and echoes every message on the port it is given.
//   page A  attaches, creates a MessageChannel, posts RELAY_PORT {to: B} to the service worker with
//           port2 in the transfer list (the reference SW hands it to B as {"type":"PORT"}), then
//           ping-pongs {"type":"PING","seq":i,"pad":<64 bytes>} A -> B -> A over port1, one in
//           flight at a time, driven from port1's message callback on A's loop. Every hop goes
//           page -> daemon (port router) -> page, so a round trip crosses four rings.
//
// Then this process attaches itself and measures messageSW(ECHO, 64 B) — a real MessageChannel
// per request: port2 travels with the message, the reply comes back on port1 — against the same
// daemon and the same baseline. messaging_bench reports the same operation as
// messageSW_rtt_blocking_64B against the Unix-socket baseline (and the spinning figure against
// the spinning raw ring); this line is its ratio to the blocking raw ring, next to the relay.
//
// Results (value / baseline = ratio), all blocking, nanoseconds:
//   relayed_port_rtt_blocking_64B    p50/p99 vs raw_ring_rtt_block (64 B)
//   messageSW_port_rtt_blocking_64B  p50/p99 vs raw_ring_rtt_block (64 B)
// Blocking only: ClientOptions::spin applies to messageSW's wait, not to the loop that delivers
// port messages, so there is no spinning page <-> page variant to compare with the spinning ring.
//
// Cleanup: every child gets PR_SET_PDEATHSIG; the pages are SIGKILLed and the daemon SIGTERMed
// (SIGKILL after 5 s) on every exit path, and the runtime directory is removed. SIGALRM (the
// --timeout-s watchdog), SIGINT, SIGTERM and SIGHUP kill the children and remove it too.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "baseline.h"
#include "swipc/log.h"
#include "swipc/client.h"
#include "swipc/message_port.h"
#include "swipc/value.h"

namespace sb = swipc::bench;
using namespace std::chrono_literals;

namespace {

constexpr const char* SCOPE = "bench-ports";
constexpr size_t PAD_BYTES = 64;
constexpr auto CONNECT_PATIENCE = 10s;
constexpr auto STOP_GRACE = 5s;

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

std::string selfPath() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) fail("readlink /proc/self/exe: " + ec.message());
  return p.string();
}

std::string defaultDaemonPath() {
  return (std::filesystem::path(selfPath()).parent_path().parent_path() / "sw_daemon" / "sw_daemon").string();
}

// ------------------------------------------------------------------------------------------------ cleanup

// What the signal handler needs, prepared before it is installed (it may only make async-signal-
// safe calls: kill, waitpid, unlink, rmdir, write, _exit).
constexpr int MAX_CHILDREN = 8;
volatile sig_atomic_t gChildren[MAX_CHILDREN] = {};
char gSocketPath[256] = {};
char gLockPath[256] = {};
char gScopeDir[256] = {};
char gRootDir[256] = {};

void registerChild(pid_t pid) {
  for (auto& slot : gChildren) {
    if (slot == 0) {
      slot = pid;
      return;
    }
  }
}
void unregisterChild(pid_t pid) {
  for (auto& slot : gChildren)
    if (slot == pid) slot = 0;
}

void copyPath(char (&dst)[256], const std::string& src) {
  if (src.size() >= sizeof dst) fail("path too long: " + src);
  std::memcpy(dst, src.c_str(), src.size() + 1);
}

void onFatalSignal(int sig) {
  for (auto& slot : gChildren)
    if (slot > 0) ::kill(static_cast<pid_t>(slot), SIGKILL);
  for (auto& slot : gChildren)
    if (slot > 0) ::waitpid(static_cast<pid_t>(slot), nullptr, 0);
  if (gSocketPath[0]) ::unlink(gSocketPath);
  if (gLockPath[0]) ::unlink(gLockPath);
  if (gScopeDir[0]) ::rmdir(gScopeDir);
  if (gRootDir[0]) ::rmdir(gRootDir);
  const char* msg = sig == SIGALRM ? "ports_bench: watchdog (--timeout-s) fired; children killed\n"
                                   : "ports_bench: interrupted; children killed\n";
  ssize_t ignored = ::write(STDERR_FILENO, msg, std::strlen(msg));
  (void)ignored;
  ::_exit(1);
}

void installSignalHandlers() {
  struct sigaction sa {};
  sa.sa_handler = onFatalSignal;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGALRM, SIGINT, SIGTERM, SIGHUP}) sigaddset(&sa.sa_mask, s);
  for (int s : {SIGALRM, SIGINT, SIGTERM, SIGHUP}) ::sigaction(s, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

/// A child process, killed (and reaped) when this object goes away unless it has exited already.
class Child {
 public:
  /// fork + execv(argv); the child's stdout is `stdoutFd` (stderr when -1), stderr is ours.
  /// On destruction: `stopSignal`, then SIGKILL after `stopGrace`.
  Child(std::string name, std::vector<std::string> argv, int stdoutFd, int deathSignal, int stopSignal = SIGKILL,
        std::chrono::milliseconds stopGrace = 0ms)
      : name_(std::move(name)), stopSignal_(stopSignal), stopGrace_(stopGrace) {
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    std::fflush(nullptr);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) fail("fork: " + std::string(std::strerror(errno)));
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, deathSignal);
      if (::getppid() != parent) ::_exit(126);  // the parent died before prctl
      ::dup2(stdoutFd >= 0 ? stdoutFd : STDERR_FILENO, STDOUT_FILENO);
      ::execv(cargv[0], cargv.data());
      const char msg[] = "ports_bench: execv failed\n";
      ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
      (void)ignored;
      ::_exit(127);
    }
    registerChild(pid_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { terminate(stopSignal_, stopGrace_); }

  const std::string& name() const { return name_; }

  /// False once the child has exited (and reaps it).
  bool alive() {
    if (pid_ <= 0) return false;
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      reaped(status);
      return false;
    }
    return true;
  }

  /// Waits up to `patience` for the child to exit by itself; true when it did.
  bool waitExit(std::chrono::milliseconds patience) {
    const auto deadline = std::chrono::steady_clock::now() + patience;
    for (auto backoff = 1ms; alive(); backoff = std::min(backoff * 2, std::chrono::milliseconds(20))) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(backoff);
    }
    return true;
  }

  /// Sends `sig`, waits up to `grace`, then SIGKILLs and reaps.
  void terminate(int sig, std::chrono::milliseconds grace) {
    if (!alive()) return;
    ::kill(pid_, sig);
    if (sig != SIGKILL && waitExit(grace)) return;
    if (sig != SIGKILL) {
      std::fprintf(stderr, "ports_bench: %s ignored signal %d for %lld ms; killing it\n", name_.c_str(), sig,
                   static_cast<long long>(grace.count()));
      ::kill(pid_, SIGKILL);
    }
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped(status);
  }

  /// "exit 0", "exit 3", "signal 9".
  std::string describeExit() const {
    if (pid_ > 0) return "still running";
    if (WIFEXITED(status_)) return "exit " + std::to_string(WEXITSTATUS(status_));
    if (WIFSIGNALED(status_)) return "signal " + std::to_string(WTERMSIG(status_));
    return "status " + std::to_string(status_);
  }
  bool exitedCleanly() const { return pid_ <= 0 && WIFEXITED(status_) && WEXITSTATUS(status_) == 0; }

 private:
  void reaped(int status) {
    unregisterChild(pid_);
    status_ = status;
    pid_ = -1;
  }

  std::string name_;
  int stopSignal_;
  std::chrono::milliseconds stopGrace_;
  pid_t pid_ = -1;
  int status_ = 0;
};

/// A pipe whose read end stays here; the write end goes to one child as its stdout.
class Pipe {
 public:
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) fail("pipe2: " + std::string(std::strerror(errno)));
    read_ = fds[0];
    write_ = fds[1];
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  ~Pipe() {
    closeWrite();
    if (read_ >= 0) ::close(read_);
  }
  int writeFd() const { return write_; }
  void closeWrite() {
    if (write_ >= 0) ::close(write_);
    write_ = -1;
  }

  /// The next line from `child` (without the newline); fails at EOF, on a child that exited, when
  /// `daemon` (if given) exits, or after `patience`.
  std::string readLine(Child& child, std::chrono::milliseconds patience, Child* daemon = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + patience;
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) fail(child.name() + ": no answer within " + std::to_string(patience.count()) + " ms");
      pollfd p{read_, POLLIN, 0};
      int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 100)));
      if (n < 0 && errno != EINTR) fail("poll: " + std::string(std::strerror(errno)));
      if (n <= 0) {
        if (daemon && !daemon->alive())
          fail(daemon->name() + " exited (" + daemon->describeExit() + ") while waiting for " + child.name());
        if (!child.alive()) {
          // It may have written its last line just before exiting: read what is left first.
          drainNonBlocking();
          if (buf_.find('\n') != std::string::npos) continue;
          fail(child.name() + " exited (" + child.describeExit() + ") before answering");
        }
        continue;
      }
      char chunk[4096];
      ssize_t r = ::read(read_, chunk, sizeof chunk);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail("read(" + child.name() + "): " + std::strerror(errno));
      if (r == 0) {
        child.waitExit(1000ms);
        fail(child.name() + " closed its output (" + child.describeExit() + ") before answering");
      }
      buf_.append(chunk, static_cast<size_t>(r));
    }
  }

 private:
  void drainNonBlocking() {
    for (;;) {
      pollfd p{read_, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) return;
      char chunk[4096];
      ssize_t r = ::read(read_, chunk, sizeof chunk);
      if (r <= 0) return;
      buf_.append(chunk, static_cast<size_t>(r));
    }
  }

  int read_ = -1;
  int write_ = -1;
  std::string buf_;
};

/// The private runtime directory: made here, removed (with whatever the daemon left) on exit.
class RuntimeDir {
 public:
  RuntimeDir() {
    char tmpl[] = "/tmp/swipc-portsbench.XXXXXX";
    if (!::mkdtemp(tmpl)) fail("mkdtemp: " + std::string(std::strerror(errno)));
    path_ = tmpl;
    const std::string scopeDir = path_ + "/" + SCOPE;
    copyPath(gRootDir, path_);
    copyPath(gScopeDir, scopeDir);
    copyPath(gSocketPath, scopeDir + "/daemon.sock");
    copyPath(gLockPath, scopeDir + "/daemon.lock");
  }
  RuntimeDir(const RuntimeDir&) = delete;
  RuntimeDir& operator=(const RuntimeDir&) = delete;
  ~RuntimeDir() {
    gRootDir[0] = gScopeDir[0] = gSocketPath[0] = gLockPath[0] = 0;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ------------------------------------------------------------------------------------------------ pages

swipc::Result<swipc::Client> connectWithRetry(const std::string& runtimeDir, std::chrono::milliseconds patience) {
  swipc::ClientOptions o;
  o.scope = SCOPE;
  o.runtimeDir = runtimeDir;
  o.attachTimeout = 2000ms;
  o.reconnect = false;
  const auto deadline = swipc::deadlineIn(patience);
  for (auto backoff = 1ms;; backoff = std::min(backoff * 2, std::chrono::milliseconds(50))) {
    auto c = swipc::Client::connect(o);
    if (c || swipc::Clock::now() > deadline) return c;
    std::this_thread::sleep_for(backoff);  // the daemon is still starting: retry with backoff
  }
}

void sayLine(const std::string& line) {
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
}

/// --role page-b: attach, print "id <clientId>", echo everything on the port RELAY_PORT brings
/// until that port closes (or --max-run-s passes).
int pageBMain(const sb::Args& args) {
  auto c = connectWithRetry(args.getOr("runtime-dir", ""), CONNECT_PATIENCE);
  if (!c) {
    sayLine("error attach: " + c.error().describe());
    return 1;
  }
  swipc::Client& client = *c;
  std::optional<swipc::MessagePort> port;
  bool done = false;
  std::string error;
  client.onMessage([&](const swipc::MessageEvent& e) {
    if (e.data["type"].textOr("") != "PORT") return;
    if (e.ports.size() != 1 || port) {
      error = "unexpected PORT message with " + std::to_string(e.ports.size()) + " port(s)";
      done = true;
      return;
    }
    port = e.ports[0];
    port->onClose([&] { done = true; });
    port->onMessage([&](const swipc::MessageEvent& m) {
      if (auto r = port->postMessage(m.data); !r) {
        error = "echo: " + r.error().describe();
        done = true;
      }
    });
  });
  client.startMessages();
  sayLine("id " + client.id().toString());
  const auto maxRun = std::chrono::seconds(args.getInt("max-run-s", 120));
  if (!client.runUntil([&] { return done; }, swipc::deadlineIn(maxRun))) error = "still running at --max-run-s";
  if (port) port->close();
  client.close();
  if (!error.empty()) {
    std::fprintf(stderr, "ports_bench page-b: %s\n", error.c_str());
    return 1;
  }
  return 0;
}

/// --role page-a: attach, relay port2 to --peer, ping-pong over port1; prints
/// "ok <p50Ns> <p99Ns> <samples>" or "error <what>".
int pageAMain(const sb::Args& args) {
  auto c = connectWithRetry(args.getOr("runtime-dir", ""), CONNECT_PATIENCE);
  if (!c) {
    sayLine("error attach: " + c.error().describe());
    return 1;
  }
  swipc::Client& client = *c;
  const std::string peer = args.getOr("peer", "");
  const int warmup = static_cast<int>(args.getInt("warmup", 2'000));
  const int iterations = static_cast<int>(args.getInt("iterations", 20'000));
  const uint64_t maxNs = static_cast<uint64_t>(args.getInt("max-seconds", 4)) * 1'000'000'000ull;

  std::optional<swipc::Value> relayReply;
  client.onMessage([&](const swipc::MessageEvent& e) {
    if (e.data.find("relayed")) relayReply = e.data;
  });
  client.startMessages();

  auto channel = swipc::MessageChannel::create(client);
  swipc::MessagePort port = channel.port1;

  // The ping-pong runs from port1's callback: each reply records a sample and sends the next.
  swipc::Value msg = swipc::Value::map({{"type", "PING"},
                                         {"seq", 0},
                                         {"pad", swipc::Bytes{std::vector<uint8_t>(PAD_BYTES, 0xA5)}}});
  const int total = warmup + iterations;
  int64_t seq = 0;
  uint64_t t0 = 0;
  uint64_t stopAt = 0;
  std::vector<uint64_t> samples;
  samples.reserve(static_cast<size_t>(iterations));
  bool done = false;
  bool closed = false;
  std::string error;
  auto sendNext = [&] {
    msg.set("seq", seq);
    t0 = sb::nowNs();
    if (auto r = port.postMessage(msg); !r) {
      error = "port.postMessage: " + r.error().describe();
      done = true;
    }
  };
  port.onClose([&] {
    closed = true;
    if (!done) error = "the port closed during the ping-pong";
    done = true;
  });
  port.onMessage([&](const swipc::MessageEvent& e) {
    const uint64_t t1 = sb::nowNs();
    if (done) return;
    const swipc::Value* pad = e.data.find("pad");
    if (e.data["seq"].intOr(-1) != seq || !pad || !pad->isBytes() || pad->asBytes().data.size() != PAD_BYTES) {
      error = "wrong echo for seq " + std::to_string(seq) + " (got seq " + std::to_string(e.data["seq"].intOr(-1)) + ")";
      done = true;
      return;
    }
    if (seq >= warmup) samples.push_back(t1 - t0);
    if (seq == warmup) stopAt = t1 + maxNs;
    ++seq;
    if (seq >= total) {
      done = true;
      return;
    }
    if (seq > warmup && t1 > stopAt && samples.size() >= 1000) {
      std::fprintf(stderr, "ports_bench: relayed port ping-pong stopped after %zu samples (time cap)\n",
                   samples.size());
      done = true;
      return;
    }
    sendNext();
  });

  swipc::Controller* controller = client.controller();
  if (!controller) {
    sayLine("error: page A is not controlled");
    return 1;
  }
  auto posted = controller->postMessage(swipc::Value::map({{"type", "RELAY_PORT"}, {"to", peer}}),
                                        {std::move(channel.port2)});
  if (!posted) {
    sayLine("error RELAY_PORT post: " + posted.error().describe());
    return 1;
  }
  if (!client.runUntil([&] { return relayReply.has_value(); }, swipc::deadlineIn(10s))) {
    sayLine("error: no answer to RELAY_PORT within 10 s");
    return 1;
  }
  if (!(*relayReply)["relayed"].isBool() || !(*relayReply)["relayed"].asBool()) {
    sayLine("error: RELAY_PORT refused: " + (*relayReply)["error"]["message"].textOr("?"));
    return 1;
  }

  sendNext();
  const auto maxRun = std::chrono::seconds(args.getInt("max-run-s", 120));
  if (!client.runUntil([&] { return done; }, swipc::deadlineIn(maxRun)) && error.empty())
    error = "ping-pong still running at --max-run-s (seq " + std::to_string(seq) + ")";
  (void)closed;
  port.close();
  client.close();
  if (!error.empty()) {
    sayLine("error " + error);
    return 1;
  }
  sb::Latency l = sb::summarize(samples);
  std::ostringstream os;
  os << "ok " << l.p50Ns << ' ' << l.p99Ns << ' ' << l.samples;
  sayLine(os.str());
  return 0;
}

// ------------------------------------------------------------------------------------------------ driver

struct Limits {
  int iterations = 20'000;
  int warmup = 2'000;
  int maxSeconds = 4;
};

sb::Latency parseResult(const std::string& line) {
  std::istringstream is(line);
  std::string tag;
  sb::Latency l;
  is >> tag >> l.p50Ns >> l.p99Ns >> l.samples;
  if (tag != "ok" || is.fail()) fail("page A: " + line);
  return l;
}

/// messageSW(ECHO with 64 B of bytes) round trips from this process (blocking: no spin).
sb::Latency measureMessageSW(swipc::Client& client, const Limits& limits) {
  const swipc::Value data =
      swipc::Value::map({{"type", "ECHO"}, {"pad", swipc::Bytes{std::vector<uint8_t>(PAD_BYTES, 0xA5)}}});
  auto first = client.messageSW(data, 5000ms);
  if (!first) fail("messageSW(ECHO): " + first.error().describe());
  if (!(*first == data)) fail("messageSW(ECHO): the reply is not the echoed message");
  std::vector<uint64_t> samples;
  samples.reserve(static_cast<size_t>(limits.iterations));
  uint64_t stopAt = 0;
  const int total = limits.warmup + limits.iterations;
  for (int i = 0; i < total; ++i) {
    const uint64_t t0 = sb::nowNs();
    auto reply = client.messageSW(data, 5000ms);
    const uint64_t t1 = sb::nowNs();
    if (!reply) fail("messageSW(ECHO) #" + std::to_string(i) + ": " + reply.error().describe());
    if (i < limits.warmup) continue;
    if (i == limits.warmup) stopAt = t1 + static_cast<uint64_t>(limits.maxSeconds) * 1'000'000'000ull;
    samples.push_back(t1 - t0);
    if (t1 > stopAt && samples.size() >= 1000) {
      std::fprintf(stderr, "ports_bench: messageSW stopped after %zu samples (time cap)\n", samples.size());
      break;
    }
  }
  return sb::summarize(samples);
}

int driverMain(const sb::Args& args) {
  installSignalHandlers();
  ::alarm(static_cast<unsigned>(args.getInt("timeout-s", 120)));  // last-resort watchdog
  const std::string logLevel = args.getOr("log-level", "warn");
  if (auto r = swipc::initLogging("ports_bench", logLevel); !r) fail("--log-level: " + r.error().describe());
  const std::string daemonPath = args.getOr("daemon", defaultDaemonPath());
  if (::access(daemonPath.c_str(), X_OK) != 0)
    fail("sw_daemon not found or not executable: " + daemonPath + " (use --daemon PATH)");
  Limits limits;
  limits.iterations = static_cast<int>(args.getInt("iterations", limits.iterations));
  limits.warmup = static_cast<int>(args.getInt("warmup", limits.warmup));
  limits.maxSeconds = static_cast<int>(args.getInt("max-seconds", limits.maxSeconds));
  const uint64_t startNs = sb::nowNs();
  auto phaseDone = [&](const char* what) {
    std::fprintf(stderr, "ports_bench: %s done at %.1f s\n", what, static_cast<double>(sb::nowNs() - startNs) / 1e9);
  };

  // Same-run baseline first, while this process has no library threads: the project's SPSC ring
  // ping-pong with a forked echo child, both sides sleeping on an eventfd doorbell.
  sb::PingPongConfig ping;
  ping.payloadBytes = PAD_BYTES;
  ping.iterations = limits.iterations;
  ping.warmup = limits.warmup;
  ping.maxSeconds = 2;
  const sb::Latency ringBlock = sb::ringRoundTrip(ping, sb::WaitMode::BLOCK);
  phaseDone("baseline");

  RuntimeDir dir;
  Child daemon("sw_daemon",
               {daemonPath, "--scope", SCOPE, "--runtime-dir", dir.path(), "--log-level", logLevel}, -1, SIGTERM,
               SIGTERM, STOP_GRACE);
  const std::string self = selfPath();
  const std::string maxRun = std::to_string(std::max(30, limits.maxSeconds * 4 + 20));

  sb::Latency relay;
  {
    Pipe outB;
    Child pageB("page B", {self, "--role", "page-b", "--runtime-dir", dir.path(), "--log-level", logLevel,
                           "--max-run-s", maxRun},
                outB.writeFd(), SIGKILL);
    outB.closeWrite();
    const std::string hello = outB.readLine(pageB, 15s, &daemon);
    if (hello.rfind("id ", 0) != 0) fail("page B: " + hello);
    const std::string peerId = hello.substr(3);

    Pipe outA;
    Child pageA("page A", {self, "--role", "page-a", "--runtime-dir", dir.path(), "--log-level", logLevel,
                           "--peer", peerId, "--iterations", std::to_string(limits.iterations), "--warmup",
                           std::to_string(limits.warmup), "--max-seconds", std::to_string(limits.maxSeconds),
                           "--max-run-s", maxRun},
                outA.writeFd(), SIGKILL);
    outA.closeWrite();
    relay = parseResult(outA.readLine(pageA, std::chrono::seconds(std::stoi(maxRun) + 15), &daemon));
    // A closed port1 before answering: B sees `close` and exits by itself.
    if (!pageA.waitExit(5000ms) || !pageA.exitedCleanly())
      std::fprintf(stderr, "ports_bench: page A did not exit cleanly (%s)\n", pageA.describeExit().c_str());
    if (!pageB.waitExit(5000ms) || !pageB.exitedCleanly())
      std::fprintf(stderr, "ports_bench: page B did not exit cleanly after the port closed (%s)\n",
                   pageB.describeExit().c_str());
  }  // both pages reaped (or killed) here
  phaseDone("relayed port ping-pong");

  sb::Latency viaMessageSW;
  {
    auto client = connectWithRetry(dir.path(), CONNECT_PATIENCE);
    if (!client) fail("attach: " + client.error().describe());
    viaMessageSW = measureMessageSW(*client, limits);
    client->close();
  }
  phaseDone("messageSW");

  sb::emit("relayed_port_rtt_blocking_64B", "p50", relay.p50Ns, "ns", ringBlock.p50Ns);
  sb::emit("relayed_port_rtt_blocking_64B", "p99", relay.p99Ns, "ns", ringBlock.p99Ns);
  sb::emit("messageSW_port_rtt_blocking_64B", "p50", viaMessageSW.p50Ns, "ns", ringBlock.p50Ns);
  sb::emit("messageSW_port_rtt_blocking_64B", "p99", viaMessageSW.p99Ns, "ns", ringBlock.p99Ns);

  daemon.terminate(SIGTERM, STOP_GRACE);
  if (!daemon.exitedCleanly())
    std::fprintf(stderr, "ports_bench: sw_daemon did not exit cleanly on SIGTERM (%s)\n", daemon.describeExit().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* who = "ports_bench";
  try {
    sb::Args args(argc, argv);
    if (args.has("help")) {
      std::printf("usage: ports_bench [--daemon PATH] [--iterations N] [--warmup N] [--max-seconds S]"
                  " [--log-level L] [--timeout-s S]\n");
      return 0;
    }
    const std::string role = args.getOr("role", "");
    if (!role.empty()) {
      who = role == "page-a" ? "ports_bench page-a" : "ports_bench page-b";
      if (auto r = swipc::initLogging(who, args.getOr("log-level", "warn")); !r) {
        std::fprintf(stderr, "%s: --log-level: %s\n", who, r.error().describe().c_str());
        return 1;
      }
      if (role == "page-a") return pageAMain(args);
      if (role == "page-b") return pageBMain(args);
      std::fprintf(stderr, "ports_bench: unknown --role %s\n", role.c_str());
      return 2;
    }
    return driverMain(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", who, e.what());
    return 1;
  }
}
