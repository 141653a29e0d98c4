#include "client_events.h"

namespace page_client {

std::vector<std::string> ReceivedPorts::adopt(const std::vector<swipc::MessagePort>& ports) {
  std::vector<std::string> names;
  names.reserve(ports.size());
  for (const auto& port : ports) {
    std::string name = "in" + std::to_string(next_++);
    ports_.emplace(name, port);
    names.push_back(std::move(name));
  }
  return names;
}

swipc::MessagePort* ReceivedPorts::find(const std::string& name) {
  auto it = ports_.find(name);
  return it == ports_.end() ? nullptr : &it->second;
}

void forwardClientEvents(swipc::Client& client, EventWriter& out, ReceivedPorts& ports) {
  client.onMessage([&out, &ports](const swipc::MessageEvent& e) { out.message(e, ports.adopt(e.ports)); });
  client.onMessageError([&out](const swipc::MessageErrorEvent& e) { out.messageError(e); });
  client.onControllerChange([&out](bool controlled) { out.controllerChange(controlled); });
  client.onNavigate([&out](const std::string& url) { out.navigate(url); });
}

swipc::Result<swipc::BroadcastChannel*> Channels::open(const std::string& bc, const std::string& name,
                                                       std::function<void()> onJoined) {
  if (auto* existing = find(bc); existing && !existing->closed())
    return swipc::makeError(swipc::Errc::INVALID_STATE, "BroadcastChannel object '" + bc + "' is already open");
  auto obj = std::make_unique<swipc::BroadcastChannel>(client_, name);
  EventWriter& out = out_;
  obj->onMessage([&out, bc, name](const swipc::MessageEvent& e) { out.bcMessage(bc, name, e); });
  obj->onLapped([&out, bc](uint64_t missed) { out.bcLapped(bc, missed); });
  obj->onMessageError([&out, bc](const swipc::MessageErrorEvent&) { out.bcMessageError(bc); });
  obj->onJoined(std::move(onJoined));
  auto* raw = obj.get();
  objects_[bc] = std::move(obj);
  return raw;
}

swipc::BroadcastChannel* Channels::find(const std::string& bc) {
  auto it = objects_.find(bc);
  return it == objects_.end() ? nullptr : it->second.get();
}

}  // namespace page_client
