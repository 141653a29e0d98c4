// ClientTable: every client the daemon has admitted, what each one holds here (its accounting),
// and the one way a client leaves (detach), which every module hears about through its hooks.
//
// A record stays in the table, not alive, until the loop runs after its detach: callers up the
// stack may still hold a reference to it. Find by id, then check `alive`.
//
// @concurrent: single-threaded; everything runs on the daemon's loop thread.
#pragma once

#include <capnp/message.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/connection.h"
#include "core/event_loop.h"
#include "swipc/clients.h"
#include "swipc/service_worker.h"
#include "swipc/types.h"

namespace swipc::daemon {

/// One message accepted for a client whose ring was full.
struct Outgoing {
  std::shared_ptr<capnp::MallocMessageBuilder> message;
  MessageSeq seq = 0;
  uint64_t bytes = 0;  // its encoded size, as charged to the client's usage
};

/// What one client holds in the daemon now. Every module that grows one of these updates it; the
/// module that owns the thing enforces its quota (Outbound: backlog; BroadcastHub: channels;
/// PortRouter: ports).
struct ClientUsage {
  uint64_t queuedMessages = 0;  // in the backlog (accepted, waiting for ring space)
  uint64_t queuedBytes = 0;     // their encoded bytes
  uint64_t ports = 0;           // port-table entries it owns (ports in transit to it included)
  uint64_t channels = 0;        // BroadcastChannel objects of its that joined a channel
};

struct ClientRecord {
  ClientId id;
  std::string url;
  ClientType type = ClientType::WINDOW;
  FrameType frameType = FrameType::TOP_LEVEL;
  bool focused = false;
  bool visible = true;
  uint64_t focusOrder = 0;  // 0: never focused; larger = more recent
  bool controlled = true;
  pid_t pid = 0;
  uid_t uid = 0;       // from SO_PEERCRED at attach
  uint64_t order = 0;  // creation order (set by ClientTable::insert)
  std::unique_ptr<core::Connection> conn;
  core::EventLoop::WatchId socketWatch = 0;
  core::EventLoop::WatchId doorbellWatch = 0;
  std::deque<Outgoing> backlog;
  MessageSeq nextSeq = 1;
  bool unresponsive = false;
  core::EventLoop::TimerId unresponsiveTimer = 0;  // armed while unresponsive (Outbound)
  Deadline lastDrained{};                          // the last time the backlog moved into the ring
  bool alive = true;
  bool drainScheduled = false;
  ClientUsage usage;
};

class ClientTable {
 public:
  /// Called with the record (still holding its connection) while it detaches.
  using DetachHook = std::function<void(ClientRecord&)>;
  using HookId = uint64_t;
  /// Called once the client is gone (its connection closed), with the reason.
  using DetachedFn = std::function<void(const ClientId&, const std::string&)>;

  ClientTable(core::EventLoop& loop, Counters& counters) : loop_(loop), counters_(counters) {}
  ClientTable(const ClientTable&) = delete;
  ClientTable& operator=(const ClientTable&) = delete;

  /// The record for `id`, alive or detached-but-not-yet-erased; nullptr when unknown.
  ClientRecord* find(const ClientId& id) const {
    auto it = records_.find(id);
    return it == records_.end() ? nullptr : it->second.get();
  }
  /// The record for `id` when it is alive.
  ClientRecord* findAlive(const ClientId& id) const {
    ClientRecord* c = find(id);
    return c && c->alive ? c : nullptr;
  }
  /// Adds an admitted client (its creation order set here). A detached record with the same id
  /// (a client re-attaching with its resume token) goes now.
  ClientRecord& insert(std::unique_ptr<ClientRecord> record);

  /// Calls fn(ClientRecord&) for every record, alive or not. fn may detach clients, not insert.
  template <typename F>
  void forEach(F&& fn) const {
    for (const auto& [id, c] : records_) fn(*c);
  }
  /// Calls fn(ClientRecord&) for every alive record. fn may detach clients, not insert.
  template <typename F>
  void forEachAlive(F&& fn) const {
    for (const auto& [id, c] : records_)
      if (c->alive) fn(*c);
  }
  /// Records in the table, detached ones not yet erased included (what --max-clients counts).
  size_t size() const { return records_.size(); }
  size_t aliveCount() const;

  /// Registers a hook every detach runs, in registration order, before the connection closes.
  HookId onDetach(DetachHook hook);
  void removeDetachHook(HookId id);
  /// The service-worker code's onClientDetached (after the hooks, the connection closed).
  void onDetached(DetachedFn fn) { detached_ = std::move(fn); }

  /// The client leaves: marked not alive, its watches removed, every hook run, its connection
  /// closed, onDetached told; the record is erased when the loop next runs. `goodbye`: tell the
  /// client first (a graceful stop). Idempotent.
  void detach(ClientRecord& c, const std::string& reason, bool goodbye = false);
  /// The client broke the protocol: counted, logged, told (a control error), detached.
  void violation(ClientRecord& c, const Error& err);
  /// Forgets every record (after a shutdown detached them all).
  void clear() {
    records_.clear();
    ++generation_;
  }
  /// Changes whenever a record is added or erased (pointers to records stay valid until then).
  uint64_t generation() const { return generation_; }

 private:
  core::EventLoop& loop_;
  Counters& counters_;
  std::unordered_map<ClientId, std::unique_ptr<ClientRecord>> records_;
  uint64_t nextOrder_ = 1;
  uint64_t generation_ = 0;
  std::vector<std::pair<HookId, DetachHook>> hooks_;
  HookId nextHook_ = 1;
  DetachedFn detached_;
};

}  // namespace swipc::daemon
