// swctl: look into a running sw_daemon (DESIGN §17). Each command opens a fresh connection to the
// scope's socket, sends an InspectRequest instead of a Hello, and prints the daemon's one JSON
// answer (--json) or an aligned table. The daemon never counts it as a client.
//
// Exit status: 0 ok; 1 other errors (refused, protocol); 2 no daemon answering.
#include <CLI/CLI.hpp>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "swipc/inspect.h"
#include "table.h"

namespace {

using Json = nlohmann::ordered_json;

constexpr int EXIT_ERROR = 1;
constexpr int EXIT_NO_DAEMON = 2;  // as page_client's

struct Options {
  std::string scope = "default";
  std::string runtimeDir;
  bool json = false;
  int timeoutMs = 2000;
  int intervalMs = 1000;
};

/// Why swctl stops early: the one line for stderr and the exit status.
struct Failure {
  std::string line;
  int status = EXIT_ERROR;
};

void report(const Failure& f) {
  std::string line = "swctl: " + f.line;
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::fprintf(stderr, "%s\n", line.c_str());
}

/// The daemon's answer to `command`, parsed.
Json ask(const Options& opts, const std::string& command) {
  auto text = swipc::inspectDaemon(opts.runtimeDir, opts.scope, command,
                                   swipc::deadlineIn(std::chrono::milliseconds(opts.timeoutMs)));
  if (!text) {
    // A daemon that never answers is, to the user, no daemon either (page_client says the same).
    bool none = text.error().code == swipc::Errc::NO_DAEMON || text.error().code == swipc::Errc::ATTACH_TIMEOUT;
    throw Failure{text.error().describe(), none ? EXIT_NO_DAEMON : EXIT_ERROR};
  }
  Json j = Json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Failure{"the daemon's answer to '" + command + "' is not a JSON object"};
  return j;
}

/// A cell: strings as they are, null as "-", the rest as JSON.
std::string cell(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "-";
  if (v.is_number_float()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", v.get<double>());
    return buf;
  }
  return v.dump();
}

std::string percent(const Json& fraction) {
  if (!fraction.is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", fraction.get<double>() * 100.0);
  return buf;
}

const Json& field(const Json& obj, const char* key) {
  static const Json NONE;
  auto it = obj.find(key);
  return it == obj.end() ? NONE : *it;
}

// ---- tables, one per command

void printStatus(const Json& j) {
  swctl::Table t({"FIELD", "VALUE"});
  t.add({"pid", cell(field(j, "pid"))});
  t.add({"version", cell(field(j, "version"))});
  t.add({"uptimeMs", cell(field(j, "uptimeMs"))});
  for (const auto& [k, v] : field(j, "counters").items()) t.add({k, cell(v)});
  t.print(stdout);
}

void printClients(const Json& j) {
  swctl::Table t({"ID", "PID", "TYPE", "CONTROLLED", "FOCUSED", "VISIBILITY", "BACKLOG-MSGS", "BACKLOG-BYTES", "URL"});
  for (const auto& c : field(j, "clients"))
    t.add({cell(c["id"]), cell(c["pid"]), cell(c["type"]), cell(c["controlled"]), cell(c["focused"]),
           cell(c["visibilityState"]), cell(c["backlogMessages"]), cell(c["backlogBytes"]), cell(c["url"])});
  t.print(stdout);
}

void printChannels(const Json& j) {
  swctl::Table t({"NAME", "MEMBERS", "RING-FILL", "POSTS", "LAPS"});
  for (const auto& c : field(j, "channels"))
    t.add({cell(c["name"]), cell(c["members"]), percent(c["ringFill"]), cell(c["posts"]), cell(c["laps"])});
  t.print(stdout);
}

void printPorts(const Json& j) {
  swctl::Table t({"OPEN", "IN-TRANSIT"});
  t.add({cell(field(j, "open")), cell(field(j, "inTransit"))});
  t.print(stdout);
}

void printSync(const Json& j) {
  swctl::Table t({"TAG", "STATE", "ATTEMPTS", "ENTRIES", "NEXT-ATTEMPT-MS"});
  for (const auto& s : field(j, "tags"))
    t.add({cell(s["tag"]), cell(s["state"]), cell(s["attempts"]), cell(s["entries"]), cell(s["nextAttemptMs"])});
  t.print(stdout);
}

void printFetches(const Json& j) {
  swctl::Table t({"ID", "DOWNLOADED", "DOWNLOAD-TOTAL", "UPLOADED", "UPLOAD-TOTAL", "RESULT", "FAILURE", "RECORDS"});
  for (const auto& f : field(j, "fetches")) {
    auto text = [&](const char* k) { return f[k].is_string() && f[k].get<std::string>().empty() ? "-" : cell(f[k]); };
    t.add({cell(f["id"]), cell(f["downloaded"]), cell(f["downloadTotal"]), cell(f["uploaded"]), cell(f["uploadTotal"]),
           text("result"), text("failureReason"), cell(f["recordsAvailable"])});
  }
  t.print(stdout);
}

// ---- watch

volatile sig_atomic_t interrupted = 0;

void onInterrupt(int) { interrupted = 1; }

/// Sleeps `ms` or until SIGINT/SIGTERM (the handler has no SA_RESTART: poll returns EINTR).
void waitInterval(int ms) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!interrupted) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
    if (left <= 0) return;
    ::poll(nullptr, 0, static_cast<int>(left));
  }
}

std::string rate(double perSecond) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", perSecond);
  return buf;
}

int watch(const Options& opts) {
  struct sigaction sa {};
  sa.sa_handler = onInterrupt;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  const bool tty = ::isatty(STDOUT_FILENO) == 1;
  std::map<std::string, int64_t> before;
  auto beforeAt = std::chrono::steady_clock::now();
  if (tty) std::fputs("\x1b[?25l", stdout);  // hide the cursor while redrawing
  int status = 0;
  for (uint64_t n = 1; !interrupted; ++n) {
    Json st, cl, ch;
    try {
      st = ask(opts, "status");
      cl = ask(opts, "clients");
      ch = ask(opts, "channels");
    } catch (const Failure& f) {
      if (tty) std::fputs("\x1b[?25h", stdout);
      std::fflush(stdout);
      report(f);
      return f.status;
    }
    auto now = std::chrono::steady_clock::now();
    double seconds = std::chrono::duration<double>(now - beforeAt).count();
    uint64_t backlogMessages = 0, backlogBytes = 0;
    for (const auto& c : field(cl, "clients")) {
      backlogMessages += c.value("backlogMessages", uint64_t{0});
      backlogBytes += c.value("backlogBytes", uint64_t{0});
    }
    std::map<std::string, int64_t> counters;
    for (const auto& [k, v] : field(st, "counters").items())
      if (v.is_number_integer()) counters[k] = v.get<int64_t>();
    // Per second since the last snapshot; the first shows none. Gauges show their value.
    std::vector<std::pair<std::string, std::string>> rates;
    for (const auto& [k, v] : counters) {
      if (k == "portsOpen" || k == "channelsOpen") continue;
      auto it = before.find(k);
      double r = (it == before.end() || seconds <= 0) ? 0.0 : static_cast<double>(v - it->second) / seconds;
      if (r != 0.0 || k == "messagesIn" || k == "messagesOut") rates.emplace_back(k, rate(r));
    }
    before = std::move(counters);
    beforeAt = now;

    const size_t clientCount = field(cl, "clients").size();
    if (tty) {
      std::fputs("\x1b[H\x1b[2J", stdout);  // home, clear: redraw in place
      std::printf("swctl watch  scope=%s  pid=%s  version=%s  uptime=%ss   (Ctrl-C to quit)\n\n", opts.scope.c_str(),
                  cell(field(st, "pid")).c_str(), cell(field(st, "version")).c_str(),
                  rate(field(st, "uptimeMs").get<double>() / 1000.0).c_str());
      std::printf("clients %zu   backlog %llu messages, %llu bytes\n\n", clientCount,
                  static_cast<unsigned long long>(backlogMessages), static_cast<unsigned long long>(backlogBytes));
      printChannels(ch);
      std::printf("\n");
      swctl::Table t({"COUNTER", "PER-SECOND"});
      for (const auto& [k, r] : rates) t.add({k, r});
      t.print(stdout);
    } else {
      // One snapshot as plain lines: a line that starts with "snapshot", then one per channel.
      std::string line = "snapshot " + std::to_string(n) + " clients=" + std::to_string(clientCount) +
                         " backlogMessages=" + std::to_string(backlogMessages) +
                         " backlogBytes=" + std::to_string(backlogBytes);
      for (const auto& [k, r] : rates) line += " " + k + "/s=" + r;
      std::printf("%s\n", line.c_str());
      for (const auto& c : field(ch, "channels"))
        std::printf("channel %s members=%s fill=%s posts=%s laps=%s\n", cell(c["name"]).c_str(),
                    cell(c["members"]).c_str(), cell(c["ringFill"]).c_str(), cell(c["posts"]).c_str(),
                    cell(c["laps"]).c_str());
    }
    std::fflush(stdout);
    waitInterval(opts.intervalMs);
  }
  if (tty) std::fputs("\x1b[?25h\n", stdout);
  std::fflush(stdout);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"swctl: inspect a running sw_daemon (clients, channels, ports, sync, fetches)"};
  Options opts;
  app.add_option("--scope", opts.scope, "Scope whose daemon to inspect")->capture_default_str();
  app.add_option("--runtime-dir", opts.runtimeDir,
                 "Runtime directory (default: $SWIPC_RUNTIME_DIR, else $XDG_RUNTIME_DIR/swipc, else /tmp/swipc-<uid>)");
  app.add_flag("--json", opts.json, "Print the daemon's answer as one JSON object");
  app.add_option("--timeout-ms", opts.timeoutMs, "How long to wait for the daemon's answer")
      ->capture_default_str()
      ->check(CLI::Range(1, 600'000));
  app.add_option("--interval-ms", opts.intervalMs, "watch: time between snapshots")
      ->capture_default_str()
      ->check(CLI::Range(10, 3'600'000));
  app.require_subcommand(1, 1);
  const std::vector<std::pair<std::string, std::string>> commands = {
      {"status", "Daemon pid, version, uptime and counters"},
      {"clients", "Attached clients in matchAll({includeUncontrolled: true, type: \"all\"}) order, with backlog"},
      {"channels", "Open BroadcastChannels: members, ring fill, posts"},
      {"ports", "MessagePorts: open, in transit"},
      {"sync", "Background Sync one-shot tags"},
      {"fetches", "Background Fetch registrations"},
      {"watch", "Live view, refreshed every --interval-ms until Ctrl-C (plain snapshots when not a terminal)"}};
  for (const auto& [name, help] : commands) app.add_subcommand(name, help);
  CLI11_PARSE(app, argc, argv);
  const std::string command = app.get_subcommands().front()->get_name();
  ::signal(SIGPIPE, SIG_IGN);
  try {
    if (command == "watch") return watch(opts);
    Json j = ask(opts, command);
    if (opts.json) {
      std::printf("%s\n", j.dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
      return 0;
    }
    if (command == "status") printStatus(j);
    else if (command == "clients") printClients(j);
    else if (command == "channels") printChannels(j);
    else if (command == "ports") printPorts(j);
    else if (command == "sync") printSync(j);
    else printFetches(j);
    return 0;
  } catch (const Failure& f) {
    report(f);
    return f.status;
  }
}
