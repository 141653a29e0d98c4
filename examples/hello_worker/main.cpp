// hello_worker: a tiny service worker. It serves one scope until SIGTERM and answers two
// messages, the way sw_daemon's reference worker does:
//   {"type":"GET_VERSION"}  -> "hello-worker 1.0"
//   {"type":"ECHO", ...}    -> the message itself
// A reply goes to the port the message carried (Client::messageSW sends one), else to the
// client that sent it.
//
//   hello_worker [SCOPE [RUNTIME_DIR]]   (defaults: "hello", $SWIPC_RUNTIME_DIR)
#include <cstdio>
#include <string>

#include <swipc/message_port.h>
#include <swipc/service_worker.h>

namespace {

void reply(swipc::ExtendableMessageEvent& event, const swipc::Value& data) {
  std::string failure;
  if (!event.ports.empty()) {
    if (auto sent = event.ports[0].postMessage(data); !sent) failure = sent.error().describe();
  } else if (event.source) {
    if (auto sent = event.source->postMessage(data); !sent) failure = sent.error().describe();
  }
  if (!failure.empty()) std::fprintf(stderr, "hello_worker: reply failed: %s\n", failure.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  swipc::ServiceWorkerOptions options;
  options.scope = argc > 1 ? argv[1] : "hello";
  if (argc > 2) options.runtimeDir = argv[2];
  options.version = "hello-worker 1.0";

  swipc::ServiceWorker worker(options);
  worker.onMessage([&worker](swipc::ExtendableMessageEvent& event) {
    const swipc::Value* type = event.data.find("type");
    const std::string name = type ? type->textOr("") : "";
    if (name == "GET_VERSION") {
      reply(event, swipc::Value(worker.options().version));
    } else if (name == "ECHO") {
      reply(event, event.data);
    }
  });

  if (auto listening = worker.listen(); !listening) {
    std::fprintf(stderr, "hello_worker: %s\n", listening.error().describe().c_str());
    return 1;
  }
  std::printf("hello_worker: serving scope '%s'\n", options.scope.c_str());
  std::fflush(stdout);
  auto ended = worker.run();  // until SIGTERM / SIGINT
  if (!ended) {
    std::fprintf(stderr, "hello_worker: %s\n", ended.error().describe().c_str());
    return 1;
  }
  return 0;
}
