// ScriptDriver: `page_client script` — op lines on stdin, event lines on stdout (DESIGN §6).
//
// One op per input line, one event per output line. Ops run in arrival order; ops that involve
// the daemon (post, messageSW) complete asynchronously and report through ok/error events when
// the daemon has taken them (post: consumed, via requestAck; messageSW: replied). Port ops
// (channel.create, port.*) complete locally: a port.post's ok means the library accepted the
// message (serialized, transfer list checked), not that the peer has it — ports have no acks. EOF on stdin,
// {"op":"exit"} and SIGINT/SIGTERM exit gracefully: pending completions are awaited (bounded),
// then the client detaches.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <map>

#include "cli_support.h"
#include "client_events.h"
#include "event_writer.h"
#include "fetch_ops.h"
#include "line_reader.h"
#include "signal_watch.h"
#include "sync_ops.h"
#include "swipc/client.h"
#include "swipc/message_port.h"

namespace page_client {

class ScriptDriver {
 public:
  /// `drainTimeout` bounds how long a graceful exit waits for pending completions.
  ScriptDriver(swipc::Client& client, EventWriter& out, int inputFd, SignalWatch& signals,
               std::chrono::milliseconds drainTimeout);

  /// Prints the attached event, then runs until exit; returns the exit code.
  int run();

 private:
  void pollOnce();
  void handleLine(std::string_view line);
  void handleOp(const nlohmann::json& op, const OpId& id);

  void opStartMessages(const OpId& id);
  void opPost(const nlohmann::json& op, const OpId& id);
  void opMessageSw(const nlohmann::json& op, const OpId& id);
  void opExit(const nlohmann::json& op, const OpId& id);
  void opBcOpen(const nlohmann::json& op, const OpId& id);
  void opBcPost(const nlohmann::json& op, const OpId& id);
  void opBcClose(const nlohmann::json& op, const OpId& id);
  void opSetFocus(const nlohmann::json& op, const OpId& id);
  void opSetVisibility(const nlohmann::json& op, const OpId& id);
  void opChannelCreate(const nlohmann::json& op, const OpId& id);
  void opPortPost(const nlohmann::json& op, const OpId& id);
  void opPortStart(const nlohmann::json& op, const OpId& id);
  void opPortClose(const nlohmann::json& op, const OpId& id);

  /// The port named by the op's string field `key`: TypeError when missing, NotFoundError when
  /// no port has that name.
  swipc::Result<swipc::MessagePort*> opPort(const nlohmann::json& op, const char* key);
  /// The op's "transfer" list of port names (absent or null: empty). NotFoundError for an
  /// unknown name; duplicates, closed and neutered ports are left for the library to refuse.
  swipc::Result<swipc::TransferList> opTransfer(const nlohmann::json& op);

  void onReply(uint64_t request, const swipc::Result<swipc::Value>& reply);
  void onDelivered(swipc::MessageSeq seq);
  void onUndelivered(swipc::MessageSeq seq, const swipc::Error& error);
  /// Waits for outstanding posts and messageSW requests, then reports the rest as AbortError.
  void drain();
  void finish(int code, OpId id = std::nullopt);

  swipc::Client& client_;
  EventWriter& out_;
  LineReader input_;
  SignalWatch& signals_;
  std::chrono::milliseconds drainTimeout_;
  NamedPorts ports_;
  Channels channels_;
  SyncOps sync_;
  FetchOps fetch_;

  bool inputOpen_ = true;
  std::optional<int> exitCode_;
  OpId exitId_;  // the id of the exit op, acknowledged right before detaching
  /// Posts awaiting the daemon's ack, by sequence number, with the op's id.
  std::map<swipc::MessageSeq, OpId> pendingPosts_;
  /// messageSW requests awaiting their reply, by a local number, with the op's id.
  std::map<uint64_t, OpId> pendingRequests_;
  uint64_t nextRequest_ = 1;
};

}  // namespace page_client

namespace page_client {

/// `page_client script`: attaches, then runs a ScriptDriver over stdin/stdout. Exit code: the
/// exit op's code (0 on EOF or SIGINT/SIGTERM), 2 when no daemon is there to attach to, 1 for
/// other attach failures.
int runScript(const GlobalOptions& opts);

}  // namespace page_client
