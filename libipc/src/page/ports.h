// PagePorts: the page as a MessagePort host (detail::PortHost). It keeps the table of this
// page's ports by id, routes what the daemon sends for them (portMessage, portClosed, and the
// fast lane's port messages), and sends what a REMOTE port says to its peer through the daemon
// (portPost, portClose, portAck). When the daemon goes, its ports' peers are unreachable:
// endRemotePorts() closes them; when the page closes, hostGone() ends every port.
//
// A port is routable while it is REMOTE and its peer has not gone; messages for any other id
// (moved on, closed, unknown) are dropped here: the daemon re-sends or closes what it carried.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>

#include "core/event_loop.h"
#include "core/port_state.h"
#include "page/connection_state.h"
#include "page/held_queue.h"
#include "page/op_table.h"
#include "page/sender.h"
#include "wire/plain_post.h"

namespace swipc::page {

/// @concurrent: single-threaded (the page's loop thread).
class PagePorts final : public detail::PortHost {
 public:
  PagePorts(ConnectionState& link, Sender& sender, HeldQueue& queue, core::EventLoop& loop, const TypeRegistry& types,
            OpTable& ops);
  PagePorts(const PagePorts&) = delete;
  PagePorts& operator=(const PagePorts&) = delete;

  /// A live REMOTE port by id (nullptr when unknown, closed, moved on or disentangled).
  detail::PortPtr routable(uint64_t id);
  /// The fast lane takes port messages only for ports that want the Value as it is (messageSW's
  /// reply port); any other port gets its messages whole, through the general path.
  const wire::PlainFilter* plainFilter() const { return &filter_; }
  /// A fast-lane port message (a Value, no ports) for a port plainFilter() wanted.
  void receivePlain(const wire::PlainMessage& m, Value& data) {
    if (auto port = routable(m.to)) port->receiveValue(m.portSeq, data);
  }
  /// The daemon is gone: every REMOTE port's peer is unreachable now (they get `close`).
  void endRemotePorts();
  /// The page closes: every port ends, without callbacks.
  void hostGone();
  /// portClose{port, its recvNext} on the fast lane; `wake` false leaves the daemon unrung.
  Result<MessageSeq> sendPortClose(const detail::PortState& port, bool wake);

  // ---- detail::PortHost
  Result<void> postRemote(detail::PortState& from, const core::OutgoingPayload& payload,
                          std::vector<detail::PortPtr>& transfer) override;
  void closeRemote(detail::PortState& port) override;
  void ackRemote(detail::PortState& port) override;
  void track(const detail::PortPtr& port) override { ports_[port->id.value()] = port; }
  void untrack(detail::PortState& port) override;
  void later(std::function<void()> fn) override { loop_.post(std::move(fn)); }
  void deliver(std::function<void()> fn) override { queue_.deliver(std::move(fn)); }
  const TypeRegistry& types() const override { return types_; }
  uint64_t maxMessageBytes() const override;
  /// ClientOptions::maxPortQueueBytes.
  uint64_t maxQueuedBytes() const override;

  /// Messages dropped at this page's unstarted ports because their queues were over the bound.
  uint64_t droppedOverQuota() const { return droppedOverQuota_; }

 private:
  class Filter final : public wire::PlainFilter {
   public:
    explicit Filter(PagePorts& ports) : ports_(ports) {}
    bool wantsValue(const wire::PlainMessage& m) const override {
      if (m.kind != schema::Envelope::PORT_MESSAGE) return true;
      auto port = ports_.routable(m.to);
      return port && port->interceptValue;
    }

   private:
    PagePorts& ports_;
  };

  ConnectionState& link_;
  Sender& sender_;
  HeldQueue& queue_;
  core::EventLoop& loop_;
  const TypeRegistry& types_;
  Filter filter_{*this};
  std::unordered_map<uint64_t, std::weak_ptr<detail::PortState>> ports_;
  uint64_t droppedOverQuota_ = 0;
};

}  // namespace swipc::page
