#include "script_driver.h"

#include <poll.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "cli_support.h"
#include "swipc/json.h"

namespace page_client {

namespace {

using nlohmann::json;

swipc::Error typeError(std::string message) { return swipc::makeError(swipc::Errc::TYPE, std::move(message)); }

std::string_view trim(std::string_view s) {
  constexpr std::string_view SPACE = " \t\r\n";
  auto first = s.find_first_not_of(SPACE);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(SPACE) - first + 1);
}

/// Parses one op line: a JSON object, or a TypeError carrying the parser's message.
swipc::Result<json> parseOpLine(std::string_view line) {
  json op;
  try {
    op = json::parse(line);
  } catch (const json::parse_error& e) {
    std::string what = e.what();
    auto bracket = what.find("] ");  // drop nlohmann's "[json.exception.parse_error.101] " prefix
    return typeError("malformed op line: " + (bracket == std::string::npos ? what : what.substr(bracket + 2)));
  }
  if (!op.is_object()) return typeError("an op line must be a JSON object");
  return op;
}

/// The op's "data" as a Value; TypeError when missing or without a Value form.
swipc::Result<swipc::Value> opData(const json& op) {
  auto it = op.find("data");
  if (it == op.end()) return typeError("op needs \"data\"");
  return swipc::fromJson(*it);
}

/// The op's optional "timeoutMs": nullopt when absent or null (no timeout).
swipc::Result<std::optional<swipc::Deadline>> opDeadline(const json& op) {
  auto it = op.find("timeoutMs");
  if (it == op.end() || it->is_null()) return std::optional<swipc::Deadline>{};
  if (!it->is_number() || it->get<double>() < 0) return typeError("\"timeoutMs\" must be a non-negative number");
  auto timeout = std::chrono::duration<double, std::milli>(it->get<double>());
  return std::optional<swipc::Deadline>{swipc::Clock::now() + std::chrono::ceil<swipc::Clock::duration>(timeout)};
}

}  // namespace

ScriptDriver::ScriptDriver(swipc::Client& client, EventWriter& out, int inputFd, SignalWatch& signals,
                           std::chrono::milliseconds drainTimeout)
    : client_(client),
      out_(out),
      input_(inputFd),
      signals_(signals),
      drainTimeout_(drainTimeout),
      ports_(out, NamedPorts::StartReceived::NO),
      channels_(client, out),
      sync_(client, out),
      fetch_(client, out) {}

int ScriptDriver::run() {
  forwardClientEvents(client_, out_, ports_);
  client_.onDelivered([this](swipc::MessageSeq seq) { onDelivered(seq); });
  client_.onUndelivered([this](swipc::MessageSeq seq, const swipc::Error& e) { onUndelivered(seq, e); });
  out_.attached(client_.id(), client_.controlled());

  while (!exitCode_ && !out_.failed()) pollOnce();
  if (!out_.failed()) drain();
  if (exitId_) out_.ok(*exitId_);
  ports_.closeAll();  // graceful: every peer gets close
  client_.close();
  return out_.failed() ? EXIT_ERROR : exitCode_.value_or(EXIT_OK);
}

void ScriptDriver::pollOnce() {
  pollfd fds[] = {{client_.fd(), POLLIN, 0}, {signals_.fd(), POLLIN, 0}, {-1, POLLIN, 0}};
  if (inputOpen_) fds[2].fd = input_.fd();
  if (::poll(fds, 3, -1) < 0) return;  // EINTR
  if (fds[1].revents && signals_.take() != 0) return finish(EXIT_OK);
  if (fds[0].revents) client_.dispatch();
  if (!fds[2].revents) return;

  auto batch = input_.readAvailable();
  for (size_t i = 0; i < batch.tooLong; ++i) out_.error(std::nullopt, typeError("op line too long"));
  for (const auto& line : batch.lines) {
    if (exitCode_) return;  // lines after exit are not run
    handleLine(line);
    client_.dispatch();
  }
  if (batch.end) {
    inputOpen_ = false;
    finish(EXIT_OK);
  }
}

void ScriptDriver::handleLine(std::string_view line) {
  line = trim(line);
  if (line.empty()) return;
  auto op = parseOpLine(line);
  if (!op) return out_.error(std::nullopt, op.error());
  OpId id;
  if (auto it = op->find("id"); it != op->end()) id = *it;
  handleOp(*op, id);
}

void ScriptDriver::handleOp(const json& op, const OpId& id) {
  auto it = op.find("op");
  if (it == op.end() || !it->is_string()) return out_.error(id, typeError("op line needs a string \"op\""));
  const auto& name = it->get_ref<const std::string&>();
  if (name == "startMessages") return opStartMessages(id);
  if (name == "post") return opPost(op, id);
  if (name == "messageSW") return opMessageSw(op, id);
  if (name == "exit") return opExit(op, id);
  if (name == "bc.open") return opBcOpen(op, id);
  if (name == "bc.post") return opBcPost(op, id);
  if (name == "bc.close") return opBcClose(op, id);
  if (name == "setFocus") return opSetFocus(op, id);
  if (name == "setVisibility") return opSetVisibility(op, id);
  if (name == "channel.create") return opChannelCreate(op, id);
  if (name == "port.post") return opPortPost(op, id);
  if (name == "port.start") return opPortStart(op, id);
  if (name == "port.close") return opPortClose(op, id);
  if (sync_.handle(name, op, id)) return;
  if (fetch_.handle(name, op, id)) return;
  out_.error(id, typeError("unknown op '" + name + "'"));
}

void ScriptDriver::opStartMessages(const OpId& id) {
  client_.startMessages();
  if (id) out_.ok(*id);
}

void ScriptDriver::opPost(const json& op, const OpId& id) {
  auto data = opData(op);
  if (!data) return out_.error(id, data.error());
  auto transfer = opTransfer(op);
  if (!transfer) return out_.error(id, transfer.error());
  auto* controller = client_.controller();
  if (!controller)
    return out_.error(id, swipc::makeError(swipc::Errc::INVALID_STATE, "this client has no controller"));
  // Always ask for the ack: "ok" must mean consumed by the daemon, and a graceful exit waits for it.
  auto seq = controller->postMessage(*data, std::move(*transfer), {.requestAck = true});
  if (!seq) return out_.error(id, seq.error());
  pendingPosts_.emplace(*seq, id);
}

void ScriptDriver::opMessageSw(const json& op, const OpId& id) {
  auto data = opData(op);
  if (!data) return out_.error(id, data.error());
  auto deadline = opDeadline(op);
  if (!deadline) return out_.error(id, deadline.error());
  uint64_t request = nextRequest_++;
  pendingRequests_.emplace(request, id);  // before the call: `done` may run inside it
  client_.messageSWAsync(
      *data, [this, request](swipc::Result<swipc::Value> reply) { onReply(request, reply); }, *deadline);
}

void ScriptDriver::opExit(const json& op, const OpId& id) {
  int code = EXIT_OK;
  if (auto it = op.find("code"); it != op.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 255)
      return out_.error(id, typeError("\"code\" must be an integer from 0 to 255"));
    code = it->get<int>();
  }
  finish(code, id);
}

namespace {
/// The op's string field `key`; TypeError when missing or not a string.
swipc::Result<std::string> opString(const json& op, const char* key) {
  auto it = op.find(key);
  if (it == op.end() || !it->is_string()) return typeError(std::string("op needs a string \"") + key + "\"");
  return it->get<std::string>();
}
}  // namespace

void ScriptDriver::opBcOpen(const json& op, const OpId& id) {
  auto bc = opString(op, "bc");
  if (!bc) return out_.error(id, bc.error());
  auto name = opString(op, "name");
  if (!name) return out_.error(id, name.error());
  // ok once the daemon has processed the join: from then on every post reaches this object.
  auto opened = channels_.open(
      *bc, *name,
      [this, id] {
        if (id) out_.ok(*id);
      },
      [this, id](const swipc::Error& err) { out_.error(id, err); });
  if (!opened) return out_.error(id, opened.error());
}

void ScriptDriver::opBcPost(const json& op, const OpId& id) {
  auto bc = opString(op, "bc");
  if (!bc) return out_.error(id, bc.error());
  auto data = opData(op);
  if (!data) return out_.error(id, data.error());
  auto* obj = channels_.find(*bc);
  if (!obj) return out_.error(id, swipc::makeError(swipc::Errc::NOT_FOUND, "no BroadcastChannel object '" + *bc + "'"));
  auto seq = obj->postMessage(*data, {.requestAck = true});
  if (!seq) return out_.error(id, seq.error());
  pendingPosts_.emplace(*seq, id);  // ok once the post is in the channel ring
}

void ScriptDriver::opBcClose(const json& op, const OpId& id) {
  auto bc = opString(op, "bc");
  if (!bc) return out_.error(id, bc.error());
  auto* obj = channels_.find(*bc);
  if (!obj) return out_.error(id, swipc::makeError(swipc::Errc::NOT_FOUND, "no BroadcastChannel object '" + *bc + "'"));
  obj->close();
  if (id) out_.ok(*id);
}

void ScriptDriver::opSetFocus(const json& op, const OpId& id) {
  auto it = op.find("focused");
  if (it == op.end() || !it->is_boolean()) return out_.error(id, typeError("op needs a boolean \"focused\""));
  auto r = client_.setFocus(it->get<bool>());
  if (!r) return out_.error(id, r.error());
  if (id) out_.ok(*id);
}

void ScriptDriver::opSetVisibility(const json& op, const OpId& id) {
  auto state = opString(op, "state");
  if (!state) return out_.error(id, state.error());
  if (*state != "visible" && *state != "hidden")
    return out_.error(id, typeError("\"state\" must be \"visible\" or \"hidden\""));
  auto r = client_.setVisibility(*state == "visible");
  if (!r) return out_.error(id, r.error());
  if (id) out_.ok(*id);
}

void ScriptDriver::opChannelCreate(const json& op, const OpId& id) {
  auto port1 = opString(op, "port1");
  if (!port1) return out_.error(id, port1.error());
  auto port2 = opString(op, "port2");
  if (!port2) return out_.error(id, port2.error());
  if (*port1 == *port2) return out_.error(id, typeError("\"port1\" and \"port2\" need different names"));
  for (const auto* name : {&*port1, &*port2})
    if (auto r = ports_.checkName(*name); !r) return out_.error(id, r.error());
  auto channel = swipc::MessageChannel::create(client_);
  ports_.add(*port1, std::move(channel.port1));
  ports_.add(*port2, std::move(channel.port2));
  if (id) out_.ok(*id);
}

void ScriptDriver::opPortPost(const json& op, const OpId& id) {
  auto port = opPort(op, "port");
  if (!port) return out_.error(id, port.error());
  auto data = opData(op);
  if (!data) return out_.error(id, data.error());
  auto transfer = opTransfer(op);
  if (!transfer) return out_.error(id, transfer.error());
  // Accepted locally is all a port post can say: delivery is asynchronous (DESIGN §9).
  if (auto r = (*port)->postMessage(*data, std::move(*transfer)); !r) return out_.error(id, r.error());
  if (id) out_.ok(*id);
}

void ScriptDriver::opPortStart(const json& op, const OpId& id) {
  auto port = opPort(op, "port");
  if (!port) return out_.error(id, port.error());
  ports_.start(op.at("port").get<std::string>());  // opPort checked it is a known name
  if (id) out_.ok(*id);
}

void ScriptDriver::opPortClose(const json& op, const OpId& id) {
  auto port = opPort(op, "port");
  if (!port) return out_.error(id, port.error());
  (*port)->close();
  if (id) out_.ok(*id);
}

swipc::Result<swipc::MessagePort*> ScriptDriver::opPort(const json& op, const char* key) {
  auto name = opString(op, key);
  if (!name) return name.error();
  auto* port = ports_.find(*name);
  if (!port) return swipc::makeError(swipc::Errc::NOT_FOUND, "no port named '" + *name + "'");
  return port;
}

swipc::Result<swipc::TransferList> ScriptDriver::opTransfer(const json& op) {
  auto it = op.find("transfer");
  if (it == op.end() || it->is_null()) return swipc::TransferList{};
  if (!it->is_array()) return typeError("\"transfer\" must be a list of port names");
  std::vector<swipc::MessagePort> ports;
  ports.reserve(it->size());
  for (const auto& name : *it) {
    if (!name.is_string()) return typeError("\"transfer\" must be a list of port names");
    auto* port = ports_.find(name.get_ref<const std::string&>());
    if (!port) return swipc::makeError(swipc::Errc::NOT_FOUND, "no port named '" + name.get<std::string>() + "'");
    ports.push_back(*port);  // a handle to the same port: the library neuters every handle
  }
  return swipc::TransferList(std::move(ports));
}

void ScriptDriver::onReply(uint64_t request, const swipc::Result<swipc::Value>& reply) {
  auto it = pendingRequests_.find(request);
  if (it == pendingRequests_.end()) return;  // already reported (abandoned at exit)
  OpId id = std::move(it->second);
  pendingRequests_.erase(it);
  if (!reply) return out_.error(id, reply.error());
  if (id) out_.ok(*id, {{"data", nlohmann::ordered_json(swipc::toJson(*reply))}});
}

void ScriptDriver::onDelivered(swipc::MessageSeq seq) {
  auto it = pendingPosts_.find(seq);
  if (it == pendingPosts_.end()) return;
  if (it->second) out_.ok(*it->second);
  pendingPosts_.erase(it);
}

void ScriptDriver::onUndelivered(swipc::MessageSeq seq, const swipc::Error& error) {
  auto it = pendingPosts_.find(seq);
  if (it == pendingPosts_.end()) return;  // e.g. a messageSW request: its `done` reports it
  out_.error(it->second, error);
  pendingPosts_.erase(it);
}

void ScriptDriver::drain() {
  auto deadline = swipc::deadlineIn(drainTimeout_);
  while ((!pendingPosts_.empty() || !pendingRequests_.empty() || sync_.pending() > 0 ||
          fetch_.pending() > 0) &&
         swipc::Clock::now() < deadline &&
         !out_.failed()) {
    pollfd fds[] = {{client_.fd(), POLLIN, 0}, {signals_.fd(), POLLIN, 0}};
    ::poll(fds, 2, pollTimeoutMs(deadline));
    if (fds[1].revents && signals_.take() != 0) break;  // asked again: stop waiting
    client_.dispatch();
  }
  auto abandoned = swipc::makeError(swipc::Errc::ABORT, "exited before the daemon confirmed it");
  for (const auto& [seq, id] : pendingPosts_) out_.error(id, abandoned);
  for (const auto& [request, id] : pendingRequests_) out_.error(id, abandoned);
  pendingPosts_.clear();
  pendingRequests_.clear();
}

void ScriptDriver::finish(int code, OpId id) {
  if (exitCode_) return;
  exitCode_ = code;
  exitId_ = std::move(id);
}

}  // namespace page_client

namespace page_client {

int runScript(const GlobalOptions& opts) {
  SignalWatch signals;  // before connect: library threads must inherit the blocked mask
  auto client = connectClient(opts);
  if (!client) {
    reportError(client.error());
    return connectExitCode(client.error());
  }
  EventWriter out(stdout);
  ScriptDriver driver(*client, out, STDIN_FILENO, signals, opts.timeoutOr(std::chrono::milliseconds(5000)));
  return driver.run();
}

}  // namespace page_client
