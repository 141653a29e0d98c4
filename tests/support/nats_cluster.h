// NatsCluster: a real NATS cluster for the federation tests (DESIGN §16): N nats-server processes
// (Debian's nats-server, JetStream on) on free 127.0.0.1 ports, each with its config file in a
// private temp dir, routed to each other. The constructor returns once every server accepts TCP
// and reports a route to every other (its /routez monitoring page), polling with a deadline;
// the destructor SIGKILLs and reaps them by pid (also when the test failed). kill()/restart()
// take one server down (kill -9) and bring it back on the same ports and store.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "swipc/testing.h"

namespace swipc::testing {

class NatsCluster {
 public:
  /// nats-server's path: /usr/sbin/nats-server, /usr/bin/nats-server, else found on $PATH; "" if none.
  static std::string serverPath();
  static bool available() { return !serverPath().empty(); }

  /// Starts `servers` servers and waits until the cluster has formed; throws std::runtime_error
  /// (with the servers' logs) when it does not within `timeout`.
  explicit NatsCluster(size_t servers = 3, std::chrono::milliseconds timeout = 20000ms);
  ~NatsCluster();
  NatsCluster(const NatsCluster&) = delete;
  NatsCluster& operator=(const NatsCluster&) = delete;

  size_t size() const { return servers_.size(); }
  /// nats://127.0.0.1:<client port> of server i.
  std::string url(size_t i) const;
  /// Every server's url, comma-separated (sw_daemon --nats).
  std::string urls() const;
  /// kill -9 server i and reap it.
  bool kill(size_t i);
  /// Starts server i again (same config, ports, store); true once it accepts TCP and has its
  /// routes to the other running servers.
  bool restart(size_t i, std::chrono::milliseconds timeout = 20000ms);
  bool running(size_t i);
  /// SIGSTOP / SIGCONT server i: its clients' connections stay open and get no answers.
  bool pause(size_t i);
  bool resume(size_t i);
  /// Server i has a route to each of the other `expected` servers (its /routez says so).
  bool routed(size_t i, size_t expected) const;
  /// Every server's stderr (for failure messages).
  std::string logs() const;

 private:
  struct Server {
    int clientPort = 0, clusterPort = 0, monitorPort = 0;
    std::string config;
    std::unique_ptr<ChildProcess> proc;
  };
  void spawn(size_t i);
  TempDir dir_;
  std::vector<Server> servers_;
};

}  // namespace swipc::testing
