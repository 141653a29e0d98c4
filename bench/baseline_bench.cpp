// baseline_bench: the raw transports swipc is measured against (DESIGN §10), on their own.
//
//   baseline_bench [--iterations N] [--warmup N] [--messages N] [--daemon PATH (ignored)]
//
// Prints one JSON line per result; baseline/ratio are null (these are the baselines).
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <string>

#include "baseline.h"

namespace sb = swipc::bench;

int main(int argc, char** argv) {
  try {
    sb::Args args(argc, argv);
    if (args.has("help")) {
      std::printf("usage: baseline_bench [--iterations N] [--warmup N] [--messages N]\n");
      return 0;
    }
    ::alarm(static_cast<unsigned>(args.getInt("timeout-s", 120)));  // last-resort watchdog
    sb::PingPongConfig ping;
    ping.iterations = static_cast<int>(args.getInt("iterations", 20'000));
    ping.warmup = static_cast<int>(args.getInt("warmup", 2'000));
    sb::ThroughputConfig tput;
    tput.messages = static_cast<uint64_t>(args.getInt("messages", 2'000'000));

    for (uint32_t size : {64u, 4096u}) {
      ping.payloadBytes = size;
      const std::string sz = size == 64 ? "64B" : "4KiB";
      for (sb::WaitMode mode : {sb::WaitMode::SPIN, sb::WaitMode::BLOCK}) {
        sb::Latency l = sb::ringRoundTrip(ping, mode);
        const std::string name = "raw_ring_rtt_" + std::string(sb::waitModeName(mode)) + "_" + sz;
        sb::emit(name, "p50", l.p50Ns, "ns");
        sb::emit(name, "p99", l.p99Ns, "ns");
      }
      sb::Latency s = sb::unixSocketRoundTrip(ping);
      sb::emit("unix_socket_rtt_" + sz, "p50", s.p50Ns, "ns");
      sb::emit("unix_socket_rtt_" + sz, "p99", s.p99Ns, "ns");
    }
    sb::emit("raw_ring_throughput_64B", "rate", sb::ringThroughput(tput), "msg/s");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "baseline_bench: %s\n", e.what());
    return 1;
  }
}
