// hello_page: attaches to the service worker of a scope, asks it for its version (Workbox's
// messageSW GET_VERSION), prints the answer and exits 0. Runs against sw_daemon or
// examples/hello_worker.
//
//   hello_page [SCOPE [RUNTIME_DIR]]   (defaults: "hello", $SWIPC_RUNTIME_DIR)
#include <chrono>
#include <cstdio>

#include <swipc/client.h>

int main(int argc, char** argv) {
  swipc::ClientOptions options;
  options.scope = argc > 1 ? argv[1] : "hello";
  if (argc > 2) options.runtimeDir = argv[2];

  auto client = swipc::Client::connect(options);
  if (!client) {
    std::fprintf(stderr, "hello_page: connect: %s\n", client.error().describe().c_str());
    return 1;
  }
  auto version = client->messageSW(swipc::Value::map({{"type", "GET_VERSION"}}), std::chrono::seconds(5));
  if (!version) {
    std::fprintf(stderr, "hello_page: GET_VERSION: %s\n", version.error().describe().c_str());
    return 1;
  }
  std::printf("service worker version: %s\n", version->textOr("?").c_str());
  return 0;
}
