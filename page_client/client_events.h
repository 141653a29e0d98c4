// Prints what a Client receives (message, messageerror, controllerchange) through an
// EventWriter, and keeps the ports that messages carried under the names in1, in2, ...
#pragma once

#include <map>
#include <string>
#include <vector>

#include "event_writer.h"
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

/// Sets the client's message, messageerror and controllerchange callbacks to print events.
/// `out` and `ports` must outlive the client's callbacks.
void forwardClientEvents(swipc::Client& client, EventWriter& out, ReceivedPorts& ports);

}  // namespace page_client
