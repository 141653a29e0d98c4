#include "commands.h"

#include <poll.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <optional>

#include "client_events.h"
#include "event_writer.h"
#include "signal_watch.h"
#include "swipc/broadcast_channel.h"
#include "swipc/json.h"

namespace page_client {

namespace {

using namespace std::chrono_literals;

constexpr auto DEFAULT_TIMEOUT = 5000ms;

void printLine(const std::string& text) {
  std::string line = text + '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

/// Waits until the posted message `seq` is consumed by the daemon, reported undelivered, or the
/// deadline passes.
swipc::Result<void> waitDelivered(swipc::Client& client, swipc::MessageSeq seq, swipc::Deadline deadline) {
  std::optional<swipc::Result<void>> outcome;
  client.onDelivered([&](swipc::MessageSeq s) {
    if (s == seq) outcome = swipc::Result<void>{};
  });
  client.onUndelivered([&](swipc::MessageSeq s, const swipc::Error& e) {
    if (s == seq) outcome = swipc::Result<void>{e};
  });
  client.runUntil([&] { return outcome.has_value(); }, deadline);
  if (!outcome) return swipc::makeError(swipc::Errc::TIMEOUT, "the daemon did not acknowledge the message in time");
  return *outcome;
}

/// The one-shot subcommands' common start: parse the JSON argument, attach, then run `body`.
/// Bad JSON exits 1; attach failures exit as connectExitCode says (2 without a daemon).
int withClientAndData(const GlobalOptions& opts, const std::string& json,
                      const std::function<int(swipc::Client&, const swipc::Value&)>& body) {
  auto data = swipc::parseJsonValue(json);
  if (!data) {
    reportError(data.error());
    return EXIT_ERROR;
  }
  auto client = connectClient(opts);
  if (!client) {
    reportError(client.error());
    return connectExitCode(client.error());
  }
  return body(*client, *data);
}

}  // namespace

int runMessageSw(const GlobalOptions& opts, const std::string& json) {
  return withClientAndData(opts, json, [&](swipc::Client& client, const swipc::Value& data) {
    auto reply = client.messageSW(data, opts.timeoutOr(DEFAULT_TIMEOUT));
    if (!reply) {
      reportError(reply.error());
      return reply.error().code == swipc::Errc::TIMEOUT ? EXIT_TIMEOUT : EXIT_ERROR;
    }
    printLine(swipc::toJsonText(*reply));
    return EXIT_OK;
  });
}

int runPost(const GlobalOptions& opts, const std::string& json) {
  return withClientAndData(opts, json, [&](swipc::Client& client, const swipc::Value& data) {
    auto* controller = client.controller();
    if (!controller) {
      reportError(swipc::makeError(swipc::Errc::INVALID_STATE, "this client has no controller"));
      return EXIT_ERROR;
    }
    auto seq = controller->postMessage(data, {.requestAck = true});
    if (!seq) {
      reportError(seq.error());
      return EXIT_ERROR;
    }
    auto delivered = waitDelivered(client, *seq, swipc::deadlineIn(opts.timeoutOr(DEFAULT_TIMEOUT)));
    if (!delivered) {
      reportError(delivered.error());
      return EXIT_ERROR;
    }
    return EXIT_OK;
  });
}

int runBroadcast(const GlobalOptions& opts, const std::string& name, const std::string& json) {
  return withClientAndData(opts, json, [&](swipc::Client& client, const swipc::Value& data) {
    const auto deadline = swipc::deadlineIn(opts.timeoutOr(DEFAULT_TIMEOUT));
    swipc::BroadcastChannel bc(client, name);
    if (!client.runUntil([&] { return bc.joined(); }, deadline)) {
      reportError(swipc::makeError(swipc::Errc::TIMEOUT, "the daemon did not confirm the channel join in time"));
      return EXIT_ERROR;
    }
    auto seq = bc.postMessage(data, {.requestAck = true});
    if (!seq) {
      reportError(seq.error());
      return EXIT_ERROR;
    }
    auto delivered = waitDelivered(client, *seq, deadline);
    if (!delivered) {
      reportError(delivered.error());
      return EXIT_ERROR;
    }
    return EXIT_OK;
  });
}

int runListen(const GlobalOptions& opts, const std::vector<std::string>& channels) {
  SignalWatch signals;  // before connect: library threads must inherit the blocked mask
  auto client = connectClient(opts);
  if (!client) {
    reportError(client.error());
    return connectExitCode(client.error());
  }
  EventWriter out(stdout);
  NamedPorts ports(out, NamedPorts::StartReceived::YES);  // no ops here to start them with
  forwardClientEvents(*client, out, ports);
  Channels joined(*client, out);
  for (const auto& name : channels) {
    if (auto r = joined.open(name, name, nullptr, [](const swipc::Error& e) { reportError(e); }); !r)
      reportError(r.error());
  }
  out.attached(client->id(), client->controlled());
  client->startMessages();
  client->dispatch();
  while (!out.failed()) {
    pollfd fds[] = {{client->fd(), POLLIN, 0}, {signals.fd(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;  // EINTR
    if (fds[1].revents && signals.take() != 0) break;
    if (fds[0].revents) client->dispatch();
  }
  ports.closeAll();  // graceful: every peer gets close
  client->close();
  return out.failed() ? EXIT_ERROR : EXIT_OK;
}

}  // namespace page_client
