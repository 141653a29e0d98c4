#include "nats_cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <stdexcept>

namespace swipc::testing {

namespace {

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
      throw std::runtime_error("no free port");
    fds.push_back(fd);
    ports.push_back(ntohs(a.sin_port));
  }
  for (int fd : fds) ::close(fd);
  return ports;
}

int connectTo(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// The body of GET `path` from the monitoring port ("" when it does not answer).
std::string httpGet(int port, const std::string& path) {
  int fd = connectTo(port);
  if (fd < 0) return "";
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return "";
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

}  // namespace

std::string NatsCluster::serverPath() {
  for (const char* p : {"/usr/sbin/nats-server", "/usr/bin/nats-server"})
    if (::access(p, X_OK) == 0) return p;
  if (const char* path = std::getenv("PATH")) {
    std::string all(path);
    for (size_t pos = 0; pos <= all.size();) {
      size_t end = all.find(':', pos);
      if (end == std::string::npos) end = all.size();
      std::string cand = all.substr(pos, end - pos) + "/nats-server";
      if (end > pos && ::access(cand.c_str(), X_OK) == 0) return cand;
      pos = end + 1;
    }
  }
  return "";
}

NatsCluster::NatsCluster(size_t servers, std::chrono::milliseconds timeout) {
  if (!available()) throw std::runtime_error("nats-server is not installed");
  auto ports = freePorts(servers * 3);
  servers_.resize(servers);
  for (size_t i = 0; i < servers; ++i) {
    Server& s = servers_[i];
    s.clientPort = ports[i * 3];
    s.clusterPort = ports[i * 3 + 1];
    s.monitorPort = ports[i * 3 + 2];
  }
  for (size_t i = 0; i < servers; ++i) {
    Server& s = servers_[i];
    std::string routes;
    for (size_t j = 0; j < servers; ++j)
      if (j != i) routes += "    nats-route://127.0.0.1:" + std::to_string(servers_[j].clusterPort) + "\n";
    const std::string name = "s" + std::to_string(i + 1);
    std::filesystem::create_directories(dir_.path() + "/" + name);
    s.config = dir_.path() + "/" + name + ".conf";
    std::ofstream(s.config) << "server_name: " << name << "\n"
                            << "listen: 127.0.0.1:" << s.clientPort << "\n"
                            << "http: 127.0.0.1:" << s.monitorPort << "\n"
                            << "jetstream {\n  store_dir: \"" << dir_.path() << "/" << name << "\"\n"
                            << "  max_memory_store: 64MB\n  max_file_store: 256MB\n}\n"
                            << "cluster {\n  name: swipc-test\n  listen: 127.0.0.1:" << s.clusterPort << "\n"
                            << "  routes: [\n" << routes << "  ]\n}\n";
    spawn(i);
  }
  const bool formed = eventually(
      [&] {
        for (size_t i = 0; i < servers; ++i)
          if (!routed(i, servers - 1)) return false;
        return true;
      },
      timeout);
  if (!formed) throw std::runtime_error("the NATS cluster did not form:\n" + logs());
}

NatsCluster::~NatsCluster() {
  for (auto& s : servers_)
    if (s.proc) s.proc->kill9();
}

void NatsCluster::spawn(size_t i) {
  ChildProcess::Options o;
  o.stderrDir = dir_.path();
  servers_[i].proc = std::make_unique<ChildProcess>(std::vector<std::string>{serverPath(), "-c", servers_[i].config}, o);
}

std::string NatsCluster::url(size_t i) const { return "nats://127.0.0.1:" + std::to_string(servers_.at(i).clientPort); }

std::string NatsCluster::urls() const {
  std::string out;
  for (size_t i = 0; i < servers_.size(); ++i) out += (i ? "," : "") + url(i);
  return out;
}

bool NatsCluster::routed(size_t i, size_t expected) const {
  int fd = connectTo(servers_.at(i).clientPort);
  if (fd < 0) return false;
  ::close(fd);
  const std::string body = httpGet(servers_[i].monitorPort, "/routez");
  std::smatch m;
  static const std::regex numRoutes("\"num_routes\"\\s*:\\s*(\\d+)");
  return std::regex_search(body, m, numRoutes) && std::stoul(m[1].str()) >= expected;
}

bool NatsCluster::running(size_t i) { return servers_.at(i).proc && servers_[i].proc->running(); }

bool NatsCluster::kill(size_t i) {
  auto& p = servers_.at(i).proc;
  if (!p) return true;
  const bool gone = p->kill9();
  return gone;
}

bool NatsCluster::pause(size_t i) {
  auto& p = servers_.at(i).proc;
  return p && p->stop();
}

bool NatsCluster::resume(size_t i) {
  auto& p = servers_.at(i).proc;
  return p && p->resume();
}

bool NatsCluster::restart(size_t i, std::chrono::milliseconds timeout) {
  if (running(i)) kill(i);
  spawn(i);
  return eventually(
      [&] {
        size_t others = 0;
        for (size_t j = 0; j < servers_.size(); ++j)
          if (j != i && running(j)) ++others;
        return routed(i, others);
      },
      timeout);
}

std::string NatsCluster::logs() const {
  std::string out;
  for (size_t i = 0; i < servers_.size(); ++i)
    if (servers_[i].proc) out += "--- s" + std::to_string(i + 1) + "\n" + servers_[i].proc->stderrText();
  return out;
}

}  // namespace swipc::testing
