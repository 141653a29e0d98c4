// CurlMulti: HTTP(S) transfers on libcurl's multi interface, driven by an EventLoop.
//
// libcurl tells us which sockets it wants watched (CURLMOPT_SOCKETFUNCTION) and when it next
// needs a call (CURLMOPT_TIMERFUNCTION); we turn those into the loop's fd watches and one timer,
// and hand each readiness back with curl_multi_socket_action. Nothing blocks and nothing polls:
// a transfer costs the loop only the bytes that arrive. At most `maxConnections` transfers run at
// once (CURLMOPT_MAX_TOTAL_CONNECTIONS); libcurl queues the rest.
//
// A transfer reports to its TransferSink: the final response's status and headers (after
// redirects) once, its body bytes as they arrive, upload progress, and exactly one onDone —
// unless it was cancelled first, after which its sink hears nothing more.
//
// @concurrent: single-threaded; the loop's thread. Sinks may start and cancel transfers from any
// callback.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/event_loop.h"
#include "swipc/background_fetch.h"
#include "swipc/error.h"

namespace swipc::fetch {

struct TransferSpec {
  std::string url;
  std::string method;  // empty: GET
  HttpHeaders headers;
  std::vector<uint8_t> body;
  /// Resume: ask for bytes from `resumeFrom` on (Range: bytes=N-), with If-Range: `ifRange` when
  /// it is not empty (an ETag or a Last-Modified date).
  uint64_t resumeFrom = 0;
  std::string ifRange;
};

struct TransferOutcome {
  bool ok = false;         // the exchange completed (any HTTP status)
  int curlCode = 0;        // CURLcode
  std::string error;       // libcurl's message when !ok
  /// The connection was refused, reset, closed early or stalled: worth retrying a GET.
  bool connectionFailure = false;
};

class TransferSink {
 public:
  virtual ~TransferSink() = default;
  /// The final response's status line and headers (redirects followed). Called once, before the
  /// first body byte (or before onDone when there is no body). false stops the transfer.
  virtual bool onResponse(int status, const HttpHeaders& headers) = 0;
  /// Body bytes, in order. false stops the transfer (onDone reports a write error).
  virtual bool onBody(std::span<const uint8_t> bytes) = 0;
  virtual void onUploaded(uint64_t /*bytes*/) {}
  virtual void onDone(const TransferOutcome& outcome) = 0;
};

class CurlMulti {
 public:
  using TransferId = uint64_t;

  /// SYSTEM when libcurl cannot be set up.
  static Result<std::unique_ptr<CurlMulti>> create(core::EventLoop& loop, int maxConnections);
  ~CurlMulti();
  CurlMulti(const CurlMulti&) = delete;
  CurlMulti& operator=(const CurlMulti&) = delete;

  /// Starts (or queues) a transfer. TYPE for a URL libcurl refuses. `sink` must outlive the
  /// transfer or cancel it.
  Result<TransferId> start(const TransferSpec& spec, TransferSink* sink);
  /// Stops a transfer; its sink hears nothing more. Unknown or finished ids are ignored.
  void cancel(TransferId id);
  size_t running() const { return transfers_.size(); }

 private:
  struct Transfer;
  struct SocketWatch;
  explicit CurlMulti(core::EventLoop& loop);

  static int onSocket(void* easy, int fd, int what, void* self, void* socketp);
  static int onTimer(void* multi, long timeoutMs, void* self);
  static size_t onHeader(char* data, size_t size, size_t n, void* transfer);
  static size_t onWrite(char* data, size_t size, size_t n, void* transfer);
  static int onProgress(void* transfer, int64_t dlTotal, int64_t dlNow, int64_t ulTotal, int64_t ulNow);

  /// curl_multi_socket_action for `fd` (or the timeout), then finishes what completed.
  void act(int fd, int events);
  void finishCompleted();
  /// Resumes a transfer paused for its turn budget.
  void resume(TransferId id);
  void release(TransferId id);
  bool deliverResponse(Transfer& t);

  core::EventLoop& loop_;
  void* multi_ = nullptr;  // CURLM*
  core::EventLoop::TimerId timer_ = 0;
  bool timerArmed_ = false;
  TransferId nextId_ = 1;
  std::unordered_map<TransferId, std::unique_ptr<Transfer>> transfers_;
  std::unordered_map<int, std::unique_ptr<SocketWatch>> sockets_;
  uint64_t turn_ = 0;  // act() calls so far: a transfer's byte budget is per turn
  int depth_ = 0;  // > 0 while inside libcurl: removals wait (curl forbids them in callbacks)
  std::vector<TransferId> toRelease_;
};

}  // namespace swipc::fetch
