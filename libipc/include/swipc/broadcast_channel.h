// BroadcastChannel: named multicast inside one scope. Every other open object with the same name,
// in any process of the scope (the daemon included), receives each post; the posting object does
// not. Objects that join after a post never see it. Works the same in page code (on a Client) and
// in service-worker code (on a ServiceWorker).
//
// Lifetime: after close() (or destruction) no callback runs any more and posting fails with
// InvalidStateError. Callbacks run on the owning loop's thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "swipc/client.h"
#include "swipc/error.h"
#include "swipc/message_event.h"
#include "swipc/service_worker.h"
#include "swipc/value.h"

namespace swipc {

namespace detail {
struct BcObject;
}

class BroadcastChannel {
 public:
  /// Joins channel `name` on the client's scope. Joining is asynchronous: posts by others are
  /// guaranteed to reach this object once onJoined has fired (page_client's bc.open ok).
  BroadcastChannel(Client& client, std::string name);
  /// A channel object in service-worker code (joined at once).
  BroadcastChannel(ServiceWorker& sw, std::string name);
  BroadcastChannel(BroadcastChannel&&) noexcept;
  BroadcastChannel& operator=(BroadcastChannel&&) noexcept;
  ~BroadcastChannel();

  const std::string& name() const;
  /// Posts once; the value is serialized now. InvalidStateError after close(),
  /// QuotaExceededError when larger than a channel ring record, QueueFull, Disconnected.
  /// Returns the message's sequence number (Client::onDelivered reports it with requestAck).
  Result<MessageSeq> postMessage(const Value& data, const PostOptions& opts = {});
  Result<MessageSeq> postTyped(uint64_t typeId, const TypedBuilder& build, const PostOptions& opts = {});
  template <typename T, typename F>
  Result<MessageSeq> postMessage(F&& fill, const PostOptions& opts = {}) {
    auto [id, b] = typedBuilder<T>(std::forward<F>(fill));
    return postTyped(id, b, opts);
  }

  void onMessage(std::function<void(const MessageEvent&)> fn);
  void onMessageError(std::function<void(const MessageErrorEvent&)> fn);
  /// This object fell behind the ring by `missed` messages (they are gone); delivery continues
  /// with the oldest message still in the ring.
  void onLapped(std::function<void(uint64_t missed)> fn);
  void onJoined(std::function<void()> fn);
  /// The daemon refused the join (QuotaExceededError: --max-channels-per-client or
  /// --max-channels). The object is closed then: it receives nothing, posting fails.
  void onJoinRefused(std::function<void(const Error&)> fn);
  bool joined() const;
  bool closed() const;
  void close();

 private:
  std::shared_ptr<detail::BcObject> obj_;
};

}  // namespace swipc
