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

  /// client.postMessage. NotFoundError when the client is gone, QueueFull when its backlog is at
  /// the bound (the client stopped draining), QuotaExceededError over the size limit.
  /// With `transfer`: the ports (living in this service worker) move to the client, which gets
  /// them in event.ports; DataCloneError (nothing sent) for a duplicate, closed or neutered port.
  Result<MessageSeq> postMessage(const Value& data, TransferList transfer = {});
  Result<MessageSeq> postTyped(uint64_t typeId, const TypedBuilder& build, TransferList transfer = {});
  template <typename T, typename F>
  Result<MessageSeq> postMessage(F&& fill) {
    auto [id, b] = typedBuilder<T>(std::forward<F>(fill));
    return postTyped(id, b);
  }

  /// WindowClient.focus(): the window is told and becomes the most recently focused.
  /// InvalidStateError when this daemon does not control it, TypeError for a worker,
  /// NotFoundError when gone. Returns the updated snapshot.
  Result<ClientHandle> focus();
  /// WindowClient.navigate(url): the window is told (a `navigate` event) and its url changes.
  Result<ClientHandle> navigate(const std::string& url);

  /// {id,url,type,frameType,focused,visibilityState}.
  Value describe() const;

 private:
  friend class ServiceWorker;
  friend class daemon::ClientsApi;  // makes and refreshes the snapshots
  ServiceWorker* sw_ = nullptr;
  ClientId id_;
  std::string url_;
  ClientType type_ = ClientType::WINDOW;
  FrameType frameType_ = FrameType::TOP_LEVEL;
  bool focused_ = false;
  bool visible_ = true;
  bool controlled_ = true;
  pid_t pid_ = 0;
};

struct MatchAllOptions {
  bool includeUncontrolled = false;
  ClientType type = ClientType::WINDOW;  // WINDOW, WORKER or ALL
};

/// self.clients. Obtain with ServiceWorker::clients().
class Clients {
 public:
  /// Snapshots, ordered: windows focused at least once (most recent focus first), then
  /// never-focused windows by creation, then workers by creation.
  std::vector<ClientHandle> matchAll(const MatchAllOptions& opts = {}) const;
  /// The client, or nullopt when unknown or gone.
  std::optional<ClientHandle> get(const ClientId& id) const;
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
