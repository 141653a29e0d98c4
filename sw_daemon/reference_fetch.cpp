#include "reference_fetch.h"

#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <vector>

#include "swipc/broadcast_channel.h"

namespace swipc::daemon {

namespace {

// A chunk per loop turn: hashing it costs well under a millisecond, so other pages wait no longer.
constexpr size_t CHUNK_BYTES = 256 << 10;

/// One completion event being read: its records, the one being hashed, what is known so far.
struct Reading {
  BackgroundFetchEventPtr event;
  std::vector<BackgroundFetchRecord> records;
  size_t next = 0;              // the record being read
  uint64_t offset = 0;          // in its body
  uint64_t size = 0;
  EVP_MD_CTX* md = nullptr;
  Value::List reported;
  ~Reading() {
    if (md != nullptr) EVP_MD_CTX_free(md);
  }
};

std::string hex(const unsigned char* bytes, unsigned n) {
  static const char* digits = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (unsigned i = 0; i < n; ++i) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 15];
  }
  return out;
}

std::string eventName(const std::string& type) {
  if (type == "backgroundfetchsuccess") return "success";
  if (type == "backgroundfetchabort") return "abort";
  return "fail";
}

}  // namespace

struct ReferenceFetch::State : std::enable_shared_from_this<ReferenceFetch::State> {
  explicit State(ServiceWorker& s) : sw(s), log(s, "bgfetch-log") {}
  ServiceWorker& sw;
  BroadcastChannel log;
  std::vector<char> buffer = std::vector<char>(CHUNK_BYTES);

  void begin(BackgroundFetchEventPtr event) {
    auto r = std::make_shared<Reading>();
    r->event = std::move(event);
    auto records = r->event->matchAll();
    if (records) {
      r->records = std::move(*records);
    } else {
      spdlog::warn("bgfetch {}: records unavailable: {}", r->event->registration().id, records.error().describe());
    }
    step(std::move(r));
  }

  /// Reads at most one chunk, then comes back from the loop for the next (or reports).
  void step(std::shared_ptr<Reading> r) {
    while (r->next < r->records.size()) {
      const BackgroundFetchRecord& rec = r->records[r->next];
      if (!rec.body) {
        r->reported.push_back(record(rec, rec.size, Value()));
        ++r->next;
        continue;
      }
      if (r->md == nullptr) {
        r->md = EVP_MD_CTX_new();
        EVP_DigestInit_ex(r->md, EVP_sha256(), nullptr);
        r->offset = 0;
        r->size = 0;
      }
      ssize_t n = ::pread(rec.body->fd(), buffer.data(), buffer.size(), static_cast<off_t>(r->offset));
      if (n < 0 && errno == EINTR) continue;
      if (n > 0) {
        EVP_DigestUpdate(r->md, buffer.data(), static_cast<size_t>(n));
        r->offset += static_cast<uint64_t>(n);
        r->size += static_cast<uint64_t>(n);
        std::weak_ptr<State> weak = shared_from_this();
        sw.post([weak, r] {
          if (auto s = weak.lock()) s->step(r);
        });
        return;
      }
      unsigned char digest[EVP_MAX_MD_SIZE];
      unsigned len = 0;
      EVP_DigestFinal_ex(r->md, digest, &len);
      EVP_MD_CTX_free(r->md);
      r->md = nullptr;
      if (n < 0) spdlog::warn("bgfetch {}: reading {} failed", r->event->registration().id, rec.url);
      r->reported.push_back(record(rec, r->size, n < 0 ? Value() : Value(hex(digest, len))));
      ++r->next;
    }
    report(*r);
    r->event->settle();
  }

  static Value record(const BackgroundFetchRecord& rec, uint64_t size, Value sha) {
    return Value::map({{"url", rec.url},
                       {"status", static_cast<int64_t>(rec.status)},
                       {"size", static_cast<int64_t>(size)},
                       {"sha256", std::move(sha)}});
  }

  void report(Reading& r) {
    const BackgroundFetchState& s = r.event->registration();
    Value v = Value::map({{"type", "BGFETCH"},
                          {"id", s.id},
                          {"event", eventName(r.event->type())},
                          {"result", s.result},
                          {"failureReason", s.failureReason},
                          {"downloaded", static_cast<int64_t>(s.downloaded)},
                          {"records", Value(std::move(r.reported))}});
    if (auto p = log.postMessage(v); !p) spdlog::warn("bgfetch-log post failed: {}", p.error().describe());
    MatchAllOptions all;
    all.type = ClientType::WINDOW;
    all.includeUncontrolled = true;
    for (auto& c : sw.matchAll(all)) {
      if (auto p = c.postMessage(v); !p) spdlog::debug("BGFETCH to {} not posted: {}", c.id().toString(), p.error().describe());
    }
  }
};

ReferenceFetch::ReferenceFetch(ServiceWorker& sw) : state_(std::make_shared<State>(sw)) {
  std::weak_ptr<State> weak = state_;
  auto handler = [weak](BackgroundFetchEventPtr e) {
    if (auto s = weak.lock()) s->begin(std::move(e));
  };
  sw.onBackgroundFetchSuccess(handler);
  sw.onBackgroundFetchFail(handler);
  sw.onBackgroundFetchAbort(handler);
}

ReferenceFetch::~ReferenceFetch() = default;

}  // namespace swipc::daemon
