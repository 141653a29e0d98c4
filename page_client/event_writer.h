// EventWriter: the JSON-lines events of DESIGN §6, one object per line, flushed per line.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "swipc/error.h"
#include "swipc/message_event.h"
#include "swipc/types.h"

namespace page_client {

/// An op's "id" exactly as the op gave it (any JSON type); nullopt when the op had none.
using OpId = std::optional<nlohmann::json>;

class EventWriter {
 public:
  explicit EventWriter(std::FILE* out) : out_(out) {}

  /// {"event":"attached","clientId":"<32 hex>","controlled":bool}
  void attached(const swipc::ClientId& id, bool controlled);
  /// {"event":"message","data":V,"ports":[P...]}
  void message(const swipc::MessageEvent& event, const std::vector<std::string>& portNames);
  /// {"event":"messageerror","target":"..."}
  void messageError(const swipc::MessageErrorEvent& event);
  /// {"event":"bc.message","bc":B,"name":NAME,"data":V}
  void bcMessage(const std::string& bc, const std::string& name, const swipc::MessageEvent& e);
  /// {"event":"bc.lapped","bc":B,"missed":N}
  void bcLapped(const std::string& bc, uint64_t missed);
  /// {"event":"messageerror","target":"bc","bc":B}
  void bcMessageError(const std::string& bc);
  /// {"event":"port.message","port":P,"data":V,"ports":[P...]}
  void portMessage(const std::string& port, const swipc::MessageEvent& e, const std::vector<std::string>& portNames);
  /// {"event":"port.close","port":P}
  void portClose(const std::string& port);
  /// {"event":"messageerror","target":"port","port":P}
  void portMessageError(const std::string& port);
  /// {"event":"navigate","url":U}
  void navigate(const std::string& url);
  /// {"event":"controllerchange","controlled":bool}
  void controllerChange(bool controlled);
  /// {"event":"bgfetch.progress","fetchId":F, ...registration's fields}
  void bgfetchProgress(const std::string& fetchId, const nlohmann::ordered_json& registration);
  /// {"event":"ok","id":I, ...extra}: only for ops that carried an id.
  void ok(const nlohmann::json& id, const nlohmann::ordered_json& extra = nlohmann::ordered_json::object());
  /// {"event":"error","id":I,"name":"<ErrorName>","message":"..."}, "id" omitted when none.
  void error(const OpId& id, const swipc::Error& error);

  /// True once a write failed (the reader went away); later writes are dropped.
  bool failed() const { return failed_; }

 private:
  void writeLine(const nlohmann::ordered_json& event);

  std::FILE* out_;
  bool failed_ = false;
};

}  // namespace page_client
