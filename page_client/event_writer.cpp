#include "event_writer.h"

#include "swipc/json.h"

namespace page_client {

namespace {

using OrderedJson = nlohmann::ordered_json;

OrderedJson startEvent(const char* name) {
  OrderedJson event = OrderedJson::object();
  event["event"] = name;
  return event;
}

}  // namespace

void EventWriter::attached(const swipc::ClientId& id, bool controlled) {
  auto event = startEvent("attached");
  event["clientId"] = id.toString();
  event["controlled"] = controlled;
  writeLine(event);
}

void EventWriter::message(const swipc::MessageEvent& e, const std::vector<std::string>& portNames) {
  auto event = startEvent("message");
  event["data"] = OrderedJson(swipc::toJson(e.data));
  event["ports"] = portNames;
  writeLine(event);
}

void EventWriter::messageError(const swipc::MessageErrorEvent& e) {
  auto event = startEvent("messageerror");
  event["target"] = e.target;
  writeLine(event);
}

void EventWriter::bcMessage(const std::string& bc, const std::string& name, const swipc::MessageEvent& e) {
  auto event = startEvent("bc.message");
  event["bc"] = bc;
  event["name"] = name;
  event["data"] = OrderedJson(swipc::toJson(e.data));
  writeLine(event);
}

void EventWriter::bcLapped(const std::string& bc, uint64_t missed) {
  auto event = startEvent("bc.lapped");
  event["bc"] = bc;
  event["missed"] = missed;
  writeLine(event);
}

void EventWriter::bcMessageError(const std::string& bc) {
  auto event = startEvent("messageerror");
  event["target"] = "bc";
  event["bc"] = bc;
  writeLine(event);
}

void EventWriter::portMessage(const std::string& port, const swipc::MessageEvent& e,
                              const std::vector<std::string>& portNames) {
  auto event = startEvent("port.message");
  event["port"] = port;
  event["data"] = OrderedJson(swipc::toJson(e.data));
  event["ports"] = portNames;
  writeLine(event);
}

void EventWriter::portClose(const std::string& port) {
  auto event = startEvent("port.close");
  event["port"] = port;
  writeLine(event);
}

void EventWriter::portMessageError(const std::string& port) {
  auto event = startEvent("messageerror");
  event["target"] = "port";
  event["port"] = port;
  writeLine(event);
}

void EventWriter::navigate(const std::string& url) {
  auto event = startEvent("navigate");
  event["url"] = url;
  writeLine(event);
}

void EventWriter::controllerChange(bool controlled) {
  auto event = startEvent("controllerchange");
  event["controlled"] = controlled;
  writeLine(event);
}

void EventWriter::bgfetchProgress(const std::string& fetchId, const OrderedJson& registration) {
  auto event = startEvent("bgfetch.progress");
  event["fetchId"] = fetchId;
  for (const auto& [key, value] : registration.items()) event[key] = value;
  writeLine(event);
}

void EventWriter::ok(const nlohmann::json& id, const OrderedJson& extra) {
  auto event = startEvent("ok");
  event["id"] = OrderedJson(id);
  for (const auto& [key, value] : extra.items()) event[key] = value;
  writeLine(event);
}

void EventWriter::error(const OpId& id, const swipc::Error& error) {
  auto event = startEvent("error");
  if (id) event["id"] = OrderedJson(*id);
  event["name"] = std::string(error.name());
  event["message"] = error.message;
  writeLine(event);
}

void EventWriter::writeLine(const OrderedJson& event) {
  if (failed_) return;
  // Text that is not valid UTF-8 is replaced, never allowed to abort the line.
  std::string line = event.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
  line += '\n';
  if (std::fwrite(line.data(), 1, line.size(), out_) != line.size() || std::fflush(out_) != 0) failed_ = true;
}

}  // namespace page_client
