// sw_daemon: one long-lived service worker per scope (DESIGN §7).
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cstdio>

#include "launch.h"
#include "swipc/log.h"
#include "reference_sw.h"
#include "swipc/service_worker.h"

int main(int argc, char** argv) {
  CLI::App app{"sw_daemon: the service worker for one swipc scope"};
  swipc::ServiceWorkerOptions opts;
  std::string logLevel = "info";
  int64_t spinUs = 0;
  uint64_t bcRingBytes = 1 << 20;
  uint64_t ringBytes = opts.ringBytes;
  app.add_option("--scope", opts.scope, "scope name ([A-Za-z0-9._-]{1,64})")->required();
  app.add_option("--runtime-dir", opts.runtimeDir, "runtime directory (default $SWIPC_RUNTIME_DIR, "
                                                   "$XDG_RUNTIME_DIR/swipc or /tmp/swipc-<uid>)");
  app.add_option("--state-dir", opts.stateDir,
                 "durable state directory (default $XDG_STATE_HOME/swipc/<scope>, else ~/.local/state/swipc/<scope>)");
  app.add_option("--sw-version", opts.version, "version string GET_VERSION answers")->capture_default_str();
  app.add_option("--spin-us", spinUs, "busy-poll rings this many microseconds before sleeping")
      ->check(CLI::Range(int64_t{0}, int64_t{1'000'000}));
  app.add_option("--log-level", logLevel, "trace|debug|info|warn|error|critical|off")->capture_default_str();
  app.add_option("--max-clients", opts.maxClients, "refuse attaches beyond this many clients")->capture_default_str();
  app.add_option("--max-message-bytes", opts.maxMessageBytes, "largest message accepted or sent")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1024}, uint64_t{1} << 32));
  app.add_option("--bc-ring-bytes", bcRingBytes, "capacity of each BroadcastChannel ring (power of two)")
      ->capture_default_str()
      ->check([](const std::string& s) {
        uint64_t v = std::stoull(s);
        return (v >= 4096 && v <= (1u << 30) && !(v & (v - 1))) ? std::string() : "must be a power of two >= 4096";
      });
  app.add_option("--ring-bytes", ringBytes, "per-client ring size per direction (power of two)")
      ->capture_default_str()
      ->check([](const std::string& s) {
        uint64_t v = std::stoull(s);
        return (v >= 4096 && v <= (1u << 30) && !(v & (v - 1))) ? std::string() : "must be a power of two >= 4096";
      });
  app.add_option("--max-backlog", opts.maxBacklog, "messages held for a client that does not drain")
      ->capture_default_str();
  int64_t unresponsiveMs = opts.unresponsiveTimeout.count();
  app.add_option("--max-backlog-bytes", opts.maxBacklogBytes, "bytes held for a client that does not drain")
      ->capture_default_str();
  app.add_option("--max-backlog-bytes-per-uid", opts.maxBacklogBytesPerUid,
                 "bytes held for all the clients of one uid together")
      ->capture_default_str();
  app.add_option("--unresponsive-ms", unresponsiveMs,
                 "disconnect a client whose backlog stays at its bound this long without draining")
      ->capture_default_str();
  app.add_option("--max-channels", opts.maxChannels, "BroadcastChannel names open in the scope")->capture_default_str();
  app.add_option("--max-channels-per-client", opts.maxChannelsPerClient,
                 "BroadcastChannel objects one client may have open")
      ->capture_default_str();
  app.add_option("--max-open-windows", opts.maxOpenWindows, "clients.openWindow calls starting at once")
      ->capture_default_str();
  app.add_option("--max-ports-per-client", opts.maxPortsPerClient,
                 "MessagePorts (live, and closed ones awaiting the client's answer) one client may own; 0: no bound")
      ->capture_default_str();
  app.add_option("--max-port-queue-bytes", opts.maxPortQueueBytes,
                 "bytes held at one port of the service worker's that is not started; 0: no bound")
      ->capture_default_str();
  app.add_flag("--allow-group", opts.allowGroup,
               "dir 0750, socket 0660: accept clients any of whose groups is the daemon's");
  app.add_option("--max-pending-per-uid", opts.maxPendingPerUid,
                 "connections of one uid that have not sent their Hello yet")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  app.add_option("--max-clients-per-uid", opts.maxClientsPerUid, "clients of one uid attached at once")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  std::string windowCommand;
  int64_t openWindowTimeoutMs = opts.openWindowTimeout.count();
  app.add_option("--window-command", windowCommand,
                 "command openWindow runs, split on spaces; {url} {scope} {runtime-dir} are replaced "
                 "(default: page_client listen)");
  app.add_option("--open-window-timeout-ms", openWindowTimeoutMs, "how long openWindow waits for the page to attach")
      ->capture_default_str();
  auto& sync = opts.sync;
  int64_t syncRetryMs = sync.retry.count(), syncTimeoutMs = sync.timeout.count();
  int64_t periodicMinMs = sync.periodicMinInterval.count();
  std::string connectivity = "auto";
  app.add_option("--sync-max-attempts", sync.maxAttempts, "Background Sync: attempts before a tag is dropped")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--sync-retry-ms", syncRetryMs, "Background Sync: delay before the first retry")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  app.add_option("--sync-retry-factor", sync.retryFactor, "Background Sync: each further retry waits this much longer")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1000.0));
  app.add_option("--sync-timeout-ms", syncTimeoutMs, "Background Sync: an event unsettled this long has failed")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  app.add_option("--periodic-min-interval-ms", periodicMinMs, "Periodic Background Sync: the least interval")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  app.add_option("--connectivity", connectivity,
                 "when sync events may fire: auto (while there is a default route), always, manual")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "always", "manual"}));
  app.add_flag("--offline", sync.startOffline, "manual connectivity: start offline");
  auto& fetch = opts.fetch;
  int64_t fetchProgressMs = fetch.progressInterval.count();
  app.add_option("--fetch-max-connections", fetch.maxConnections, "Background Fetch: transfers at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--fetch-quota-bytes", fetch.quotaBytes,
                 "Background Fetch: bytes all stored downloads may take (and the most one downloadTotal may ask)")
      ->capture_default_str();
  app.add_option("--fetch-progress-ms", fetchProgressMs,
                 "Background Fetch: the least time between two progress events of one registration")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{3600000}));
  std::string fetchRetryMs;
  app.add_option("--fetch-retry-ms", fetchRetryMs,
                 "Background Fetch: waits before each retry of a refused/reset GET, comma-separated "
                 "(default 1000,2000,4000,8000,16000)");
  std::string natsServers;
  app.add_option("--nats", natsServers,
                 "federate the scope across hosts over this NATS cluster: URL[,URL...] (DESIGN §16); "
                 "without it nothing connects");
  app.add_option("--node", opts.federation.node, "this node's name with --nats (default: the short host name)");
  int64_t channelIdleMs = 600000;
  app.add_option("--nats-channel-idle-ms", channelIdleMs,
                 "with --nats: a channel this node has not posted on for this long leaves its announcements "
                 "(default 600000)")
      ->check(CLI::Range(int64_t{1}, int64_t{86400000}));
  std::string logFile;
  app.add_option("--log-file", logFile,
                 "append the log to this file (created 0600) instead of stderr, from when the scope is ours");
  CLI11_PARSE(app, argc, argv);
  sync.retry = std::chrono::milliseconds(syncRetryMs);
  fetch.progressInterval = std::chrono::milliseconds(fetchProgressMs);
  if (!fetchRetryMs.empty()) {
    fetch.retryDelays.clear();
    for (size_t pos = 0; pos <= fetchRetryMs.size();) {
      size_t end = fetchRetryMs.find(',', pos);
      if (end == std::string::npos) end = fetchRetryMs.size();
      try {
        fetch.retryDelays.emplace_back(std::stoll(fetchRetryMs.substr(pos, end - pos)));
      } catch (const std::exception&) {
        std::fprintf(stderr, "sw_daemon: --fetch-retry-ms: not a list of milliseconds: %s\n", fetchRetryMs.c_str());
        return 1;
      }
      pos = end + 1;
    }
  }
  for (size_t pos = 0; pos < natsServers.size();) {
    size_t end = natsServers.find(',', pos);
    if (end == std::string::npos) end = natsServers.size();
    if (end > pos) opts.federation.natsServers.push_back(natsServers.substr(pos, end - pos));
    pos = end + 1;
  }
  if (!opts.federation.node.empty() && opts.federation.natsServers.empty()) {
    std::fprintf(stderr, "sw_daemon: --node needs --nats\n");
    return 1;
  }
  opts.federation.channelIdle = std::chrono::milliseconds(channelIdleMs);
  sync.timeout = std::chrono::milliseconds(syncTimeoutMs);
  sync.periodicMinInterval = std::chrono::milliseconds(periodicMinMs);
  using Connectivity = swipc::BackgroundSyncOptions::Connectivity;
  sync.connectivity = connectivity == "always"   ? Connectivity::ALWAYS
                      : connectivity == "manual" ? Connectivity::MANUAL
                                                 : Connectivity::AUTO;
  opts.spin = std::chrono::microseconds(spinUs);
  opts.ringBytes = ringBytes;
  opts.bcRingBytes = bcRingBytes;
  opts.openWindowTimeout = std::chrono::milliseconds(openWindowTimeoutMs);
  opts.unresponsiveTimeout = std::chrono::milliseconds(unresponsiveMs);
  for (size_t pos = 0; pos < windowCommand.size();) {
    size_t end = windowCommand.find(' ', pos);
    if (end == std::string::npos) end = windowCommand.size();
    if (end > pos) opts.windowCommand.push_back(windowCommand.substr(pos, end - pos));
    pos = end + 1;
  }

  if (auto r = swipc::initLogging("sw_daemon", logLevel); !r) {
    std::fprintf(stderr, "sw_daemon: %s\n", r.error().describe().c_str());
    return 1;
  }
  // systemd socket activation (LISTEN_FDS): serve the inherited socket instead of binding one.
  if (auto fd = sw_daemon::takeActivationSocket(); !fd) {
    std::fprintf(stderr, "sw_daemon: %s\n", fd.error().describe().c_str());
    return 1;
  } else {
    opts.listenFd = *fd;
  }
  swipc::ServiceWorker sw(opts);
  if (auto r = sw.listen(); !r) {
    std::fprintf(stderr, "sw_daemon: %s\n", r.error().describe().c_str());
    return 1;
  }
  // After listen(): a second daemon (the lock is held) exits before it touches the winner's log.
  if (!logFile.empty()) {
    if (auto r = sw_daemon::redirectLog(logFile); !r) {
      std::fprintf(stderr, "sw_daemon: %s\n", r.error().describe().c_str());
      return 1;
    }
    swipc::logger().info("serving scope={} pid={} (log file {})", opts.scope, ::getpid(), logFile);
  }
  swipc::daemon::ReferenceServiceWorker reference(sw);
  if (auto r = sw.run(); !r) {
    std::fprintf(stderr, "sw_daemon: %s\n", r.error().describe().c_str());
    return 1;
  }
  return 0;
}
