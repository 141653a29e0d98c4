#include "federation/remote_clients.h"

#include <nlohmann/json.hpp>

#include "swipc/json.h"

namespace swipc::federation {

namespace {

using json = nlohmann::ordered_json;
constexpr int VERSION = 1;

Error bad(const std::string& what) { return makeError(Errc::PROTOCOL_VIOLATION, "clients frame: " + what); }

json clientJson(const RemoteClient& c) {
  return json{{"id", c.id.toString()},
              {"url", c.url},
              {"type", std::string(clientTypeName(c.type))},
              {"frameType", std::string(frameTypeName(c.frameType))},
              {"focused", c.focused},
              {"visibilityState", c.visible ? "visible" : "hidden"},
              {"controlled", c.controlled}};
}

Result<RemoteClient> clientFrom(const json& j, const std::string& node) {
  if (!j.is_object()) return bad("a client is not an object");
  RemoteClient c;
  c.node = node;
  auto text = [&](const char* key) -> const std::string* {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? &it->get_ref<const std::string&>() : nullptr;
  };
  auto flag = [&](const char* key) -> std::optional<bool> {
    auto it = j.find(key);
    if (it == j.end() || !it->is_boolean()) return std::nullopt;
    return it->get<bool>();
  };
  const std::string* id = text("id");
  const std::string* url = text("url");
  const std::string* type = text("type");
  const std::string* frame = text("frameType");
  const std::string* visibility = text("visibilityState");
  auto focused = flag("focused");
  auto controlled = flag("controlled");
  if (!id || !ClientId::parse(*id, c.id)) return bad("a client without a valid id");
  if (!url || !type || !frame || !visibility || !focused || !controlled) return bad("a client with fields missing");
  auto t = clientTypeFromName(*type);
  auto f = frameTypeFromName(*frame);
  if (!t || *t == ClientType::ALL || !f) return bad("a client of an unknown type or frame type");
  if (*visibility != "visible" && *visibility != "hidden") return bad("a client of an unknown visibility");
  c.url = *url;
  c.type = *t;
  c.frameType = *f;
  c.focused = *focused;
  c.visible = *visibility == "visible";
  c.controlled = *controlled;
  return c;
}

Result<json> parseFrame(std::string_view frame) {
  json j = json::parse(frame, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  auto v = j.find("v");
  if (v == j.end() || !v->is_number_integer() || v->get<int64_t>() != VERSION)
    return makeError(Errc::VERSION_MISMATCH, "clients frame: version is not 1");
  auto req = j.find("req");
  auto from = j.find("from");
  auto kind = j.find("kind");
  if (req == j.end() || !req->is_number_unsigned()) return bad("no request number");
  if (from == j.end() || !from->is_string()) return bad("no sender node");
  if (kind == j.end() || !kind->is_string()) return bad("no kind");
  return j;
}

json answerHead(uint64_t req, const std::string& from) {
  return json{{"v", VERSION}, {"kind", "answer"}, {"req", req}, {"from", from}};
}

}  // namespace

std::optional<ClientType> clientTypeFromName(std::string_view name) {
  for (auto t : {ClientType::WINDOW, ClientType::WORKER, ClientType::ALL})
    if (clientTypeName(t) == name) return t;
  return std::nullopt;
}

std::optional<FrameType> frameTypeFromName(std::string_view name) {
  for (auto f : {FrameType::TOP_LEVEL, FrameType::AUXILIARY, FrameType::NONE})
    if (frameTypeName(f) == name) return f;
  return std::nullopt;
}

RemoteClient describeForRemote(const ClientHandle& c, const std::string& node) {
  RemoteClient r;
  r.node = node;
  r.id = c.id();
  r.url = c.url();
  r.type = c.type();
  r.frameType = c.frameType();
  r.focused = c.focused();
  r.visible = c.visibilityState() == "visible";
  r.controlled = c.controlled();
  return r;
}

Result<FrameKind> peekKind(std::string_view frame) {
  auto j = parseFrame(frame);
  if (!j) return j.error();
  return (*j)["kind"] == "answer" ? FrameKind::ANSWER : FrameKind::REQUEST;
}

std::string encodeRequest(const ClientsRequest& r) {
  json j{{"v", VERSION}, {"req", r.req}, {"from", r.from}};
  switch (r.kind) {
    case ClientsRequest::Kind::MATCH_ALL:
      j["kind"] = "matchAll";
      j["options"] = json{{"includeUncontrolled", r.options.includeUncontrolled},
                          {"type", std::string(clientTypeName(r.options.type))}};
      break;
    case ClientsRequest::Kind::GET:
      j["kind"] = "get";
      j["id"] = r.id.toString();
      break;
    case ClientsRequest::Kind::POST:
      j["kind"] = "post";
      j["id"] = r.id.toString();
      j["data"] = toJson(r.data);
      break;
  }
  return j.dump();
}

Result<ClientsRequest> decodeRequest(std::string_view frame) {
  auto parsed = parseFrame(frame);
  if (!parsed) return parsed.error();
  const json& j = *parsed;
  ClientsRequest r;
  r.req = j["req"].get<uint64_t>();
  r.from = j["from"].get<std::string>();
  const std::string kind = j["kind"].get<std::string>();
  if (kind == "matchAll") {
    r.kind = ClientsRequest::Kind::MATCH_ALL;
    auto o = j.find("options");
    if (o == j.end() || !o->is_object()) return bad("matchAll without options");
    auto inc = o->find("includeUncontrolled");
    auto type = o->find("type");
    if (inc == o->end() || !inc->is_boolean() || type == o->end() || !type->is_string()) return bad("matchAll options");
    auto t = clientTypeFromName(type->get<std::string>());
    if (!t) return bad("matchAll of an unknown type");
    r.options.includeUncontrolled = inc->get<bool>();
    r.options.type = *t;
    return r;
  }
  if (kind != "get" && kind != "post") return bad("unknown kind '" + kind + "'");
  r.kind = kind == "get" ? ClientsRequest::Kind::GET : ClientsRequest::Kind::POST;
  auto id = j.find("id");
  if (id == j.end() || !id->is_string() || !ClientId::parse(id->get<std::string>(), r.id)) return bad("no valid client id");
  if (r.kind == ClientsRequest::Kind::POST) {
    auto data = j.find("data");
    if (data == j.end()) return bad("post without data");
    auto v = fromJson(*data);
    if (!v) return v.error();
    r.data = std::move(*v);
  }
  return r;
}

std::string encodeMatchAllAnswer(uint64_t req, const std::string& from, const std::vector<RemoteClient>& clients) {
  json j = answerHead(req, from);
  json list = json::array();
  for (const auto& c : clients) list.push_back(clientJson(c));
  j["clients"] = std::move(list);
  return j.dump();
}

std::string encodeGetAnswer(uint64_t req, const std::string& from, const std::optional<RemoteClient>& client) {
  json j = answerHead(req, from);
  j["client"] = client ? clientJson(*client) : json(nullptr);
  return j.dump();
}

std::string encodeOutcomeAnswer(uint64_t req, const std::string& from, const Result<void>& outcome) {
  json j = answerHead(req, from);
  if (outcome)
    j["delivered"] = true;
  else
    j["error"] = json{{"name", std::string(outcome.error().name())}, {"message", outcome.error().message}};
  return j.dump();
}

Result<ClientsAnswer> decodeAnswer(std::string_view frame, size_t maxClients) {
  auto parsed = parseFrame(frame);
  if (!parsed) return parsed.error();
  const json& j = *parsed;
  if (j["kind"] != "answer") return bad("not an answer");
  ClientsAnswer a;
  a.req = j["req"].get<uint64_t>();
  a.from = j["from"].get<std::string>();
  if (auto list = j.find("clients"); list != j.end()) {
    if (!list->is_array()) return bad("clients is not a list");
    if (list->size() > maxClients) return bad("more clients than a node may have");
    a.clients.reserve(list->size());
    for (const auto& c : *list) {
      auto rc = clientFrom(c, a.from);
      if (!rc) return rc.error();
      a.clients.push_back(std::move(*rc));
    }
  } else if (auto client = j.find("client"); client != j.end()) {
    if (!client->is_null()) {
      auto rc = clientFrom(*client, a.from);
      if (!rc) return rc.error();
      a.client = std::move(*rc);
    }
  } else if (auto err = j.find("error"); err != j.end()) {
    auto name = err->is_object() ? err->find("name") : err->end();
    auto message = err->is_object() ? err->find("message") : err->end();
    if (!err->is_object() || name == err->end() || !name->is_string() || message == err->end() || !message->is_string())
      return bad("an error without name and message");
    Errc code;
    if (!errorFromName(name->get<std::string>(), code)) code = Errc::SYSTEM;
    a.outcome = makeError(code, message->get<std::string>());
  } else if (auto d = j.find("delivered"); d == j.end() || !d->is_boolean() || !d->get<bool>()) {
    return bad("an answer with nothing in it");
  }
  return a;
}

}  // namespace swipc::federation
