#include "fetch_ops.h"

#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <utility>

#include "progress_bar.h"
#include "signal_watch.h"
#include "swipc/json.h"

namespace page_client {

namespace {

using json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;
using swipc::BackgroundFetchRecord;
using swipc::BackgroundFetchRegistration;
using swipc::BackgroundFetchRequest;
using swipc::BackgroundFetchState;

swipc::Error typeError(std::string message) { return swipc::makeError(swipc::Errc::TYPE, std::move(message)); }

swipc::Result<std::string> fetchIdOf(const json& op) {
  auto it = op.find("fetchId");
  if (it == op.end() || !it->is_string()) return typeError("op needs a string \"fetchId\"");
  return it->get<std::string>();
}

swipc::Result<std::vector<BackgroundFetchRequest>> requestsOf(const json& op) {
  auto it = op.find("requests");
  if (it == op.end() || !it->is_array()) return typeError("op needs an array \"requests\"");
  std::vector<BackgroundFetchRequest> out;
  for (const auto& r : *it) {
    auto req = requestFromJson(r);
    if (!req) return req.error();
    out.push_back(std::move(*req));
  }
  return out;
}

/// The op's optional "downloadTotal": 0 when absent or null.
swipc::Result<uint64_t> downloadTotalOf(const json& op) {
  auto it = op.find("downloadTotal");
  if (it == op.end() || it->is_null()) return uint64_t{0};
  if (!it->is_number_integer() || (it->is_number_integer() && !it->is_number_unsigned() && it->get<int64_t>() < 0))
    return typeError("\"downloadTotal\" must be a non-negative integer");
  return it->get<uint64_t>();
}

/// {"url","complete","status","size","sha256"} of one record: size and sha256 from the body the
/// page received (sha256 null for a record without one: not complete yet).
swipc::Result<OrderedJson> recordJson(const BackgroundFetchRecord& r) {
  OrderedJson j = OrderedJson::object();
  j["url"] = r.url;
  j["complete"] = r.complete;
  j["status"] = r.status;
  if (r.body) {
    auto sha = r.body->sha256();
    if (!sha) return sha.error();
    j["size"] = r.body->size();
    j["sha256"] = *sha;
  } else {
    j["size"] = r.size;
    j["sha256"] = nullptr;
  }
  return j;
}

}  // namespace

OrderedJson registrationJson(const BackgroundFetchState& s) { return OrderedJson(swipc::toJson(s.toValue())); }

swipc::Result<BackgroundFetchRequest> requestFromJson(const json& j) {
  if (j.is_string()) return BackgroundFetchRequest(j.get<std::string>());
  if (!j.is_object()) return typeError("a request is a URL string or an object {url, method, headers, body}");
  BackgroundFetchRequest req;
  auto url = j.find("url");
  if (url == j.end() || !url->is_string()) return typeError("a request object needs a string \"url\"");
  req.url = url->get<std::string>();
  if (auto m = j.find("method"); m != j.end() && !m->is_null()) {
    if (!m->is_string()) return typeError("a request's \"method\" must be a string");
    req.method = m->get<std::string>();
  }
  if (auto h = j.find("headers"); h != j.end() && !h->is_null()) {
    if (h->is_object()) {
      for (const auto& [name, value] : h->items()) {
        if (!value.is_string()) return typeError("header \"" + name + "\" must have a string value");
        req.headers.emplace_back(name, value.get<std::string>());
      }
    } else if (h->is_array()) {
      for (const auto& pair : *h) {
        if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string() || !pair[1].is_string())
          return typeError("a request's \"headers\" list holds [name, value] string pairs");
        req.headers.emplace_back(pair[0].get<std::string>(), pair[1].get<std::string>());
      }
    } else {
      return typeError("a request's \"headers\" is {name: value} or [[name, value], ...]");
    }
  }
  if (auto b = j.find("body"); b != j.end() && !b->is_null()) {
    auto v = swipc::fromJson(*b);
    if (!v) return v.error();
    if (v->isText())
      req.body.assign(v->asText().begin(), v->asText().end());
    else if (v->isBytes())
      req.body = v->asBytes().data;
    else
      return typeError("a request's \"body\" is text or {\"$bytes\": base64}");
  }
  return req;
}

// ------------------------------------------------------------------------------------------------ script ops

bool FetchOps::handle(const std::string& name, const json& op, const OpId& id) {
  if (name == "bgfetch.fetch") return opFetch(op, id), true;
  if (name == "bgfetch.get") return opGet(op, id), true;
  if (name == "bgfetch.getIds") return opGetIds(id), true;
  if (name == "bgfetch.abort") return opAbort(op, id), true;
  if (name == "bgfetch.match") return opMatch(op, id), true;
  return false;
}

std::function<void()> FetchOps::started() {
  ++pending_;
  return [this] { --pending_; };
}

void FetchOps::hold(const BackgroundFetchRegistration& reg) {
  held_.insert_or_assign(reg.id(), reg);
  // Handles on one registration share its state (and so its address): hook it once.
  if (!hookedStates_.insert(&reg.state()).second) return;
  hooked_.push_back(reg);
  BackgroundFetchRegistration copy = reg;
  copy.onProgress([this](const BackgroundFetchState& s) { out_.bgfetchProgress(s.id, registrationJson(s)); });
}

void FetchOps::opFetch(const json& op, const OpId& id) {
  auto fetchId = fetchIdOf(op);
  if (!fetchId) return out_.error(id, fetchId.error());
  auto requests = requestsOf(op);
  if (!requests) return out_.error(id, requests.error());
  auto total = downloadTotalOf(op);
  if (!total) return out_.error(id, total.error());
  swipc::BackgroundFetchOptions options;
  options.downloadTotal = *total;
  if (auto t = op.find("title"); t != op.end() && t->is_string()) options.title = t->get<std::string>();
  auto done = started();
  client_.backgroundFetch().fetch(*fetchId, std::move(*requests), std::move(options),
                                  [this, id, done](swipc::Result<BackgroundFetchRegistration> r) {
                                    done();
                                    if (!r) return out_.error(id, r.error());
                                    hold(*r);
                                    if (id) out_.ok(*id, {{"registration", registrationJson(r->state())}});
                                  });
}

void FetchOps::opGet(const json& op, const OpId& id) {
  auto fetchId = fetchIdOf(op);
  if (!fetchId) return out_.error(id, fetchId.error());
  auto done = started();
  client_.backgroundFetch().get(
      *fetchId, [this, id, done](swipc::Result<std::optional<BackgroundFetchRegistration>> r) {
        done();
        if (!r) return out_.error(id, r.error());
        if (!*r) {
          if (id) out_.ok(*id, {{"registration", nullptr}});
          return;
        }
        hold(**r);
        if (id) out_.ok(*id, {{"registration", registrationJson((*r)->state())}});
      });
}

void FetchOps::opGetIds(const OpId& id) {
  auto done = started();
  client_.backgroundFetch().getIds([this, id, done](swipc::Result<std::vector<std::string>> r) {
    done();
    if (!r) return out_.error(id, r.error());
    OrderedJson ids = OrderedJson::array();
    for (const auto& i : *r) ids.push_back(i);
    if (id) out_.ok(*id, {{"ids", std::move(ids)}});
  });
}

void FetchOps::withRegistration(const std::string& fetchId, WithRegistration fn) {
  if (auto it = held_.find(fetchId); it != held_.end())
    return fn(std::optional<BackgroundFetchRegistration>(it->second));
  client_.backgroundFetch().get(fetchId,
                                [this, fn = std::move(fn)](swipc::Result<std::optional<BackgroundFetchRegistration>> r) {
                                  if (r && *r) hold(**r);
                                  fn(std::move(r));
                                });
}

void FetchOps::opAbort(const json& op, const OpId& id) {
  auto fetchId = fetchIdOf(op);
  if (!fetchId) return out_.error(id, fetchId.error());
  auto done = started();
  withRegistration(*fetchId, [this, id, done](swipc::Result<std::optional<BackgroundFetchRegistration>> reg) {
    if (!reg) {
      done();
      return out_.error(id, reg.error());
    }
    if (!*reg) {  // nothing active by that id: nothing to abort
      done();
      if (id) out_.ok(*id, {{"aborted", false}});
      return;
    }
    (*reg)->abort([this, id, done](swipc::Result<bool> r) {
      done();
      if (!r) return out_.error(id, r.error());
      if (id) out_.ok(*id, {{"aborted", *r}});
    });
  });
}

void FetchOps::opMatch(const json& op, const OpId& id) {
  auto fetchId = fetchIdOf(op);
  if (!fetchId) return out_.error(id, fetchId.error());
  std::optional<std::string> url;
  if (auto u = op.find("url"); u != op.end() && !u->is_null()) {
    if (!u->is_string()) return out_.error(id, typeError("\"url\" must be a string"));
    url = u->get<std::string>();
  }
  auto done = started();
  auto answer = [this, id, done](swipc::Result<std::vector<BackgroundFetchRecord>> r) {
    done();
    if (!r) return out_.error(id, r.error());
    OrderedJson records = OrderedJson::array();
    for (const auto& rec : *r) {
      auto j = recordJson(rec);
      if (!j) return out_.error(id, j.error());
      records.push_back(std::move(*j));
    }
    if (id) out_.ok(*id, {{"records", std::move(records)}});
  };
  withRegistration(*fetchId, [this, id, done, url, fetchId = *fetchId, answer = std::move(answer)](
                                 swipc::Result<std::optional<BackgroundFetchRegistration>> reg) mutable {
    if (!reg) {
      done();
      return out_.error(id, reg.error());
    }
    if (!*reg) {
      done();
      return out_.error(id, swipc::makeError(swipc::Errc::NOT_FOUND, "no background fetch '" + fetchId + "'"));
    }
    if (url)
      (*reg)->match(*url, std::move(answer));
    else
      (*reg)->matchAll(std::move(answer));
  });
}

// ------------------------------------------------------------------------------------------------ subcommand

int runFetch(const GlobalOptions& opts, const std::string& id, const std::vector<std::string>& urls,
             uint64_t downloadTotal, bool detach) {
  SignalWatch signals;  // before connect: library threads must inherit the blocked mask
  auto client = connectClient(opts);
  if (!client) {
    reportError(client.error());
    return connectExitCode(client.error());
  }
  std::vector<BackgroundFetchRequest> requests(urls.begin(), urls.end());
  swipc::BackgroundFetchOptions options;
  options.downloadTotal = downloadTotal;
  auto deadline = swipc::deadlineIn(opts.timeoutOr(std::chrono::milliseconds(5000)));
  auto reg = client->backgroundFetch().fetch(id, std::move(requests), options, deadline);
  if (!reg) {
    reportError(reg.error());
    return EXIT_ERROR;
  }
  auto printState = [](const BackgroundFetchState& s) {
    std::string line = registrationJson(s).dump() + '\n';
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
  };
  if (detach) {
    printState(reg->state());
    return EXIT_OK;
  }

  ProgressBar bar(stderr, ProgressBar::wanted(STDERR_FILENO));
  std::optional<BackgroundFetchState> final;
  if (!reg->state().result.empty()) final = reg->state();  // complete already: no event comes
  reg->onProgress([&](const BackgroundFetchState& s) {
    if (!s.result.empty()) final = s;
    bar.update(s.downloaded, s.downloadTotal, ProgressBar::Clock::now());
  });
  bar.update(reg->state().downloaded, reg->state().downloadTotal, ProgressBar::Clock::now());
  client->dispatch();
  while (!final) {
    pollfd fds[] = {{client->fd(), POLLIN, 0}, {signals.fd(), POLLIN, 0}};
    // A tick twice a second keeps the rate honest while nothing arrives.
    if (::poll(fds, 2, 500) < 0) continue;  // EINTR
    if (fds[1].revents && signals.take() != 0) {
      bar.finish(reg->state().downloaded, reg->state().downloadTotal, ProgressBar::Clock::now());
      reportError("interrupted: the fetch goes on in the service worker (page_client fetch only follows it)");
      return EXIT_ERROR;
    }
    if (fds[0].revents) client->dispatch();
    bar.tick(ProgressBar::Clock::now());
  }
  bar.finish(final->downloaded, final->downloadTotal, ProgressBar::Clock::now());
  printState(*final);
  return final->result == "success" ? EXIT_OK : EXIT_ERROR;
}

}  // namespace page_client
