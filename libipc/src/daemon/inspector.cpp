#include "daemon/inspector.h"

#include <unistd.h>

#include "swipc/json.h"

namespace swipc::daemon {

namespace {

using Json = nlohmann::ordered_json;

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

Json fromSource(const std::function<Value()>& source, Json fallback) {
  return source ? toJson(source()) : std::move(fallback);
}

}  // namespace

Inspector::Inspector(const ClientsApi& clients, std::function<const BroadcastHub&()> hub,
                     std::function<const PortRouter&()> router, std::string version, Sources sources)
    : clients_(clients),
      hub_(std::move(hub)),
      router_(std::move(router)),
      version_(std::move(version)),
      sources_(std::move(sources)),
      started_(Clock::now()) {}

Result<std::string> Inspector::answer(std::string_view command) const {
  if (command == "status") return status();
  if (command == "clients") return clients();
  if (command == "channels") return channels();
  if (command == "ports") return ports();
  if (command == "sync") return dump(Json{{"tags", fromSource(sources_.syncTags, Json::array())}});
  if (command == "fetches") return dump(Json{{"fetches", fromSource(sources_.fetches, Json::array())}});
  return makeError(Errc::TYPE, "unknown inspect command '" + std::string(command) +
                                         "' (status, clients, channels, ports, sync, fetches)");
}

std::string Inspector::status() const {
  auto up = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_).count();
  return dump(Json{{"pid", static_cast<int64_t>(::getpid())},
                   {"version", version_},
                   {"uptimeMs", static_cast<int64_t>(up)},
                   {"counters", fromSource(sources_.counters, Json::object())}});
}

std::string Inspector::clients() const {
  MatchAllOptions all;
  all.includeUncontrolled = true;
  all.type = ClientType::ALL;
  Json list = Json::array();
  for (const ClientRecord* c : clients_.matching(all)) {
    list.push_back(Json{{"id", c->id.toString()},
                        {"pid", static_cast<int64_t>(c->pid)},
                        {"url", c->url},
                        {"type", std::string(clientTypeName(c->type))},
                        {"controlled", c->controlled},
                        {"focused", c->focused},
                        {"visibilityState", c->visible ? "visible" : "hidden"},
                        {"backlogMessages", c->usage.queuedMessages},
                        {"backlogBytes", c->usage.queuedBytes}});
  }
  return dump(Json{{"clients", std::move(list)}});
}

std::string Inspector::channels() const {
  Json list = Json::array();
  for (const auto& ch : hub_().stats()) {
    double fill = ch.capacity ? static_cast<double>(ch.retainedBytes) / static_cast<double>(ch.capacity) : 0.0;
    list.push_back(Json{{"name", ch.name.str()},
                        {"members", ch.members},
                        {"ringFill", fill},
                        {"posts", ch.posts},
                        {"laps", ch.laps}});
  }
  return dump(Json{{"channels", std::move(list)}});
}

std::string Inspector::ports() const {
  const PortRouter& r = router_();
  return dump(Json{{"open", r.size()}, {"inTransit", r.inTransit()}});
}

}  // namespace swipc::daemon
