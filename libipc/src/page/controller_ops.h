// ControllerOps: the page's conversation with its service worker. Out: controller.postMessage
// (the fast lane when it can, else a built envelope with a transfer list) and messageSW (Workbox:
// a request carrying port2 of a fresh MessageChannel; the first reply on port1 wins). In: the
// service worker's messages to this page (clientPost), held until startMessages().
//
// A pending messageSW ends exactly once: its reply, its deadline (TimeoutError), the service
// worker dropping the port unanswered (AbortError, when there is no deadline), the daemon
// refusing the request, or the daemon going away (Disconnected).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/event_loop.h"
#include "core/payload.h"
#include "page/connection_state.h"
#include "page/held_queue.h"
#include "page/op_table.h"
#include "page/page_events.h"
#include "page/ports.h"
#include "page/sender.h"

namespace swipc::page {

/// What holding a decoded Value costs, roughly (its nodes and its texts' and bytes' sizes).
uint64_t heldCost(const Value& v);

/// @concurrent: single-threaded (the page's loop thread).
class ControllerOps {
 public:
  ControllerOps(ConnectionState& link, Sender& sender, PagePorts& ports, HeldQueue& queue, PageEvents& events,
                core::EventLoop& loop, const TypeRegistry& types, OpTable& ops);
  ControllerOps(const ControllerOps&) = delete;
  ControllerOps& operator=(const ControllerOps&) = delete;

  /// controller.postMessage / postTyped. InvalidStateError when not controlled; see Sender.
  Result<MessageSeq> post(const core::OutgoingPayload& payload, const PostOptions& opts, TransferList& transfer);
  /// messageSW: `done` runs once, on the loop thread (or inside this call when nothing was sent).
  void messageSWAsync(const Value& data, std::function<void(Result<Value>)> done, std::optional<Deadline> deadline);
  /// Blocking messageSW: runs the connection (spinning first with ClientOptions::spin) until
  /// answered; events that arrive meanwhile are deferred to after it.
  Result<Value> messageSW(const Value& data, Deadline deadline);

  /// A fast-lane client post from the service worker.
  void receivePlain(Value& data) {
    const uint64_t bytes = queue_.started() ? 0 : heldCost(data);  // only held messages are bounded
    auto ev = std::make_shared<MessageEvent>();
    ev->data = std::move(data);
    events_.message(std::move(ev), bytes);
  }

  /// The requests waiting for a reply now (the daemon is going: they fail once it has gone).
  std::vector<uint64_t> pendingReplies() const;
  /// Fails each of `ids` still pending with Disconnected.
  void failReplies(const std::vector<uint64_t>& ids, const std::string& reason);

 private:
  struct PendingReply {
    std::function<void(Result<Value>)> done;
    core::EventLoop::TimerId timer = 0;
    MessageSeq seq = 0;
    detail::PortPtr port;  // port1 of the request's MessageChannel
    bool hasDeadline = false;
  };

  /// Sends the request on the fast lane when it fits one record: the request registers the pair
  /// itself, so port2 never needs an object here. Port1 (REMOTE) when sent.
  std::optional<Result<MessageSeq>> sendRequestPlain(const Value& data, detail::PortPtr& port1);
  /// Resolves request `replyId` (once): its timer stops, its reply port closes.
  void settleReply(uint64_t replyId, Result<Value> result);

  ConnectionState& link_;
  Sender& sender_;
  PagePorts& ports_;
  HeldQueue& queue_;
  PageEvents& events_;
  core::EventLoop& loop_;
  const TypeRegistry& types_;
  std::unordered_map<uint64_t, PendingReply> replies_;
  uint64_t nextReplyId_ = 1;
};

}  // namespace swipc::page
