#include "page/page.h"

#include <kj/exception.h>

#include "core/log.h"

namespace swipc::page {

Result<std::unique_ptr<Page>> Page::create(const ClientOptions& opts, ConnectionState::AttachFn attach) {
  auto loop = core::EventLoop::create();
  if (!loop) return loop.error();
  return std::make_unique<Page>(opts, std::move(*loop), std::move(attach));
}

Page::Page(const ClientOptions& opts, std::unique_ptr<core::EventLoop> loop, ConnectionState::AttachFn attach)
    : loop_(std::move(loop)), link_(opts, *loop_, events_, ops_, std::move(attach)) {
  link_.setEvents(this);
  link_.setPlainFilter(ports_.plainFilter());
}

Page::~Page() { close(); }

Result<void> Page::start() { return link_.start(); }

void Page::close() {
  if (!link_.beginClose()) return;
  features_.closing();
  if (link_.attached()) {
    link_.drainIncoming();
    link_.sendGoodbye();
    link_.lost("client closed");
  }
  // A client that exits closes its ports (the daemon closes them for us as we detach). After the
  // last drain, so ports that arrived in it are ended too.
  ports_.hostGone();
}

void Page::dispatchOnce(Deadline until) {
  queue_.flushDeferred();
  sender_.ringDeferred();
  loop_->runOnce(until);
  queue_.flushDeferred();
}

// ------------------------------------------------------------------------------------------------ wiring

void Page::plain(const wire::PlainMessage& m, Value& data) {
  if (m.kind == schema::Envelope::PORT_MESSAGE)
    ports_.receivePlain(m, data);  // messageSW's reply port (PagePorts::plainFilter)
  else
    controllerOps_.receivePlain(data);
}

void Page::envelope(wire::Inbound&& in) {
  // The walk at receipt does not check pointer kinds: a field of the wrong kind throws when its
  // handler reads it. From the daemon that is a broken peer (payloads relayed from other pages
  // are checked by their own readers, as messageerror): drop the connection and re-attach, as for
  // any malformed record, instead of dying of the exception.
  try {
    ops_.dispatch(std::move(in));
  } catch (const kj::Exception& e) {
    core::log().error("daemon wrote a malformed envelope: {}", e.getDescription().cStr());
    link_.lost(std::string("ProtocolViolation: malformed envelope: ") + e.getDescription().cStr());
  }
}

void Page::drained() { sender_.pruneOutstanding(); }

void Page::reattached() {
  if (link_.focused() || !link_.visible()) (void)sender_.sendState(link_.focused());  // the new daemon learns it
  features_.reattached();  // BroadcastChannel memberships survive a daemon restart
}

void Page::lost(const std::string& reason) {
  // The daemon is gone: its head index is final. What it read was delivered, the rest was not.
  const auto loss = sender_.settleOnLoss();
  const auto pendingReplies = controllerOps_.pendingReplies();
  link_.stopWatching();
  features_.detaching();  // e.g. what is still in the channel rings was posted before it died
  const bool wasControlled = link_.release();
  const bool closing = link_.closed();
  if (closing)
    core::log().debug("detached: {}", reason);
  else
    core::log().info("daemon lost ({}): {} message(s) not delivered", reason, loss.lost.size());
  controllerOps_.failReplies(pendingReplies, reason);
  ports_.endRemotePorts();  // the daemon routed them: their peers are unreachable now
  sender_.reportLoss(loss, reason, closing);
  if (wasControlled && !closing) events_.controllerChange(false);
  link_.scheduleReconnect();
}

}  // namespace swipc::page
