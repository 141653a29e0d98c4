// fetch_bench: Background Fetch through the public client API against `curl -o` of the same URL
// from the same server in the same run (DESIGN §10, issue 16). The server is Debian's nginx on
// 127.0.0.1 (a generated config in a temporary directory), serving a generated file.
//
//   fetch_bench [--daemon PATH] [--bytes N] [--runs N] [--pings N] [--pages N] [--log-level L]
//
// Results (value / baseline = ratio; aim in brackets):
//   fetch_throughput_<size>        MB/s from fetch() to the final progress event, body stored
//                                  under the state dir, vs `curl -s -o FILE` into the same file
//                                  system; medians of --runs alternating runs          [>= 0.9]
//   fetch_daemon_peak_rss_<size>   the daemon's peak RSS (VmHWM) growth over the downloads, MiB,
//                                  vs curl's own peak RSS (getrusage of the child)    [flat]
//   fetch_messagesw_p99_4downloads_vs_idle
//                                  messageSW (64 B ECHO) p99 while 4 fetches of --bytes/4 run,
//                                  vs idle p99 in the same run                         [<= 2]
//   fetch_messagesw_p99_4downloads_vs_4curl
//                                  the same p99 vs messageSW p99 while four `curl -o` processes
//                                  download the same files (the machine's share: on 2 cores the
//                                  downloads take both cores, whoever runs them)
//   fetch_progress_fanout_<N>pages spread (ms) between the first and the last of N page
//                                  processes receiving a fetch's final progress event, vs the
//                                  same N pages receiving one BroadcastChannel post   [—]
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "baseline.h"
#include "daemon_process.h"
#include "swipc/background_fetch.h"
#include "swipc/broadcast_channel.h"
#include "swipc/client.h"
#include "swipc/log.h"

extern char** environ;

namespace sb = swipc::bench;
using namespace std::chrono_literals;

namespace {

constexpr const char* SCOPE = "fetchbench";

std::string tempDir(const char* stem) {
  std::string t = std::string("/tmp/") + stem + ".XXXXXX";
  if (::mkdtemp(t.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return t;
}

/// A generated file of `bytes` (xorshift words), written in 4 MiB pieces.
void writeBody(const std::string& path, uint64_t bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  std::vector<uint64_t> buf(512 * 1024);
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (uint64_t done = 0; done < bytes;) {
    for (auto& w : buf) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      w = x;
    }
    const uint64_t n = std::min<uint64_t>(bytes - done, buf.size() * 8);
    f.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(n));
    done += n;
  }
  if (!f) throw std::runtime_error("cannot write " + path);
}

uint16_t freePort() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

pid_t spawn(const std::vector<std::string>& argv, int stdoutFd = -1) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (stdoutFd >= 0) {
    posix_spawn_file_actions_adddup2(&fa, stdoutFd, 1);
  } else {
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  }
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

/// nginx in the foreground, one process, serving `root` on 127.0.0.1; `?rate=B` throttles.
class Nginx {
 public:
  explicit Nginx(const std::string& root) : dir_(tempDir("swipc-bench-nginx")), port_(freePort()) {
    const std::string conf = dir_ + "/nginx.conf";
    std::ofstream c(conf);
    c << "daemon off; master_process off; worker_processes 1; pid " << dir_ << "/nginx.pid;\n"
      << "error_log " << dir_ << "/error.log warn;\n"
      << "events { worker_connections 512; }\n"
      << "http { access_log off; sendfile on; tcp_nopush on;\n"
      << "  client_body_temp_path " << dir_ << "/cb; proxy_temp_path " << dir_ << "/px;\n"
      << "  fastcgi_temp_path " << dir_ << "/fc; uwsgi_temp_path " << dir_ << "/uw; scgi_temp_path " << dir_ << "/sc;\n"
      << "  server { listen 127.0.0.1:" << port_ << "; root " << root << ";\n"
      << "    location / { if ($arg_rate) { set $limit_rate $arg_rate; } } } }\n";
    c.close();
    pid_ = spawn({"/usr/sbin/nginx", "-p", dir_, "-c", conf, "-e", dir_ + "/error.log"});
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      int s = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(port_);
      const bool up = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
      ::close(s);
      if (up) return;
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) break;
      std::this_thread::sleep_for(20ms);  // polling a port with a deadline, not synchronisation
    }
    throw std::runtime_error("nginx did not start (see " + dir_ + "/error.log)");
  }
  ~Nginx() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }

 private:
  std::string dir_;
  uint16_t port_;
  pid_t pid_ = -1;
};

/// `curl -s -o out url`: seconds, and the child's peak RSS in KiB.
std::pair<double, long> curlDownload(const std::string& url, const std::string& out) {
  const uint64_t t0 = sb::nowNs();
  pid_t pid = spawn({"curl", "-s", "-f", "-o", out, url});
  int status = 0;
  rusage ru{};
  ::wait4(pid, &status, 0, &ru);
  const double s = (sb::nowNs() - t0) / 1e9;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error("curl failed for " + url);
  return {s, ru.ru_maxrss};
}

long statusKiB(pid_t pid, const char* field) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::stol(line.substr(key.size()));
  return 0;
}

/// Runs the client's loop until `done` or `limit`; throws on the deadline.
void runUntil(swipc::Client& client, const std::function<bool()>& done, const char* what,
              std::chrono::seconds limit = 300s) {
  if (!client.runUntil(done, swipc::deadlineIn(limit))) throw std::runtime_error(std::string("timed out: ") + what);
}

/// fetch(id, url) until its final progress event; seconds.
double fetchOnce(swipc::Client& client, const std::string& id, const std::string& url) {
  bool final = false;
  std::string result;
  const uint64_t t0 = sb::nowNs();
  auto reg = client.backgroundFetch().fetch(id, {url}, {}, swipc::deadlineIn(10s));
  if (!reg) throw std::runtime_error("fetch: " + reg.error().describe());
  reg->onProgress([&](const swipc::BackgroundFetchState& s) {
    if (!s.result.empty()) {
      final = true;
      result = s.result;
    }
  });
  runUntil(client, [&] { return final; }, "a fetch's final event");
  const double s = (sb::nowNs() - t0) / 1e9;
  if (result != "success") throw std::runtime_error("fetch " + id + " ended " + result);
  return s;
}

/// Waits until the daemon has no registration left (the reference SW read and settled them).
void waitSettled(swipc::Client& client) {
  std::vector<std::string> left{"?"};
  for (int i = 0; i < 600 && !left.empty(); ++i) {
    auto ids = client.backgroundFetch().getIds(swipc::deadlineIn(5s));
    left = ids ? *ids : std::vector<std::string>{};
    // The reference SW hashes every body after the final event: let its loop work.
    bool tick = false;
    client.runUntil([&] { return tick; }, swipc::deadlineIn(50ms));
  }
}

std::vector<uint64_t> messageSwSamples(swipc::Client& client, int n, const std::function<bool()>& keepGoing = {}) {
  std::vector<uint64_t> samples;
  const swipc::Value data = swipc::Value::map({{"type", "ECHO"}, {"pad", std::string(40, 'x')}});
  for (int i = 0; i < n || (keepGoing && keepGoing()); ++i) {
    const uint64_t t0 = sb::nowNs();
    auto r = client.messageSW(data, 5s);
    if (!r) throw std::runtime_error("messageSW: " + r.error().describe());
    samples.push_back(sb::nowNs() - t0);
    if (keepGoing && !keepGoing() && i >= n) break;
  }
  return samples;
}

std::string sizeName(uint64_t bytes) {
  if (bytes % (1ull << 30) == 0) return std::to_string(bytes >> 30) + "GiB";
  return std::to_string(bytes >> 20) + "MiB";
}

/// `count` page_client `script` pages; each line they print is read with its arrival time.
class Pages {
 public:
  Pages(const std::string& pageClient, const std::string& runtimeDir, int count) {
    for (int i = 0; i < count; ++i) {
      int in[2], out[2];
      if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
      std::vector<std::string> argv{pageClient, "--scope", SCOPE, "--runtime-dir", runtimeDir, "script"};
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      posix_spawn_file_actions_t fa;
      posix_spawn_file_actions_init(&fa);
      posix_spawn_file_actions_adddup2(&fa, in[0], 0);
      posix_spawn_file_actions_adddup2(&fa, out[1], 1);
      posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
      pid_t pid = -1;
      int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
      posix_spawn_file_actions_destroy(&fa);
      ::close(in[0]);
      ::close(out[1]);
      if (rc != 0) throw std::runtime_error("cannot start page_client");
      pages_.push_back({pid, in[1], out[0], {}});
    }
  }
  ~Pages() {
    for (auto& p : pages_) {
      ::kill(p.pid, SIGKILL);
      ::waitpid(p.pid, nullptr, 0);
      ::close(p.in);
      ::close(p.out);
    }
  }
  void sendAll(const std::string& line) {
    for (auto& p : pages_) {
      std::string l = line + "\n";
      if (::write(p.in, l.data(), l.size()) != static_cast<ssize_t>(l.size())) throw std::runtime_error("page stdin");
    }
  }
  /// Waits until every page printed a line containing `needle`; the arrival times (ns).
  std::vector<uint64_t> waitAll(const std::string& needle, std::chrono::seconds limit = 60s) {
    std::vector<uint64_t> at(pages_.size(), 0);
    size_t got = 0;
    const uint64_t deadline = sb::nowNs() + static_cast<uint64_t>(std::chrono::nanoseconds(limit).count());
    for (auto& p : pages_) p.seen = 0;
    while (got < pages_.size()) {
      if (sb::nowNs() > deadline) throw std::runtime_error("pages did not all print " + needle);
      std::vector<pollfd> fds;
      for (auto& p : pages_) fds.push_back({p.out, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 100) <= 0) continue;
      const uint64_t now = sb::nowNs();
      for (size_t i = 0; i < pages_.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP))) continue;
        char buf[65536];
        ssize_t n = ::read(pages_[i].out, buf, sizeof buf);
        if (n <= 0) continue;
        pages_[i].buffer.append(buf, static_cast<size_t>(n));
        size_t nl;
        while ((nl = pages_[i].buffer.find('\n')) != std::string::npos) {
          std::string line = pages_[i].buffer.substr(0, nl);
          pages_[i].buffer.erase(0, nl + 1);
          if (at[i] == 0 && line.find(needle) != std::string::npos) {
            at[i] = now;
            ++got;
          }
        }
      }
    }
    return at;
  }

 private:
  struct Page {
    pid_t pid;
    int in, out;
    std::string buffer;
    int seen = 0;
  };
  std::vector<Page> pages_;
};

double spreadMs(const std::vector<uint64_t>& at) {
  auto [lo, hi] = std::minmax_element(at.begin(), at.end());
  return (*hi - *lo) / 1e6;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  sb::Args args(argc, argv);
  const std::string daemonPath = args.getOr("daemon", sb::defaultDaemonPath());
  const uint64_t bytes = static_cast<uint64_t>(args.getInt("bytes", 1L << 30));
  const int runs = static_cast<int>(args.getInt("runs", 3));
  const int pings = static_cast<int>(args.getInt("pings", 2000));
  const int pageCount = static_cast<int>(args.getInt("pages", 100));
  (void)swipc::initLogging("fetch_bench", args.getOr("log-level", "warn"));
  ::signal(SIGPIPE, SIG_IGN);
  if (::access("/usr/sbin/nginx", X_OK) != 0) {
    std::fprintf(stderr, "fetch_bench: /usr/sbin/nginx missing (scripts/install-deps.sh installs nginx-light)\n");
    return 1;
  }
  const std::string www = tempDir("swipc-bench-www");
  const std::string out = tempDir("swipc-bench-out");
  try {
    writeBody(www + "/body.bin", bytes);
    writeBody(www + "/quarter.bin", bytes / 4);
    writeBody(www + "/fan.bin", 32 << 20);
    Nginx nginx(www);
    sb::DaemonProcess daemon(daemonPath, SCOPE, {"--fetch-max-connections", "6"});
    swipc::Client client = sb::attachWithRetry(daemon, SCOPE);
    client.startMessages();
    const std::string name = sizeName(bytes);

    // Throughput: product and curl alternately; the daemon's peak RSS over all of it.
    const long rssBefore = statusKiB(daemon.pid(), "VmRSS");
    std::vector<double> product, base;
    long curlRss = 0;
    for (int i = 0; i < runs; ++i) {
      auto [s, rss] = curlDownload(nginx.url("/body.bin"), out + "/curl.bin");
      base.push_back(s);
      curlRss = std::max(curlRss, rss);
      std::filesystem::remove(out + "/curl.bin");
      product.push_back(fetchOnce(client, "tp-" + std::to_string(i), nginx.url("/body.bin")));
      waitSettled(client);
    }
    const double mb = bytes / 1e6;
    sb::emit("fetch_bench", "fetch_throughput_" + name, mb / median(product), "MB/s", mb / median(base));
    const long peak = statusKiB(daemon.pid(), "VmHWM");
    sb::emit("fetch_bench", "fetch_daemon_peak_rss_" + name, (peak - rssBefore) / 1024.0, "MiB", curlRss / 1024.0);

    // messageSW tail while 4 downloads run, against idle in the same run.
    auto idle = messageSwSamples(client, pings);
    // Running while any of the four has not ended (its state follows the progress events).
    // (First the same at an Internet-like 25 MB/s per download, then unthrottled.)
    {
      std::vector<swipc::BackgroundFetchRegistration> slow;
      for (int i = 0; i < 4; ++i) {
        auto reg = client.backgroundFetch().fetch("slow-" + std::to_string(i), {nginx.url("/fan.bin?rate=26214400")},
                                                  {}, swipc::deadlineIn(10s));
        if (!reg) throw std::runtime_error("fetch: " + reg.error().describe());
        slow.push_back(*reg);
      }
      auto slowRunning = [&] {
        return std::any_of(slow.begin(), slow.end(), [](const auto& r) { return r.state().result.empty(); });
      };
      auto throttled = messageSwSamples(client, pings / 4, slowRunning);
      const sb::Latency li = sb::summarize(idle), lt = sb::summarize(throttled);
      sb::emit("fetch_bench", "fetch_messagesw_p99_4downloads_25MBps_vs_idle", lt.p99Ns / 1000.0, "us", li.p99Ns / 1000.0);
      waitSettled(client);
    }
    int finals = 0;
    std::vector<swipc::BackgroundFetchRegistration> regs;
    for (int i = 0; i < 4; ++i) {
      auto reg = client.backgroundFetch().fetch("load-" + std::to_string(i), {nginx.url("/quarter.bin")}, {},
                                                swipc::deadlineIn(10s));
      if (!reg) throw std::runtime_error("fetch: " + reg.error().describe());
      reg->onProgress([&](const swipc::BackgroundFetchState& s) { finals += s.result.empty() ? 0 : 1; });
      regs.push_back(*reg);
    }
    auto running = [&] {
      return std::any_of(regs.begin(), regs.end(), [](const auto& r) { return r.state().result.empty(); });
    };
    auto loaded = messageSwSamples(client, pings / 4, running);
    (void)finals;
    waitSettled(client);
    // The machine's own share: the same four downloads by four `curl -o` processes (the daemon
    // idle but for messageSW). On 2 cores the downloads take both, whoever does them.
    std::vector<pid_t> curls;
    for (int i = 0; i < 4; ++i)
      curls.push_back(spawn({"curl", "-s", "-o", out + "/c" + std::to_string(i), nginx.url("/quarter.bin")}));
    auto curlsRunning = [&] {
      for (pid_t& p : curls)
        if (p > 0 && ::waitpid(p, nullptr, WNOHANG) == p) p = -1;
      return std::any_of(curls.begin(), curls.end(), [](pid_t p) { return p > 0; });
    };
    auto byCurl = messageSwSamples(client, pings / 4, curlsRunning);
    for (int i = 0; i < 4; ++i) std::filesystem::remove(out + "/c" + std::to_string(i));
    const sb::Latency li = sb::summarize(idle), ll = sb::summarize(loaded), lc = sb::summarize(byCurl);
    sb::emit("fetch_bench", "fetch_messagesw_p99_4downloads_vs_idle", ll.p99Ns / 1000.0, "us", li.p99Ns / 1000.0);
    sb::emit("fetch_bench", "fetch_messagesw_p99_4downloads_vs_4curl", ll.p99Ns / 1000.0, "us", lc.p99Ns / 1000.0);
    sb::emit("fetch_bench", "fetch_messagesw_p50_4downloads_vs_idle", ll.p50Ns / 1000.0, "us", li.p50Ns / 1000.0);

    // Progress fan-out: N pages follow one throttled fetch; the final event's spread across them
    // against one BroadcastChannel post to the same N pages.
    {
      Pages pages(std::filesystem::path(daemonPath).parent_path().parent_path() / "page_client" / "page_client",
                  daemon.runtimeDir(), pageCount);
      pages.waitAll("\"attached\"");
      pages.sendAll(R"({"op":"bc.open","bc":"b","name":"fanout","id":"j"})");
      pages.waitAll("\"id\":\"j\"");
      swipc::BroadcastChannel bc(client, "fanout");
      bc.postMessage(swipc::Value("go"));
      const double bcSpread = spreadMs(pages.waitAll("\"bc.message\""));
      // 32 MiB at 64 MiB/s: about half a second of progress events.
      auto reg = client.backgroundFetch().fetch("fan", {nginx.url("/fan.bin?rate=67108864")}, {},
                                                swipc::deadlineIn(10s));
      if (!reg) throw std::runtime_error("fetch: " + reg.error().describe());
      pages.sendAll(R"({"op":"bgfetch.get","fetchId":"fan","id":"g"})");
      const double fetchSpread = spreadMs(pages.waitAll("\"result\":\"success\"", 600s));
      sb::emit("fetch_bench", "fetch_progress_fanout_" + std::to_string(pageCount) + "pages_final_spread", fetchSpread,
               "ms", bcSpread);
    }
    daemon.stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fetch_bench: %s\n", e.what());
    std::error_code ec;
    std::filesystem::remove_all(www, ec);
    std::filesystem::remove_all(out, ec);
    return 1;
  }
  std::error_code ec;
  std::filesystem::remove_all(www, ec);
  std::filesystem::remove_all(out, ec);
  return 0;
}
