#include "baseline.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "queue/ring_layout.h"
#include "queue/spsc_ring.h"

namespace swipc::bench {

namespace {

using queue::RecordView;
using queue::RingHeader;
using queue::RingReader;
using queue::RingStatus;
using queue::RingWriter;

/// A single wait gives up after this long (the peer died or wedged): the benchmark fails instead
/// of hanging.
constexpr uint64_t WAIT_LIMIT_NS = 10'000'000'000ull;
constexpr uint32_t RECORD_TYPE_DATA = 1;
constexpr uint32_t RECORD_TYPE_STOP = 2;  // parent -> child: leave the loop and exit
/// A measurement cut short by its time cap still reports at least this many samples.
constexpr size_t MIN_SAMPLES = 1'000;
constexpr uint64_t SPINS_BEFORE_YIELD = 20'000;  // ~0.1-1 ms of pause instructions

[[noreturn]] void throwErrno(const char* what) {
  throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
}

/// An fd closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

/// An anonymous MAP_SHARED mapping (shared with children forked after it is made).
class SharedMapping {
 public:
  explicit SharedMapping(size_t bytes) : bytes_(bytes) {
    base_ = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (base_ == MAP_FAILED) throwErrno("mmap");
  }
  SharedMapping(const SharedMapping&) = delete;
  SharedMapping& operator=(const SharedMapping&) = delete;
  ~SharedMapping() { ::munmap(base_, bytes_); }
  uint8_t* bytes() const { return static_cast<uint8_t*>(base_); }

 private:
  void* base_;
  size_t bytes_;
};

/// Two rings (a: parent → child, b: child → parent) in one shared mapping.
///   [hdr a | hdr b | … page … | data a (cap) | data b (cap)]
struct RingPair {
  static constexpr size_t DATA_OFFSET = 4096;

  explicit RingPair(uint64_t capacity)
      : capacity(capacity), mapping(DATA_OFFSET + 2 * capacity) {
    static_assert(2 * sizeof(RingHeader) <= DATA_OFFSET);
    a = new (mapping.bytes()) RingHeader();
    b = new (mapping.bytes() + sizeof(RingHeader)) RingHeader();
  }
  uint8_t* dataA() const { return mapping.bytes() + DATA_OFFSET; }
  uint8_t* dataB() const { return mapping.bytes() + DATA_OFFSET + capacity; }

  uint64_t capacity;
  SharedMapping mapping;
  RingHeader* a;
  RingHeader* b;
};

/// One step of a busy-wait: a pause instruction, and after a long fruitless spin also a
/// sched_yield(), so an oversubscribed machine (the peer preempted on our core) does not collapse.
void spinPause(uint64_t spins) {
  cpuRelax();
  if (spins >= SPINS_BEFORE_YIELD) ::sched_yield();
}

void signalDoorbell(int efd) {
  const uint64_t one = 1;
  while (::write(efd, &one, sizeof one) < 0) {
    if (errno != EINTR) throwErrno("write(eventfd)");
  }
}

/// Set by the SIGCHLD handler while a baseline runs: a peer that exits early wakes a blocked
/// reader (read() fails with EINTR) instead of leaving it asleep forever.
volatile sig_atomic_t childExited = 0;

void onSigchld(int) { childExited = 1; }

/// Installs onSigchld (without SA_RESTART) for one baseline run; restores the old action after.
class SigchldScope {
 public:
  SigchldScope() {
    childExited = 0;
    struct sigaction sa {};
    sa.sa_handler = onSigchld;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_NOCLDSTOP;
    ::sigaction(SIGCHLD, &sa, &old_);
  }
  SigchldScope(const SigchldScope&) = delete;
  SigchldScope& operator=(const SigchldScope&) = delete;
  ~SigchldScope() { ::sigaction(SIGCHLD, &old_, nullptr); }

 private:
  struct sigaction old_ {};
};

/// Blocks in read() until the doorbell rings (or a signal interrupts); the caller re-checks.
void waitDoorbell(int efd) {
  uint64_t count = 0;
  if (::read(efd, &count, sizeof count) < 0 && errno != EINTR) throwErrno("read(eventfd)");
}

/// Waits for the next record. BLOCK: reader-sleeping handshake, then sleep on the doorbell.
RecordView waitRecord(RingReader& reader, WaitMode mode, int doorbell) {
  RecordView view;
  const uint64_t start = nowNs();
  for (uint64_t spins = 0;; ++spins) {
    RingStatus s = reader.peek(view);
    if (s == RingStatus::OK) return view;
    if (s == RingStatus::CORRUPT) throw std::runtime_error("ring reported CORRUPT");
    if (mode == WaitMode::SPIN) {
      spinPause(spins);
      if ((spins & 0xFFFF) == 0 && nowNs() - start > WAIT_LIMIT_NS) {
        throw std::runtime_error("timed out waiting for the peer (spin)");
      }
      continue;
    }
    reader.setSleeping(true);
    if (reader.hasData()) {
      reader.setSleeping(false);
      continue;
    }
    if (childExited) {
      reader.setSleeping(false);
      if (reader.hasData()) continue;
      throw std::runtime_error("the peer process exited");
    }
    waitDoorbell(doorbell);
    reader.setSleeping(false);
  }
}

/// Writes one record (spinning while FULL) and rings the reader's doorbell when it sleeps.
void sendRecord(RingWriter& writer, const uint8_t* bytes, uint32_t length, WaitMode mode, int doorbell,
                uint32_t type = RECORD_TYPE_DATA) {
  const uint64_t start = nowNs();
  for (uint64_t spins = 0;; ++spins) {
    RingStatus s = writer.tryWrite(type, bytes, length);
    if (s == RingStatus::OK) break;
    if (s == RingStatus::CORRUPT) throw std::runtime_error("ring reported CORRUPT");
    spinPause(spins);
    if ((spins & 0xFFFF) == 0 && nowNs() - start > WAIT_LIMIT_NS) {
      throw std::runtime_error("timed out waiting for ring space");
    }
  }
  if (mode == WaitMode::BLOCK && writer.takeReaderSleeping()) signalDoorbell(doorbell);
}

void noteTimeCap(const char* what, uint64_t samples) {
  std::fprintf(stderr, "bench: %s stopped at its time cap after %llu samples\n", what,
               static_cast<unsigned long long>(samples));
}

/// Forks a child that runs `body` and exits (0 on success, 1 on an exception). The child dies with
/// its parent. The parent gets the pid.
pid_t forkChild(const std::function<void()>& body) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throwErrno("fork");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    int code = 0;
    try {
      body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench child: %s\n", e.what());
      code = 1;
    }
    std::fflush(stderr);
    ::_exit(code);
  }
  return pid;
}

/// Waits for the child; throws when it failed.
void reapChild(pid_t pid, const char* what) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throwErrno("waitpid");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error(std::string(what) + ": child failed (status " + std::to_string(status) + ")");
  }
}

/// Kills and reaps the child when the parent side throws.
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid) : pid_(pid) {}
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  ~ChildGuard() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }
  void reap(const char* what) {
    pid_t pid = pid_;
    pid_ = -1;
    reapChild(pid, what);
  }

 private:
  pid_t pid_;
};

}  // namespace

std::string_view waitModeName(WaitMode mode) { return mode == WaitMode::SPIN ? "spin" : "block"; }

Latency summarize(std::vector<uint64_t>& samplesNs) {
  Latency out;
  out.samples = samplesNs.size();
  if (samplesNs.empty()) return out;
  std::sort(samplesNs.begin(), samplesNs.end());
  auto rank = [&](double q) {
    size_t i = static_cast<size_t>(q * static_cast<double>(samplesNs.size()));
    return static_cast<double>(samplesNs[std::min(i, samplesNs.size() - 1)]);
  };
  out.p50Ns = rank(0.50);
  out.p99Ns = rank(0.99);
  return out;
}

Latency ringRoundTrip(const PingPongConfig& config, WaitMode mode) {
  RingPair rings(BASELINE_RING_BYTES);
  Fd toChild(::eventfd(0, EFD_CLOEXEC));
  Fd toParent(::eventfd(0, EFD_CLOEXEC));
  if (toChild.get() < 0 || toParent.get() < 0) throwErrno("eventfd");
  const int total = config.warmup + config.iterations;
  const uint32_t len = config.payloadBytes;
  SigchldScope sigchld;

  // The child echoes every DATA record until a STOP record.
  pid_t pid = forkChild([&] {
    RingReader in(rings.a, rings.dataA(), rings.capacity);
    RingWriter out(rings.b, rings.dataB(), rings.capacity);
    std::vector<uint8_t> buf(len);
    for (;;) {
      RecordView v = waitRecord(in, mode, toChild.get());
      if (v.type == RECORD_TYPE_STOP) return;
      if (v.length != len) throw std::runtime_error("echo child: unexpected record length");
      std::memcpy(buf.data(), v.payload, v.length);  // copy out before use, as the library does
      in.release();
      sendRecord(out, buf.data(), len, mode, toParent.get());
    }
  });
  ChildGuard guard(pid);

  RingWriter out(rings.a, rings.dataA(), rings.capacity);
  RingReader in(rings.b, rings.dataB(), rings.capacity);
  std::vector<uint8_t> msg(len, 0x5A);
  std::vector<uint8_t> reply(len);
  std::vector<uint64_t> samples;
  samples.reserve(static_cast<size_t>(config.iterations));
  const uint64_t stopAt = nowNs() + config.maxSeconds * 1'000'000'000ull;
  for (int i = 0; i < total; ++i) {
    msg[0] = static_cast<uint8_t>(i);
    const uint64_t t0 = nowNs();
    sendRecord(out, msg.data(), len, mode, toChild.get());
    RecordView v = waitRecord(in, mode, toParent.get());
    std::memcpy(reply.data(), v.payload, std::min<uint32_t>(v.length, len));
    in.release();
    const uint64_t t1 = nowNs();
    if (v.length != len || reply[0] != msg[0]) throw std::runtime_error("ring ping-pong: wrong echo");
    if (i >= config.warmup) samples.push_back(t1 - t0);
    if (t1 > stopAt && samples.size() >= MIN_SAMPLES) {
      noteTimeCap("raw ring ping-pong", samples.size());
      break;
    }
  }
  sendRecord(out, nullptr, 0, mode, toChild.get(), RECORD_TYPE_STOP);
  guard.reap("ring ping-pong");
  return summarize(samples);
}

namespace {

void writeAll(int fd, const uint8_t* p, size_t n) {
  for (;;) {
    ssize_t w = ::write(fd, p, n);
    if (w == static_cast<ssize_t>(n)) return;
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throwErrno("write(socket)");
    throw std::runtime_error("short write on SOCK_SEQPACKET");
  }
}

/// One datagram; 0 at end of stream.
size_t readOne(int fd, uint8_t* p, size_t cap) {
  for (;;) {
    ssize_t r = ::read(fd, p, cap);
    if (r >= 0) return static_cast<size_t>(r);
    if (errno == EINTR) continue;
    throwErrno("read(socket)");
  }
}

}  // namespace

Latency unixSocketRoundTrip(const PingPongConfig& config) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) throwErrno("socketpair");
  Fd parentEnd(sv[0]);
  Fd childEnd(sv[1]);
  const int total = config.warmup + config.iterations;
  const uint32_t len = config.payloadBytes;

  // The child echoes every datagram until the parent closes its end.
  pid_t pid = forkChild([&] {
    parentEnd.reset();
    std::vector<uint8_t> buf(len + 1);
    for (;;) {
      size_t n = readOne(childEnd.get(), buf.data(), buf.size());
      if (n == 0) return;
      writeAll(childEnd.get(), buf.data(), n);
    }
  });
  ChildGuard guard(pid);
  childEnd.reset();  // so the child's exit shows as end of stream here
  const int fd = parentEnd.get();

  std::vector<uint8_t> msg(len, 0x5A);
  std::vector<uint8_t> reply(len + 1);
  std::vector<uint64_t> samples;
  samples.reserve(static_cast<size_t>(config.iterations));
  const uint64_t stopAt = nowNs() + config.maxSeconds * 1'000'000'000ull;
  for (int i = 0; i < total; ++i) {
    msg[0] = static_cast<uint8_t>(i);
    const uint64_t t0 = nowNs();
    writeAll(fd, msg.data(), len);
    size_t n = readOne(fd, reply.data(), reply.size());
    const uint64_t t1 = nowNs();
    if (n == 0) throw std::runtime_error("socket ping-pong: the echo child went away");
    if (n != len || reply[0] != msg[0]) throw std::runtime_error("socket ping-pong: wrong echo");
    if (i >= config.warmup) samples.push_back(t1 - t0);
    if (t1 > stopAt && samples.size() >= MIN_SAMPLES) {
      noteTimeCap("unix socket ping-pong", samples.size());
      break;
    }
  }
  parentEnd.reset();  // end of stream: the child exits
  guard.reap("socket ping-pong");
  return summarize(samples);
}

double ringThroughput(const ThroughputConfig& config) {
  RingPair rings(BASELINE_RING_BYTES);  // only ring a is used
  const uint32_t len = config.payloadBytes;

  // The child consumes (copies out) every DATA record until a STOP record.
  pid_t pid = forkChild([&] {
    RingReader in(rings.a, rings.dataA(), rings.capacity);
    std::vector<uint8_t> buf(len);
    uint64_t checksum = 0;
    for (;;) {
      RecordView v = waitRecord(in, WaitMode::SPIN, -1);
      if (v.type == RECORD_TYPE_STOP) break;
      if (v.length != len) throw std::runtime_error("throughput child: unexpected record length");
      std::memcpy(buf.data(), v.payload, v.length);
      checksum += buf[0];
      in.release();
    }
    if (checksum == 0xFFFF'FFFF'FFFF'FFFFull) std::fprintf(stderr, "unlikely\n");  // keep the copy
  });
  ChildGuard guard(pid);

  RingWriter out(rings.a, rings.dataA(), rings.capacity);
  std::vector<uint8_t> msg(len, 0x5A);
  auto waitDrained = [&] {
    const uint64_t start = nowNs();
    for (uint64_t spins = 0; rings.a->head.load(std::memory_order_acquire) != out.tail(); ++spins) {
      spinPause(spins);
      if ((spins & 0xFFFF) == 0 && nowNs() - start > WAIT_LIMIT_NS) throw std::runtime_error("throughput: reader stalled");
    }
  };
  for (uint64_t i = 0; i < config.warmup; ++i) {
    msg[0] = static_cast<uint8_t>(i);
    sendRecord(out, msg.data(), len, WaitMode::SPIN, -1);
  }
  waitDrained();
  const uint64_t t0 = nowNs();
  const uint64_t stopAt = t0 + config.maxSeconds * 1'000'000'000ull;
  uint64_t sent = 0;
  while (sent < config.messages) {
    msg[0] = static_cast<uint8_t>(sent);
    sendRecord(out, msg.data(), len, WaitMode::SPIN, -1);
    ++sent;
    if ((sent & 0xFFFF) == 0 && nowNs() > stopAt) {
      noteTimeCap("raw ring throughput", sent);
      break;
    }
  }
  waitDrained();
  const uint64_t t1 = nowNs();
  sendRecord(out, nullptr, 0, WaitMode::SPIN, -1, RECORD_TYPE_STOP);
  guard.reap("ring throughput");
  return static_cast<double>(sent) * 1e9 / static_cast<double>(t1 - t0);
}

void emit(std::string_view bench, std::string_view metric, double value, std::string_view unit,
          std::optional<double> baseline) {
  nlohmann::ordered_json j;
  j["bench"] = bench;
  j["metric"] = metric;
  j["value"] = value;
  j["unit"] = unit;
  if (baseline) {
    j["baseline"] = *baseline;
    j["ratio"] = *baseline != 0 ? value / *baseline : 0.0;
  } else {
    j["baseline"] = nullptr;
    j["ratio"] = nullptr;
  }
  std::string line = j.dump();
  std::fprintf(stdout, "%s\n", line.c_str());
  std::fflush(stdout);
}

Args::Args(int argc, char** argv) : args_(argv + (argc > 0 ? 1 : 0), argv + argc) {}

namespace {
/// "--name" for both spellings callers use: "name" and "--name".
std::string flagFor(std::string_view name) {
  if (name.rfind("--", 0) == 0) return std::string(name);
  return "--" + std::string(name);
}
}  // namespace

std::optional<std::string> Args::get(std::string_view name) const {
  const std::string flag = flagFor(name);
  for (size_t i = 0; i < args_.size(); ++i) {
    if (args_[i] == flag && i + 1 < args_.size()) return args_[i + 1];
    if (args_[i].rfind(flag + "=", 0) == 0) return args_[i].substr(flag.size() + 1);
  }
  return std::nullopt;
}

std::string Args::getOr(std::string_view name, std::string fallback) const {
  auto v = get(name);
  return v ? *v : std::move(fallback);
}

long Args::getInt(std::string_view name, long fallback) const {
  auto v = get(name);
  if (!v) return fallback;
  char* end = nullptr;
  long n = std::strtol(v->c_str(), &end, 10);
  if (end == v->c_str() || *end != '\0') throw std::runtime_error(flagFor(name) + ": not an integer: " + *v);
  return n;
}

bool Args::has(std::string_view name) const {
  const std::string flag = flagFor(name);
  return std::any_of(args_.begin(), args_.end(),
                     [&](const std::string& a) { return a == flag || a.rfind(flag + "=", 0) == 0; });
}

}  // namespace swipc::bench
