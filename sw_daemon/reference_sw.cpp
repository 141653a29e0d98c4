#include "reference_sw.h"

#include <spdlog/spdlog.h>

#include "swipc/broadcast_channel.h"

namespace swipc::daemon {

namespace {

/// Where a reply goes: the message's port if it carried one (messageSW), else event.source.
/// Copyable, so asynchronous handlers (OPEN_WINDOW) can answer later.
class Responder {
 public:
  explicit Responder(const ExtendableMessageEvent& e) : source_(e.source) {
    if (!e.ports.empty()) port_ = e.ports[0];
  }
  void operator()(const Value& data) {
    if (port_) {
      if (auto r = port_->postMessage(data); !r) spdlog::warn("reply on port failed: {}", r.error().describe());
    } else if (source_) {
      if (auto r = source_->postMessage(data); !r) spdlog::warn("reply to source failed: {}", r.error().describe());
    }
  }

 private:
  std::optional<MessagePort> port_;
  std::optional<ClientHandle> source_;
};

Value errorValue(const Error& e) {
  return Value::map({{"error", Value::map({{"name", std::string(e.name())}, {"message", e.message}})}});
}

Value clientOrNull(const std::optional<ClientHandle>& c) { return c ? c->describe() : Value(); }

std::optional<ClientHandle> clientById(ServiceWorker& sw, const Value& id) {
  ClientId cid;
  if (!id.isText() || !ClientId::parse(id.asText(), cid)) return std::nullopt;
  return sw.clients().get(cid);
}

MatchAllOptions matchAllOptions(const Value& o) {
  MatchAllOptions m;
  if (const Value* inc = o.find("includeUncontrolled"); inc && inc->isBool()) m.includeUncontrolled = inc->asBool();
  const std::string type = o["type"].textOr("window");
  m.type = type == "worker" ? ClientType::WORKER : type == "all" ? ClientType::ALL : ClientType::WINDOW;
  return m;
}

}  // namespace

struct ReferenceServiceWorker::State {
  explicit State(ServiceWorker& s) : sw(s), countChannel(s, "count-channel") {}
  ServiceWorker& sw;
  int64_t count = 0;
  BroadcastChannel countChannel;  // the article's example: INCREASE_COUNT -> COUNT on the channel
};

namespace {

void handle(ReferenceServiceWorker::State& st, ExtendableMessageEvent& e) {
  ServiceWorker& sw = st.sw;
  const std::string type = e.data["type"].textOr("");
  Responder reply(e);
  if (type == "GET_VERSION") {
    reply(Value(sw.options().version));
  } else if (type == "ECHO") {
    reply(e.data);
  } else if (type == "MATCH_ALL") {
    Value::List list;
    for (const auto& c : sw.clients().matchAll(matchAllOptions(e.data["options"]))) list.push_back(c.describe());
    reply(Value::map({{"clients", Value(std::move(list))}}));
  } else if (type == "GET_CLIENT") {
    reply(clientOrNull(clientById(sw, e.data["id"])));
  } else if (type == "POST_TO") {
    auto c = clientById(sw, e.data["id"]);
    bool delivered = c && c->postMessage(e.data["data"]).ok();
    reply(Value::map({{"delivered", delivered}}));
  } else if (type == "POST_ALL") {
    int64_t count = 0;
    for (auto& c : sw.clients().matchAll())
      if (c.postMessage(e.data["data"])) ++count;
    reply(Value::map({{"count", count}}));
  } else if (type == "BROADCAST") {
    const std::string channel = e.data["channel"].textOr("");
    if (channel.empty()) return reply(errorValue(makeError(Errc::TYPE, "BROADCAST needs a channel")));
    BroadcastChannel bc(sw, channel);  // destinations are fixed now; the object closes right after
    auto r = bc.postMessage(e.data["data"]);
    reply(r ? Value::map({{"posted", true}}) : errorValue(r.error()));
  } else if (type == "CLAIM") {
    reply(Value::map({{"claimed", static_cast<int64_t>(sw.clients().claim())}}));
  } else if (type == "OPEN_WINDOW") {
    const std::string url = e.data["url"].textOr("");
    if (url.empty()) return reply(errorValue(makeError(Errc::TYPE, "OPEN_WINDOW needs a url")));
    sw.clients().openWindow(url, [reply](std::optional<ClientHandle> c) mutable { reply(clientOrNull(c)); });
  } else if (type == "FOCUS" || type == "NAVIGATE") {
    auto c = clientById(sw, e.data["id"]);
    if (!c) return reply(Value());
    auto r = type == "FOCUS" ? c->focus() : c->navigate(e.data["url"].textOr(""));
    reply(r ? r->describe() : errorValue(r.error()));
  } else {
    spdlog::debug("no handler for message type '{}'", type);
  }
}

}  // namespace

ReferenceServiceWorker::~ReferenceServiceWorker() = default;

ReferenceServiceWorker::ReferenceServiceWorker(ServiceWorker& sw) : state_(std::make_unique<State>(sw)) {
  State& st = *state_;
  st.countChannel.onMessage([&st](const MessageEvent& e) {
    if (e.data["type"].textOr("") != "INCREASE_COUNT") return;
    ++st.count;
    if (auto r = st.countChannel.postMessage(Value::map({{"type", "COUNT"}, {"count", st.count}})); !r)
      spdlog::warn("count-channel post failed: {}", r.error().describe());
  });
  sw.onMessage([&st](ExtendableMessageEvent& e) { handle(st, e); });
  sw.onMessageError([](const MessageErrorEvent& e, const ClientHandle& from) {
    spdlog::warn("messageerror from client={}: {}", from.id().toString(), e.error.describe());
  });
}

}  // namespace swipc::daemon
