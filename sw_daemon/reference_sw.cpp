#include "reference_sw.h"

#include <spdlog/spdlog.h>

namespace swipc::daemon {

namespace {

/// A reply goes to the message's port if it carried one (messageSW), else to event.source.
void replyTo(ExtendableMessageEvent& e, const Value& data) {
  if (!e.ports.empty()) {
    if (auto r = e.ports[0].postMessage(data); !r) spdlog::warn("reply on port failed: {}", r.error().describe());
    return;
  }
  if (e.source) {
    if (auto r = e.source->postMessage(data); !r) spdlog::warn("reply to source failed: {}", r.error().describe());
  }
}

}  // namespace

void installReferenceServiceWorker(ServiceWorker& sw) {
  sw.onMessage([&sw](ExtendableMessageEvent& e) {
    const std::string type = e.data["type"].textOr("");
    if (type == "GET_VERSION") {
      replyTo(e, Value(sw.options().version));
    } else if (type == "ECHO") {
      replyTo(e, e.data);
    } else {
      spdlog::debug("no handler for message type '{}'", type);
    }
  });
  sw.onMessageError([](const MessageErrorEvent& e, const ClientHandle& from) {
    spdlog::warn("messageerror from client={}: {}", from.id().toString(), e.error.describe());
  });
}

}  // namespace swipc::daemon
