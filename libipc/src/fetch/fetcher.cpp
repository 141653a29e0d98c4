#include "fetch/fetcher.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/unique_fd.h"
#include "core/log.h"

namespace swipc::fetch {

namespace {

constexpr size_t MAX_SETTLED_REMEMBERED = 1024;

bool isGet(const std::string& method) { return method.empty() || method == "GET"; }
bool is2xx(int status) { return status >= 200 && status < 300; }

std::string headerValue(const HttpHeaders& headers, std::string_view name) {
  for (const auto& [n, v] : headers) {
    if (n.size() == name.size() && strncasecmp(n.c_str(), name.data(), name.size()) == 0) return v;
  }
  return {};
}

/// What If-Range may carry: a strong ETag, else Last-Modified, else nothing (cannot resume).
std::string validatorOf(const HttpHeaders& headers) {
  std::string etag = headerValue(headers, "ETag");
  if (!etag.empty() && etag.rfind("W/", 0) != 0) return etag;
  return headerValue(headers, "Last-Modified");
}

/// The first byte a 206's Content-Range covers ("bytes 100-199/200"); nullopt when unreadable.
std::optional<uint64_t> contentRangeStart(const HttpHeaders& headers) {
  std::string v = headerValue(headers, "Content-Range");
  size_t i = v.find("bytes ");
  if (i == std::string::npos) return std::nullopt;
  i += 6;
  if (i >= v.size() || v[i] < '0' || v[i] > '9') return std::nullopt;
  uint64_t start = 0;
  for (; i < v.size() && v[i] >= '0' && v[i] <= '9'; ++i) start = start * 10 + static_cast<uint64_t>(v[i] - '0');
  return start;
}

/// TypeError unless `url` is an absolute http(s) URL libcurl can parse.
Result<void> checkUrl(const std::string& url) {
  if (url.find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos) {
    return makeError(Errc::TYPE, "a URL holds a control character");
  }
  CURLU* u = curl_url();
  if (u == nullptr) return makeError(Errc::SYSTEM, "libcurl: curl_url failed");
  CURLUcode rc = curl_url_set(u, CURLUPART_URL, url.c_str(), 0);
  char* scheme = nullptr;
  if (rc == CURLUE_OK) rc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
  std::string s = scheme != nullptr ? scheme : "";
  curl_free(scheme);
  curl_url_cleanup(u);
  if (rc != CURLUE_OK) return makeError(Errc::TYPE, "not a valid URL: '" + url + "'");
  if (s != "http" && s != "https") return makeError(Errc::TYPE, "scheme '" + s + "' is not http or https: '" + url + "'");
  return {};
}

/// TypeError for a method or header that could smuggle a line into the request.
Result<void> checkRequest(const BackgroundFetchRequest& r) {
  auto token = [](const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
      return c > 32 && c < 127 && c != ':' && c != '(' && c != ')' && c != ',' && c != ';' && c != '"';
    });
  };
  if (!r.method.empty() && !token(r.method)) return makeError(Errc::TYPE, "not a valid method: '" + r.method + "'");
  for (const auto& [name, value] : r.headers) {
    if (!token(name)) return makeError(Errc::TYPE, "not a valid header name: '" + name + "'");
    if (value.find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos) {
      return makeError(Errc::TYPE, "the value of header '" + name + "' holds a control character");
    }
  }
  return {};
}

uint64_t fileSize(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace

struct Fetcher::Request {
  StoredRequest stored;
  uint64_t bytes = 0;  // body bytes in its file
  uint64_t uploaded = 0;
  UniqueFd file;       // open for writing while a transfer runs
  std::unique_ptr<Sink> sink;
  CurlMulti::TransferId transfer = 0;
  bool running = false;
  bool finished = false;       // complete, or failed for good
  std::string failure;         // fetch-error when it failed
  int retries = 0;
  std::optional<core::EventLoop::TimerId> retryTimer;
  uint64_t resumeFrom = 0;     // of the running transfer
};

struct Fetcher::Registration {
  StoredRegistration stored;  // its requests live in `requests`
  std::vector<Request> requests;
  uint64_t floor = 0;         // the least `downloaded` pages may be shown
  uint64_t stored_ = 0;       // body bytes stored, all requests
  std::optional<core::EventLoop::TimerId> progressTimer;
  Clock::time_point lastProgress{};
  bool done() const { return !stored.result.empty(); }
  uint64_t downloaded() const { return std::max(floor, stored_); }
};

/// A request's TransferSink: forwards to the fetcher with its registration and request.
class Fetcher::Sink final : public TransferSink {
 public:
  Sink(Fetcher& f, Registration& reg, Request& req) : f_(f), reg_(reg), req_(req) {}
  bool onResponse(int status, const HttpHeaders& headers) override { return f_.onResponse(reg_, req_, status, headers); }
  bool onBody(std::span<const uint8_t> bytes) override { return f_.onBody(reg_, req_, bytes); }
  void onUploaded(uint64_t bytes) override {
    req_.uploaded = bytes;
    f_.progressChanged(reg_);
  }
  void onDone(const TransferOutcome& outcome) override { f_.onDone(reg_, req_, outcome); }

 private:
  Fetcher& f_;
  Registration& reg_;
  Request& req_;
};

Fetcher::Fetcher(core::EventLoop& loop, FetchStore& store, const BackgroundFetchSettings& settings, Hooks hooks)
    : loop_(loop), store_(store), settings_(settings), hooks_(std::move(hooks)) {}

Fetcher::~Fetcher() {
  *alive_ = false;
  for (auto& reg : regs_) {
    stopTransfers(*reg);
    if (reg->progressTimer) loop_.cancelTimer(*reg->progressTimer);
  }
  curl_.reset();
}

Result<std::unique_ptr<Fetcher>> Fetcher::create(core::EventLoop& loop, FetchStore& store,
                                                 const BackgroundFetchSettings& settings, Hooks hooks) {
  std::unique_ptr<Fetcher> f(new Fetcher(loop, store, settings, std::move(hooks)));
  auto curl = CurlMulti::create(loop, settings.maxConnections);
  if (!curl) return curl.error();
  f->curl_ = std::move(*curl);
  if (auto r = f->resumeAll(); !r) return r.error();
  return f;
}

Result<void> Fetcher::resumeAll() {
  auto all = store_.loadAll();
  if (!all) return all.error();
  store_.removeOrphanBodies(*all);
  std::vector<std::string> due;
  for (auto& stored : *all) {
    auto reg = std::make_unique<Registration>();
    for (auto& q : stored.requests) {
      Request req;
      req.stored = std::move(q);
      req.bytes = fileSize(store_.bodyPath(stored.ord, req.stored.idx));
      req.finished = req.stored.complete || !stored.result.empty();
      reg->stored_ += req.bytes;
      reg->requests.push_back(std::move(req));
    }
    stored.requests.clear();
    reg->stored = std::move(stored);
    reg->floor = reg->stored.downloadedFloor;
    storedBytes_ += reg->stored_;
    regs_.push_back(std::move(reg));
  }
  for (auto& reg : regs_) {
    if (reg->done()) {
      due.push_back(reg->stored.id);
      continue;
    }
    core::log().info("background fetch: resuming '{}' ({} of its bytes on disk)", reg->stored.id, reg->stored_);
    ++counters_.resumed;
    for (auto& req : reg->requests)
      if (!req.finished) startRequest(*reg, req);
    maybeFinish(*reg);  // every request had finished before the kill: the result is due now
  }
  if (!due.empty()) {
    loop_.post([this, due, alive = std::weak_ptr<bool>(alive_)] {
      if (alive.expired()) return;
      for (const auto& id : due)
        if (find(id) != nullptr && hooks_.completed) hooks_.completed(id);
    });
  }
  return {};
}

Result<BackgroundFetchState> Fetcher::fetch(const std::string& id, const std::vector<BackgroundFetchRequest>& requests,
                                            const BackgroundFetchOptions& options) {
  if (id.empty()) return makeError(Errc::TYPE, "the id is empty");
  if (requests.empty()) return makeError(Errc::TYPE, "no requests");
  if (requests.size() > MAX_FETCH_REQUESTS) {
    return makeError(Errc::QUOTA_EXCEEDED, "more than " + std::to_string(MAX_FETCH_REQUESTS) + " requests in one fetch");
  }
  for (const auto& r : requests) {
    if (auto ok = checkUrl(r.url); !ok) return ok.error();
    if (auto ok = checkRequest(r); !ok) return ok.error();
  }
  if (find(id) != nullptr) return makeError(Errc::TYPE, "a background fetch with id '" + id + "' is already active");
  if (options.downloadTotal > settings_.quotaBytes) {
    return makeError(Errc::QUOTA_EXCEEDED, "downloadTotal " + std::to_string(options.downloadTotal) +
                                               " exceeds the quota of " + std::to_string(settings_.quotaBytes) + " bytes");
  }
  if (regs_.size() >= MAX_REGISTRATIONS) {
    return makeError(Errc::QUOTA_EXCEEDED, "more than " + std::to_string(MAX_REGISTRATIONS) + " background fetches at once");
  }

  auto reg = std::make_unique<Registration>();
  reg->stored.id = id;
  reg->stored.title = options.title;
  reg->stored.downloadTotal = options.downloadTotal;
  uint32_t idx = 0;
  for (const auto& r : requests) {
    StoredRequest q;
    q.idx = idx++;
    q.url = r.url;
    q.method = r.method.empty() ? "GET" : r.method;
    q.headers = r.headers;
    q.body = r.body;
    reg->stored.uploadTotal += r.body.size();
    reg->stored.requests.push_back(std::move(q));
  }
  if (auto r = store_.create(reg->stored); !r) return r.error();
  if (auto r = store_.makeBodyDir(reg->stored.ord); !r) core::log().error("background fetch: {}", r.error().describe());
  for (auto& q : reg->stored.requests) {
    Request req;
    req.stored = std::move(q);
    reg->requests.push_back(std::move(req));
  }
  reg->stored.requests.clear();
  settledIds_.erase(id);
  ++counters_.started;
  Registration& r = *reg;
  regs_.push_back(std::move(reg));
  core::log().info("background fetch: '{}' registered: {} request(s), downloadTotal {}", id, r.requests.size(),
                   r.stored.downloadTotal);
  BackgroundFetchState state = stateOf(r);
  for (auto& req : r.requests) startRequest(r, req);
  return state;
}

void Fetcher::startRequest(Registration& reg, Request& req) {
  const auto path = store_.bodyPath(reg.stored.ord, req.stored.idx);
  if (auto r = store_.makeBodyDir(reg.stored.ord); !r) {
    core::log().error("background fetch: '{}': {}", reg.stored.id, r.error().describe());
  }
  req.file = UniqueFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!req.file) {
    core::log().error("background fetch: '{}': cannot open {}: {}", reg.stored.id, path.string(), std::strerror(errno));
    requestFinished(reg, req, "fetch-error");
    return;
  }
  TransferSpec spec;
  spec.url = req.stored.url;
  spec.method = req.stored.method;
  spec.headers = req.stored.headers;
  spec.body = req.stored.body;
  req.resumeFrom = 0;
  if (req.bytes > 0) {
    if (isGet(req.stored.method) && !req.stored.validator.empty()) {
      spec.resumeFrom = req.resumeFrom = req.bytes;
      spec.ifRange = req.stored.validator;
    } else if (!restartBody(reg, req)) {
      return;
    }
  }
  req.sink = std::make_unique<Sink>(*this, reg, req);
  auto id = curl_->start(spec, req.sink.get());
  if (!id) {
    core::log().warn("background fetch: '{}': {} cannot start: {}", reg.stored.id, req.stored.url, id.error().describe());
    req.file.reset();
    requestFinished(reg, req, "fetch-error");
    return;
  }
  req.transfer = *id;
  req.running = true;
}

bool Fetcher::restartBody(Registration& reg, Request& req) {
  if (req.bytes == 0) return true;
  // Pages have seen `downloaded` include these bytes: it must not go down when they go.
  reg.floor = std::max(reg.floor, reg.downloaded());
  if (auto r = store_.raiseFloor(reg.stored.ord, reg.floor); !r) {
    core::log().error("background fetch: '{}': {}", reg.stored.id, r.error().describe());
  }
  if (::ftruncate(req.file.get(), 0) != 0) {
    core::log().error("background fetch: '{}': cannot truncate a body: {}", reg.stored.id, std::strerror(errno));
    requestFinished(reg, req, "fetch-error");
    return false;
  }
  reg.stored_ -= req.bytes;
  storedBytes_ -= req.bytes;
  req.bytes = 0;
  return true;
}

bool Fetcher::onResponse(Registration& reg, Request& req, int status, const HttpHeaders& headers) {
  if (req.resumeFrom > 0) {
    if (status == 206 && contentRangeStart(headers) == req.resumeFrom) {
      core::log().info("background fetch: '{}': {} resumed at byte {}", reg.stored.id, req.stored.url, req.resumeFrom);
      return true;  // the stored response (the first one's status and headers) stays the record's
    }
    // 200 (the resource changed, or the server ignores Range), or anything else: from 0.
    core::log().info("background fetch: '{}': {} answered {} to a resume at byte {}: restarting it from 0",
                     reg.stored.id, req.stored.url, status, req.resumeFrom);
    req.resumeFrom = 0;
    if (!restartBody(reg, req)) return false;
    if (status == 206 || status == 416) {
      // A range we did not ask for: fetch the whole body again, without Range.
      req.stored.validator.clear();
      req.running = false;
      loop_.post([this, id = reg.stored.id, idx = req.stored.idx, alive = std::weak_ptr<bool>(alive_)] {
        if (alive.expired()) return;
        Registration* r = find(id);
        if (r == nullptr || r->done() || idx >= r->requests.size() || r->requests[idx].finished) return;
        startRequest(*r, r->requests[idx]);
      });
      return false;
    }
  }
  req.stored.status = status;
  req.stored.responseHeaders = headers;
  req.stored.validator = validatorOf(headers);
  if (auto r = store_.setResponse(reg.stored.ord, req.stored.idx, status, headers, req.stored.validator); !r) {
    core::log().error("background fetch: '{}': {}", reg.stored.id, r.error().describe());
  }
  progressChanged(reg);
  return true;
}

bool Fetcher::onBody(Registration& reg, Request& req, std::span<const uint8_t> bytes) {
  if (reg.done()) return false;
  if (storedBytes_ + bytes.size() > settings_.quotaBytes) {
    core::log().warn("background fetch: '{}': the fetch quota of {} bytes would be passed", reg.stored.id, settings_.quotaBytes);
    failNow(reg, "quota-exceeded");
    return false;
  }
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::write(req.file.get(), bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      core::log().error("background fetch: '{}': cannot write a body: {}", reg.stored.id, std::strerror(errno));
      failNow(reg, errno == ENOSPC || errno == EDQUOT ? "quota-exceeded" : "fetch-error");
      return false;
    }
    off += static_cast<size_t>(n);
  }
  req.bytes += bytes.size();
  reg.stored_ += bytes.size();
  storedBytes_ += bytes.size();
  counters_.bytesDownloaded += bytes.size();
  if (reg.stored.downloadTotal > 0 && reg.stored_ > reg.stored.downloadTotal) {
    core::log().warn("background fetch: '{}': {} bytes stored, more than its downloadTotal {}", reg.stored.id,
                     reg.stored_, reg.stored.downloadTotal);
    failNow(reg, "download-total-exceeded");
    return false;
  }
  progressChanged(reg);
  return true;
}

void Fetcher::onDone(Registration& reg, Request& req, const TransferOutcome& outcome) {
  req.running = false;
  req.file.reset();
  if (reg.done()) return;
  if (outcome.ok) {
    if (auto r = store_.setComplete(reg.stored.ord, req.stored.idx); !r) {
      core::log().error("background fetch: '{}': {}", reg.stored.id, r.error().describe());
    }
    req.stored.complete = true;
    requestFinished(reg, req, "");
    return;
  }
  const size_t maxRetries = settings_.retryDelays.size();
  if (outcome.connectionFailure && isGet(req.stored.method) && static_cast<size_t>(req.retries) < maxRetries) {
    auto delay = settings_.retryDelays[static_cast<size_t>(req.retries)];
    ++req.retries;
    ++counters_.retries;
    core::log().info("background fetch: '{}': {}: {}; retry {} of {} in {} ms", reg.stored.id, req.stored.url,
                     outcome.error, req.retries, maxRetries, delay.count());
    req.retryTimer = loop_.addTimer(deadlineIn(delay), [this, &reg, &req] {
      req.retryTimer.reset();
      if (!reg.done()) startRequest(reg, req);
    });
    return;
  }
  core::log().warn("background fetch: '{}': {} failed: {}", reg.stored.id, req.stored.url, outcome.error);
  requestFinished(reg, req, "fetch-error");
}

void Fetcher::requestFinished(Registration& reg, Request& req, const std::string& failure) {
  req.finished = true;
  req.running = false;
  req.failure = failure;
  maybeFinish(reg);
}

void Fetcher::maybeFinish(Registration& reg) {
  if (reg.done()) return;
  for (const auto& req : reg.requests)
    if (!req.finished) return;
  // A network failure outranks a bad status; neither stops the other requests.
  std::string reason;
  for (const auto& req : reg.requests)
    if (!req.failure.empty()) reason = req.failure;
  if (reason.empty()) {
    for (const auto& req : reg.requests)
      if (!is2xx(req.stored.status)) reason = "bad-status";
  }
  commitResult(reg, reason.empty() ? "success" : "failure", reason);
}

void Fetcher::failNow(Registration& reg, const std::string& reason) {
  if (reg.done()) return;
  stopTransfers(reg);
  commitResult(reg, "failure", reason);
}

void Fetcher::stopTransfers(Registration& reg) {
  for (auto& req : reg.requests) {
    if (req.running) curl_->cancel(req.transfer);
    if (req.retryTimer) loop_.cancelTimer(*req.retryTimer);
    req.retryTimer.reset();
    req.running = false;
    req.file.reset();
  }
}

void Fetcher::commitResult(Registration& reg, const std::string& result, const std::string& reason) {
  reg.stored.result = result;
  reg.stored.failureReason = reason;
  if (auto r = store_.setResult(reg.stored.ord, result, reason); !r) {
    core::log().error("background fetch: '{}': cannot commit its result: {}", reg.stored.id, r.error().describe());
  }
  if (result == "success") {
    ++counters_.succeeded;
  } else if (reason == "aborted") {
    ++counters_.aborted;
  } else {
    ++counters_.failed;
  }
  core::log().info("background fetch: '{}' {}{}{} ({} bytes)", reg.stored.id, result, reason.empty() ? "" : ": ", reason,
                   reg.downloaded());
  if (reg.progressTimer) {
    loop_.cancelTimer(*reg.progressTimer);
    reg.progressTimer.reset();
  }
  // The final event goes at once, outside the rate limit; the completion event after it. Both
  // from the loop: this may run inside a transfer's callback or a page's call.
  const std::string id = reg.stored.id;
  loop_.post([this, id, alive = std::weak_ptr<bool>(alive_)] {
    if (alive.expired()) return;
    Registration* r = find(id);
    if (r == nullptr) return;
    if (hooks_.progress) hooks_.progress(stateOf(*r), /*final=*/true);
    if (hooks_.completed) hooks_.completed(id);
  });
}

void Fetcher::progressChanged(Registration& reg) {
  if (reg.done() || reg.progressTimer) return;
  const auto due = std::max(Clock::now(), reg.lastProgress + settings_.progressInterval);
  const std::string id = reg.stored.id;
  reg.progressTimer = loop_.addTimer(due, [this, id] {
    Registration* r = find(id);
    if (r == nullptr) return;
    r->progressTimer.reset();
    sendProgress(*r);
  });
}

void Fetcher::sendProgress(Registration& reg) {
  if (reg.done()) return;
  reg.lastProgress = Clock::now();
  if (hooks_.progress) hooks_.progress(stateOf(reg), /*final=*/false);
}

BackgroundFetchState Fetcher::stateOf(const Registration& reg) const {
  BackgroundFetchState s;
  s.id = reg.stored.id;
  s.uploadTotal = reg.stored.uploadTotal;
  for (const auto& req : reg.requests) s.uploaded += req.uploaded;
  s.uploaded = std::min(s.uploaded, s.uploadTotal);
  s.downloadTotal = reg.stored.downloadTotal;
  s.downloaded = reg.downloaded();
  s.result = reg.stored.result;
  s.failureReason = reg.stored.failureReason;
  s.recordsAvailable = true;
  return s;
}

Fetcher::Registration* Fetcher::find(const std::string& id) const {
  for (const auto& r : regs_)
    if (r->stored.id == id) return r.get();
  return nullptr;
}

std::optional<BackgroundFetchState> Fetcher::get(const std::string& id) const {
  Registration* r = find(id);
  if (r == nullptr) return std::nullopt;
  return stateOf(*r);
}

std::vector<std::string> Fetcher::activeIds() const {
  std::vector<std::string> out;
  for (const auto& r : regs_)
    if (!r->done()) out.push_back(r->stored.id);
  return out;
}

std::vector<BackgroundFetchState> Fetcher::all() const {
  std::vector<BackgroundFetchState> out;
  out.reserve(regs_.size());
  for (const auto& r : regs_) out.push_back(stateOf(*r));
  return out;
}

bool Fetcher::abort(const std::string& id) {
  Registration* r = find(id);
  if (r == nullptr || r->done()) return false;
  core::log().info("background fetch: '{}' aborted", id);
  failNow(*r, "aborted");
  return true;
}

Result<std::vector<RecordInfo>> Fetcher::records(const std::string& id, const std::optional<std::string>& url) const {
  Registration* r = find(id);
  if (r == nullptr) {
    if (settledIds_.count(id) != 0) {
      return makeError(Errc::INVALID_STATE, "the records of '" + id + "' are no longer available (its event settled)");
    }
    return makeError(Errc::NOT_FOUND, "no background fetch with id '" + id + "'");
  }
  std::vector<RecordInfo> out;
  for (const auto& req : r->requests) {
    if (url && req.stored.url != *url) continue;
    RecordInfo info;
    info.url = req.stored.url;
    info.complete = req.stored.complete;
    info.status = req.stored.status;
    info.headers = req.stored.responseHeaders;
    info.size = req.bytes;
    if (info.complete) info.bodyPath = store_.bodyPath(r->stored.ord, req.stored.idx);
    out.push_back(std::move(info));
  }
  return out;
}

void Fetcher::settled(const std::string& id) {
  auto it = std::find_if(regs_.begin(), regs_.end(), [&](const auto& r) { return r->stored.id == id; });
  if (it == regs_.end()) return;
  Registration& reg = **it;
  stopTransfers(reg);
  if (reg.progressTimer) loop_.cancelTimer(*reg.progressTimer);
  if (auto r = store_.erase(reg.stored.ord); !r) {
    core::log().error("background fetch: '{}': cannot delete it: {}", id, r.error().describe());
  }
  storedBytes_ -= std::min(storedBytes_, reg.stored_);
  regs_.erase(it);
  if (settledIds_.size() >= MAX_SETTLED_REMEMBERED) settledIds_.erase(settledIds_.begin());
  settledIds_.insert(id);
  core::log().info("background fetch: '{}' settled; its records are gone", id);
}

}  // namespace swipc::fetch
