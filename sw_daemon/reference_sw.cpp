#include "reference_sw.h"

#include <spdlog/spdlog.h>

#include <memory>
#include <optional>

#include "reference_fetch.h"
#include "reference_sync.h"
#include "swipc/broadcast_channel.h"

namespace swipc::daemon {

namespace {

/// Where a reply goes: the message's port if it carried one (messageSW), else `fallback` (the
/// port a message came in on), else event.source. Copyable, so asynchronous handlers
/// (OPEN_WINDOW) can answer later.
class Responder {
 public:
  explicit Responder(const ExtendableMessageEvent& e, std::optional<MessagePort> fallback = std::nullopt)
      : port_(e.ports.empty() ? std::move(fallback) : std::optional<MessagePort>(e.ports[0])) {
    if (!port_) source_ = e.source;  // (a copy of the handle only when it is where the reply goes)
  }
  /// Replies to event.source only, whatever ports the message carried (RELAY_PORT passes them on).
  static Responder toSource(const ExtendableMessageEvent& e) {
    Responder r(e);
    if (r.port_) {
      r.port_.reset();
      r.source_ = e.source;
    }
    return r;
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

/// The client `id` names, on this node or (federated) another; `done` gets nullopt for an id
/// that is not one.
void withClient(ServiceWorker& sw, const Value& id, std::function<void(std::optional<ClientHandle>)> done) {
  ClientId cid;
  if (!id.isText() || !ClientId::parse(id.asText(), cid)) return done(std::nullopt);
  sw.clients().get(cid, std::move(done));
}

/// POST_TO's answer when the message did not reach the client: `{"delivered":false}` (DESIGN §10),
/// plus why in a federated scope (§16: the outcome of a post to another node matters).
Value notDelivered(const ServiceWorker& sw, const Error& e) {
  if (sw.options().federation.natsServers.empty()) return Value::map({{"delivered", false}});
  return Value::map({{"delivered", false}, {"error", Value::map({{"name", std::string(e.name())}, {"message", e.message}})}});
}

MatchAllOptions matchAllOptions(const Value& o) {
  MatchAllOptions m;
  if (const Value* inc = o.find("includeUncontrolled"); inc && inc->isBool()) m.includeUncontrolled = inc->asBool();
  if (const Value* rem = o.find("includeRemote"); rem && rem->isBool()) m.includeRemote = rem->asBool();
  const std::string type = o["type"].textOr("window");
  m.type = type == "worker" ? ClientType::WORKER : type == "all" ? ClientType::ALL : ClientType::WINDOW;
  return m;
}

/// MATCH_ALL's options given beside "type" instead of inside "options".
Value topLevelOptions(const Value& data) {
  Value o = Value::map({});
  for (const char* key : {"includeUncontrolled", "includeRemote"})
    if (const Value* v = data.find(key)) o.set(key, *v);
  if (const Value* t = data.find("clientType")) o.set("type", *t);
  return o;
}

}  // namespace

struct ReferenceServiceWorker::State : std::enable_shared_from_this<ReferenceServiceWorker::State> {
  explicit State(ServiceWorker& s) : sw(s), countChannel(s, "count-channel"), sync(s), fetch(s) {}
  ServiceWorker& sw;
  /// One counter for INCREASE_COUNT, whether it came as a message or on count-channel.
  int64_t count = 0;
  BroadcastChannel countChannel;  // the article's example: INCREASE_COUNT -> COUNT on the channel
  /// The port PORT_INITIALIZATION handed over (the article's example): COUNT goes there.
  std::optional<MessagePort> keptPort;
  /// Background Sync: the tag-prefix handlers, sync-log, SET_ONLINE and SYNC_STATE.
  ReferenceSync sync;
  /// Background Fetch: the BGFETCH reports of every completion event.
  ReferenceFetch fetch;
};

namespace {

void handle(ReferenceServiceWorker::State& st, ExtendableMessageEvent& e, std::optional<MessagePort> arrivedOn);

/// Keeps `port` as the one COUNT messages go to, closing the one kept before (its peer gets
/// close). Messages that arrive on the kept port are handled like messages to the service
/// worker, with replies going back on it; its close (or its page's death) forgets it.
void keepPort(ReferenceServiceWorker::State& st, MessagePort port) {
  if (st.keptPort) {
    // Closed from the loop, not here: this may run inside the old port's own message callback.
    st.sw.post([old = std::move(*st.keptPort)]() mutable { old.close(); });
  }
  // The callbacks hold the state weakly: a port can outlive it (in the loop's queue at exit).
  std::weak_ptr<ReferenceServiceWorker::State> weak = st.shared_from_this();
  const PortId id = port.id();
  port.onClose([weak, id] {
    auto s = weak.lock();
    if (!s) return;
    // Dropped from the loop, not inside the port's own callback (this may be the last handle).
    s->sw.post([weak, id] {
      auto s = weak.lock();
      if (s && s->keptPort && s->keptPort->id() == id) s->keptPort.reset();
    });
  });
  port.onMessage([weak, id](const MessageEvent& m) {
    auto s = weak.lock();
    if (!s || !s->keptPort || s->keptPort->id() != id) return;
    ExtendableMessageEvent e;
    e.data = m.data;
    e.ports = m.ports;
    e.typed = m.typed;
    handle(*s, e, s->keptPort);
  });
  st.keptPort = std::move(port);
}

/// RELAY_PORT {to} (+ ports): passes the ports on to client `to` inside {"type":"PORT","from":
/// <sender id>}, so two pages end up holding an entangled pair. The answer goes to the sender as
/// a message: {"relayed":true}, or {"relayed":false,"error":{…}} with the ports closed (their
/// peers get close) when `to` is unknown or the transfer fails.
void relayPort(ServiceWorker& sw, ExtendableMessageEvent& e) {
  Responder reply = Responder::toSource(e);
  auto refuse = [&](const Error& err) {
    for (auto& port : e.ports) port.close();
    reply(Value::map({{"relayed", false},
                      {"error", Value::map({{"name", std::string(err.name())}, {"message", err.message}})}}));
  };
  if (e.ports.empty()) return refuse(makeError(Errc::TYPE, "RELAY_PORT needs a port in its transfer list"));
  auto to = clientById(sw, e.data["to"]);
  if (!to) return refuse(makeError(Errc::NOT_FOUND, "no client '" + e.data["to"].textOr("") + "'"));
  const std::string from = e.source ? e.source->id().toString() : std::string();
  auto sent = to->postMessage(Value::map({{"type", "PORT"}, {"from", from}}), TransferList(e.ports));
  if (!sent) return refuse(sent.error());
  reply(Value::map({{"relayed", true}}));
}

void handle(ReferenceServiceWorker::State& st, ExtendableMessageEvent& e, std::optional<MessagePort> arrivedOn) {
  ServiceWorker& sw = st.sw;
  const Value* typeValue = e.data.find("type");
  const std::string_view type = typeValue && typeValue->isText() ? std::string_view(typeValue->asText()) : "";
  // Built only when a reply is sent (most messages a busy worker gets need none).
  auto reply = [&](const Value& data) { Responder(e, arrivedOn)(data); };
  if (type == "GET_VERSION") {
    reply(Value(sw.options().version));
  } else if (type == "NODE") {  // federated (--nats, DESIGN §16): this node's name; else null
    const auto& fed = sw.options().federation;
    reply(fed.natsServers.empty() ? Value() : Value(fed.node));
  } else if (type == "ECHO") {
    reply(e.data);
  } else if (type == "PORT_INITIALIZATION") {
    if (e.ports.empty())
      return reply(errorValue(makeError(Errc::TYPE, "PORT_INITIALIZATION needs a port in its transfer list")));
    MessagePort port = e.ports[0];
    if (auto r = port.postMessage(Value::map({{"type", "PORT_READY"}})); !r)
      spdlog::warn("PORT_READY failed: {}", r.error().describe());
    keepPort(st, std::move(port));
  } else if (type == "INCREASE_COUNT") {
    const Value count = Value::map({{"type", "COUNT"}, {"count", ++st.count}});
    if (!st.keptPort || st.keptPort->closed()) return reply(count);
    if (auto r = st.keptPort->postMessage(count); !r) spdlog::warn("COUNT on the kept port failed: {}", r.error().describe());
  } else if (type == "RELAY_PORT") {
    relayPort(sw, e);
  } else if (type == "MATCH_ALL") {
    // With includeRemote (federated, DESIGN §16) the answer waits for the other nodes.
    // The options as {"options":{…}}; a message without "options" may carry them at its top
    // level ({"type":"MATCH_ALL","includeUncontrolled":true}): its "type" is then the message's,
    // so the client type filter is read from "clientType" there.
    const Value* nested = e.data.find("options");
    sw.clients().matchAll(nested && nested->isMap() ? matchAllOptions(*nested) : matchAllOptions(topLevelOptions(e.data)),
                          [later = Responder(e, arrivedOn)](std::vector<ClientHandle> clients) mutable {
                            Value::List list;
                            list.reserve(clients.size());
                            for (const auto& c : clients) list.push_back(c.describe());
                            Value answer;
                            answer.set("clients", Value(std::move(list)));  // moved in: a list literal would copy
                            later(answer);
                          });
  } else if (type == "GET_CLIENT") {
    withClient(sw, e.data["id"], [later = Responder(e, arrivedOn)](std::optional<ClientHandle> c) mutable {
      later(clientOrNull(c));
    });
  } else if (type == "POST_TO") {
    ClientId cid;
    const Value& id = e.data["id"];
    if (!id.isText() || !ClientId::parse(id.asText(), cid))
      return reply(notDelivered(sw, makeError(Errc::NOT_FOUND, "no client with that id")));
    // On this node or (federated) another: the real outcome comes back either way.
    sw.clients().postMessage(cid, e.data["data"], [&sw, later = Responder(e, arrivedOn)](Result<void> r) mutable {
      later(r ? Value::map({{"delivered", true}}) : notDelivered(sw, r.error()));
    });
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
    sw.clients().openWindow(url, [later = Responder(e, arrivedOn)](std::optional<ClientHandle> c) mutable {
      later(clientOrNull(c));
    });
  } else if (type == "FOCUS" || type == "NAVIGATE") {
    auto c = clientById(sw, e.data["id"]);
    if (!c) return reply(Value());
    auto r = type == "FOCUS" ? c->focus() : c->navigate(e.data["url"].textOr(""));
    reply(r ? r->describe() : errorValue(r.error()));
  } else if (type == "SET_ONLINE" || type == "SYNC_STATE") {
    if (auto answer = st.sync.handleMessage(e.data)) reply(*answer);
  } else if (spdlog::should_log(spdlog::level::debug)) {  // (checked first: this is the busiest branch)
    spdlog::debug("no handler for message type '{}'", type);
  }
}

}  // namespace

ReferenceServiceWorker::~ReferenceServiceWorker() = default;

ReferenceServiceWorker::ReferenceServiceWorker(ServiceWorker& sw) : state_(std::make_shared<State>(sw)) {
  State& st = *state_;
  st.countChannel.onMessage([&st](const MessageEvent& e) {
    // Federated (--nats): only posts made on this node; each node answers its own (DESIGN §16).
    if (!e.node.empty() || e.data["type"].textOr("") != "INCREASE_COUNT") return;
    ++st.count;
    if (auto r = st.countChannel.postMessage(Value::map({{"type", "COUNT"}, {"count", st.count}})); !r)
      spdlog::warn("count-channel post failed: {}", r.error().describe());
  });
  sw.onMessage([&st](ExtendableMessageEvent& e) { handle(st, e, std::nullopt); });
  sw.onMessageError([](const MessageErrorEvent& e, const ClientHandle& from) {
    spdlog::warn("messageerror from client={}: {}", from.id().toString(), e.error.describe());
  });
}

}  // namespace swipc::daemon
