// http_test_server: a programmable HTTP/1.1 origin for the Background Fetch tests (DESIGN §15).
//
//   http_test_server --root DIR [--port N] [--port-file F] [--log F]
//
// Binds 127.0.0.1:N (0: any free port), writes the port to --port-file (temp + rename), prints
// `listening PORT` on stdout and serves until SIGTERM/SIGINT. One thread per connection,
// keep-alive, GET/HEAD/POST/PUT; request bodies (Content-Length or chunked) are read, counted
// and hashed. Every behaviour a test needs is chosen per request by query parameters, so one
// server serves every case (tests/support/http_fixture.h lists them):
//
//   rate=B             throttle the body to B bytes/s (chunks of ~B/20, paced from the start)
//   status=N           status N (200..599) with the whole resource as body; Range is ignored
//   ignoreRange=1      always 200 with the full body (a server that ignores Range)
//   noValidators=1     no ETag and no Last-Modified;   noEtag=1: Last-Modified only
//   resetAfter=B       headers + B body bytes, then RST (SO_LINGER 0); every request, unless
//   resetTimes=K       only the first K requests of `key` reset (resetAfter defaults to 0)
//   closeBeforeHeadersTimes=K   the first K requests of `key` get an RST and no response
//   key=NAME           the counter for resetTimes / closeBeforeHeadersTimes (default: the path)
//   redirect=PATH      302 with Location: PATH
//   chunked=1          Transfer-Encoding: chunked, no Content-Length
//
// Paths: files under --root (a `..` segment is 403); `/gen/BYTES[?seed=S]` a generated body
// (http_generated_body.h) with strong ETag "gen-BYTES-S"; `/status/N` status N with a short text
// body. POST/PUT to a path that names nothing answer 200 with what was received as JSON.
//
// --log F appends one JSON line per request, flushed at once:
//   {"method","path","query","range","ifRange","status","bodyBytes","requestBodyBytes",
//    "requestBodySha256","reset","connection"}
// written after the response (or the reset) went out; "status" is 0 when none was sent.
//
// Hostile input never crashes it: heads are capped (64 KiB, 128 headers), numbers are parsed
// with overflow checks, and anything malformed is a 400 followed by close.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "http_generated_body.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr size_t MAX_HEAD_BYTES = 64 * 1024;
constexpr size_t MAX_HEADERS = 128;
constexpr size_t MAX_CHUNK_LINE_BYTES = 1024;
constexpr int MAX_CONNECTIONS = 256;
constexpr int IDLE_TIMEOUT_SEC = 60;
constexpr uint64_t MAX_GENERATED_BYTES = 1ULL << 40;  // 1 TiB: enough for any test, no overflow
constexpr size_t SEND_CHUNK_BYTES = 64 * 1024;
constexpr auto RESET_DRAIN_TIMEOUT = 2s;  // how long a reset waits for its bytes to be acked
constexpr time_t GENERATED_LAST_MODIFIED = 1000000000;  // 2001-09-09T01:46:40Z (+ seed seconds)

// ------------------------------------------------------------------------------------------------
// Small parsing helpers (all total: malformed input gives nullopt, never an exception)

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

/// Decimal digits only, at most 2^63; nullopt otherwise.
std::optional<uint64_t> parseUint(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

std::optional<uint64_t> parseHex(std::string_view s) {
  if (s.empty() || s.size() > 15) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return std::nullopt;
    v = v * 16 + static_cast<uint64_t>(d);
  }
  return v;
}

std::optional<std::string> percentDecode(std::string_view s, bool plusIsSpace) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;  // "%" needs two hex digits after it
      auto v = parseHex(s.substr(i + 1, 2));
      if (!v) return std::nullopt;
      out.push_back(static_cast<char>(*v));
      i += 2;
    } else if (c == '+' && plusIsSpace) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

bool isTokenChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

std::string httpDate(time_t t) {
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[64];
  size_t n = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return std::string(buf, n);
}

std::optional<time_t> parseHttpDate(const std::string& s) {
  struct tm tm {};
  const char* end = ::strptime(s.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (!end || *end != '\0') return std::nullopt;
  return ::timegm(&tm);
}

const char* reasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 416: return "Range Not Satisfiable";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
  }
}

// ------------------------------------------------------------------------------------------------
// Server-wide state shared by the connection threads

/// Per-key request counters for resetTimes / closeBeforeHeadersTimes.
/// @concurrent: any connection thread.
class KeyCounters {
 public:
  /// How many requests counted `key` before this one (then counts this one).
  uint64_t next(const std::string& key) {
    std::lock_guard lock(mutex_);
    return counts_[key]++;
  }

 private:
  std::mutex mutex_;
  std::map<std::string, uint64_t> counts_;
};

/// The --log file: one flushed JSON line per request. @concurrent: any connection thread.
class RequestLog {
 public:
  explicit RequestLog(const std::string& path) {
    if (!path.empty()) file_ = std::fopen(path.c_str(), "a");
  }
  bool failed(const std::string& path) const { return !path.empty() && !file_; }
  void write(const nlohmann::json& line) {
    if (!file_) return;
    std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    std::lock_guard lock(mutex_);
    std::fputs(text.c_str(), file_);
    std::fflush(file_);
  }

 private:
  std::mutex mutex_;
  std::FILE* file_ = nullptr;
};

struct Server {
  std::string root;
  KeyCounters counters;
  std::unique_ptr<RequestLog> log;
  std::atomic<int> connections{0};
  std::atomic<uint64_t> connectionSerial{0};
};

// ------------------------------------------------------------------------------------------------
// One request and the resource it names

struct Request {
  std::string method;
  std::string path;      // percent-decoded
  std::string rawQuery;  // as sent
  std::map<std::string, std::string> query;
  std::map<std::string, std::string> headers;  // lower-case names; a repeated header: last wins
  bool keepAlive = true;
  uint64_t bodyBytes = 0;
  std::string bodySha256;

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
  bool flag(const std::string& name) const {
    auto it = query.find(name);
    return it != query.end() && it->second != "0" && it->second != "false";
  }
};

/// What a path names: a size, a way to read any range of it, and its validators.
struct Entity {
  uint64_t size = 0;
  std::function<bool(uint64_t offset, char* out, size_t n)> read;
  std::string contentType = "application/octet-stream";
  std::string etag;                    // with its quotes; empty: none
  std::optional<time_t> lastModified;  // none: no Last-Modified
};

Entity textEntity(std::string text) {
  Entity e;
  e.size = text.size();
  e.contentType = "text/plain";
  e.read = [text = std::move(text)](uint64_t offset, char* out, size_t n) {
    std::memcpy(out, text.data() + offset, n);
    return true;
  };
  return e;
}

Entity generatedEntity(uint64_t size, uint64_t seed) {
  Entity e;
  e.size = size;
  e.read = [seed](uint64_t offset, char* out, size_t n) {
    swipc::testing::fillGeneratedBody(seed, offset, out, n);
    return true;
  };
  e.etag = "\"gen-" + std::to_string(size) + "-" + std::to_string(seed) + "\"";
  e.lastModified = GENERATED_LAST_MODIFIED + static_cast<time_t>(seed % 1000000);
  return e;
}

/// A regular file under the root, or nullopt. The fd is shared by the reader and closed with it.
std::optional<Entity> fileEntity(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  auto owner = std::shared_ptr<int>(new int(fd), [](int* p) {
    ::close(*p);
    delete p;
  });
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  Entity e;
  e.size = static_cast<uint64_t>(st.st_size);
  e.read = [owner](uint64_t offset, char* out, size_t n) {
    while (n > 0) {
      ssize_t r = ::pread(*owner, out, n, static_cast<off_t>(offset));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;  // truncated under us
      out += r;
      offset += static_cast<uint64_t>(r);
      n -= static_cast<size_t>(r);
    }
    return true;
  };
  uint64_t mtimeNs = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1000000000ULL + static_cast<uint64_t>(st.st_mtim.tv_nsec);
  e.etag = "\"" + std::to_string(e.size) + "-" + std::to_string(mtimeNs) + "\"";
  e.lastModified = st.st_mtim.tv_sec;
  return e;
}

// ------------------------------------------------------------------------------------------------
// Ranges

struct ByteRange {
  uint64_t first = 0;
  uint64_t length = 0;
};

enum class RangeOutcome { FULL, PARTIAL, UNSATISFIABLE };

/// One `bytes=` range against `size`. Syntax we do not serve (several ranges, garbage) means
/// "ignore Range" (RFC 9110 §14.2), so the answer is the full body.
RangeOutcome evaluateRange(std::string_view header, uint64_t size, ByteRange& out) {
  header = trim(header);
  if (header.substr(0, 6) != "bytes=") return RangeOutcome::FULL;
  std::string_view spec = trim(header.substr(6));
  if (spec.find(',') != std::string_view::npos) return RangeOutcome::FULL;
  auto dash = spec.find('-');
  if (dash == std::string_view::npos) return RangeOutcome::FULL;
  std::string_view a = trim(spec.substr(0, dash));
  std::string_view b = trim(spec.substr(dash + 1));
  if (a.empty()) {  // suffix: the last N bytes
    auto n = parseUint(b);
    if (!n) return RangeOutcome::FULL;
    if (*n == 0 || size == 0) return RangeOutcome::UNSATISFIABLE;
    uint64_t len = std::min(*n, size);
    out = {size - len, len};
    return RangeOutcome::PARTIAL;
  }
  auto first = parseUint(a);
  if (!first) return RangeOutcome::FULL;
  uint64_t last = size == 0 ? 0 : size - 1;
  if (!b.empty()) {
    auto l = parseUint(b);
    if (!l || *l < *first) return RangeOutcome::FULL;
    last = std::min(*l, last);
  }
  if (*first >= size) return RangeOutcome::UNSATISFIABLE;
  out = {*first, last - *first + 1};
  return RangeOutcome::PARTIAL;
}

/// If-Range: a strong ETag equal to ours, or an HTTP-date equal to our Last-Modified.
bool ifRangeMatches(const std::string& value, const Entity& e) {
  std::string v(trim(value));
  if (v.empty()) return true;
  if (v.rfind("W/", 0) == 0) return false;  // weak validators never match If-Range
  if (v.front() == '"') return !e.etag.empty() && v == e.etag;
  auto t = parseHttpDate(v);
  return t && e.lastModified && *t == *e.lastModified;
}

// ------------------------------------------------------------------------------------------------
// One connection

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const char* p, size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    static const char* DIGITS = "0123456789abcdef";
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

/// Why a request ended the connection (or did not).
enum class After { KEEP_ALIVE, CLOSE };

class Connection {
 public:
  Connection(Server& server, int fd, uint64_t serial) : server_(server), fd_(fd), serial_(serial) {}
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
  }

  void run() {
    for (;;) {
      Request req;
      auto head = readHead(req);
      if (head == HeadResult::CLOSED) return;
      if (head == HeadResult::TOO_LARGE) {
        respondError(req, 431, "request head too large\n");
        return;
      }
      if (head == HeadResult::BAD) {
        respondError(req, 400, "malformed request\n");
        return;
      }
      if (!readBody(req)) {
        if (bodyError_ != 0) respondError(req, bodyError_, "bad request body\n");
        return;
      }
      if (serve(req) == After::CLOSE) return;
    }
  }

 private:
  enum class HeadResult { OK, CLOSED, BAD, TOO_LARGE };

  // ---- reading -------------------------------------------------------------------------------

  /// More bytes into in_; false on EOF, error or idle timeout.
  bool fill() {
    char buf[16384];
    for (;;) {
      ssize_t r = ::recv(fd_, buf, sizeof buf, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      in_.append(buf, static_cast<size_t>(r));
      return true;
    }
  }

  /// One CRLF-terminated line of at most `limit` bytes (without the CRLF).
  std::optional<std::string> readLine(size_t limit) {
    for (;;) {
      auto eol = in_.find("\r\n");
      if (eol != std::string::npos) {
        if (eol > limit) return std::nullopt;
        std::string line = in_.substr(0, eol);
        in_.erase(0, eol + 2);
        return line;
      }
      if (in_.size() >= limit + 2 || !fill()) return std::nullopt;  // longer than limit + CRLF
    }
  }

  HeadResult readHead(Request& req) {
    size_t end;
    for (;;) {
      end = in_.find("\r\n\r\n");
      if (end != std::string::npos) break;
      if (in_.size() > MAX_HEAD_BYTES) return HeadResult::TOO_LARGE;
      if (!fill()) return in_.empty() ? HeadResult::CLOSED : HeadResult::BAD;
    }
    if (end > MAX_HEAD_BYTES) return HeadResult::TOO_LARGE;
    std::string head = in_.substr(0, end);
    in_.erase(0, end + 4);

    size_t lineEnd = head.find("\r\n");
    std::string_view requestLine = std::string_view(head).substr(0, lineEnd);
    auto sp1 = requestLine.find(' ');
    auto sp2 = sp1 == std::string_view::npos ? sp1 : requestLine.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || requestLine.find(' ', sp2 + 1) != std::string_view::npos) {
      return HeadResult::BAD;
    }
    std::string_view method = requestLine.substr(0, sp1);
    std::string_view target = requestLine.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string_view version = requestLine.substr(sp2 + 1);
    if (method.empty() || !std::all_of(method.begin(), method.end(), isTokenChar)) return HeadResult::BAD;
    req.method = std::string(method);
    if (version != "HTTP/1.1" && version != "HTTP/1.0") return HeadResult::BAD;
    if (target.empty() || target.front() != '/') return HeadResult::BAD;
    auto qmark = target.find('?');
    auto path = percentDecode(target.substr(0, qmark), false);
    if (!path || path->find('\0') != std::string::npos) return HeadResult::BAD;
    req.path = *path;
    if (qmark != std::string_view::npos) {
      req.rawQuery = std::string(target.substr(qmark + 1));
      std::string_view q = req.rawQuery;
      while (!q.empty()) {
        auto amp = q.find('&');
        std::string_view pair = q.substr(0, amp);
        q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
        if (pair.empty()) continue;
        auto eq = pair.find('=');
        auto name = percentDecode(pair.substr(0, eq), true);
        auto value = percentDecode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), true);
        if (!name || !value) return HeadResult::BAD;
        req.query[*name] = *value;
      }
    }

    size_t count = 0;
    size_t pos = lineEnd == std::string::npos ? head.size() : lineEnd + 2;
    while (pos < head.size()) {
      size_t next = head.find("\r\n", pos);
      if (next == std::string::npos) next = head.size();
      std::string_view line = std::string_view(head).substr(pos, next - pos);
      pos = next + 2;
      if (++count > MAX_HEADERS) return HeadResult::TOO_LARGE;
      auto colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) return HeadResult::BAD;
      std::string_view name = line.substr(0, colon);
      if (!std::all_of(name.begin(), name.end(), isTokenChar)) return HeadResult::BAD;  // also obs-fold
      req.headers[lower(name)] = std::string(trim(line.substr(colon + 1)));
    }
    std::string connection = lower(req.header("connection"));
    if (version == "HTTP/1.1") {
      req.keepAlive = connection.find("close") == std::string::npos;
    } else {
      req.keepAlive = connection.find("keep-alive") != std::string::npos;
    }
    return HeadResult::OK;
  }

  /// Reads the request body (Content-Length or chunked), counting and hashing it. False when the
  /// connection cannot go on; bodyError_ then says which status to answer (0: none, just close).
  bool readBody(Request& req) {
    Sha256 sha;
    std::string te = lower(req.header("transfer-encoding"));
    std::string cl = req.header("content-length");
    bool chunked = false;
    uint64_t length = 0;
    if (!te.empty()) {
      if (te != "chunked" || !cl.empty()) {
        bodyError_ = te == "chunked" ? 400 : 501;
        return false;
      }
      chunked = true;
    } else if (!cl.empty()) {
      auto n = parseUint(cl);
      if (!n) {
        bodyError_ = 400;
        return false;
      }
      length = *n;
    }
    if ((chunked || length > 0) && lower(req.header("expect")) == "100-continue") {
      if (!sendAll("HTTP/1.1 100 Continue\r\n\r\n")) return false;
    }
    if (!chunked) {
      if (!consume(length, sha, req)) return false;
    } else {
      for (;;) {
        auto line = readLine(MAX_CHUNK_LINE_BYTES);
        if (!line) return bodyFail(400);
        std::string_view sizeText = trim(std::string_view(*line).substr(0, line->find(';')));
        auto size = parseHex(sizeText);
        if (!size) return bodyFail(400);
        if (*size == 0) break;
        if (!consume(*size, sha, req)) return false;
        auto crlf = readLine(0);
        if (!crlf) return bodyFail(400);
      }
      for (size_t trailers = 0;; ++trailers) {  // trailer section, up to its empty line
        auto line = readLine(MAX_CHUNK_LINE_BYTES);
        if (!line || trailers > MAX_HEADERS) return bodyFail(400);
        if (line->empty()) break;
      }
    }
    req.bodySha256 = sha.hex();
    return true;
  }

  bool bodyFail(int status) {
    bodyError_ = status;
    return false;
  }

  /// Reads exactly n body bytes into the hash.
  bool consume(uint64_t n, Sha256& sha, Request& req) {
    while (n > 0) {
      if (in_.empty() && !fill()) return false;
      size_t take = static_cast<size_t>(std::min<uint64_t>(n, in_.size()));
      sha.update(in_.data(), take);
      in_.erase(0, take);
      n -= take;
      req.bodyBytes += take;
    }
    return true;
  }

  // ---- writing -------------------------------------------------------------------------------

  bool sendAll(const char* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::send(fd_, p, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }
  bool sendAll(const std::string& s) { return sendAll(s.data(), s.size()); }

  /// Closes with an RST instead of a FIN, once what was sent has been acked (or after a bound):
  /// SO_LINGER 0 discards unsent data, and the test wants exactly the bytes it asked for.
  void resetConnection() {
    auto deadline = Clock::now() + RESET_DRAIN_TIMEOUT;
    for (;;) {
      int unacked = 0;
      if (::ioctl(fd_, SIOCOUTQ, &unacked) != 0 || unacked == 0 || Clock::now() >= deadline) break;
      std::this_thread::sleep_for(1ms);  // the kernel offers no event for "all acked"
    }
    struct linger lg {1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    ::close(fd_);
    fd_ = -1;
  }

  void writeLog(const Request& req, int status, uint64_t bodyBytes, bool reset) {
    server_.log->write({{"method", req.method},
                        {"path", req.path},
                        {"query", req.rawQuery},
                        {"range", req.header("range")},
                        {"ifRange", req.header("if-range")},
                        {"status", status},
                        {"bodyBytes", bodyBytes},
                        {"requestBodyBytes", req.bodyBytes},
                        {"requestBodySha256", req.bodySha256},
                        {"reset", reset},
                        {"connection", serial_}});
  }

  void respondError(const Request& req, int status, const std::string& text) {
    std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reasonPhrase(status) +
                       "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(text.size()) +
                       "\r\nConnection: close\r\n\r\n";
    bool sent = sendAll(head + text);
    writeLog(req, status, sent ? text.size() : 0, false);
  }

  // ---- serving -------------------------------------------------------------------------------

  /// The query parameter `name` as a number: nullopt when absent; `bad` set when malformed.
  std::optional<uint64_t> numberParam(const Request& req, const std::string& name, bool& bad) {
    auto it = req.query.find(name);
    if (it == req.query.end()) return std::nullopt;
    auto v = parseUint(it->second);
    if (!v) bad = true;
    return v;
  }

  After serve(const Request& req) {
    bool bad = false;
    auto rate = numberParam(req, "rate", bad);
    auto status = numberParam(req, "status", bad);
    auto resetAfter = numberParam(req, "resetAfter", bad);
    auto resetTimes = numberParam(req, "resetTimes", bad);
    auto closeTimes = numberParam(req, "closeBeforeHeadersTimes", bad);
    auto seed = numberParam(req, "seed", bad);
    if (status && (*status < 200 || *status > 599)) bad = true;
    if (bad) {
      respondError(req, 400, "bad query parameter\n");
      return After::CLOSE;
    }
    auto keyIt = req.query.find("key");
    std::string key = keyIt == req.query.end() ? req.path : keyIt->second;

    if (closeTimes && server_.counters.next("close:" + key) < *closeTimes) {
      resetConnection();
      writeLog(req, 0, 0, true);
      return After::CLOSE;
    }
    bool reset = false;
    if (resetTimes) {
      reset = server_.counters.next("reset:" + key) < *resetTimes;
    } else {
      reset = resetAfter.has_value();
    }

    if (req.method != "GET" && req.method != "HEAD" && req.method != "POST" && req.method != "PUT") {
      return sendSimple(req, 405, "method not allowed\n", "Allow: GET, HEAD, POST, PUT\r\n");
    }
    if (auto it = req.query.find("redirect"); it != req.query.end()) {
      if (it->second.find_first_of("\r\n") != std::string::npos) {
        respondError(req, 400, "bad redirect\n");
        return After::CLOSE;
      }
      return sendSimple(req, 302, "redirect\n", "Location: " + it->second + "\r\n");
    }

    std::optional<Entity> entity;
    int entityStatus = 200;
    if (req.path.rfind("/gen/", 0) == 0) {
      auto size = parseUint(std::string_view(req.path).substr(5));
      if (!size || *size > MAX_GENERATED_BYTES) return sendSimple(req, 404, "no such generated body\n");
      entity = generatedEntity(*size, seed.value_or(0));
    } else if (req.path.rfind("/status/", 0) == 0) {
      auto n = parseUint(std::string_view(req.path).substr(8));
      if (!n || *n < 200 || *n > 599) return sendSimple(req, 404, "no such status\n");
      entityStatus = static_cast<int>(*n);
      entity = textEntity("status " + std::to_string(*n) + "\n");
    } else {
      if (hasDotDotSegment(req.path)) return sendSimple(req, 403, "path escapes the root\n");
      entity = fileEntity(server_.root + req.path);
      if (!entity && (req.method == "POST" || req.method == "PUT")) {
        nlohmann::json echo = {{"requestBodyBytes", req.bodyBytes}, {"requestBodySha256", req.bodySha256}};
        entity = textEntity(echo.dump() + "\n");
        entity->contentType = "application/json";
      }
      if (!entity) return sendSimple(req, 404, "not found\n");
    }
    if (req.flag("noValidators")) {
      entity->etag.clear();
      entity->lastModified.reset();
    }
    if (req.flag("noEtag")) entity->etag.clear();

    // Status and range.
    ByteRange range{0, entity->size};
    int code = entityStatus;
    std::string extra;
    bool withRanges = !req.flag("ignoreRange") && !status && entityStatus == 200 &&
                      (req.method == "GET" || req.method == "HEAD");
    if (status) code = static_cast<int>(*status);
    if (withRanges) {
      extra += "Accept-Ranges: bytes\r\n";
      std::string rangeHeader = req.header("range");
      if (!rangeHeader.empty() && ifRangeMatches(req.header("if-range"), *entity)) {
        switch (evaluateRange(rangeHeader, entity->size, range)) {
          case RangeOutcome::FULL:
            range = {0, entity->size};
            break;
          case RangeOutcome::PARTIAL:
            code = 206;
            extra += "Content-Range: bytes " + std::to_string(range.first) + "-" +
                     std::to_string(range.first + range.length - 1) + "/" + std::to_string(entity->size) + "\r\n";
            break;
          case RangeOutcome::UNSATISFIABLE:
            return sendSimple(req, 416, "", "Content-Range: bytes */" + std::to_string(entity->size) + "\r\n");
        }
      }
    }
    if (!entity->etag.empty()) extra += "ETag: " + entity->etag + "\r\n";
    if (entity->lastModified) extra += "Last-Modified: " + httpDate(*entity->lastModified) + "\r\n";
    if (code == 204 || code == 304) range.length = 0;

    BodyPlan plan;
    plan.chunked = req.flag("chunked") && code != 204 && code != 304;
    plan.rate = rate.value_or(0);
    if (reset) plan.resetAfter = resetAfter.value_or(0);
    return sendEntity(req, code, *entity, range, extra, plan);
  }

  static bool hasDotDotSegment(const std::string& path) {
    size_t pos = 0;
    while (pos <= path.size()) {
      size_t slash = path.find('/', pos);
      if (slash == std::string::npos) slash = path.size();
      if (path.compare(pos, slash - pos, "..") == 0 && slash - pos == 2) return true;
      pos = slash + 1;
    }
    return false;
  }

  struct BodyPlan {
    bool chunked = false;
    uint64_t rate = 0;                    // bytes/s; 0: as fast as the socket takes it
    std::optional<uint64_t> resetAfter;  // RST after this many body bytes
  };

  After sendSimple(const Request& req, int status, const std::string& text, const std::string& extra = {}) {
    Entity e = textEntity(text);
    return sendEntity(req, status, e, {0, e.size}, extra, {});
  }

  After sendEntity(const Request& req, int status, const Entity& e, ByteRange range, const std::string& extra,
                   const BodyPlan& plan) {
    std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reasonPhrase(status) + "\r\n";
    head += "Date: " + httpDate(std::time(nullptr)) + "\r\n";
    head += "Server: swipc-http-test-server\r\n";
    head += "Content-Type: " + e.contentType + "\r\n";
    head += extra;
    bool bodyless = status == 204 || status == 304;
    if (plan.chunked) {
      head += "Transfer-Encoding: chunked\r\n";
    } else if (!bodyless) {
      head += "Content-Length: " + std::to_string(range.length) + "\r\n";
    }
    if (!req.keepAlive) head += "Connection: close\r\n";
    head += "\r\n";
    bool sendBody = req.method != "HEAD" && !bodyless;
    uint64_t toSend = sendBody ? range.length : 0;
    if (plan.resetAfter) toSend = std::min(toSend, *plan.resetAfter);

    uint64_t sent = 0;
    bool ok = sendAll(head);
    size_t chunk = SEND_CHUNK_BYTES;
    if (plan.rate > 0) chunk = static_cast<size_t>(std::clamp<uint64_t>(plan.rate / 20, 1, SEND_CHUNK_BYTES));
    std::vector<char> buf(chunk);
    auto start = Clock::now();
    while (ok && sent < toSend) {
      if (plan.rate > 0) {  // pace from the start: byte k leaves no earlier than k / rate
        auto due = start + std::chrono::microseconds(sent * 1000000 / plan.rate);
        std::this_thread::sleep_until(due);
      }
      size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, toSend - sent));
      if (!e.read(range.first + sent, buf.data(), n)) {
        ok = false;
        break;
      }
      if (plan.chunked) {
        char size[32];
        std::snprintf(size, sizeof size, "%zx\r\n", n);
        ok = sendAll(size) && sendAll(buf.data(), n) && sendAll("\r\n", 2);
      } else {
        ok = sendAll(buf.data(), n);
      }
      if (ok) sent += n;
    }
    if (ok && plan.resetAfter) {
      resetConnection();
      writeLog(req, status, sent, true);
      return After::CLOSE;
    }
    if (ok && plan.chunked && sendBody) ok = sendAll("0\r\n\r\n");
    writeLog(req, status, sent, false);
    return ok && req.keepAlive ? After::KEEP_ALIVE : After::CLOSE;
  }

  Server& server_;
  int fd_;
  uint64_t serial_;
  std::string in_;  // received, not yet parsed
  int bodyError_ = 0;
};

// ------------------------------------------------------------------------------------------------
// main: arguments, listening socket, accept loop

struct Args {
  std::string root;
  uint16_t port = 0;
  std::string portFile;
  std::string logPath;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "http_test_server: %s\nusage: http_test_server --root DIR [--port N] [--port-file F] [--log F]\n",
               why);
  std::exit(2);
}

Args parseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + flag).c_str());
    std::string value = argv[++i];
    if (flag == "--root") {
      a.root = value;
    } else if (flag == "--port") {
      auto p = parseUint(value);
      if (!p || *p > 65535) usage("bad --port");
      a.port = static_cast<uint16_t>(*p);
    } else if (flag == "--port-file") {
      a.portFile = value;
    } else if (flag == "--log") {
      a.logPath = value;
    } else {
      usage(("unknown flag " + flag).c_str());
    }
  }
  if (a.root.empty()) usage("--root is required");
  while (a.root.size() > 1 && a.root.back() == '/') a.root.pop_back();
  return a;
}

void writePortFile(const std::string& path, uint16_t port) {
  std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f || std::fprintf(f, "%u\n", port) < 0 || std::fclose(f) != 0 || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::fprintf(stderr, "http_test_server: cannot write %s: %s\n", path.c_str(), std::strerror(errno));
    std::exit(1);
  }
}

void serveConnection(Server& server, int fd, uint64_t serial) {
  try {
    Connection(server, fd, serial).run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "http_test_server: connection %llu: %s\n", static_cast<unsigned long long>(serial), e.what());
  }
  server.connections.fetch_sub(1);
}

}  // namespace

int main(int argc, char** argv) {
  Args args = parseArgs(argc, argv);
  struct stat st {};
  if (::stat(args.root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) usage("--root is not a directory");

  // SIGTERM/SIGINT arrive on a signalfd the accept loop polls; every thread inherits the mask.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  ::pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  int sigFd = ::signalfd(-1, &mask, SFD_CLOEXEC);
  ::signal(SIGPIPE, SIG_IGN);

  int listenFd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listenFd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(args.port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listenFd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listenFd, 128) != 0) {
    std::fprintf(stderr, "http_test_server: bind 127.0.0.1:%u: %s\n", args.port, std::strerror(errno));
    return 1;
  }
  socklen_t len = sizeof addr;
  ::getsockname(listenFd, reinterpret_cast<sockaddr*>(&addr), &len);
  uint16_t port = ntohs(addr.sin_port);

  Server server;
  server.root = args.root;
  server.log = std::make_unique<RequestLog>(args.logPath);
  if (server.log->failed(args.logPath)) {
    std::fprintf(stderr, "http_test_server: cannot open log %s\n", args.logPath.c_str());
    return 1;
  }
  if (!args.portFile.empty()) writePortFile(args.portFile, port);
  std::printf("listening %u\n", port);
  std::fflush(stdout);

  for (;;) {
    pollfd fds[2] = {{listenFd, POLLIN, 0}, {sigFd, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents) {
      // Connection threads may be mid-send: leave without unwinding them (the log is flushed
      // line by line, so nothing is lost).
      std::fprintf(stderr, "http_test_server: stopping\n");
      ::_exit(0);
    }
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = ::accept4(listenFd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    if (server.connections.load() >= MAX_CONNECTIONS) {
      ::close(fd);
      continue;
    }
    timeval idle{IDLE_TIMEOUT_SEC, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &idle, sizeof idle);
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    server.connections.fetch_add(1);
    uint64_t serial = ++server.connectionSerial;
    try {
      std::thread(serveConnection, std::ref(server), fd, serial).detach();
    } catch (const std::system_error&) {
      server.connections.fetch_sub(1);
      ::close(fd);
    }
  }
}
