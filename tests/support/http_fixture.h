// Test support for Background Fetch (DESIGN §15): real HTTP origins on 127.0.0.1 in child
// processes, and the hashing helpers tests compare downloads with.
//
//   HttpTestServer  tests/support/http_test_server: our own programmable origin. Every behaviour
//                   is picked per request by query parameters, so one server serves every case:
//     rate=B                      throttle the body to B bytes/s (paced from the first byte)
//     status=N                    status N (200..599), the resource as body, Range ignored
//     ignoreRange=1               always 200 with the full body
//     noValidators=1              no ETag, no Last-Modified;  noEtag=1: Last-Modified only
//     resetAfter=B                headers + B body bytes, then RST — on every request, unless
//     resetTimes=K&key=NAME       only the first K requests with that key reset, later ones
//                                 succeed (resetAfter defaults to 0 here)
//     closeBeforeHeadersTimes=K&key=NAME   the first K requests get an RST and no response
//     redirect=PATH               302 with Location: PATH
//     chunked=1                   Transfer-Encoding: chunked, no Content-Length
//   `key` defaults to the request's path; counters live in the server, so they survive the
//   client's crash but not restart().
//   Paths: a file under root() (ETag "<size>-<mtime ns>", strong; Last-Modified: mtime);
//   /gen/BYTES?seed=S: the generated body of http_generated_body.h (ETag "gen-BYTES-S"; no disk,
//   any size up to 1 TiB); /status/N: status N with the text "status N\n". Range: bytes=N-,
//   N-M and -N give 206 + Content-Range; If-Range equal to the ETag (or the Last-Modified date)
//   honours Range, anything else gives the full 200; a range past the end is 416. POST/PUT
//   bodies (Content-Length or chunked, Expect: 100-continue answered) are read and hashed; to a
//   path naming nothing they answer 200 {"requestBodyBytes":N,"requestBodySha256":"…"}.
//
//   NginxServer     Debian's /usr/sbin/nginx (package nginx-light) in the foreground with a
//                   generated config: a second, independent implementation of Range, If-Range
//                   and ETag, and limit_rate for slow downloads. Its ETag is the strong
//                   "<mtime hex>-<size hex>". limit_rate sends the first second's worth at once,
//                   then paces: kill a download "at 50 %" by watching bytes, not the clock.
//
// Both: url(path) is "http://127.0.0.1:PORT" + path; files written with writeFile() /
// writeRandomFile() are replaced atomically (temp + rename) and always get a new ETag, even when
// rewritten within one clock tick. Destruction stops the process (SIGTERM, then SIGKILL).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "http_generated_body.h"
#include "process.h"

namespace swipc::testing {

/// tests/support/http_test_server (set by CMake).
std::string httpTestServerPath();
/// The nginx binary: $SWIPC_NGINX when set, else /usr/sbin/nginx.
std::string nginxPath();
/// Whether nginxPath() is an executable. CI installs nginx-light (scripts/install-deps.sh), so a
/// test skips on false only to stay usable on a developer machine without it.
bool nginxAvailable();

/// Lowercase hex SHA-256 of `bytes`.
std::string sha256Hex(std::string_view bytes);
/// Lowercase hex SHA-256 of the file's content; throws std::runtime_error if it cannot be read.
std::string sha256File(const std::string& path);
/// Lowercase hex SHA-256 of the generated body /gen/SIZE?seed=SEED (streamed: any size).
std::string generatedBodySha256(uint64_t size, uint64_t seed = 0);

/// Writes `bytes` to `path` (parents created) via a temporary file and rename, so a server never
/// serves half a file. If the file existed, the new one's mtime is made later than the old one's,
/// so its ETag changes. Returns sha256Hex(bytes).
std::string writeFileAtomically(const std::string& path, std::string_view bytes);
/// Same, with `size` bytes of the generated body for `seed` (what /gen/SIZE?seed=SEED serves),
/// written in pieces (memory stays flat). Returns their SHA-256.
std::string writeGeneratedFile(const std::string& path, uint64_t size, uint64_t seed);

/// tests/support/http_test_server in a child process. The constructor returns once it listens
/// and throws std::runtime_error (with the server's stderr) if it did not within the timeout.
/// @concurrent: one test thread; the server itself serves ~8+ connections at once.
class HttpTestServer {
 public:
  struct Options {
    std::string root;  // empty: a private TempDir, removed on destruction
    std::chrono::milliseconds startTimeout = std::chrono::milliseconds(10000);
  };

  HttpTestServer();
  explicit HttpTestServer(Options opts);
  ~HttpTestServer();
  HttpTestServer(const HttpTestServer&) = delete;
  HttpTestServer& operator=(const HttpTestServer&) = delete;

  uint16_t port() const { return port_; }
  /// "http://127.0.0.1:PORT" + pathAndQuery (which should start with '/').
  std::string url(std::string_view pathAndQuery) const;
  /// The directory served.
  const std::string& root() const { return root_; }
  pid_t pid() const { return proc_.pid(); }

  /// root()/name := bytes (see writeFileAtomically); returns the content's SHA-256.
  std::string writeFile(const std::string& name, std::string_view bytes);
  /// root()/name := the generated body of `size` bytes for `seed` (byte for byte what
  /// /gen/SIZE?seed=SEED serves); returns its SHA-256.
  std::string writeRandomFile(const std::string& name, uint64_t size, uint64_t seed);

  /// The request log so far, one object per request, oldest first:
  /// {"method","path","query","range","ifRange","status","bodyBytes","requestBodyBytes",
  ///  "requestBodySha256","reset","connection"}. A line is written once its response (or reset)
  /// has gone out, so a client can finish before its line is there: use waitForRequests().
  std::vector<nlohmann::json> requests() const;
  /// requests() once it holds at least `count` entries, or what it holds at the timeout.
  std::vector<nlohmann::json> waitForRequests(size_t count,
                                              std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) const;

  /// Stops the server (SIGTERM): connections to port() are refused from now on.
  void stop();
  /// Starts it again on the same port (after stop()); per-key counters start from zero. Throws
  /// std::runtime_error if it did not listen in time (say, the port was taken meanwhile).
  void restart();
  /// What the server wrote to stderr.
  std::string log() const { return proc_.stderrText(); }

 private:
  void start(uint16_t port);

  Options opts_;
  std::unique_ptr<TempDir> dir_;  // log and, without Options::root, the served files
  std::string root_;
  std::string logPath_;
  uint16_t port_ = 0;
  ChildProcess proc_;
};

/// Debian's nginx in the foreground (daemon off, master_process off), listening on a free port
/// of 127.0.0.1 with a generated config, logs and temp paths in a private TempDir. Runs as the
/// current user (root or not). The constructor returns once nginx answers and throws
/// std::runtime_error (with its error log) otherwise.
class NginxServer {
 public:
  struct Options {
    /// limit_rate in bytes/s for every response; 0: unthrottled. A request's own `?rate=N`
    /// overrides it (nginx `limit_rate $arg_rate`).
    uint64_t limitRate = 0;
    std::chrono::milliseconds startTimeout = std::chrono::milliseconds(10000);
  };

  NginxServer();
  explicit NginxServer(Options opts);
  ~NginxServer();
  NginxServer(const NginxServer&) = delete;
  NginxServer& operator=(const NginxServer&) = delete;

  uint16_t port() const { return port_; }
  std::string url(std::string_view pathAndQuery) const;
  const std::string& root() const { return root_; }
  pid_t pid() const { return proc_.pid(); }

  std::string writeFile(const std::string& name, std::string_view bytes);
  std::string writeRandomFile(const std::string& name, uint64_t size, uint64_t seed);

  /// nginx's error log and access log so far.
  std::string errorLog() const;
  std::string accessLog() const;

 private:
  /// One attempt on a fresh free port; false if nginx exited (the port was taken meanwhile).
  bool tryStart();

  Options opts_;
  TempDir dir_;
  std::string root_;
  uint16_t port_ = 0;
  ChildProcess proc_;
};

}  // namespace swipc::testing
