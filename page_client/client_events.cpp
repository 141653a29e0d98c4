#include "client_events.h"

#include <algorithm>
#include <cctype>

namespace page_client {

namespace {

constexpr std::string_view RECEIVED_PREFIX = "in";

/// True for names of the form in<digits>, the ones received ports get.
bool isReceivedName(const std::string& name) {
  if (name.size() <= RECEIVED_PREFIX.size() || name.compare(0, RECEIVED_PREFIX.size(), RECEIVED_PREFIX) != 0)
    return false;
  return std::all_of(name.begin() + RECEIVED_PREFIX.size(), name.end(),
                     [](unsigned char c) { return std::isdigit(c) != 0; });
}

}  // namespace

NamedPorts::~NamedPorts() { closeAll(); }

std::vector<std::string> NamedPorts::adopt(const std::vector<swipc::MessagePort>& ports) {
  std::vector<std::string> names;
  names.reserve(ports.size());
  for (const auto& port : ports) {
    std::string name = std::string(RECEIVED_PREFIX) + std::to_string(nextReceived_++);
    insert(name, port);
    names.push_back(std::move(name));
  }
  // Started only once every name is known: a held message may carry ports of its own.
  if (startReceived_ == StartReceived::YES)
    for (const auto& name : names) start(name);
  return names;
}

swipc::Result<void> NamedPorts::checkName(const std::string& name) const {
  if (name.empty()) return swipc::makeError(swipc::Errc::TYPE, "a port name must not be empty");
  if (isReceivedName(name))
    return swipc::makeError(swipc::Errc::TYPE, "port name '" + name + "' is reserved for received ports");
  if (ports_.count(name)) return swipc::makeError(swipc::Errc::INVALID_STATE, "port name '" + name + "' is in use");
  return {};
}

void NamedPorts::add(const std::string& name, swipc::MessagePort port) {
  SWIPC_REQUIRE(checkName(name).ok(), "port name '" + name + "' cannot be given");
  insert(name, std::move(port));
}

swipc::MessagePort* NamedPorts::find(const std::string& name) {
  auto it = ports_.find(name);
  return it == ports_.end() ? nullptr : &it->second.port;
}

void NamedPorts::start(const std::string& name) {
  auto it = ports_.find(name);
  if (it != ports_.end()) start(name, it->second);
}

void NamedPorts::closeAll() {
  for (auto& [name, entry] : ports_) entry.port.close();
}

void NamedPorts::insert(const std::string& name, swipc::MessagePort port) {
  // The callbacks capture the name, never the port: a port holding a handle to itself would
  // never be dropped.
  EventWriter& out = out_;
  port.onClose([&out, name] { out.portClose(name); });
  ports_[name] = Entry{std::move(port), false};
}

void NamedPorts::start(const std::string& name, Entry& entry) {
  if (entry.started) return;
  entry.started = true;
  EventWriter& out = out_;
  entry.port.onMessageError([&out, name](const swipc::MessageErrorEvent&) { out.portMessageError(name); });
  // onMessage sets the handler and starts the port: held messages arrive first, in order.
  entry.port.onMessage([this, name](const swipc::MessageEvent& e) { out_.portMessage(name, e, adopt(e.ports)); });
}

void forwardClientEvents(swipc::Client& client, EventWriter& out, NamedPorts& ports) {
  client.onMessage([&out, &ports](const swipc::MessageEvent& e) { out.message(e, ports.adopt(e.ports)); });
  client.onMessageError([&out](const swipc::MessageErrorEvent& e) { out.messageError(e); });
  client.onControllerChange([&out](bool controlled) { out.controllerChange(controlled); });
  client.onNavigate([&out](const std::string& url) { out.navigate(url); });
}

swipc::Result<swipc::BroadcastChannel*> Channels::open(const std::string& bc, const std::string& name,
                                                       std::function<void()> onJoined,
                                                       std::function<void(const swipc::Error&)> onRefused) {
  if (auto* existing = find(bc); existing && !existing->closed())
    return swipc::makeError(swipc::Errc::INVALID_STATE, "BroadcastChannel object '" + bc + "' is already open");
  auto obj = std::make_unique<swipc::BroadcastChannel>(client_, name);
  EventWriter& out = out_;
  obj->onMessage([&out, bc, name](const swipc::MessageEvent& e) { out.bcMessage(bc, name, e); });
  obj->onLapped([&out, bc](uint64_t missed) { out.bcLapped(bc, missed); });
  obj->onMessageError([&out, bc](const swipc::MessageErrorEvent&) { out.bcMessageError(bc); });
  obj->onJoined(std::move(onJoined));
  obj->onJoinRefused(std::move(onRefused));
  auto* raw = obj.get();
  objects_[bc] = std::move(obj);
  return raw;
}

swipc::BroadcastChannel* Channels::find(const std::string& bc) {
  auto it = objects_.find(bc);
  return it == objects_.end() ? nullptr : it->second.get();
}

}  // namespace page_client
