// The one-shot subcommands of page_client (DESIGN §6). Each returns the process exit code.
#pragma once

#include <string>
#include <vector>

#include "cli_support.h"

namespace page_client {

/// Workbox messageSW: prints the reply's data as one JSON line.
int runMessageSw(const GlobalOptions& opts, const std::string& json);
/// controller.postMessage; returns once the daemon has consumed the message.
int runPost(const GlobalOptions& opts, const std::string& json);
/// Posts once on a BroadcastChannel.
int runBroadcast(const GlobalOptions& opts, const std::string& name, const std::string& json);
/// Prints every event as JSON lines until SIGINT/SIGTERM.
int runListen(const GlobalOptions& opts, const std::vector<std::string>& channels);

}  // namespace page_client
