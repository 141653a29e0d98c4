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
}

}  // namespace page_client
