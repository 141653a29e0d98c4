#include "page/connection_state.h"

#include <poll.h>
#include <sys/epoll.h>

#include <algorithm>
#include <cstdlib>

#include "core/log.h"
#include "page/daemon_spawn.h"

namespace swipc::page {

using core::Connection;

namespace {
/// What a page reads on the fast lane (wire/plain_post.h).
constexpr uint32_t PLAIN_KINDS =
    wire::kindBit(schema::Envelope::CLIENT_POST) | wire::kindBit(schema::Envelope::PORT_MESSAGE);
}  // namespace

ConnectionState::ConnectionState(ClientOptions opts, core::EventLoop& loop, PageEvents& events, OpTable& ops,
                                 AttachFn attach)
    : opts_(std::move(opts)), loop_(loop), events_(events), attach_(std::move(attach)) {
  if (!attach_) {
    attach_ = [this](const core::HelloInfo& hello, Deadline deadline) -> Result<core::Attached> {
      // A squatter's directory is refused before we connect into it (DESIGN §3).
      if (auto r = core::checkScopeDirs(paths_); !r) return r.error();
      return core::attachToDaemon(paths_.socket, hello, deadline);
    };
  }
  ops.on(schema::Envelope::CONTROLLER_CHANGE, [this](schema::Envelope::Reader env, const auto&) {
    const bool now = env.getControllerChange().getControlled();
    if (now == controlled_) return;
    controlled_ = now;
    if (now) opts_.controlled = true;  // stay controlled across re-attaches, as a claimed page does
    events_.controllerChange(now);
  });
  ops.on(schema::Envelope::NAVIGATE, [this](schema::Envelope::Reader env, const auto&) {
    std::string url = env.getNavigate().getUrl().cStr();
    opts_.url = url;
    events_.navigate(std::move(url));
  });
  ops.on(schema::Envelope::FOCUS, [this](schema::Envelope::Reader, const auto&) {
    focused_ = true;
    events_.focus();
  });
}

// ------------------------------------------------------------------------------------------------ attach

core::HelloInfo ConnectionState::hello() const {
  core::HelloInfo hello;
  hello.protocolVersion = schema::PROTOCOL_VERSION;
  hello.type = opts_.type == ClientType::WORKER ? ClientType::WORKER : ClientType::WINDOW;
  hello.url = opts_.url;
  hello.controlled = opts_.controlled;
  return hello;
}

Result<void> ConnectionState::start() {
  SWIPC_REQUIRE(sink_ != nullptr, "ConnectionState::start() before setEvents()");
  auto paths = core::scopePaths(opts_.runtimeDir, opts_.scope);
  if (!paths) return paths.error();
  paths_ = *paths;
  if (opts_.url.empty()) opts_.url = "app://" + opts_.scope + "/";
  if (opts_.openToken.empty()) {
    if (const char* t = std::getenv("SWIPC_OPEN_TOKEN"); t && *t) {
      opts_.openToken = t;
      ::unsetenv("SWIPC_OPEN_TOKEN");  // meant for this page only, not for its children
    }
  }
  core::HelloInfo h = hello();
  h.openToken = opts_.openToken;
  auto attached = attach_(h, deadlineIn(opts_.attachTimeout));
  if (!attached && attached.error().code == Errc::NO_DAEMON && opts_.spawnDaemon) attached = spawnAndAttach(h);
  if (!attached) return attached.error();
  install(std::move(*attached));
  return {};
}

Result<core::Attached> ConnectionState::spawnAndAttach(const core::HelloInfo& hello) {
  auto daemonPath = resolveDaemonPath(opts_.daemonPath);
  if (!daemonPath) return daemonPath.error();
  if (auto r = spawnDaemon(*daemonPath, opts_.scope, paths_); !r) return r.error();
  // It answers once it holds the scope's lock and listens (or another page's daemon does):
  // until then connect() says NoDaemon. Poll with backoff until the deadline.
  const Deadline deadline = deadlineIn(opts_.spawnTimeout);
  auto pause = std::chrono::milliseconds(5);
  for (;;) {
    auto attached = attach_(hello, deadline);
    if (attached || attached.error().code != Errc::NO_DAEMON) return attached;
    const auto now = Clock::now();
    if (now >= deadline)
      return makeError(Errc::NO_DAEMON, "started " + *daemonPath + " for scope '" + opts_.scope +
                                            "', but no daemon answered within " +
                                            std::to_string(opts_.spawnTimeout.count()) + " ms (its log: " +
                                            daemonLogPath(paths_) + "): " + attached.error().message);
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
    ::poll(nullptr, 0, static_cast<int>(std::min(pause, left).count()));
    pause = std::min(pause * 2, std::chrono::milliseconds(100));
  }
}

void ConnectionState::install(core::Attached attached) {
  conn_ = std::move(attached.connection);
  ++generation_;
  id_ = attached.welcome.clientId;
  token_ = attached.welcome.resumeToken;
  haveToken_ = true;
  controlled_ = attached.welcome.controlled;
  swVersion_ = attached.welcome.swVersion;
  auto w = loop_.watch(conn_->socketFd(), EPOLLIN | EPOLLRDHUP, [this](uint32_t ev) { onSocket(ev); });
  SWIPC_ASSERT(w.ok(), "cannot watch the control socket");
  socketWatch_ = *w;
  wakeWatch_ = 0;
  if (conn_->wakeReadFd() >= 0) {  // else socket wakes: onSocket() reads the ring after pumping
    auto ww = loop_.watch(conn_->wakeReadFd(), EPOLLIN, [this](uint32_t) { onWake(); });
    SWIPC_ASSERT(ww.ok(), "cannot watch the wake pipe");
    wakeWatch_ = *ww;
  }
  core::log().debug("attached client={} controlled={} sw_version={}", id_.toString(), controlled_, swVersion_);
}

void ConnectionState::scheduleReconnect() {
  if (closed_ || !opts_.reconnect || reconnectTimer_) return;
  reconnectTimer_ = loop_.addTimer(deadlineIn(backoff_), [this] {
    reconnectTimer_ = 0;
    tryReconnect();
  });
  backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(400));
}

void ConnectionState::tryReconnect() {
  if (closed_ || conn_) return;
  core::HelloInfo h = hello();
  if (haveToken_) h.resumeToken = token_;
  auto attached = attach_(h, deadlineIn(std::min(opts_.attachTimeout, std::chrono::milliseconds(1000))));
  if (!attached) {
    core::log().debug("re-attach failed: {}", attached.error().describe());
    scheduleReconnect();
    return;
  }
  backoff_ = std::chrono::milliseconds(50);
  install(std::move(*attached));
  sink_->reattached();
  core::log().info("re-attached client={} controlled={}", id_.toString(), controlled_);
  if (controlled_) events_.controllerChange(true);
}

// ------------------------------------------------------------------------------------------------ detach

void ConnectionState::lost(const std::string& reason) {
  if (conn_) sink_->lost(reason);
}

void ConnectionState::stopWatching() {
  loop_.unwatch(socketWatch_);
  loop_.unwatch(wakeWatch_);
}

bool ConnectionState::release() {
  conn_.reset();
  ++generation_;
  const bool wasControlled = controlled_;
  controlled_ = false;
  return wasControlled;
}

bool ConnectionState::beginClose() {
  if (closed_) return false;
  closed_ = true;
  if (reconnectTimer_) loop_.cancelTimer(reconnectTimer_);
  reconnectTimer_ = 0;
  return true;
}

void ConnectionState::sendGoodbye() {
  if (!conn_) return;
  capnp::MallocMessageBuilder mb(64);
  mb.initRoot<schema::Control>().initGoodbye().setReason("client closed");
  conn_->sendControl(mb);
}

// ------------------------------------------------------------------------------------------------ inbound

void ConnectionState::onWake() {
  if (!conn_) return;
  conn_->drainWakes();  // before reading the ring: a wake that comes after is for news after
  drainIncoming();
}

void ConnectionState::onSocket(uint32_t events) {
  if (!conn_) return;
  const uint64_t gen = generation_;
  Error err;
  std::string lostReason;
  auto s = conn_->pumpSocket(
      [&](wire::Inbound&& in) {
        auto c = in.control();
        if (c.isGoodbye()) lostReason = std::string("daemon said goodbye: ") + c.getGoodbye().getReason().cStr();
        if (c.isError()) {
          lostReason = std::string(c.getError().getName().cStr()) + ": " + c.getError().getMessage().cStr();
          core::log().warn("daemon reported {}", lostReason);
        }
      },
      err);
  drainIncoming();  // messages the daemon committed before leaving are still ours
  if (gen != generation_ || !conn_) return;
  if (s == core::IoStatus::FAILED) return lost("ProtocolViolation: " + err.message);
  if (s == core::IoStatus::CLOSED || (events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)))
    return lost(lostReason.empty() ? "daemon hung up" : lostReason);
  if (!lostReason.empty()) return lost(lostReason);
}

void ConnectionState::drainIncoming() {
  if (!conn_) return;
  const uint64_t gen = generation_;
  for (;;) {
    wire::Inbound in;
    wire::PlainMessage plain;
    Value data;
    Error err;
    auto s = conn_->receive(in, plain, data, PLAIN_KINDS, err, filter_);
    if (s == Connection::RecvStatus::VIOLATION) {
      core::log().error("daemon wrote a malformed message: {}", err.describe());
      return lost("ProtocolViolation: " + err.message);
    }
    if (s == Connection::RecvStatus::EMPTY) {
      conn_->publishConsumed();
      if (!conn_->armAndCheck()) break;
      continue;
    }
    if (s == Connection::RecvStatus::PLAIN)
      sink_->plain(plain, data);
    else
      sink_->envelope(std::move(in));
    if (gen != generation_ || !conn_) return;
  }
  sink_->drained();
}

}  // namespace swipc::page
