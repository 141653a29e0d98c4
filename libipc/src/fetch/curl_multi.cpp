#include "fetch/curl_multi.h"

#include <curl/curl.h>
#include <sys/epoll.h>

#include <algorithm>
#include <mutex>

#include "core/log.h"

namespace swipc::fetch {

namespace {

constexpr long MAX_REDIRECTS = 20;
constexpr long CONNECT_TIMEOUT_MS = 30000;
// A connection that moves less than a byte a second for a minute is stalled: it ends as a
// connection failure (and a GET is retried) instead of holding a slot forever.
constexpr long LOW_SPEED_SECONDS = 60;
constexpr long RECEIVE_BUFFER_BYTES = 512 * 1024;
// libcurl drains a fast socket in one go (up to a hundred reads per call). Past this many bytes
// in one loop turn a transfer pauses and resumes at the next turn, so a local gigabit download
// takes slices of well under a millisecond of the loop and the pages' messages are served between them.
constexpr uint64_t TURN_BUDGET_BYTES = 256 << 10;

CURLM* multiOf(void* p) { return static_cast<CURLM*>(p); }

bool isConnectionFailure(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  return std::string(s);
}

}  // namespace

struct CurlMulti::Transfer {
  TransferId id = 0;
  CurlMulti* owner = nullptr;
  CURL* easy = nullptr;
  curl_slist* headerList = nullptr;
  TransferSink* sink = nullptr;
  int status = 0;
  HttpHeaders headers;  // of the response being read (reset at each status line)
  bool responseDelivered = false;
  bool cancelled = false;
  bool added = false;
  bool paused = false;
  uint64_t turn = 0;       // the act() the bytes below were counted in
  uint64_t turnBytes = 0;
  uint64_t uploaded = 0;
  char error[CURL_ERROR_SIZE] = {};
};

struct CurlMulti::SocketWatch {
  core::EventLoop::WatchId watch = 0;
  int what = 0;
};

CurlMulti::CurlMulti(core::EventLoop& loop) : loop_(loop) {}

Result<std::unique_ptr<CurlMulti>> CurlMulti::create(core::EventLoop& loop, int maxConnections) {
  static std::once_flag once;
  static CURLcode globalInit = CURLE_OK;
  std::call_once(once, [] { globalInit = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (globalInit != CURLE_OK) {
    return makeError(Errc::SYSTEM, std::string("libcurl: ") + curl_easy_strerror(globalInit));
  }
  std::unique_ptr<CurlMulti> m(new CurlMulti(loop));
  CURLM* multi = curl_multi_init();
  if (multi == nullptr) return makeError(Errc::SYSTEM, "libcurl: curl_multi_init failed");
  m->multi_ = multi;
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, &CurlMulti::onSocket);
  curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, m.get());
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, &CurlMulti::onTimer);
  curl_multi_setopt(multi, CURLMOPT_TIMERDATA, m.get());
  curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, static_cast<long>(std::max(1, maxConnections)));
  curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, static_cast<long>(std::max(1, maxConnections)));
  return m;
}

CurlMulti::~CurlMulti() {
  std::vector<TransferId> ids;
  ids.reserve(transfers_.size());
  for (const auto& [id, t] : transfers_) ids.push_back(id);
  depth_ = 0;
  for (TransferId id : ids) release(id);
  if (multi_ != nullptr) curl_multi_cleanup(multiOf(multi_));
  for (auto& [fd, w] : sockets_) loop_.unwatch(w->watch);
  if (timerArmed_) loop_.cancelTimer(timer_);
}

Result<CurlMulti::TransferId> CurlMulti::start(const TransferSpec& spec, TransferSink* sink) {
  auto t = std::make_unique<Transfer>();
  t->id = nextId_++;
  t->owner = this;
  t->sink = sink;
  CURL* easy = curl_easy_init();
  if (easy == nullptr) return makeError(Errc::SYSTEM, "libcurl: curl_easy_init failed");
  t->easy = easy;

  auto set = [&](CURLoption opt, auto value) { return curl_easy_setopt(easy, opt, value); };
  if (set(CURLOPT_URL, spec.url.c_str()) != CURLE_OK ||
      set(CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
      set(CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK) {
    curl_easy_cleanup(easy);
    return makeError(Errc::TYPE, "libcurl refuses the URL " + spec.url);
  }
  set(CURLOPT_PRIVATE, t.get());
  set(CURLOPT_ERRORBUFFER, t->error);
  set(CURLOPT_NOSIGNAL, 1L);
  set(CURLOPT_FOLLOWLOCATION, 1L);
  set(CURLOPT_MAXREDIRS, MAX_REDIRECTS);
  set(CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
  set(CURLOPT_LOW_SPEED_LIMIT, 1L);
  set(CURLOPT_LOW_SPEED_TIME, LOW_SPEED_SECONDS);
  set(CURLOPT_BUFFERSIZE, RECEIVE_BUFFER_BYTES);
  set(CURLOPT_TCP_KEEPALIVE, 1L);
  set(CURLOPT_HEADERFUNCTION, &CurlMulti::onHeader);
  set(CURLOPT_HEADERDATA, t.get());
  set(CURLOPT_WRITEFUNCTION, &CurlMulti::onWrite);
  set(CURLOPT_WRITEDATA, t.get());

  const std::string method = spec.method.empty() ? "GET" : spec.method;
  if (!spec.body.empty()) {
    set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(spec.body.size()));
    set(CURLOPT_COPYPOSTFIELDS, reinterpret_cast<const char*>(spec.body.data()));
    set(CURLOPT_XFERINFOFUNCTION, &CurlMulti::onProgress);
    set(CURLOPT_XFERINFODATA, t.get());
    set(CURLOPT_NOPROGRESS, 0L);
    if (method != "POST") set(CURLOPT_CUSTOMREQUEST, method.c_str());
  } else if (method == "HEAD") {
    set(CURLOPT_NOBODY, 1L);
  } else if (method != "GET") {
    set(CURLOPT_CUSTOMREQUEST, method.c_str());
  }

  for (const auto& [name, value] : spec.headers) {
    std::string line = name + ": " + value;
    t->headerList = curl_slist_append(t->headerList, line.c_str());
  }
  // No "Expect: 100-continue" round trip before a body.
  t->headerList = curl_slist_append(t->headerList, "Expect:");
  if (spec.resumeFrom > 0) {
    // CURLOPT_RANGE, not RESUME_FROM: libcurl fails a resume answered 200 (CURLE_RANGE_ERROR);
    // the fetcher restarts that body from 0 instead (DESIGN §15).
    set(CURLOPT_RANGE, (std::to_string(spec.resumeFrom) + "-").c_str());
    if (!spec.ifRange.empty()) {
      std::string line = "If-Range: " + spec.ifRange;
      t->headerList = curl_slist_append(t->headerList, line.c_str());
    }
  }
  set(CURLOPT_HTTPHEADER, t->headerList);

  const TransferId id = t->id;
  Transfer* raw = t.get();
  transfers_.emplace(id, std::move(t));
  if (depth_ == 0) {
    CURLMcode rc = curl_multi_add_handle(multiOf(multi_), easy);
    if (rc != CURLM_OK) {
      release(id);
      return makeError(Errc::SYSTEM, std::string("libcurl: ") + curl_multi_strerror(rc));
    }
    raw->added = true;
  } else {
    // Inside a libcurl callback: added once it returns (act()).
    loop_.post([this, id] {
      auto it = transfers_.find(id);
      if (it == transfers_.end() || it->second->added) return;
      it->second->added = true;
      curl_multi_add_handle(multiOf(multi_), it->second->easy);
    });
  }
  return id;
}

void CurlMulti::cancel(TransferId id) {
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  it->second->cancelled = true;
  if (depth_ > 0) {
    toRelease_.push_back(id);
  } else {
    release(id);
  }
}

void CurlMulti::release(TransferId id) {
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  Transfer& t = *it->second;
  if (t.added) curl_multi_remove_handle(multiOf(multi_), t.easy);
  curl_easy_cleanup(t.easy);
  curl_slist_free_all(t.headerList);
  transfers_.erase(it);
}

int CurlMulti::onSocket(void* /*easy*/, int fd, int what, void* selfp, void* /*socketp*/) {
  auto* self = static_cast<CurlMulti*>(selfp);
  auto it = self->sockets_.find(fd);
  if (what == CURL_POLL_REMOVE) {
    if (it != self->sockets_.end()) {
      self->loop_.unwatch(it->second->watch);
      self->sockets_.erase(it);
    }
    return 0;
  }
  if (it != self->sockets_.end()) {
    if (it->second->what == what) return 0;
    self->loop_.unwatch(it->second->watch);
    self->sockets_.erase(it);
  }
  uint32_t events = 0;
  if (what & CURL_POLL_IN) events |= EPOLLIN;
  if (what & CURL_POLL_OUT) events |= EPOLLOUT;
  auto watch = self->loop_.watch(fd, events, [self, fd](uint32_t ev) {
    int flags = 0;
    if (ev & (EPOLLIN | EPOLLHUP)) flags |= CURL_CSELECT_IN;
    if (ev & EPOLLOUT) flags |= CURL_CSELECT_OUT;
    if (ev & EPOLLERR) flags |= CURL_CSELECT_ERR;
    self->act(fd, flags);
  });
  if (!watch) {
    core::log().error("background fetch: cannot watch a connection's socket: {}", watch.error().describe());
    return -1;  // libcurl fails that transfer
  }
  auto w = std::make_unique<SocketWatch>();
  w->watch = *watch;
  w->what = what;
  self->sockets_.emplace(fd, std::move(w));
  return 0;
}

int CurlMulti::onTimer(void* /*multi*/, long timeoutMs, void* selfp) {
  auto* self = static_cast<CurlMulti*>(selfp);
  if (self->timerArmed_) {
    self->loop_.cancelTimer(self->timer_);
    self->timerArmed_ = false;
  }
  if (timeoutMs < 0) return 0;
  self->timer_ = self->loop_.addTimer(deadlineIn(std::chrono::milliseconds(timeoutMs)), [self] {
    self->timerArmed_ = false;
    self->act(CURL_SOCKET_TIMEOUT, 0);
  });
  self->timerArmed_ = true;
  return 0;
}

void CurlMulti::act(int fd, int events) {
  int running = 0;
  ++turn_;
  ++depth_;
  curl_multi_socket_action(multiOf(multi_), fd, events, &running);
  --depth_;
  for (TransferId id : std::exchange(toRelease_, {})) release(id);
  finishCompleted();
}

void CurlMulti::resume(TransferId id) {
  auto it = transfers_.find(id);
  if (it == transfers_.end() || !it->second->paused) return;
  Transfer& t = *it->second;
  t.paused = false;
  t.turn = ++turn_;  // a fresh budget for what libcurl delivers now
  t.turnBytes = 0;
  ++depth_;
  curl_easy_pause(t.easy, CURLPAUSE_CONT);
  --depth_;
  for (TransferId r : std::exchange(toRelease_, {})) release(r);
  finishCompleted();
}

void CurlMulti::finishCompleted() {
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multiOf(multi_), &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    Transfer* t = nullptr;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&t));
    if (t == nullptr || t->cancelled) continue;
    const CURLcode code = msg->data.result;
    TransferOutcome outcome;
    outcome.ok = code == CURLE_OK;
    outcome.curlCode = static_cast<int>(code);
    if (!outcome.ok) {
      outcome.error = t->error[0] != '\0' ? std::string(t->error) : std::string(curl_easy_strerror(code));
      outcome.connectionFailure = isConnectionFailure(code);
    }
    TransferSink* sink = t->sink;
    const TransferId id = t->id;
    bool stop = false;
    if (outcome.ok && !t->responseDelivered) stop = !deliverResponse(*t);
    release(id);  // before the sink runs: it may start the next transfer on the freed slot
    if (stop) continue;
    sink->onDone(outcome);
  }
}

bool CurlMulti::deliverResponse(Transfer& t) {
  t.responseDelivered = true;
  return t.sink->onResponse(t.status, t.headers);
}

size_t CurlMulti::onHeader(char* data, size_t size, size_t n, void* tp) {
  auto* t = static_cast<Transfer*>(tp);
  const size_t bytes = size * n;
  if (t->cancelled) return 0;
  std::string_view line(data, bytes);
  if (line.rfind("HTTP/", 0) == 0) {
    // A status line starts a response: an interim (1xx), a redirect or the final one.
    t->headers.clear();
    t->status = 0;
    size_t sp = line.find(' ');
    if (sp != std::string_view::npos) {
      int status = 0;
      for (size_t i = sp + 1; i < line.size() && line[i] >= '0' && line[i] <= '9'; ++i) status = status * 10 + (line[i] - '0');
      t->status = status;
    }
    return bytes;
  }
  size_t colon = line.find(':');
  if (colon != std::string_view::npos && colon > 0) {
    t->headers.emplace_back(trim(line.substr(0, colon)), trim(line.substr(colon + 1)));
  }
  return bytes;
}

size_t CurlMulti::onWrite(char* data, size_t size, size_t n, void* tp) {
  auto* t = static_cast<Transfer*>(tp);
  const size_t bytes = size * n;
  if (t->cancelled) return 0;
  if (!t->responseDelivered && !t->owner->deliverResponse(*t)) {
    t->cancelled = true;
    t->owner->toRelease_.push_back(t->id);
    return 0;
  }
  if (t->cancelled) return 0;  // the sink cancelled it from onResponse
  CurlMulti& m = *t->owner;
  if (t->turn != m.turn_) {
    t->turn = m.turn_;
    t->turnBytes = 0;
  }
  if (t->turnBytes >= TURN_BUDGET_BYTES && !t->paused) {
    // libcurl keeps these bytes and hands them again once resumed (next loop turn).
    t->paused = true;
    const TransferId id = t->id;
    m.loop_.post([&m, id] { m.resume(id); });
    return CURL_WRITEFUNC_PAUSE;
  }
  t->turnBytes += bytes;
  if (!t->sink->onBody(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data), bytes))) return 0;
  return bytes;
}

int CurlMulti::onProgress(void* tp, int64_t /*dlTotal*/, int64_t /*dlNow*/, int64_t /*ulTotal*/, int64_t ulNow) {
  auto* t = static_cast<Transfer*>(tp);
  if (t->cancelled) return 1;
  if (ulNow > 0 && static_cast<uint64_t>(ulNow) != t->uploaded) {
    t->uploaded = static_cast<uint64_t>(ulNow);
    t->sink->onUploaded(t->uploaded);
  }
  return 0;
}

}  // namespace swipc::fetch
