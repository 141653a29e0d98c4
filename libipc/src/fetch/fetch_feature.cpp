#include "fetch/fetch_feature.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "common/unique_fd.h"
#include "core/log.h"
#include "core/socket.h"
#include "core/user_code.h"

namespace swipc::fetch {

namespace {

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

void fill(schema::FetchRegistration::Builder out, const BackgroundFetchState& s) {
  out.setId(s.id);
  out.setUploadTotal(s.uploadTotal);
  out.setUploaded(s.uploaded);
  out.setDownloadTotal(s.downloadTotal);
  out.setDownloaded(s.downloaded);
  out.setResult(s.result);
  out.setFailureReason(s.failureReason);
  out.setRecordsAvailable(s.recordsAvailable);
}

void fillHeaders(capnp::List<schema::HttpHeader>::Builder out, const HttpHeaders& headers) {
  for (unsigned i = 0; i < out.size(); ++i) {
    out[i].setName(headers[i].first);
    out[i].setValue(headers[i].second);
  }
}

std::vector<BackgroundFetchRequest> readRequests(capnp::List<schema::FetchRequest>::Reader list) {
  std::vector<BackgroundFetchRequest> out;
  out.reserve(list.size());
  for (auto r : list) {
    BackgroundFetchRequest q;
    q.url = text(r.getUrl());
    q.method = text(r.getMethod());
    for (auto h : r.getHeaders()) q.headers.emplace_back(text(h.getName()), text(h.getValue()));
    auto body = r.getBody();
    q.body.assign(body.begin(), body.end());
    out.push_back(std::move(q));
  }
  return out;
}

/// swipc::BackgroundFetchEvent: what service-worker code holds. It settles at settle() or when
/// the last copy goes; the feature may be gone by then (stopped): then nothing happens.
class Event final : public BackgroundFetchEvent {
 public:
  Event(std::weak_ptr<FetchFeature*> feature, std::string type, BackgroundFetchState state)
      : feature_(std::move(feature)), type_(std::move(type)), state_(std::move(state)) {}
  ~Event() override { settle(); }
  const std::string& type() const override { return type_; }
  const BackgroundFetchState& registration() const override { return state_; }
  Result<std::vector<BackgroundFetchRecord>> matchAll() const override { return records(std::nullopt); }
  Result<std::vector<BackgroundFetchRecord>> match(const std::string& url) const override { return records(url); }
  void settle() override {
    if (settled_) return;
    settled_ = true;
    if (auto f = feature_.lock()) (*f)->eventSettled(state_.id);
  }
  bool settled() const override { return settled_; }

 private:
  Result<std::vector<BackgroundFetchRecord>> records(const std::optional<std::string>& url) const {
    if (settled_) return makeError(Errc::INVALID_STATE, "the event settled: its records are gone");
    auto f = feature_.lock();
    if (!f) return makeError(Errc::INVALID_STATE, "the service worker stopped");
    return (*f)->openRecords(state_.id, url);
  }

  std::weak_ptr<FetchFeature*> feature_;
  std::string type_;
  BackgroundFetchState state_;
  bool settled_ = false;
};

}  // namespace

FetchFeature::~FetchFeature() { stop(); }

Result<void> FetchFeature::start(daemon::FeatureHost& host) {
  auto dir = host.stateDir();
  if (!dir) return dir.error();
  auto store = FetchStore::open(*dir);
  if (!store) return store.error();
  store_ = std::move(*store);
  host_ = &host;
  Fetcher::Hooks hooks;
  hooks.progress = [this](const BackgroundFetchState& s, bool final) { progress(s, final); };
  hooks.completed = [this](const std::string& id) { completed(id); };
  auto fetcher = Fetcher::create(host.loop(), *store_, settings_, std::move(hooks));
  if (!fetcher) {
    store_.reset();
    host_ = nullptr;
    return fetcher.error();
  }
  fetcher_ = std::move(*fetcher);
  host.handle(schema::Envelope::FETCH_CALL,
              [this](daemon::ClientRecord& c, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>&) {
                return onCall(c, env);
              });
  host.onDetach([this](daemon::ClientRecord& c) {
    for (auto& [id, pages] : followers_) pages.erase(c.id);
  });
  core::log().info("background fetch: bodies under {}/fetch, {} connection(s) at most, quota {} bytes", *dir,
                   settings_.maxConnections, settings_.quotaBytes);
  return {};
}

void FetchFeature::stop() {
  if (fetcher_) stopped_ = fetcher_->counters();
  fetcher_.reset();
  store_.reset();
  followers_.clear();
  eventsOut_.clear();
  // Events still held by service-worker code become inert; a new start() makes a new token.
  self_ = std::make_shared<FetchFeature*>(this);
  host_ = nullptr;
}

std::vector<BackgroundFetchState> FetchFeature::registrations() const {
  return fetcher_ ? fetcher_->all() : std::vector<BackgroundFetchState>{};
}

FetchCounters FetchFeature::counters() const { return fetcher_ ? fetcher_->counters() : stopped_; }

void FetchFeature::progress(const BackgroundFetchState& state, bool final) {
  auto it = followers_.find(state.id);
  if (it == followers_.end()) return;
  for (const ClientId& id : it->second) {
    daemon::ClientRecord* c = host_->clients().findAlive(id);
    if (c == nullptr) continue;
    host_->outbound().sendSimple(*c, [&](schema::Envelope::Builder e) {
      fill(e.initFetchProgress().initRegistration(), state);
    });
  }
  // Exactly one final event: nobody follows the id after it.
  if (final) followers_.erase(it);
}

void FetchFeature::completed(const std::string& id) {
  auto state = fetcher_->get(id);
  if (!state || eventsOut_.count(id) != 0) return;
  std::string type = "backgroundfetchsuccess";
  const Handler* handler = &onSuccess_;
  if (state->result != "success") {
    const bool aborted = state->failureReason == "aborted";
    type = aborted ? "backgroundfetchabort" : "backgroundfetchfail";
    handler = aborted ? &onAbort_ : &onFail_;
  }
  eventsOut_.insert(id);
  auto event = std::make_shared<Event>(self_, type, *state);
  if (*handler) {
    core::callUser(type.c_str(), [&] { (*handler)(event); });
  }
  // No handler, or it kept no copy: the event settles with this last reference.
}

void FetchFeature::eventSettled(const std::string& id) {
  if (eventsOut_.erase(id) == 0 || !fetcher_) return;
  // Not inside service-worker code's call: the records it still reads go at the next turn.
  host_->loop().post([weak = std::weak_ptr<FetchFeature*>(self_), id] {
    if (auto f = weak.lock(); f && (*f)->fetcher_) (*f)->fetcher_->settled(id);
  });
}

Result<std::vector<BackgroundFetchRecord>> FetchFeature::openRecords(const std::string& id,
                                                                     const std::optional<std::string>& url) const {
  if (!fetcher_) return makeError(Errc::INVALID_STATE, "Background Fetch is not running");
  auto infos = fetcher_->records(id, url);
  if (!infos) return infos.error();
  std::vector<BackgroundFetchRecord> out;
  for (auto& info : *infos) {
    BackgroundFetchRecord r;
    r.url = std::move(info.url);
    r.complete = info.complete;
    r.status = info.status;
    r.headers = std::move(info.headers);
    r.size = info.size;
    if (info.complete) {
      int fd = ::open(info.bodyPath.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return makeError(Errc::SYSTEM, "cannot open a body: " + std::string(std::strerror(errno)));
      r.body = std::make_shared<BodyFile>(fd);
    }
    out.push_back(std::move(r));
  }
  return out;
}

uint64_t FetchFeature::passBody(daemon::ClientRecord& c, const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    core::log().error("background fetch: cannot open {}: {}", path.string(), std::strerror(errno));
    return 0;
  }
  const uint64_t token = nextToken_++;
  capnp::MallocMessageBuilder mb(32);
  mb.initRoot<schema::Control>().initFileFd().setToken(token);
  auto words = capnp::messageToFlatArray(mb);
  auto s = core::sendDatagram(c.conn->socketFd(), words.begin(), words.size() * sizeof(capnp::word), {fd.get()});
  return s == core::IoStatus::OK ? token : 0;
}

bool FetchFeature::onCall(daemon::ClientRecord& c, schema::Envelope::Reader env) {
  auto call = env.getFetchCall();
  const uint64_t callId = call.getCallId();
  // What the answer carries; exactly one is set (or `error`).
  std::optional<Error> error;
  std::optional<BackgroundFetchState> registration;
  bool none = false;
  std::optional<std::vector<std::string>> ids;
  std::optional<bool> aborted;
  std::vector<std::pair<RecordInfo, uint64_t>> records;
  bool isRecords = false;

  switch (call.which()) {
    case schema::FetchCall::FETCH: {
      auto f = call.getFetch();
      BackgroundFetchOptions options;
      options.downloadTotal = f.getDownloadTotal();
      options.title = text(f.getTitle());
      const std::string id = text(f.getId());
      // Its progress comes from the loop's next turns at the earliest: following it now misses none.
      auto r = fetcher_->fetch(id, readRequests(f.getRequests()), options);
      if (!r) {
        error = r.error();
      } else {
        registration = *r;
        if (r->result.empty()) followers_[id].insert(c.id);
      }
      break;
    }
    case schema::FetchCall::GET: {
      const std::string id = text(call.getGet());
      registration = fetcher_->get(id);
      if (!registration) {
        none = true;
      } else if (registration->result.empty()) {
        followers_[id].insert(c.id);
      }
      break;
    }
    case schema::FetchCall::GET_IDS: ids = fetcher_->activeIds(); break;
    case schema::FetchCall::ABORT: aborted = fetcher_->abort(text(call.getAbort())); break;
    case schema::FetchCall::MATCH: {
      auto m = call.getMatch();
      std::optional<std::string> url;
      if (m.getHasUrl()) url = text(m.getUrl());
      auto infos = fetcher_->records(text(m.getId()), url);
      if (!infos) {
        error = infos.error();
        break;
      }
      isRecords = true;
      for (auto& info : *infos) {
        uint64_t token = 0;
        if (info.complete) {
          token = passBody(c, info.bodyPath);
          if (token == 0) {
            error = makeError(Errc::QUEUE_FULL, "could not pass a body to the page (its socket is full)");
            break;
          }
        }
        records.emplace_back(std::move(info), token);
      }
      break;
    }
    default: error = makeError(Errc::TYPE, "unknown Background Fetch call"); break;
  }

  host_->outbound().sendSimple(c, [&](schema::Envelope::Builder e) {
    auto result = e.initFetchResult();
    result.setCallId(callId);
    if (error) {
      auto err = result.initError();
      err.setName(std::string(errorName(error->code)));
      err.setMessage(error->message);
    } else if (registration) {
      fill(result.initRegistration(), *registration);
    } else if (none) {
      result.setNone();
    } else if (ids) {
      auto list = result.initIds(static_cast<unsigned>(ids->size()));
      for (unsigned i = 0; i < list.size(); ++i) list.set(i, (*ids)[i]);
    } else if (aborted) {
      result.setAborted(*aborted);
    } else if (isRecords) {
      auto list = result.initRecords(static_cast<unsigned>(records.size()));
      for (unsigned i = 0; i < list.size(); ++i) {
        const auto& [info, token] = records[i];
        auto r = list[i];
        r.setUrl(info.url);
        r.setComplete(info.complete);
        r.setStatus(static_cast<uint16_t>(std::clamp(info.status, 0, 65535)));
        fillHeaders(r.initHeaders(static_cast<unsigned>(info.headers.size())), info.headers);
        r.setSize(info.size);
        r.setBodyToken(token);
      }
    }
  });
  return true;
}

}  // namespace swipc::fetch
