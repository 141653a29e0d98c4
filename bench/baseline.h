// Same-run baselines for the swipc benchmarks (DESIGN §10), plus the small helpers every benchmark
// program shares: percentiles, the JSON result line, command-line parsing.
//
// Baselines, each between this process and a forked echo/consumer child:
//   ringRoundTrip       two queue::RingWriter/RingReader pairs (the project's own SPSC ring) in one
//                       anonymous MAP_SHARED mapping; SPIN busy-polls, BLOCK sleeps on an eventfd
//                       doorbell using the ring's reader-sleeping handshake.
//   unixSocketRoundTrip socketpair(AF_UNIX, SOCK_SEQPACKET), blocking read()/write().
//   ringThroughput      one ring, the writer spins on FULL, the reader busy-polls.
//
// Errors (a syscall failing, a child dying, a CORRUPT ring) throw std::runtime_error; benchmark
// mains catch it, print it to stderr and exit 1.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace swipc::bench {

/// How a side waits for the next record.
enum class WaitMode { SPIN, BLOCK };

std::string_view waitModeName(WaitMode mode);

/// Round-trip latency summary in nanoseconds.
struct Latency {
  double p50Ns = 0;
  double p99Ns = 0;
  size_t samples = 0;
};

/// Sorts `samplesNs` and returns p50/p99 (nearest rank). Empty input → zeros.
Latency summarize(std::vector<uint64_t>& samplesNs);

struct PingPongConfig {
  uint32_t payloadBytes = 64;
  int iterations = 20'000;  // measured round trips
  int warmup = 2'000;       // unmeasured round trips first
  uint64_t maxSeconds = 5;  // stop early (with ≥ 1,000 samples) after this long
};

/// Ring capacity used by the baselines: the same as the library's default per-client rings.
inline constexpr uint64_t BASELINE_RING_BYTES = 64 * 1024;

/// Ping-pong over the project's SPSC ring (payload copied out by the reader, echoed back).
Latency ringRoundTrip(const PingPongConfig& config, WaitMode mode);

/// Ping-pong over a SOCK_SEQPACKET socketpair with blocking read/write.
Latency unixSocketRoundTrip(const PingPongConfig& config);

struct ThroughputConfig {
  uint32_t payloadBytes = 64;
  uint64_t messages = 2'000'000;  // measured
  uint64_t warmup = 100'000;      // unmeasured, drained before the clock starts
  uint64_t maxSeconds = 5;        // stop early after this long (rate of what was sent)
};

/// One-way ring throughput in messages per second (writer spins on FULL).
double ringThroughput(const ThroughputConfig& config);

/// Prints one result line to stdout and flushes:
/// {"bench":…,"metric":…,"value":…,"unit":…,"baseline":…|null,"ratio":value/baseline|null}
void emit(std::string_view bench, std::string_view metric, double value, std::string_view unit,
          std::optional<double> baseline = std::nullopt);

/// Minimal `--name value` / `--flag` parser shared by the benchmark mains. Names may be given with
/// or without the leading "--".
class Args {
 public:
  Args(int argc, char** argv);
  /// Value of `--name VALUE` or `--name=VALUE`, if given.
  std::optional<std::string> get(std::string_view name) const;
  std::string getOr(std::string_view name, std::string fallback) const;
  long getInt(std::string_view name, long fallback) const;
  bool has(std::string_view name) const;

 private:
  std::vector<std::string> args_;
};

/// Busy-wait hint for spin loops.
inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#else
  asm volatile("" ::: "memory");
#endif
}

inline uint64_t nowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace swipc::bench
