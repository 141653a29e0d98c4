// page_client: a page for the command line (DESIGN §6). One-shot subcommands (message-sw, post,
// broadcast, listen) and `script`, the JSON-lines driver that tests and tools use.
#include <CLI/CLI.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <optional>
#include <string>
#include <vector>

#include "cli_support.h"
#include "commands.h"
#include "swipc/log.h"
#include "script_driver.h"
#include "sync_ops.h"
#include "fetch_ops.h"

namespace {

using page_client::GlobalOptions;

/// A closed stdin/stdout/stderr would be reused by the next fd opened (the signalfd, the
/// library's sockets), and reading "stdin" would then read those: park them on /dev/null.
void openStandardFds() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) >= 0) continue;
    int opened = ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (opened >= 0 && opened != fd) ::close(opened);  // cannot happen: open takes the lowest free fd
  }
}

void addGlobalOptions(CLI::App& app, GlobalOptions& opts) {
  app.add_option("--scope", opts.scope, "Scope (app) whose service worker to attach to")->capture_default_str();
  app.add_option("--runtime-dir", opts.runtimeDir,
                 "Runtime directory (default: $SWIPC_RUNTIME_DIR, $XDG_RUNTIME_DIR/swipc or /tmp/swipc-<uid>)");
  app.add_option("--url", opts.url, "This client's URL (default: app://<scope>/)");
  app.add_option("--type", opts.type, "Client type")->check(CLI::IsMember({"window", "worker"}))->capture_default_str();
  app.add_flag("--uncontrolled", opts.uncontrolled, "Attach without becoming controlled (until the daemon claims)");
  app.add_option("--log-level", opts.logLevel, "trace|debug|info|warn|error|critical|off (stderr)")
      ->capture_default_str();
  const auto attachDefault = std::to_string(swipc::ClientOptions{}.attachTimeout.count());
  app.add_option("--timeout-ms", opts.timeoutMs,
                 "Attach timeout (default " + attachDefault +
                     ") and how long message-sw, post and a graceful script exit wait (default 5000)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--spawn-daemon", opts.spawnDaemon,
               "When no daemon answers, start sw_daemon for the scope (detached; logs to "
               "<runtime-dir>/<scope>/daemon.log) and attach to it");
  app.add_option("--daemon-path", opts.daemonPath,
                 "The sw_daemon --spawn-daemon starts (default: next to page_client, else on PATH)");
}

}  // namespace

int main(int argc, char** argv) {
  openStandardFds();
  std::signal(SIGPIPE, SIG_IGN);  // a closed stdout is a write error, reported, not a crash

  CLI::App app{"page_client: a service-worker client (page) for swipc"};
  app.fallthrough();  // global options may follow the subcommand; subcommands made below inherit this
  app.require_subcommand(1);
  GlobalOptions opts;
  addGlobalOptions(app, opts);

  std::string json;
  std::string channelName;
  std::vector<std::string> channels;
  auto* messageSw = app.add_subcommand("message-sw", "Workbox messageSW: print the reply's data as one JSON line");
  messageSw->add_option("json", json, "Message data (JSON)")->required();
  auto* post = app.add_subcommand("post", "controller.postMessage; returns when the daemon has consumed it");
  post->add_option("json", json, "Message data (JSON)")->required();
  auto* broadcast = app.add_subcommand("broadcast", "Post once on a BroadcastChannel");
  broadcast->add_option("name", channelName, "Channel name")->required();
  broadcast->add_option("json", json, "Message data (JSON)")->required();
  auto* listen = app.add_subcommand("listen", "Print every event as JSON lines until SIGINT/SIGTERM");
  listen->add_option("--channel", channels, "Also listen on this BroadcastChannel (repeatable)");
  auto* script = app.add_subcommand("script", "Read op lines on stdin, write event lines on stdout");
  std::string syncTag;
  std::optional<std::string> syncData;
  auto* sync = app.add_subcommand("sync", "Background Sync: register TAG; exits once the daemon has committed it");
  sync->add_option("tag", syncTag, "Sync tag")->required();
  sync->add_option("--data", syncData, "An entry for the tag's durable queue (JSON)");
  std::string fetchId;
  std::vector<std::string> fetchUrls;
  uint64_t fetchDownloadTotal = 0;
  bool fetchDetach = false;
  auto* fetch = app.add_subcommand(
      "fetch", "Background Fetch: register ID for URL..., follow its progress, print the final registration");
  fetch->add_option("id", fetchId, "Background fetch id")->required();
  fetch->add_option("urls", fetchUrls, "URLs to download (http, https)")->required();
  fetch->add_option("--download-total", fetchDownloadTotal, "Expected bytes in all (0: not given; more fails)");
  fetch->add_flag("--detach", fetchDetach, "Print the registration and exit once registered (it goes on)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? page_client::EXIT_OK : page_client::EXIT_ERROR;
  }

  if (auto logged = swipc::initLogging("page_client", opts.logLevel); !logged) {
    page_client::reportError(logged.error());
    return page_client::EXIT_ERROR;
  }

  if (*messageSw) return page_client::runMessageSw(opts, json);
  if (*post) return page_client::runPost(opts, json);
  if (*broadcast) return page_client::runBroadcast(opts, channelName, json);
  if (*listen) return page_client::runListen(opts, channels);
  if (*script) return page_client::runScript(opts);
  if (*sync) return page_client::runSync(opts, syncTag, syncData);
  if (*fetch) return page_client::runFetch(opts, fetchId, fetchUrls, fetchDownloadTotal, fetchDetach);
  return page_client::EXIT_ERROR;
}
