// Prints what a Client receives (message, messageerror, controllerchange, navigate, and port
// events) through an EventWriter, and keeps the MessagePorts a page_client knows by name.
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
#include "swipc/message_port.h"

namespace page_client {

/// The MessagePorts of one page_client, by name: the ones channel.create made (named by the op)
/// and the ones messages carried, named in1, in2, ... in arrival order (DESIGN §6).
///
/// Every port prints `port.close` when its peer closes or dies. A port prints `port.message`
/// only once started (start(), the port.start op): until then the library holds its messages,
/// as the web holds them until port.start(). Received ports can instead be started on arrival
/// (`listen`, which has no ops). Names stay known after a port is closed or transferred away;
/// the port is then closed or neutered, and ops on it behave as the library says for those.
///
/// The ports' callbacks point at this object: it neither moves nor copies, and it closes every
/// port it holds before it goes away (no callback runs after that).
class NamedPorts {
 public:
  enum class StartReceived { NO, YES };

  NamedPorts(EventWriter& out, StartReceived startReceived) : out_(out), startReceived_(startReceived) {}
  ~NamedPorts();
  NamedPorts(const NamedPorts&) = delete;
  NamedPorts& operator=(const NamedPorts&) = delete;

  /// Takes ports that arrived with a message and returns the names given to them, in order.
  std::vector<std::string> adopt(const std::vector<swipc::MessagePort>& ports);
  /// Whether `name` can be given to a port made here: InvalidStateError when it is in use,
  /// TypeError for a name of the received-port form (in<N>), which is reserved.
  swipc::Result<void> checkName(const std::string& name) const;
  /// Adds a port made here under `name` (checkName must have passed), not started.
  void add(const std::string& name, swipc::MessagePort port);
  /// nullptr when no port has that name.
  swipc::MessagePort* find(const std::string& name);
  /// Starts the named port (which must exist): held messages, then later ones, print as
  /// port.message. Starting a started, closed or neutered port changes nothing.
  void start(const std::string& name);
  /// Closes every port (graceful exit): each peer gets `close`.
  void closeAll();

 private:
  struct Entry {
    swipc::MessagePort port;
    bool started = false;
  };
  void insert(const std::string& name, swipc::MessagePort port);
  void start(const std::string& name, Entry& entry);

  EventWriter& out_;
  StartReceived startReceived_;
  std::map<std::string, Entry> ports_;
  int nextReceived_ = 1;
};

/// BroadcastChannel objects of one page_client, by the name ops gave them (bc.open "bc").
/// Closed objects stay, so a post after close reports InvalidStateError.
class Channels {
 public:
  explicit Channels(swipc::Client& client, EventWriter& out) : client_(client), out_(out) {}
  /// Opens object `bc` on channel `name`; `onJoined` runs once the join is in effect, `onRefused`
  /// when the daemon refused it (the object is closed then).
  swipc::Result<swipc::BroadcastChannel*> open(const std::string& bc, const std::string& name,
                                               std::function<void()> onJoined,
                                               std::function<void(const swipc::Error&)> onRefused);
  /// nullptr when no object has that name.
  swipc::BroadcastChannel* find(const std::string& bc);

 private:
  swipc::Client& client_;
  EventWriter& out_;
  std::map<std::string, std::unique_ptr<swipc::BroadcastChannel>> objects_;
};

/// Sets the client's message, messageerror, controllerchange and navigate callbacks to print events.
/// `out` and `ports` must outlive the client's callbacks.
void forwardClientEvents(swipc::Client& client, EventWriter& out, NamedPorts& ports);

}  // namespace page_client
