#include "fetch/page_fetch.h"

#include <utility>

#include "core/connection.h"
#include "envelope.capnp.h"

namespace swipc::fetch {

namespace {

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

Error disconnected() {
  return makeError(Errc::DISCONNECTED, "the daemon went away before it answered (it may or may not have committed)");
}

Error unexpected(const char* call) {
  return makeError(Errc::PROTOCOL_VIOLATION, std::string("the daemon answered ") + call + " with the wrong kind");
}

}  // namespace

BackgroundFetchState stateOf(schema::FetchRegistration::Reader r) {
  BackgroundFetchState s;
  s.id = text(r.getId());
  s.uploadTotal = r.getUploadTotal();
  s.uploaded = r.getUploaded();
  s.downloadTotal = r.getDownloadTotal();
  s.downloaded = r.getDownloaded();
  s.result = text(r.getResult());
  s.failureReason = text(r.getFailureReason());
  s.recordsAvailable = r.getRecordsAvailable();
  return s;
}

Error reported(schema::FetchError::Reader e) {
  Errc code = Errc::PROTOCOL_VIOLATION;
  std::string message = text(e.getMessage());
  if (!errorFromName(e.getName().cStr(), code)) message = text(e.getName()) + ": " + message;
  return makeError(code, std::move(message));
}

PageFetch::PageFetch(page::PageContext& ctx) : ctx_(ctx), self_(std::make_shared<PageFetch*>(this)) {
  ctx_.ops.on(schema::Envelope::FETCH_RESULT,
              [this](schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>&) {
                onResult(env.getFetchResult());
              });
  ctx_.ops.on(schema::Envelope::FETCH_PROGRESS,
              [this](schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>&) {
                onProgress(env.getFetchProgress().getRegistration());
              });
}

PageFetch::~PageFetch() { *self_ = nullptr; }

// ------------------------------------------------------------------------------------------------ calls

void PageFetch::call(const std::function<void(schema::FetchCall::Builder)>& fill, Answer answer) {
  const uint64_t id = nextCall_++;
  auto sent = ctx_.sender.sendEnvelope(
      [&](schema::Envelope::Builder e) {
        auto c = e.initFetchCall();
        c.setCallId(id);
        fill(c);
      },
      PostOptions{}, /*track=*/false);
  if (!sent) {
    Error err = sent.error();
    ctx_.queue.deliver([answer = std::move(answer), err] { answer(err); });
    return;
  }
  pending_.emplace(id, std::move(answer));
}

void PageFetch::fetch(const std::string& id, const std::vector<BackgroundFetchRequest>& requests,
                      const BackgroundFetchOptions& options, RegistrationDone done) {
  call(
      [&](schema::FetchCall::Builder c) {
        auto f = c.initFetch();
        f.setId(id);
        f.setDownloadTotal(options.downloadTotal);
        f.setTitle(options.title);
        auto list = f.initRequests(static_cast<unsigned>(requests.size()));
        for (unsigned i = 0; i < requests.size(); ++i) {
          const auto& from = requests[i];
          auto to = list[i];
          to.setUrl(from.url);
          to.setMethod(from.method);
          auto headers = to.initHeaders(static_cast<unsigned>(from.headers.size()));
          for (unsigned h = 0; h < from.headers.size(); ++h) {
            headers[h].setName(from.headers[h].first);
            headers[h].setValue(from.headers[h].second);
          }
          if (!from.body.empty()) to.setBody(kj::arrayPtr(from.body.data(), from.body.size()));
        }
      },
      registrationAnswer(std::move(done)));
}

void PageFetch::get(const std::string& id, RegistrationDone done) {
  call([&](schema::FetchCall::Builder c) { c.setGet(id); }, registrationAnswer(std::move(done)));
}

void PageFetch::getIds(IdsDone done) {
  call([](schema::FetchCall::Builder c) { c.setGetIds(); },
       [this, done = std::move(done)](Result<schema::FetchResult::Reader> r) {
         Result<std::vector<std::string>> out = std::vector<std::string>{};
         if (!r) {
           out = r.error();
         } else if (r->isError()) {
           out = reported(r->getError());
         } else if (!r->isIds()) {
           out = unexpected("getIds");
         } else {
           for (auto t : r->getIds()) out->push_back(text(t));
         }
         ctx_.queue.deliver([done, out = std::move(out)]() mutable { done(std::move(out)); });
       });
}

void PageFetch::abort(const std::string& id, BoolDone done) {
  call([&](schema::FetchCall::Builder c) { c.setAbort(id); },
       [this, done = std::move(done)](Result<schema::FetchResult::Reader> r) {
         Result<bool> out = false;
         if (!r) {
           out = r.error();
         } else if (r->isError()) {
           out = reported(r->getError());
         } else if (!r->isAborted()) {
           out = unexpected("abort");
         } else {
           out = r->getAborted();
         }
         ctx_.queue.deliver([done, out = std::move(out)]() mutable { done(std::move(out)); });
       });
}

void PageFetch::match(const std::string& id, const std::optional<std::string>& url, RecordsDone done) {
  call(
      [&](schema::FetchCall::Builder c) {
        auto m = c.initMatch();
        m.setId(id);
        m.setHasUrl(url.has_value());
        if (url) m.setUrl(*url);
      },
      [this, done = std::move(done)](Result<schema::FetchResult::Reader> r) {
        Result<std::vector<BackgroundFetchRecord>> out = std::vector<BackgroundFetchRecord>{};
        if (!r) {
          out = r.error();
        } else if (r->isError()) {
          out = reported(r->getError());
        } else if (!r->isRecords()) {
          out = unexpected("match");
        } else {
          out = takeRecords(r->getRecords());
        }
        ctx_.queue.deliver([done, out = std::move(out)]() mutable { done(std::move(out)); });
      });
}

bool PageFetch::runUntil(const std::function<bool()>& done, Deadline deadline) {
  while (!done()) {
    if (Clock::now() >= deadline) return done();
    ctx_.dispatchOnce(deadline);
  }
  return true;
}

PageFetch::SharedPtr PageFetch::followed(const std::string& id) const {
  auto it = followed_.find(id);
  return it == followed_.end() ? nullptr : it->second;
}

// ------------------------------------------------------------------------------------------------ answers

void PageFetch::onResult(schema::FetchResult::Reader result) {
  auto it = pending_.find(result.getCallId());
  if (it == pending_.end()) {
    // Not ours (any more): the bodies it passed are still ours to close.
    if (result.isRecords()) (void)takeRecords(result.getRecords());
    return;
  }
  Answer answer = std::move(it->second);
  pending_.erase(it);
  answer(result);  // reads what it needs now: the reader lives only during this call
}

PageFetch::Answer PageFetch::registrationAnswer(RegistrationDone done) {
  return [this, done = std::move(done)](Result<schema::FetchResult::Reader> r) {
    Result<SharedPtr> out = SharedPtr();
    if (!r) {
      out = r.error();
    } else if (r->isError()) {
      out = reported(r->getError());
    } else if (r->isRegistration()) {
      out = adopt(r->getRegistration());
    } else if (!r->isNone()) {
      out = unexpected("fetch or get");
    }
    ctx_.queue.deliver([done, out = std::move(out)]() mutable { done(std::move(out)); });
  };
}

PageFetch::SharedPtr PageFetch::adopt(schema::FetchRegistration::Reader registration) {
  BackgroundFetchState state = stateOf(registration);
  if (auto it = followed_.find(state.id); it != followed_.end()) {
    SharedPtr shared = it->second;
    update(shared, std::move(state), /*notify=*/false);
    return shared;
  }
  auto shared = std::make_shared<Shared>();
  shared->owner = self_;
  shared->state = std::move(state);
  if (shared->state.result.empty())
    followed_.emplace(shared->state.id, shared);
  else
    shared->final = true;  // complete already: no event is coming for this page
  return shared;
}

void PageFetch::update(const SharedPtr& shared, BackgroundFetchState state, bool notify) {
  if (shared->final) return;
  shared->state = std::move(state);
  if (!shared->state.result.empty()) {
    shared->final = true;
    followed_.erase(shared->state.id);
    notify = true;
  }
  if (!notify) return;
  // Each callback sees the state of this event, even when later ones changed it since.
  ctx_.queue.deliver([shared, event = shared->state] {
    if (!event.result.empty() && !shared->onProgress.empty()) shared->finalHandled = true;
    for (size_t i = 0; i < shared->onProgress.size(); ++i) {  // one may add another
      auto fn = shared->onProgress[i];
      fn(event);
    }
  });
}

void PageFetch::onProgress(schema::FetchRegistration::Reader registration) {
  auto it = followed_.find(text(registration.getId()));
  if (it == followed_.end()) return;  // not followed, or after its final event
  SharedPtr shared = it->second;
  update(shared, stateOf(registration), /*notify=*/true);
}

Result<std::vector<BackgroundFetchRecord>> PageFetch::takeRecords(capnp::List<schema::FetchRecord>::Reader records) {
  std::vector<BackgroundFetchRecord> out;
  out.reserve(records.size());
  bool missing = false;
  core::Connection* conn = ctx_.link.conn();
  for (auto r : records) {
    BackgroundFetchRecord rec;
    rec.url = text(r.getUrl());
    rec.complete = r.getComplete();
    rec.status = r.getStatus();
    for (auto h : r.getHeaders()) rec.headers.emplace_back(text(h.getName()), text(h.getValue()));
    rec.size = r.getSize();
    if (const uint64_t token = r.getBodyToken(); token != 0) {
      UniqueFd fd = conn ? conn->takeFileFd(token) : UniqueFd();
      if (fd)
        rec.body = std::make_shared<const BodyFile>(fd.release());
      else
        missing = true;  // the other fds are still taken (and closed with `out`)
    }
    out.push_back(std::move(rec));
  }
  if (missing) return makeError(Errc::PROTOCOL_VIOLATION, "the daemon named a body file it never passed");
  return out;
}

// ------------------------------------------------------------------------------------------------ lifecycle

void PageFetch::reattached() {
  // A new daemon: it resumes unfinished fetches from its database but knows nothing of this
  // page. Ask again for each one followed: that records the page as a follower, and the answer
  // catches up on what happened meanwhile (the final event included).
  std::vector<std::string> ids;
  for (const auto& [id, shared] : followed_) ids.push_back(id);
  for (const auto& id : ids) {
    call([&](schema::FetchCall::Builder c) { c.setGet(id); },
         [this, id](Result<schema::FetchResult::Reader> r) {
           if (!r || r->isError()) return;  // gone again (asked again at the next attach), or refused
           if (r->isNone()) {
             followed_.erase(id);  // unknown to the new daemon, or settled: no event will come
             return;
           }
           if (!r->isRegistration()) return;
           auto it = followed_.find(id);
           if (it == followed_.end()) return;
           SharedPtr shared = it->second;
           BackgroundFetchState state = stateOf(r->getRegistration());
           if (state.id != id) return;
           const bool changed = state.downloaded != shared->state.downloaded ||
                                state.uploaded != shared->state.uploaded || !state.result.empty();
           update(shared, std::move(state), /*notify=*/changed);
         });
  }
}

void PageFetch::detaching() {
  // The daemon went before answering: each waiting call learns it (through the queue: not
  // inside whatever noticed the loss).
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, answer] : pending) {
    Answer a = std::move(answer);
    a(disconnected());
  }
}

void PageFetch::closing() {
  pending_.clear();
  followed_.clear();
  *self_ = nullptr;
}

}  // namespace swipc::fetch
