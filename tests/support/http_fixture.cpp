#include "http_fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

namespace swipc::testing {

std::string httpTestServerPath() { return SWIPC_HTTP_TEST_SERVER_PATH; }

std::string nginxPath() {
  const char* env = std::getenv("SWIPC_NGINX");
  return env && *env ? env : "/usr/sbin/nginx";
}

bool nginxAvailable() { return ::access(nginxPath().c_str(), X_OK) == 0; }

namespace {

constexpr size_t WRITE_PIECE_BYTES = 1 << 20;
constexpr auto STOP_TIMEOUT = std::chrono::milliseconds(5000);
constexpr int NGINX_START_ATTEMPTS = 5;

/// Incremental SHA-256 over OpenSSL's EVP interface.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) throw std::runtime_error("EVP sha256 init");
  }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* p, size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    static constexpr char DIGITS[] = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; ++i) {
      out.push_back(DIGITS[md[i] >> 4]);
      out.push_back(DIGITS[md[i] & 15]);
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

std::string readWholeFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void writeAll(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw std::runtime_error("write " + path + ": " + std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

/// Replaces `path` with what `produce(fd)` writes to a temporary file beside it. A file that
/// existed gets a strictly later mtime than before (file timestamps move in clock ticks of a few
/// milliseconds, so two quick writes could otherwise share an ETag).
void replaceFile(const std::string& path, const std::function<void(int fd)>& produce) {
  std::filesystem::path target(path);
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path());
  struct stat before {};
  bool existed = ::stat(path.c_str(), &before) == 0;
  std::string tmp = path + ".swipc-tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("open " + tmp + ": " + std::strerror(errno));
  try {
    produce(fd);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("rename to " + path + ": " + std::strerror(errno));
  struct stat after {};
  if (!existed || ::stat(path.c_str(), &after) != 0) return;
  auto key = [](const timespec& t) { return std::make_pair(t.tv_sec, t.tv_nsec); };
  if (key(after.st_mtim) > key(before.st_mtim)) return;
  timespec times[2];
  times[0].tv_nsec = UTIME_OMIT;
  times[1] = before.st_mtim;
  times[1].tv_nsec += 1000;
  if (times[1].tv_nsec >= 1000000000) {
    times[1].tv_sec += 1;
    times[1].tv_nsec -= 1000000000;
  }
  ::utimensat(AT_FDCWD, path.c_str(), times, 0);
}

/// A port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close).
uint16_t pickFreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error(std::string("pick a free port: ") + std::strerror(errno));
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

bool acceptsConnections(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (fd >= 0) ::close(fd);
  return ok;
}

std::string localUrl(uint16_t port, std::string_view pathAndQuery) {
  return "http://127.0.0.1:" + std::to_string(port) + std::string(pathAndQuery);
}

/// SIGTERM, then a bounded wait; ChildProcess's own destructor SIGKILLs whatever is left.
void stopProcess(ChildProcess& proc) {
  if (!proc.running()) return;
  proc.signal(SIGTERM);
  proc.waitExit(STOP_TIMEOUT);
}

}  // namespace

// ------------------------------------------------------------------------------------------------

std::string sha256Hex(std::string_view bytes) {
  Sha256 sha;
  sha.update(bytes.data(), bytes.size());
  return sha.hex();
}

std::string sha256File(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("sha256File: open " + path + ": " + std::strerror(errno));
  Sha256 sha;
  std::vector<char> buf(WRITE_PIECE_BYTES);
  for (;;) {
    ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int err = errno;
      ::close(fd);
      throw std::runtime_error("sha256File: read " + path + ": " + std::strerror(err));
    }
    if (r == 0) break;
    sha.update(buf.data(), static_cast<size_t>(r));
  }
  ::close(fd);
  return sha.hex();
}

std::string generatedBodySha256(uint64_t size, uint64_t seed) {
  Sha256 sha;
  std::vector<char> buf(WRITE_PIECE_BYTES);
  for (uint64_t off = 0; off < size; off += buf.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
    fillGeneratedBody(seed, off, buf.data(), n);
    sha.update(buf.data(), n);
  }
  return sha.hex();
}

std::string writeFileAtomically(const std::string& path, std::string_view bytes) {
  replaceFile(path, [&](int fd) { writeAll(fd, bytes.data(), bytes.size(), path); });
  return sha256Hex(bytes);
}

std::string writeGeneratedFile(const std::string& path, uint64_t size, uint64_t seed) {
  Sha256 sha;
  replaceFile(path, [&](int fd) {
    std::vector<char> buf(WRITE_PIECE_BYTES);
    for (uint64_t off = 0; off < size; off += buf.size()) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
      fillGeneratedBody(seed, off, buf.data(), n);
      sha.update(buf.data(), n);
      writeAll(fd, buf.data(), n, path);
    }
  });
  return sha.hex();
}

// ------------------------------------------------------------------------------------------------
// HttpTestServer

HttpTestServer::HttpTestServer() : HttpTestServer(Options{}) {}

HttpTestServer::HttpTestServer(Options opts) : opts_(std::move(opts)), dir_(std::make_unique<TempDir>()) {
  if (opts_.root.empty()) {
    root_ = dir_->path() + "/www";
    std::filesystem::create_directories(root_);
  } else {
    root_ = opts_.root;
  }
  logPath_ = dir_->path() + "/requests.jsonl";
  start(0);
}

HttpTestServer::~HttpTestServer() { stopProcess(proc_); }

void HttpTestServer::start(uint16_t port) {
  ChildProcess::Options o;
  o.pipeStdout = true;
  proc_ = ChildProcess({httpTestServerPath(), "--root", root_, "--port", std::to_string(port), "--log", logPath_,
                        "--port-file", dir_->path() + "/port"},
                       o);
  // The server prints "listening PORT" once it listens; EOF or silence means it failed.
  auto line = proc_.readLine(opts_.startTimeout);
  const std::string prefix = "listening ";
  if (!line || line->rfind(prefix, 0) != 0) {
    throw std::runtime_error("http_test_server did not start: " + line.value_or("(no output)") + "\n" + log());
  }
  port_ = static_cast<uint16_t>(std::stoul(line->substr(prefix.size())));
}

std::string HttpTestServer::url(std::string_view pathAndQuery) const { return localUrl(port_, pathAndQuery); }

std::string HttpTestServer::writeFile(const std::string& name, std::string_view bytes) {
  return writeFileAtomically(root_ + "/" + name, bytes);
}

std::string HttpTestServer::writeRandomFile(const std::string& name, uint64_t size, uint64_t seed) {
  return writeGeneratedFile(root_ + "/" + name, size, seed);
}

std::vector<nlohmann::json> HttpTestServer::requests() const {
  std::vector<nlohmann::json> out;
  std::string text = readWholeFile(logPath_);
  size_t pos = 0;
  for (size_t nl; (nl = text.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    auto j = nlohmann::json::parse(text.begin() + static_cast<std::ptrdiff_t>(pos),
                                   text.begin() + static_cast<std::ptrdiff_t>(nl), nullptr, false);
    if (!j.is_discarded()) out.push_back(std::move(j));
  }
  return out;
}

std::vector<nlohmann::json> HttpTestServer::waitForRequests(size_t count, std::chrono::milliseconds timeout) const {
  std::vector<nlohmann::json> got;
  eventually(
      [&] {
        got = requests();
        return got.size() >= count;
      },
      timeout);
  return got;
}

void HttpTestServer::stop() {
  stopProcess(proc_);
  proc_ = ChildProcess();
}

void HttpTestServer::restart() {
  stop();
  start(port_);
}

// ------------------------------------------------------------------------------------------------
// NginxServer

NginxServer::NginxServer() : NginxServer(Options{}) {}

NginxServer::NginxServer(Options opts) : opts_(std::move(opts)), root_(dir_.path() + "/www") {
  if (!nginxAvailable()) throw std::runtime_error("nginx not found at " + nginxPath() + " (apt-get install nginx-light)");
  for (const char* sub : {"www", "tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"}) {
    std::filesystem::create_directories(dir_.path() + "/" + sub);
  }
  // The port is free when picked and taken by nginx a moment later; another process can win
  // that race, and then nginx exits at once: try again on a fresh port.
  for (int attempt = 0; attempt < NGINX_START_ATTEMPTS; ++attempt) {
    if (tryStart()) return;
  }
  throw std::runtime_error("nginx did not start:\n" + errorLog() + proc_.stderrText());
}

NginxServer::~NginxServer() { stopProcess(proc_); }

bool NginxServer::tryStart() {
  port_ = pickFreePort();
  const std::string& d = dir_.path();
  std::string conf = d + "/nginx.conf";
  std::ofstream f(conf, std::ios::trunc);
  // No `user`: with master_process off nginx never switches users, so it serves as whoever ran
  // it. `?rate=N` on a request overrides the configured limit_rate.
  f << "daemon off;\n"
    << "master_process off;\n"
    << "worker_processes 1;\n"
    << "pid " << d << "/nginx.pid;\n"
    << "error_log " << d << "/error.log info;\n"
    << "events { worker_connections 256; }\n"
    << "http {\n"
    << "  access_log " << d << "/access.log;\n"
    << "  client_body_temp_path " << d << "/tmp/body;\n"
    << "  proxy_temp_path " << d << "/tmp/proxy;\n"
    << "  fastcgi_temp_path " << d << "/tmp/fastcgi;\n"
    << "  uwsgi_temp_path " << d << "/tmp/uwsgi;\n"
    << "  scgi_temp_path " << d << "/tmp/scgi;\n"
    << "  default_type application/octet-stream;\n"
    << "  sendfile on;\n"
    << "  etag on;\n"
    << "  keepalive_timeout 65;\n"
    << "  map $arg_rate $swipc_limit_rate {\n"
    << "    default " << opts_.limitRate << ";\n"
    << "    \"~^[0-9]+$\" $arg_rate;\n"
    << "  }\n"
    << "  server {\n"
    << "    listen 127.0.0.1:" << port_ << ";\n"
    << "    root " << root_ << ";\n"
    << "    location / { limit_rate $swipc_limit_rate; }\n"
    << "  }\n"
    << "}\n";
  f.close();
  std::string pidFile = d + "/nginx.pid";
  ::unlink(pidFile.c_str());
  // -e: the error log before the config is read (the built-in default is stderr, fine too).
  proc_ = ChildProcess({nginxPath(), "-p", d + "/", "-c", conf, "-e", d + "/error.log"}, {});
  // nginx writes its pid file after it has bound and is listening.
  std::string wantPid = std::to_string(proc_.pid());
  bool up = eventually(
      [&] {
        if (!proc_.running()) return true;
        std::string text = readWholeFile(pidFile);
        while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
        return text == wantPid && acceptsConnections(port_);
      },
      opts_.startTimeout);
  if (up && proc_.running()) return true;
  if (errorLog().find("Address already in use") != std::string::npos) {
    proc_ = ChildProcess();
    return false;
  }
  throw std::runtime_error("nginx did not start:\n" + errorLog() + proc_.stderrText());
}

std::string NginxServer::url(std::string_view pathAndQuery) const { return localUrl(port_, pathAndQuery); }

std::string NginxServer::writeFile(const std::string& name, std::string_view bytes) {
  return writeFileAtomically(root_ + "/" + name, bytes);
}

std::string NginxServer::writeRandomFile(const std::string& name, uint64_t size, uint64_t seed) {
  return writeGeneratedFile(root_ + "/" + name, size, seed);
}

std::string NginxServer::errorLog() const { return readWholeFile(dir_.path() + "/error.log"); }

std::string NginxServer::accessLog() const { return readWholeFile(dir_.path() + "/access.log"); }

}  // namespace swipc::testing
