// MessageChannel::create for both front doors: a new entangled pair on a page or in the daemon.
#include "core/port_state.h"
#include "swipc/client.h"
#include "swipc/message_port.h"
#include "swipc/service_worker.h"

namespace swipc {

MessageChannel MessageChannel::create(Client& client) {
  auto [a, b] = detail::PortState::createPair(client.portHost());
  return MessageChannel{MessagePort(a), MessagePort(b)};
}

MessageChannel MessageChannel::create(ServiceWorker& sw) {
  auto [a, b] = detail::PortState::createPair(sw.portHost());
  return MessageChannel{MessagePort(a), MessagePort(b)};
}

}  // namespace swipc
