// Prints what a Client receives (message, messageerror, controllerchange) through an
// EventWriter, and keeps the ports that messages carried under the names in1, in2, ...
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "event_writer.h"
#include "swipc/broadcast_channel.h"
#include "swipc/client.h"
#include "swipc/message_event.h"

namespace page_client {

/// Received ports, named in1, in2, ... in arrival order (DESIGN §6); later ops may use them.
class ReceivedPorts {
 public:
  /// Takes the ports and returns the names given to them, in order.
  std::vector<std::string> adopt(const std::vector<swipc::MessagePort>& ports);
  /// nullptr when no port has that name.
  swipc::MessagePort* find(const std::string& name);

 private:
  std::map<std::string, swipc::MessagePort> ports_;
  int next_ = 1;
};

/// BroadcastChannel objects of one page_client, by the name ops gave them (bc.open "bc").
/// Closed objects stay, so a post after close reports InvalidStateError.
class Channels {
 public:
  explicit Channels(swipc::Client& client, EventWriter& out) : client_(client), out_(out) {}
  /// Opens object `bc` on channel `name`; `onJoined` runs once the join is in effect.
  swipc::Result<swipc::BroadcastChannel*> open(const std::string& bc, const std::string& name,
                                               std::function<void()> onJoined);
  /// nullptr when no object has that name.
  swipc::BroadcastChannel* find(const std::string& bc);

 private:
  swipc::Client& client_;
  EventWriter& out_;
  std::map<std::string, std::unique_ptr<swipc::BroadcastChannel>> objects_;
};

/// Sets the client's message, messageerror, controllerchange and navigate callbacks to print events.
/// `out` and `ports` must outlive the client's callbacks.
void forwardClientEvents(swipc::Client& client, EventWriter& out, ReceivedPorts& ports);

}  // namespace page_client
