#include "cli_support.h"

#include <algorithm>
#include <cstdio>

namespace page_client {

std::chrono::milliseconds GlobalOptions::timeoutOr(std::chrono::milliseconds fallback) const {
  return timeoutMs >= 0 ? std::chrono::milliseconds(timeoutMs) : fallback;
}

swipc::ClientOptions toClientOptions(const GlobalOptions& opts) {
  swipc::ClientOptions out;
  out.scope = opts.scope;
  out.runtimeDir = opts.runtimeDir;
  out.url = opts.url.empty() ? "app://" + opts.scope + "/" : opts.url;
  out.type = opts.type == "worker" ? swipc::ClientType::WORKER : swipc::ClientType::WINDOW;
  out.controlled = !opts.uncontrolled;
  if (opts.timeoutMs >= 0) out.attachTimeout = std::chrono::milliseconds(opts.timeoutMs);
  out.spawnDaemon = opts.spawnDaemon;
  out.daemonPath = opts.daemonPath;
  return out;
}

swipc::Result<swipc::Client> connectClient(const GlobalOptions& opts) {
  return swipc::Client::connect(toClientOptions(opts));
}

int connectExitCode(const swipc::Error& error) {
  // A daemon that never answers the attach is, to the user, no daemon either.
  bool noDaemon = error.code == swipc::Errc::NO_DAEMON || error.code == swipc::Errc::ATTACH_TIMEOUT;
  return noDaemon ? EXIT_NO_DAEMON : EXIT_ERROR;
}

int pollTimeoutMs(swipc::Deadline until) {
  if (until == swipc::NO_DEADLINE) return -1;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(until - swipc::Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 60'000));
}

void reportError(const std::string& text) {
  std::string line = "page_client: " + text;
  std::replace(line.begin(), line.end(), '\n', ' ');
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

void reportError(const swipc::Error& error) { reportError(error.describe()); }

}  // namespace page_client
