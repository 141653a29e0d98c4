// clients_bench: the Clients API at scale (DESIGN §10 "matchAll latency with 1,000 attached
// clients, attach time, memory per idle client").
//
//   clients_bench [--daemon PATH] [--page-client PATH] [--clients N] [--iterations N]
//                 [--idle-seconds S] [--batch N] [--spawn-budget-s S]
//
// --daemon / --page-client default to ../sw_daemon/sw_daemon and ../page_client/page_client next to
// this executable's directory (the build tree). One sw_daemon in a fresh temporary runtime
// directory; N page_client `listen` processes attach (spawned in batches); a library Client
// (type worker, so it is not in a windows-only matchAll) asks the reference service worker.
//
// Results (one JSON line each; baseline measured in the same run):
//   attach_connect_p50/p99        Client::connect → attached, with N pages attached
//                                 (baseline: the same with one page attached)
//   attach_page_client_p50/p99    page_client spawn → its "attached" line (exec included)
//   matchAll_p50/p99              MATCH_ALL messageSW round trip with N windows
//                                 (baseline: the same with one window)
//   matchAll_daemon_cpu_per_call  the daemon's CPU time per MATCH_ALL (baseline: one window)
//   matchAll_client_cpu_per_call  the asking client's CPU time per MATCH_ALL (decode included)
//   daemon_idle_cpu               daemon CPU while every client idles, % of one core   [< 1 %]
//   pages_idle_cpu_total          all N pages together while idle, % of one core
//   shm_per_client                bytes of memfd:swipc-client mapped by the daemon / clients [≤ 256 KiB]
//   daemon_pss_per_client         growth of the daemon's Pss from 1 to N pages / (N - 1)
//   page_client_pss               median Pss of a sample of idle page_client processes
// Everything started is killed at the end; a run takes well under 90 s for N = 1000.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "baseline.h"
#include "swipc/log.h"
#include "swipc/client.h"
#include "swipc/value.h"

namespace sb = swipc::bench;
using namespace std::chrono_literals;

namespace {

constexpr const char* BENCH = "clients";
constexpr const char* SCOPE = "bench-clients";

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

/// Progress on stderr (stdout is JSON lines only).
void note(const std::chrono::steady_clock::time_point& begin, const std::string& what) {
  std::fprintf(stderr, "clients_bench: %6.2fs %s\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count(), what.c_str());
}

std::string siblingPath(const std::string& dir, const std::string& name) {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return name;
  return (self.parent_path().parent_path() / dir / name).string();
}

/// fork + exec with stdout to a pipe (returned in *readFd, non-blocking) or /dev/null; the child
/// dies with us (PDEATHSIG). Returns the pid, or -1 with errno set.
pid_t spawn(const std::vector<std::string>& argv, int* readFd) {
  int p[2] = {-1, -1};
  if (readFd && ::pipe2(p, O_CLOEXEC) != 0) return -1;
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    if (readFd) ::close(p[0]), ::close(p[1]);
    errno = e;
    return -1;
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (readFd) {
      ::dup2(p[1], STDOUT_FILENO);
    } else {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, STDOUT_FILENO);  // keep our stdout pure JSON lines
    }
    ::execv(cargv[0], cargv.data());
    const char msg[] = "clients_bench: execv failed\n";
    ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
    ::_exit(127);
  }
  if (readFd) {
    ::close(p[1]);
    ::fcntl(p[0], F_SETFL, O_NONBLOCK);
    *readFd = p[0];
  }
  return pid;
}

void killAndReap(pid_t pid, int sig) {
  if (pid <= 0) return;
  ::kill(pid, sig);
  int st;
  ::waitpid(pid, &st, 0);
}

/// CPU time of every thread of `pid`, in nanoseconds (/proc/PID/task/*/schedstat).
uint64_t cpuNs(pid_t pid) {
  uint64_t total = 0;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream f(dir + "/" + e->d_name + "/schedstat");
      uint64_t ns = 0;
      if (f >> ns) total += ns;
    }
    ::closedir(d);
  }
  return total;
}

/// A field of /proc/PID/smaps_rollup in KiB (e.g. "Pss"), -1 when unreadable.
long rollupKiB(pid_t pid, const std::string& field) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

/// Bytes and distinct segments of `pid`'s mappings whose name contains `name`.
std::pair<uint64_t, size_t> mappedBytes(pid_t pid, const std::string& name) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/maps");
  std::string line;
  uint64_t bytes = 0;
  std::set<std::string> inodes;
  while (std::getline(f, line)) {
    if (line.find(name) == std::string::npos) continue;
    std::istringstream in(line);
    std::string range, perms, offset, dev, inode;
    in >> range >> perms >> offset >> dev >> inode;
    auto dash = range.find('-');
    bytes += std::stoull(range.substr(dash + 1), nullptr, 16) - std::stoull(range.substr(0, dash), nullptr, 16);
    inodes.insert(inode);
  }
  return {bytes, inodes.size()};
}

/// A page_client `listen` process and what we learned from its stdout.
struct Page {
  pid_t pid = -1;
  int out = -1;
  uint64_t spawnedNs = 0;
  uint64_t attachedNs = 0;
  std::string buffer;
};

/// Starts pages[from, to) and waits until each printed its "attached" line (or the deadline).
/// Returns how many attached.
size_t startPages(std::vector<Page>& pages, size_t from, size_t to, const std::vector<std::string>& argv,
                  std::chrono::seconds timeout) {
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  size_t waiting = 0;
  for (size_t i = from; i < to; ++i) {
    auto& p = pages[i];
    p.spawnedNs = sb::nowNs();
    p.pid = spawn(argv, &p.out);
    if (p.pid < 0) fail(std::string("spawning page_client #") + std::to_string(i) + ": " + std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, p.out, &ev);
    ++waiting;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t attached = 0;
  while (waiting > 0 && std::chrono::steady_clock::now() < deadline) {
    epoll_event evs[64];
    int n = ::epoll_wait(ep, evs, 64, 100);
    for (int k = 0; k < n; ++k) {
      auto& p = pages[evs[k].data.u64];
      char buf[4096];
      ssize_t r;
      while ((r = ::read(p.out, buf, sizeof buf)) > 0) p.buffer.append(buf, static_cast<size_t>(r));
      if (p.attachedNs == 0 && p.buffer.find("\"attached\"") != std::string::npos &&
          p.buffer.find('\n') != std::string::npos) {
        p.attachedNs = sb::nowNs();
        ++attached;
        --waiting;
        ::epoll_ctl(ep, EPOLL_CTL_DEL, p.out, nullptr);
        // Nothing more to read: an idle `listen` page prints nothing else (one that did would
        // fail its write and exit, and matchAll would then list fewer clients: a loud failure).
        // So the bench holds no fd per page, and the fd limit binds only the daemon.
        ::close(p.out);
        p.out = -1;
      } else if (r == 0) {  // EOF before attaching: it died
        --waiting;
        ::epoll_ctl(ep, EPOLL_CTL_DEL, p.out, nullptr);
        ::close(p.out);
        p.out = -1;
      }
    }
  }
  ::close(ep);
  return attached;
}

swipc::Result<swipc::Client> connectWorker(const std::string& runtimeDir) {
  swipc::ClientOptions o;
  o.scope = SCOPE;
  o.runtimeDir = runtimeDir;
  o.type = swipc::ClientType::WORKER;
  o.reconnect = false;
  o.attachTimeout = 5000ms;
  return swipc::Client::connect(o);
}

/// `iterations` MATCH_ALL round trips; checks each lists `expect` windows. *daemonCpuNs: the
/// daemon's CPU time per measured call.
sb::Latency matchAllLatency(swipc::Client& q, int iterations, size_t expect, pid_t daemon, double* daemonCpuNs,
                            double* clientCpuNs) {
  const auto request = swipc::Value::map({{"type", "MATCH_ALL"}});
  std::vector<uint64_t> samples;
  samples.reserve(static_cast<size_t>(iterations));
  uint64_t cpu0 = 0, self0 = 0;
  for (int i = 0; i < iterations + 10; ++i) {
    if (i == 10) {
      cpu0 = cpuNs(daemon);
      self0 = cpuNs(::getpid());
    }
    const uint64_t t0 = sb::nowNs();
    auto r = q.messageSW(request, 5000ms);
    const uint64_t t1 = sb::nowNs();
    if (!r) fail("MATCH_ALL: " + r.error().describe());
    const auto* clients = r->find("clients");
    if (!clients || !clients->isList() || clients->asList().size() != expect)
      fail("MATCH_ALL listed " + std::to_string(clients && clients->isList() ? clients->asList().size() : 0) +
           " clients, expected " + std::to_string(expect));
    if (i >= 10) samples.push_back(t1 - t0);  // 10 warm-up calls
  }
  *daemonCpuNs = static_cast<double>(cpuNs(daemon) - cpu0) / std::max(1, iterations);
  *clientCpuNs = static_cast<double>(cpuNs(::getpid()) - self0) / std::max(1, iterations);
  return sb::summarize(samples);
}

/// `iterations` library attaches (connect → Welcome), each closed again.
sb::Latency connectLatency(const std::string& runtimeDir, int iterations) {
  std::vector<uint64_t> samples;
  for (int i = 0; i < iterations; ++i) {
    const uint64_t t0 = sb::nowNs();
    auto c = connectWorker(runtimeDir);
    const uint64_t t1 = sb::nowNs();
    if (!c) fail("connect: " + c.error().describe());
    samples.push_back(t1 - t0);
    c->close();
  }
  return sb::summarize(samples);
}

/// Raises the soft fd limit to the hard one; returns the soft limit now in force.
rlim_t raiseFdLimit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
  ::getrlimit(RLIMIT_NOFILE, &rl);
  return rl.rlim_cur;
}

int run(const sb::Args& args) {
  const auto begin = std::chrono::steady_clock::now();
  const std::string daemonPath = args.getOr("daemon", siblingPath("sw_daemon", "sw_daemon"));
  const std::string pagePath = args.getOr("page-client", siblingPath("page_client", "page_client"));
  for (const auto& p : {daemonPath, pagePath})
    if (::access(p.c_str(), X_OK) != 0) fail(p + " not found or not executable (use --daemon / --page-client)");
  size_t n = static_cast<size_t>(std::max(2L, args.getInt("clients", 1000)));
  const int iterations = static_cast<int>(args.getInt("iterations", 200));
  const int idleSeconds = static_cast<int>(args.getInt("idle-seconds", 5));
  const size_t batch = static_cast<size_t>(std::max(1L, args.getInt("batch", 8)));

  // We hold a pipe per page only until it has attached (a batch at a time). The daemon (which
  // inherits this limit) holds 1 to 3 fds per client and refuses a page by name
  // (QuotaExceededError, "file descriptor limit") when it runs short: that ends the run's
  // spawning, and it measures with what attached.
  const rlim_t fds = raiseFdLimit();
  std::fprintf(stderr, "clients_bench: RLIMIT_NOFILE %llu\n", static_cast<unsigned long long>(fds));

  char tmpl[] = "/tmp/swipc-clients-bench.XXXXXX";
  if (!::mkdtemp(tmpl)) fail(std::string("mkdtemp: ") + std::strerror(errno));
  const std::string runtimeDir = tmpl;

  pid_t daemon = spawn({daemonPath, "--scope", SCOPE, "--runtime-dir", runtimeDir, "--log-level", "warn",
                        "--max-clients", std::to_string(n + 64), "--max-clients-per-uid", std::to_string(n + 64)},
                       nullptr);
  if (daemon < 0) fail(std::string("spawning sw_daemon: ") + std::strerror(errno));
  std::vector<Page> pages(n);
  auto cleanup = [&] {
    for (auto& p : pages) {
      if (p.pid > 0) ::kill(p.pid, SIGKILL);
    }
    for (auto& p : pages) {
      if (p.pid > 0) ::waitpid(p.pid, nullptr, 0);
      if (p.out >= 0) ::close(p.out);
      p.pid = -1;
      p.out = -1;
    }
    if (daemon > 0) {
      ::kill(daemon, SIGTERM);
      const auto deadline = std::chrono::steady_clock::now() + 5s;
      int st;
      while (::waitpid(daemon, &st, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
          killAndReap(daemon, SIGKILL);
          break;
        }
        std::this_thread::sleep_for(5ms);
      }
      daemon = -1;
    }
    std::error_code ec;
    std::filesystem::remove_all(runtimeDir, ec);
  };

  try {
    // The querier: a library client of type worker (not in a windows-only matchAll).
    std::optional<swipc::Client> q;
    for (auto deadline = std::chrono::steady_clock::now() + 10s; !q;) {
      auto c = connectWorker(runtimeDir);
      if (c) {
        q.emplace(std::move(*c));
      } else if (std::chrono::steady_clock::now() > deadline) {
        fail("cannot attach to sw_daemon: " + c.error().describe());
      } else {
        std::this_thread::sleep_for(5ms);  // the daemon is starting up
      }
    }
    const long pssStart = rollupKiB(daemon, "Pss");
    const std::vector<std::string> pageArgv{pagePath, "--scope", SCOPE, "--runtime-dir", runtimeDir,
                                            "--log-level", "warn", "listen"};

    // Baselines with one window attached.
    if (startPages(pages, 0, 1, pageArgv, 10s) != 1) fail("the first page_client did not attach");
    const long pssOne = rollupKiB(daemon, "Pss");
    double matchAllCpuOne = 0, matchAllCpuN = 0, clientCpuOne = 0, clientCpuN = 0;
    const auto matchAllOne = matchAllLatency(*q, iterations, 1, daemon, &matchAllCpuOne, &clientCpuOne);
    const auto connectOne = connectLatency(runtimeDir, 50);

    note(begin, "baselines done; starting " + std::to_string(n - 1) + " more pages");
    // Everyone else, in batches.
    // The whole run must stay under ~90 s even on a loaded machine: stop adding pages at the
    // spawn budget and measure with what attached.
    const auto spawnDeadline = begin + std::chrono::seconds(args.getInt("spawn-budget-s", 50));
    size_t attached = 1;
    for (size_t from = 1; from < n; from += batch) {
      if (std::chrono::steady_clock::now() > spawnDeadline) {
        std::fprintf(stderr, "clients_bench: spawn budget spent after %zu of %zu pages; measuring with %zu\n",
                     attached, n, attached);
        break;
      }
      const size_t to = std::min(n, from + batch);
      size_t got = startPages(pages, from, to, pageArgv, 30s);
      attached += got;
      if (got != to - from) {
        // Their own error lines (stderr, above) say why, e.g. the daemon's named refusal.
        std::fprintf(stderr, "clients_bench: %zu page_client(s) did not attach after %zu; measuring with %zu\n",
                     to - from - got, attached, attached);
        std::vector<Page> kept;
        for (size_t i = 0; i < to; ++i) {
          if (pages[i].attachedNs != 0) {
            kept.push_back(std::move(pages[i]));
          } else {
            killAndReap(pages[i].pid, SIGKILL);
            if (pages[i].out >= 0) ::close(pages[i].out);
          }
        }
        pages = std::move(kept);
        n = attached;
        break;
      }
    }
    if (attached < n) {
      pages.resize(attached);  // never spawned: nothing to kill
      n = attached;
    }
    std::vector<uint64_t> pageAttach;
    for (const auto& p : pages) pageAttach.push_back(p.attachedNs - p.spawnedNs);
    const auto pageAttachLat = sb::summarize(pageAttach);
    sb::emit(BENCH, "clients_attached", static_cast<double>(attached), "clients");

    const auto connectN = connectLatency(runtimeDir, 50);
    sb::emit(BENCH, "attach_connect_p50_N" + std::to_string(n), connectN.p50Ns / 1e3, "us", connectOne.p50Ns / 1e3);
    sb::emit(BENCH, "attach_connect_p99_N" + std::to_string(n), connectN.p99Ns / 1e3, "us", connectOne.p99Ns / 1e3);
    sb::emit(BENCH, "attach_page_client_p50", pageAttachLat.p50Ns / 1e3, "us");
    sb::emit(BENCH, "attach_page_client_p99", pageAttachLat.p99Ns / 1e3, "us");

    note(begin, "all attached; measuring");
    const auto matchAllN = matchAllLatency(*q, iterations, n, daemon, &matchAllCpuN, &clientCpuN);
    sb::emit(BENCH, "matchAll_p50_N" + std::to_string(n), matchAllN.p50Ns / 1e3, "us", matchAllOne.p50Ns / 1e3);
    sb::emit(BENCH, "matchAll_p99_N" + std::to_string(n), matchAllN.p99Ns / 1e3, "us", matchAllOne.p99Ns / 1e3);
    sb::emit(BENCH, "matchAll_daemon_cpu_per_call_N" + std::to_string(n), matchAllCpuN / 1e3, "us",
             matchAllCpuOne / 1e3);
    sb::emit(BENCH, "matchAll_client_cpu_per_call_N" + std::to_string(n), clientCpuN / 1e3, "us", clientCpuOne / 1e3);

    // Idle: nobody sends anything for idleSeconds.
    note(begin, "idle phase");
    const uint64_t d0 = cpuNs(daemon);
    if (d0 == 0) fail("cannot read the daemon's CPU time from /proc/" + std::to_string(daemon) + "/task/*/schedstat");
    uint64_t p0 = 0;
    for (const auto& p : pages) p0 += cpuNs(p.pid);
    const uint64_t t0 = sb::nowNs();
    std::this_thread::sleep_for(std::chrono::seconds(idleSeconds));  // measuring idleness, not syncing
    const uint64_t d1 = cpuNs(daemon);
    uint64_t p1 = 0;
    for (const auto& p : pages) p1 += cpuNs(p.pid);
    const double wallNs = static_cast<double>(sb::nowNs() - t0);
    sb::emit(BENCH, "daemon_idle_cpu", 100.0 * static_cast<double>(d1 - d0) / wallNs, "%core");
    sb::emit(BENCH, "pages_idle_cpu_total", 100.0 * static_cast<double>(p1 - p0) / wallNs, "%core");

    // Memory.
    auto [segBytes, segments] = mappedBytes(daemon, "memfd:swipc-client");
    if (segments > 0)
      sb::emit(BENCH, "shm_per_client", static_cast<double>(segBytes) / static_cast<double>(segments) / 1024.0, "KiB");
    const long pssN = rollupKiB(daemon, "Pss");
    if (pssOne > 0 && pssN > 0)
      sb::emit(BENCH, "daemon_pss_per_client", static_cast<double>(pssN - pssOne) / static_cast<double>(n - 1), "KiB");
    std::vector<uint64_t> pagePss;
    for (size_t i = 0; i < pages.size(); i += std::max<size_t>(1, pages.size() / 20)) {
      long kib = rollupKiB(pages[i].pid, "Pss");
      if (kib > 0) pagePss.push_back(static_cast<uint64_t>(kib));
    }
    if (!pagePss.empty()) {
      std::sort(pagePss.begin(), pagePss.end());
      sb::emit(BENCH, "page_client_pss", static_cast<double>(pagePss[pagePss.size() / 2]), "KiB");
    }
    (void)pssStart;

    q->close();
    note(begin, "stopping");
    cleanup();
    const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    sb::emit(BENCH, "run_seconds", seconds, "s");
    return 0;
  } catch (...) {
    cleanup();
    throw;
  }
}

}  // namespace

int main(int argc, char** argv) {
  sb::Args args(argc, argv);
  if (args.has("help")) {
    std::printf(
        "usage: clients_bench [--daemon PATH] [--page-client PATH] [--clients N] [--iterations N]\n"
        "                     [--idle-seconds S] [--batch N] [--spawn-budget-s S]\n");
    return 0;
  }
  ::signal(SIGPIPE, SIG_IGN);
  (void)swipc::initLogging("clients_bench", "warn");
  try {
    return run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "clients_bench: %s\n", e.what());
    return 1;
  }
}
