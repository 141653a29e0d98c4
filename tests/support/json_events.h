// Helpers for reading page_client JSON-lines events in tests.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace swipc::testing {

/// The "type" of a `message` event's data ("" for other events, or data that is no map).
inline std::string messageType(const nlohmann::json& ev) {
  if (ev.value("event", "") != "message" || !ev.contains("data") || !ev["data"].is_object()) return {};
  return ev["data"].value("type", "");
}

/// {key: value} (braced json lists are ambiguous where a single element could also be a scalar).
inline nlohmann::json kv(const std::string& key, nlohmann::json value) {
  nlohmann::json j = nlohmann::json::object();
  j[key] = std::move(value);
  return j;
}

}  // namespace swipc::testing
