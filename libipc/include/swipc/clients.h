// The Clients API (daemon side): every client the service worker knows, matchAll/get, claim,
// openWindow, and WindowClient focus/navigate.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "swipc/error.h"
#include "swipc/message_event.h"
#include "swipc/types.h"
#include "swipc/value.h"

namespace swipc {

class ServiceWorker;
namespace detail {
struct ClientHandleAccess;
}
namespace daemon {
class ClientsApi;
}

enum class FrameType { TOP_LEVEL, AUXILIARY, NONE };
std::string_view frameTypeName(FrameType t);

/// A client as the daemon knew it when the handle was made (a snapshot), plus a way to reach it.
/// Handles stay safe to use after the client is gone: calls then fail with NotFoundError.
class ClientHandle {
 public:
  const ClientId& id() const { return id_; }
  const std::string& url() const { return url_; }
  ClientType type() const { return type_; }
  FrameType frameType() const { return frameType_; }
  bool focused() const { return focused_; }
  /// "visible" or "hidden".
  std::string_view visibilityState() const { return visible_ ? "visible" : "hidden"; }
  bool controlled() const { return controlled_; }
  pid_t pid() const { return pid_; }
  /// The node the client lives on, in a federated scope (sw_daemon --nats, DESIGN §16): set on
  /// the results of matchAll with includeRemote and of get(id, done); "" otherwise.
  const std::string& node() const { return node_; }
  /// The client lives on another node: reach it with postMessage(data, done).
  bool remote() const { return remote_; }

  /// client.postMessage. NotFoundError when the client is gone, QueueFull when its backlog is at
  /// the bound (the client stopped draining), QuotaExceededError over the size limit.
  /// With `transfer`: the ports (living in this service worker) move to the client, which gets
  /// them in event.ports; DataCloneError (nothing sent) for a duplicate, closed or neutered port.
  /// InvalidStateError for a client on another node (remote()): use the form with `done`.
  Result<MessageSeq> postMessage(const Value& data, TransferList transfer = {});
  /// client.postMessage to a client on this node or another, with the outcome: `done` runs on the
  /// loop thread with success (delivered to the client's queue) or a named error: as above, plus
  /// for a remote client NotFoundError (its node is not live), Disconnected (NATS unreachable)
  /// and TimeoutError (its node did not answer within 2 s). Local clients: `done` runs at once.
  void postMessage(const Value& data, std::function<void(Result<void>)> done);
  Result<MessageSeq> postTyped(uint64_t typeId, const TypedBuilder& build, TransferList transfer = {});
  template <typename T, typename F>
  Result<MessageSeq> postMessage(F&& fill) {
    auto [id, b] = typedBuilder<T>(std::forward<F>(fill));
    return postTyped(id, b);
  }

  /// WindowClient.focus(): the window is told and becomes the most recently focused.
  /// InvalidStateError when this daemon does not control it (a remote client included), TypeError for a worker,
  /// NotFoundError when gone. Returns the updated snapshot.
  Result<ClientHandle> focus();
  /// WindowClient.navigate(url): the window is told (a `navigate` event) and its url changes.
  Result<ClientHandle> navigate(const std::string& url);

  /// {id,url,type,frameType,focused,visibilityState}, plus "node" when node() is set.
  Value describe() const;

 private:
  friend class ServiceWorker;
  friend class daemon::ClientsApi;  // makes and refreshes the snapshots
  friend struct detail::ClientHandleAccess;  // remote clients (federation)
  ServiceWorker* sw_ = nullptr;
  ClientId id_;
  std::string url_;
  ClientType type_ = ClientType::WINDOW;
  FrameType frameType_ = FrameType::TOP_LEVEL;
  bool focused_ = false;
  bool visible_ = true;
  bool controlled_ = true;
  pid_t pid_ = 0;
  std::string node_;
  bool remote_ = false;
};

struct MatchAllOptions {
  bool includeUncontrolled = false;
  ClientType type = ClientType::WINDOW;  // WINDOW, WORKER or ALL
  /// Federated scope (--nats): also the clients of every other live node (only the form of
  /// matchAll with `done`; the plain form answers this node's at once).
  bool includeRemote = false;
};

/// self.clients. Obtain with ServiceWorker::clients().
class Clients {
 public:
  /// Snapshots, ordered: windows focused at least once (most recent focus first), then
  /// never-focused windows by creation, then workers by creation.
  std::vector<ClientHandle> matchAll(const MatchAllOptions& opts = {}) const;
  /// The client, or nullopt when unknown or gone.
  std::optional<ClientHandle> get(const ClientId& id) const;
  /// matchAll that may reach other nodes: with opts.includeRemote in a federated scope, `done`
  /// runs on the loop thread with this node's clients first (in the order above), then each
  /// other live node's in its order, nodes by name, every entry with node(); a node that does
  /// not answer within 2 s is left out. Otherwise `done` runs at once with matchAll(opts).
  void matchAll(const MatchAllOptions& opts, std::function<void(std::vector<ClientHandle>)> done) const;
  /// get that may reach other nodes: this node's client at once, else (federated) the other live
  /// nodes are asked; nullopt when none has it or none answered within 2 s.
  void get(const ClientId& id, std::function<void(std::optional<ClientHandle>)> done) const;
  /// postMessage to the client `id` wherever it lives (this node, else, federated, any live
  /// node), with the outcome as ClientHandle::postMessage(data, done) gives it; NotFoundError
  /// when no node has it.
  void postMessage(const ClientId& id, const Value& data, std::function<void(Result<void>)> done);
  /// Takes control of every uncontrolled client and fires controllerchange at each.
  /// Returns how many it claimed.
  size_t claim();
  /// Spawns a page process for `url` (ServiceWorkerOptions::windowCommand). `done` runs on the
  /// loop thread with the new client once it has attached, or nullopt when the command fails,
  /// exits, or does not attach within openWindowTimeout (the process is then killed and reaped).
  void openWindow(const std::string& url, std::function<void(std::optional<ClientHandle>)> done);

 private:
  friend class ServiceWorker;
  explicit Clients(ServiceWorker* sw) : sw_(sw) {}
  ServiceWorker* sw_;
};

}  // namespace swipc
