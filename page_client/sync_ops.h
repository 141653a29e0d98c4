// Background Sync from page_client (DESIGN §14): the `sync.*` / `periodicSync.*` script ops and
// the `sync TAG [--data JSON]` subcommand.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "cli_support.h"
#include "event_writer.h"
#include "swipc/client.h"

namespace page_client {

/// The script ops of Background Sync. Each op with an id is answered by exactly one ok/error
/// event, once the daemon has answered (a register's ok: committed).
class SyncOps {
 public:
  SyncOps(swipc::Client& client, EventWriter& out) : client_(client), out_(out) {}

  /// Runs `name` when it is one of ours; false when it is not a sync op.
  bool handle(const std::string& name, const nlohmann::json& op, const OpId& id);
  /// Calls sent, not yet answered (a graceful exit waits for them).
  size_t pending() const { return pending_; }

 private:
  void opRegister(const nlohmann::json& op, const OpId& id);
  void opGetTags(const OpId& id, bool periodic);
  void opPeriodicRegister(const nlohmann::json& op, const OpId& id);
  void opPeriodicUnregister(const nlohmann::json& op, const OpId& id);
  /// The callback that reports a call's outcome (and counts it answered).
  std::function<void(swipc::Result<void>)> answerVoid(const OpId& id);

  swipc::Client& client_;
  EventWriter& out_;
  size_t pending_ = 0;
};

/// `page_client sync TAG [--data JSON]`: exit 0 once committed, 2 without a daemon, 1 otherwise.
int runSync(const GlobalOptions& opts, const std::string& tag, const std::optional<std::string>& dataJson);

}  // namespace page_client
