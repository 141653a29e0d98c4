// What every page_client subcommand shares: the global options, connecting, exit codes and the
// one-line error report on stderr.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "swipc/client.h"
#include "swipc/error.h"
#include "swipc/types.h"

namespace page_client {

/// Exit codes (DESIGN §6): the contract black-box tests check.
inline constexpr int EXIT_OK = 0;
inline constexpr int EXIT_ERROR = 1;      // any other failure (bad argument, op failed, ...)
inline constexpr int EXIT_NO_DAEMON = 2;  // no daemon to attach to
inline constexpr int EXIT_TIMEOUT = 3;    // message-sw: TimeoutError

/// The global options, valid before or after the subcommand.
struct GlobalOptions {
  std::string scope = "default";
  std::string runtimeDir;  // empty: the library's default
  std::string url;         // empty: app://<scope>/
  std::string type = "window";
  bool uncontrolled = false;
  std::string logLevel = "warn";
  int64_t timeoutMs = -1;  // < 0: not given
  bool spawnDaemon = false;  // start sw_daemon when none answers (ClientOptions::spawnDaemon)
  std::string daemonPath;    // empty: next to page_client, else on PATH

  /// --timeout-ms when given, else `fallback`.
  std::chrono::milliseconds timeoutOr(std::chrono::milliseconds fallback) const;
};

swipc::ClientOptions toClientOptions(const GlobalOptions& opts);

/// Attaches as described by `opts`.
swipc::Result<swipc::Client> connectClient(const GlobalOptions& opts);

/// The exit code for a failed connect: EXIT_NO_DAEMON when no daemon answered, else EXIT_ERROR.
int connectExitCode(const swipc::Error& error);

/// The poll() timeout that ends at `until`: -1 for NO_DEADLINE, 0 once it has passed.
int pollTimeoutMs(swipc::Deadline until);

/// Writes "page_client: <Name>: <message>" as one line on stderr.
void reportError(const swipc::Error& error);
/// Writes "page_client: <text>" as one line on stderr.
void reportError(const std::string& text);

}  // namespace page_client
