#include "swipc/service_worker.h"

#include <fcntl.h>
#include <kj/exception.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <spawn.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <unordered_set>
#include <unordered_map>

#include "core/broadcast_object.h"
#include "core/payload.h"
#include "queue/broadcast_ring.h"
#include "shm/memfd.h"
#include "api/port_router.h"
#include "core/user_code.h"
#include "core/port_state.h"
#include "core/identity.h"
#include "common/sys_error.h"
#include "core/attach.h"
#include "core/log.h"
#include "core/event_loop.h"
#include "core/paths.h"
#include "core/socket.h"
#include "swipc/json.h"
#include "wire/limits.h"

namespace swipc {

namespace {

using core::Connection;
using core::EventLoop;

/// One message accepted for a client whose ring was full.
struct Outgoing {
  std::shared_ptr<capnp::MallocMessageBuilder> message;
  MessageSeq seq;
};

struct ClientRecord {
  ClientId id;
  std::string url;
  ClientType type = ClientType::WINDOW;
  FrameType frameType = FrameType::TOP_LEVEL;
  bool focused = false;
  bool visible = true;
  uint64_t focusOrder = 0;  // 0: never focused; larger = more recent
  bool controlled = true;
  pid_t pid = 0;
  uint64_t order = 0;
  std::unique_ptr<Connection> conn;
  EventLoop::WatchId socketWatch = 0;
  EventLoop::WatchId doorbellWatch = 0;
  std::deque<Outgoing> backlog;
  MessageSeq nextSeq = 1;
  bool unresponsive = false;
  bool alive = true;
  bool drainScheduled = false;
  uint64_t tagPrefix = 0;                // BroadcastChannel records this client posts carry it
  std::unordered_set<uint64_t> ringsSent;  // channel rings whose memfd this client already has
};

/// One BroadcastChannel name with at least one open object somewhere in the scope.
struct Channel {
  std::string name;
  uint64_t ringId = 0;
  uint64_t capacity = 0;
  UniqueFd fd;
  shm::Mapping map;
  queue::BroadcastWriter writer;
  uint64_t nextSeq = 1;
  std::vector<std::pair<ClientId, uint32_t>> members;               // client objects
  std::map<uint32_t, std::shared_ptr<detail::BcObject>> local;      // service-worker objects
};

/// A page process spawned by clients.openWindow, until it attaches, fails or times out.
struct OpenWindow {
  pid_t pid = -1;
  UniqueFd pidfd;
  EventLoop::WatchId watch = 0;
  EventLoop::TimerId timer = 0;
  std::function<void(std::optional<ClientHandle>)> done;
  bool attached = false;
};

struct PendingAttach {
  UniqueFd socket;
  EventLoop::WatchId watch = 0;
  EventLoop::TimerId timer = 0;
  core::PeerCred cred;
};

constexpr int DRAIN_BUDGET = 256;
constexpr int PUBLISH_EVERY = 32;
/// What the daemon reads on the fast lane (wire/plain_post.h).
constexpr uint32_t PLAIN_KINDS = wire::kindBit(schema::Envelope::CONTROLLER_POST) | wire::kindBit(schema::Envelope::PORT_CLOSE);

}  // namespace

// ------------------------------------------------------------------------------------------------

class ServiceWorker::Impl final : public detail::PortHost, public api::PortRouter::Sink {
 public:
  Impl(ServiceWorker* owner, ServiceWorkerOptions o)
      : owner_(owner), opts_(std::move(o)), router_(std::make_unique<api::PortRouter>(*this, *this)) {}
  ~Impl() override {
    shutdown("daemon object destroyed");
    endLocalPorts();
  }

  // ---- MessagePort: service-worker code's ports (PortHost) and the router's view of clients (Sink)
  Result<void> postRemote(detail::PortState& from, const core::OutgoingPayload& payload,
                          std::vector<detail::PortPtr>& transfer) override {
    return router_->postFromLocal(from, payload, transfer);
  }
  void closeRemote(detail::PortState& port) override { router_->closeLocal(port); }
  void ackRemote(detail::PortState&) override {}
  void track(const detail::PortPtr& port) override { router_->trackLocal(port); }
  void untrack(detail::PortState& port) override { router_->untrackLocal(port); }
  void later(std::function<void()> fn) override {
    if (loop_)
      loop_->post(std::move(fn));
    else
      early_.push_back(std::move(fn));  // before listen(): run once the loop exists
  }
  void deliver(std::function<void()> fn) override { fn(); }
  bool shieldsUserCode() const override { return true; }
  const TypeRegistry& types() const override { return types_; }
  uint64_t maxMessageBytes() const override { return opts_.maxMessageBytes; }
  PortId newPortId() override {
    uint64_t v = 0;
    while (v == 0) v = core::randomIdU64();
    return PortId(v);
  }
  std::shared_ptr<capnp::MallocMessageBuilder> newEnvelope(const ClientId& id, MessageSeq& seq) override {
    ClientRecord* c = find(id);
    if (!c || !c->alive) return nullptr;
    return newEnvelope(*c, seq);
  }
  Result<void> enqueue(const ClientId& id, const std::shared_ptr<capnp::MallocMessageBuilder>& env,
                       MessageSeq seq) override {
    ClientRecord* c = find(id);
    if (!c || !c->alive) return makeError(Errc::NOT_FOUND, "client " + id.toString() + " is gone");
    auto r = enqueue(*c, env, seq);
    if (!r) return r.error();
    return {};
  }
  bool backlogFull(const ClientId& id) override {
    ClientRecord* c = find(id);
    return c && c->backlog.size() >= opts_.maxBacklog;
  }
  void reportError(const ClientId& id, Errc code, const std::string& message, uint64_t refSeq) override {
    if (ClientRecord* c = find(id); c && c->alive) sendError(*c, code, message, refSeq);
  }
  size_t copyLimit() const override {
    // What a well-behaved owner can have unread: a ring of minimal records plus a full backlog,
    // plus the acknowledgement interval.
    return opts_.maxBacklog + opts_.ringBytes / 16 + 2 * detail::PortState::ACK_EVERY;
  }
  void disconnect(const ClientId& id, const Error& why) override {
    ClientId target = id;
    Error err = why;
    // Not from inside the routing that noticed it: the loop does it next.
    loop_->post([this, target, err] {
      if (ClientRecord* c = find(target); c && c->alive) violation(*c, err);
    });
  }
  Direct sendPortValue(const ClientId& id, PortId to, uint64_t portSeq, const Value& data) override {
    ClientRecord* c = find(id);
    if (!c || !c->alive) return Direct::GONE;
    wire::PlainMessage m;
    m.kind = schema::Envelope::PORT_MESSAGE;
    m.to = to.value();
    m.portSeq = portSeq;
    return sendDirect(*c, m, data);
  }
  /// The fast lane to a page: `m` (its seq set here) written straight into the down ring.
  /// NOT_NOW when it must be built and enqueue()d instead (a backlog waits: it goes behind that;
  /// the ring is full; it needs more than one record); BROKEN when the ring turned out corrupt
  /// (the client is disconnected).
  Direct sendDirect(ClientRecord& c, wire::PlainMessage& m, const Value& data) {
    if (!c.backlog.empty()) return Direct::NOT_NOW;
    m.seq = c.nextSeq;
    const size_t bytes = wire::plainBytes(m, data);
    if (!c.conn->fitsInline(bytes)) return Direct::NOT_NOW;
    switch (c.conn->sendPlain(m, data, bytes)) {
      case Connection::SendStatus::OK:
        ++c.nextSeq;
        ++counters_.messagesOut;
        c.conn->wakePeerIfSleeping();
        return Direct::SENT;
      case Connection::SendStatus::FULL:
      case Connection::SendStatus::TOO_BIG: return Direct::NOT_NOW;  // into the backlog, or refused, there
      case Connection::SendStatus::BROKEN:
        downRingBroken(c);
        return Direct::BROKEN;
    }
    return Direct::BROKEN;
  }
  void endLocalPorts() {
    for (auto& p : router_->takeLocalPorts()) p->hostGone();
  }

  Result<void> listen();
  Result<void> run();
  void stop() {
    stopRequested_ = true;
    if (loop_) loop_->wake();
  }
  void dispatchOnce(Deadline until);

  Result<MessageSeq> postToClient(const ClientId& id, const core::OutgoingPayload& payload, TransferList& transfer);
  std::vector<ClientHandle> matchAll(const MatchAllOptions& o) const;
  std::optional<ClientHandle> get(const ClientId& id) const;
  ClientHandle handleFor(const ClientRecord& c) const;
  /// `h` becomes handleFor(c), reusing what it holds.
  void refreshHandle(std::optional<ClientHandle>& h, const ClientRecord& c) const;
  /// The snapshot fields of `h` (all but the service worker and the id) from `c`.
  static void fillHandle(ClientHandle& h, const ClientRecord& c);
  size_t claim();
  void openWindow(const std::string& url, std::function<void(std::optional<ClientHandle>)> done);
  Result<ClientHandle> focus(const ClientId& id);
  Result<ClientHandle> navigate(const ClientId& id, const std::string& url);

  // ---- BroadcastChannel (daemon side)
  class Hub;
  std::shared_ptr<Hub> hub_;
  void bcOpenLocal(const std::shared_ptr<detail::BcObject>& obj);
  Result<MessageSeq> bcPostLocal(detail::BcObject& obj, const core::OutgoingPayload& payload);
  void bcCloseLocal(detail::BcObject& obj);

  ServiceWorker* owner_;
  ServiceWorkerOptions opts_;
  std::unique_ptr<EventLoop> loop_;
  Counters counters_;
  TypeRegistry types_;
  std::function<void(ExtendableMessageEvent&)> onMessage_;
  std::function<void(const MessageErrorEvent&, const ClientHandle&)> onMessageError_;
  std::function<void(const ClientId&, MessageSeq, const Error&)> onUndelivered_;
  std::function<void(const ClientHandle&)> onAttached_;
  std::function<void(const ClientId&, const std::string&)> onDetached_;
  std::unordered_map<ClientId, std::unique_ptr<ClientRecord>> clients_;
  std::unique_ptr<api::PortRouter> router_;
  ExtendableMessageEvent batchEvent_;  // drain()'s, reused from post to post
  int drainDepth_ = 0;
  std::vector<std::function<void()>> early_;

 private:
  bool handlePortEnvelope(ClientRecord& c, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>& owner);
  void onListenReadable();
  void onPendingReadable(uint64_t pendingId);
  void dropPending(uint64_t pendingId);
  void admit(PendingAttach p, const core::HelloInfo& hello);
  void onClientSocket(const ClientId& id, uint32_t events);
  /// Handles what the client committed: DRAIN_BUDGET records, then yields to others — or, when
  /// the client is leaving, everything (it will not ring again).
  void drain(ClientRecord& c, bool toTheEnd = false);
  bool handleEnvelope(ClientRecord& c, wire::Inbound&& in);
  /// A controller post read by the fast lane (a Value, no ports), its data already in `ev`.
  bool handlePlain(ClientRecord& c, const wire::PlainMessage& m, ExtendableMessageEvent& ev);
  /// What every controller post passes before it is decoded: counted; an error to the sender
  /// when the client is not controlled (REFUSED); a violation for a one-shot reply id.
  enum class Gate { DELIVER, REFUSED, VIOLATION };
  Gate admitPost(ClientRecord& c, MessageSeq seq, uint64_t replyId);
  /// Runs the message handler with `ev` (its source set here), then acks when asked.
  void deliverPost(ClientRecord& c, MessageSeq seq, bool wantAck, ExtendableMessageEvent& ev);
  void ackIfWanted(const ClientId& id, MessageSeq seq, bool wantAck);
  void violation(ClientRecord& c, const Error& err);
  /// A write into the client's down ring found its indices corrupt: a ProtocolViolation.
  void downRingBroken(ClientRecord& c) {
    violation(c, makeError(Errc::PROTOCOL_VIOLATION, "client corrupted its down ring"));
  }
  void detach(ClientRecord& c, const std::string& reason, bool goodbye = false);
  Result<MessageSeq> enqueue(ClientRecord& c, std::shared_ptr<capnp::MallocMessageBuilder> mb, MessageSeq seq);
  void flushBacklog(ClientRecord& c);
  std::shared_ptr<capnp::MallocMessageBuilder> newEnvelope(ClientRecord& c, MessageSeq& seq);
  void sendError(ClientRecord& c, Errc code, const std::string& message, uint64_t refSeq);
  void onSignal();
  void logCounters();
  Result<ClientRecord*> windowToCommand(const ClientId& id);
  void takeFocus(ClientRecord& c);
  bool sendSimple(ClientRecord& c, const std::function<void(schema::Envelope::Builder)>& fill);
  void finishOpen(const std::string& token, std::optional<ClientHandle> result, const std::string& why);
  std::vector<std::string> windowArgv(const std::string& url) const;
  Result<Channel*> channel(const std::string& name);
  void maybeDropChannel(const std::string& name);
  /// Writes one post into the channel ring and hands it to service-worker objects.
  void publish(Channel& ch, uint64_t tag, const core::OutgoingPayload* out, schema::Payload::Reader* in,
               const std::shared_ptr<const wire::Inbound>& owner, uint32_t localSender);
  bool handleBroadcast(ClientRecord& c, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>& owner);
  std::unordered_map<std::string, std::unique_ptr<Channel>> channels_;
  uint64_t nextRingId_ = 1;
  uint32_t nextLocalBcId_ = 1;
  uint64_t nextTag_ = 1;
  void shutdown(const std::string& reason);
  ClientRecord* find(const ClientId& id) const;

  core::ScopePaths paths_;
  std::string runtimeRoot_;
  UniqueFd lockFd_;
  UniqueFd listenFd_;
  UniqueFd signalFd_;
  UniqueFd spareFd_;  // released to accept-and-refuse when the process runs out of fds
  sigset_t oldMask_{};
  bool listening_ = false;
  std::atomic<bool> stopRequested_{false};  // stop() and signals may come from any thread
  uint64_t epoch_ = 0;
  uint64_t nextOrder_ = 1;
  uint64_t focusCounter_ = 0;
  std::unordered_map<std::string, OpenWindow> opens_;  // open token -> spawned page
  uint64_t nextPending_ = 1;
  std::unordered_map<uint64_t, PendingAttach> pending_;
  Clock::time_point lastActivity_{};
};

// ------------------------------------------------------------------------------------------------ setup

Result<void> ServiceWorker::Impl::listen() {
  if (listening_) return {};
  auto paths = core::scopePaths(opts_.runtimeDir, opts_.scope);
  if (!paths) return paths.error();
  paths_ = *paths;
  // Clients pass fds (out-of-line messages): use all the fds the hard limit allows.
  if (rlimit rl{}; ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  spareFd_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  runtimeRoot_ = paths_.dir.substr(0, paths_.dir.size() - opts_.scope.size() - 1);
  if (auto r = core::ensurePrivateDir(paths_.dir); !r) return r.error();
  lockFd_.reset(::open(paths_.lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lockFd_) return sysError("open " + paths_.lock);
  if (::flock(lockFd_.get(), LOCK_EX | LOCK_NB) == -1) {
    if (errno == EWOULDBLOCK)
      return makeError(Errc::ALREADY_RUNNING,
                       "another sw_daemon already serves scope '" + opts_.scope + "' (" + paths_.lock + " is locked)");
    return sysError("flock " + paths_.lock);
  }
  // Signals are ours before the socket accepts anyone: a client that signals the daemon right
  // after it could attach must not kill it (SIGUSR1's default action) or skip the graceful stop.
  if (opts_.handleSignals && !signalFd_) {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGUSR1);
    ::pthread_sigmask(SIG_BLOCK, &mask, &oldMask_);
    signalFd_.reset(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!signalFd_) {
      ::pthread_sigmask(SIG_SETMASK, &oldMask_, nullptr);
      return sysError("signalfd");
    }
  }
  auto sock = core::listenSeqpacket(paths_.socket, opts_.allowGroup ? 0660 : 0600);
  if (!sock) return sock.error();
  listenFd_ = std::move(*sock);
  auto loop = EventLoop::create();
  if (!loop) return loop.error();
  loop_ = std::move(*loop);
  if (auto w = loop_->watch(listenFd_.get(), EPOLLIN, [this](uint32_t) { onListenReadable(); }); !w) return w.error();
  for (auto& fn : early_) loop_->post(std::move(fn));
  early_.clear();
  if (signalFd_) {
    if (auto w = loop_->watch(signalFd_.get(), EPOLLIN, [this](uint32_t) { onSignal(); }); !w) return w.error();
  }
  ::signal(SIGPIPE, SIG_IGN);
  epoch_ = core::randomU64();
  listening_ = true;
  core::log().info("listening scope={} socket={} version={} max_message_bytes={} ring_bytes={}", opts_.scope,
               paths_.socket, opts_.version, opts_.maxMessageBytes, opts_.ringBytes);
  return {};
}

void ServiceWorker::Impl::onSignal() {
  signalfd_siginfo si;
  while (::read(signalFd_.get(), &si, sizeof si) == sizeof si) {
    if (si.ssi_signo == SIGUSR1) {
      logCounters();
    } else {
      core::log().info("signal {}: stopping gracefully", si.ssi_signo);
      stopRequested_ = true;
    }
  }
}

void ServiceWorker::Impl::logCounters() {
  core::log().info("counters clients={} {}", clients_.size(), toJsonText(owner_->counters().toValue()));
}

// ------------------------------------------------------------------------------------------------ loop

void ServiceWorker::Impl::dispatchOnce(Deadline until) {
  loop_->runOnce(until);
  if (opts_.spin.count() > 0) {
    bool any = false;
    for (auto& [id, c] : clients_) {
      if (c->alive && c->conn && c->conn->hasIncoming()) {
        drain(*c);
        any = true;
      }
    }
    if (any) lastActivity_ = Clock::now();
  }
}

Result<void> ServiceWorker::Impl::run() {
  if (auto r = listen(); !r) return r;
  while (!stopRequested_) {
    if (opts_.spin.count() > 0 && Clock::now() - lastActivity_ < opts_.spin) {
      dispatchOnce(Clock::now());  // busy phase: poll fds and rings without sleeping
      continue;
    }
    if (opts_.spin.count() > 0) {
      // About to sleep: ask every client to ring again, then catch what raced with that.
      bool any = false;
      for (auto& [id, c] : clients_) {
        if (c->alive && c->conn && c->conn->armAndCheck()) {
          drain(*c);
          any = true;
        }
      }
      if (any) {
        lastActivity_ = Clock::now();
        continue;
      }
    }
    dispatchOnce(NO_DEADLINE);
  }
  shutdown("daemon stopping");
  stopRequested_ = false;
  return {};
}

void ServiceWorker::Impl::shutdown(const std::string& reason) {
  if (!listening_) return;
  std::vector<ClientRecord*> all;
  for (auto& [id, c] : clients_)
    if (c->alive) all.push_back(c.get());
  for (auto* c : all) detach(*c, reason, /*goodbye=*/true);
  for (auto& [pid, p] : pending_) {
    loop_->unwatch(p.watch);
    loop_->cancelTimer(p.timer);
  }
  pending_.clear();
  for (auto& [token, o] : opens_) {
    loop_->unwatch(o.watch);
    loop_->cancelTimer(o.timer);
  }
  opens_.clear();  // spawned pages live on; they re-attach to the next daemon
  channels_.clear();
  clients_.clear();
  ::unlink(paths_.socket.c_str());
  listenFd_.reset();
  lockFd_.reset();  // releases the flock
  if (signalFd_) {
    signalFd_.reset();
    ::pthread_sigmask(SIG_SETMASK, &oldMask_, nullptr);
  }
  listening_ = false;
  core::log().info("stopped: {} {}", reason, toJsonText(owner_->counters().toValue()));
}

// ------------------------------------------------------------------------------------------------ attach

void ServiceWorker::Impl::onListenReadable() {
  for (int i = 0; i < 64; ++i) {
    UniqueFd sock;
    auto st = core::acceptConnection(listenFd_.get(), sock);
    if (st == core::IoStatus::FAILED && (errno == EMFILE || errno == ENFILE)) {
      // Out of fds: use the spare to accept and refuse the connection, so the listening socket
      // does not stay readable forever (a busy loop) and the client hears why.
      ++counters_.rejectedClients;
      spareFd_.reset();
      UniqueFd refused;
      if (core::acceptConnection(listenFd_.get(), refused) == core::IoStatus::OK)
        core::sendControlError(refused.get(), Errc::QUOTA_EXCEEDED, "daemon is out of file descriptors");
      refused.reset();
      spareFd_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      core::log().error("out of file descriptors: refused an attach ({} clients)", clients_.size());
      return;
    }
    if (st != core::IoStatus::OK) return;
    auto cred = core::peerCred(sock.get());
    if (!cred) continue;
    bool sameUser = cred->uid == ::geteuid();
    bool sameGroup = opts_.allowGroup && cred->gid == ::getegid();
    if (!sameUser && !sameGroup) {
      ++counters_.rejectedClients;
      core::log().warn("rejected pid={} uid={}: not this daemon's user", cred->pid, cred->uid);
      core::sendControlError(sock.get(), Errc::INVALID_ACCESS, "peer uid not allowed");
      continue;
    }
    if (clients_.size() + pending_.size() >= opts_.maxClients) {
      ++counters_.rejectedClients;
      core::log().warn("rejected pid={}: max clients ({}) reached", cred->pid, opts_.maxClients);
      core::sendControlError(sock.get(), Errc::QUOTA_EXCEEDED,
                             "daemon has reached --max-clients " + std::to_string(opts_.maxClients));
      continue;
    }
    uint64_t pid = nextPending_++;
    PendingAttach p;
    p.cred = *cred;
    int fd = sock.get();
    p.socket = std::move(sock);
    auto w = loop_->watch(fd, EPOLLIN | EPOLLRDHUP, [this, pid](uint32_t) { onPendingReadable(pid); });
    if (!w) continue;
    p.watch = *w;
    p.timer = loop_->addTimer(deadlineIn(opts_.attachTimeout), [this, pid] {
      auto it = pending_.find(pid);
      if (it == pending_.end()) return;
      ++counters_.attachTimeouts;
      core::log().warn("attach timeout: pid={} sent no Hello within {} ms", it->second.cred.pid,
                   opts_.attachTimeout.count());
      core::sendControlError(it->second.socket.get(), Errc::ATTACH_TIMEOUT, "no Hello before the deadline");
      dropPending(pid);
    });
    pending_.emplace(pid, std::move(p));
  }
}

void ServiceWorker::Impl::dropPending(uint64_t pendingId) {
  auto it = pending_.find(pendingId);
  if (it == pending_.end()) return;
  loop_->unwatch(it->second.watch);
  loop_->cancelTimer(it->second.timer);
  pending_.erase(it);
}

void ServiceWorker::Impl::onPendingReadable(uint64_t pendingId) {
  auto it = pending_.find(pendingId);
  if (it == pending_.end()) return;
  core::Datagram d;
  auto s = core::recvDatagram(it->second.socket.get(), d, wire::MAX_CONTROL_BYTES);
  if (s == core::IoStatus::AGAIN) return;
  if (s != core::IoStatus::OK) {
    dropPending(pendingId);
    return;
  }
  auto fail = [&](Errc code, const std::string& msg) {
    if (code == Errc::VERSION_MISMATCH)
      ++counters_.versionMismatches;
    else
      ++counters_.protocolViolations;
    core::log().warn("attach refused pid={}: {}: {}", it->second.cred.pid, errorName(code), msg);
    core::sendControlError(it->second.socket.get(), code, msg);
    dropPending(pendingId);
  };
  if (d.truncated || d.bytes.empty() || d.bytes.size() % sizeof(capnp::word) != 0 || !d.fds.empty())
    return fail(Errc::PROTOCOL_VIOLATION, "malformed Hello datagram");
  auto words = kj::heapArray<capnp::word>(d.bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), d.bytes.data(), d.bytes.size());
  auto in = wire::Inbound::adoptControl(std::move(words), wire::readerOptions(wire::MAX_CONTROL_BYTES));
  if (!in) return fail(in.error().code, in.error().message);
  auto hello = core::parseHello(in->control());
  if (!hello) return fail(hello.error().code, hello.error().message);
  if (hello->protocolVersion != schema::PROTOCOL_VERSION)
    return fail(Errc::VERSION_MISMATCH, "daemon speaks protocol " + std::to_string(schema::PROTOCOL_VERSION) +
                                            ", client " + std::to_string(hello->protocolVersion));
  PendingAttach p = std::move(it->second);
  loop_->unwatch(p.watch);
  loop_->cancelTimer(p.timer);
  pending_.erase(it);
  admit(std::move(p), *hello);
}

void ServiceWorker::Impl::admit(PendingAttach p, const core::HelloInfo& hello) {
  core::WelcomeInfo w;
  w.resumeToken = hello.resumeToken ? *hello.resumeToken : core::newResumeToken();
  w.clientId = core::clientIdForToken(w.resumeToken);
  if (auto* existing = find(w.clientId); existing && existing->alive) {
    ++counters_.protocolViolations;
    core::log().warn("attach refused pid={}: client {} is already attached", p.cred.pid, w.clientId.toString());
    core::sendControlError(p.socket.get(), Errc::INVALID_STATE, "client id already attached");
    return;
  }
  w.daemonEpoch = epoch_;
  w.maxMessageBytes = opts_.maxMessageBytes;
  w.controlled = hello.controlled;
  w.swVersion = opts_.version;
  w.rings = core::RingSizes{opts_.ringBytes, opts_.ringBytes};
  auto conn = core::sendWelcome(std::move(p.socket), w);
  if (!conn) {
    core::log().warn("attach failed pid={}: {}", p.cred.pid, conn.error().describe());
    return;
  }
  auto rec = std::make_unique<ClientRecord>();
  ClientRecord& c = *rec;
  c.id = w.clientId;
  c.url = hello.url;
  c.type = hello.type;
  c.frameType = hello.type == ClientType::WORKER ? FrameType::NONE : FrameType::TOP_LEVEL;
  c.controlled = hello.controlled;
  const bool opened = !hello.openToken.empty() && opens_.count(hello.openToken) && !opens_[hello.openToken].attached;
  if (opened && c.type == ClientType::WINDOW) c.frameType = FrameType::AUXILIARY;
  c.pid = p.cred.pid;
  c.order = nextOrder_++;
  c.tagPrefix = (nextTag_++) << 32;
  c.conn = std::move(*conn);
  clients_.erase(c.id);  // a dead record with the same id (re-attach) goes now
  ClientId id = c.id;
  auto sw = loop_->watch(c.conn->socketFd(), EPOLLIN | EPOLLRDHUP, [this, id](uint32_t ev) { onClientSocket(id, ev); });
  auto bw = loop_->watch(c.conn->doorbellFd(), EPOLLIN | EPOLLET, [this, id](uint32_t) {
    if (auto* cr = find(id); cr && cr->alive) {
      drain(*cr);
      flushBacklog(*cr);
    }
  });
  if (!sw || !bw) {
    core::log().error("cannot watch client fds: {}", (!sw ? sw.error() : bw.error()).describe());
    if (sw) loop_->unwatch(*sw);
    if (bw) loop_->unwatch(*bw);
    return;
  }
  c.socketWatch = *sw;
  c.doorbellWatch = *bw;
  clients_.emplace(id, std::move(rec));
  ++counters_.attached;
  core::log().info("attached client={} pid={} type={} controlled={} url={} resumed={}", id.toString(), c.pid,
               clientTypeName(c.type), c.controlled, c.url, hello.resumeToken.has_value());
  if (onAttached_) core::callUser("onClientAttached", [&] { onAttached_(handleFor(c)); });
  if (opened) finishOpen(hello.openToken, handleFor(c), "attached");
}

// ------------------------------------------------------------------------------------------------ inbound

void ServiceWorker::Impl::onClientSocket(const ClientId& id, uint32_t events) {
  ClientRecord* c = find(id);
  if (!c || !c->alive) return;
  Error err;
  bool goodbye = false;
  auto s = c->conn->pumpSocket(
      [&](wire::Inbound&& in) {
        if (in.control().isGoodbye()) goodbye = true;
      },
      err);
  if (s == core::IoStatus::FAILED) {
    if (err.code == Errc::PROTOCOL_VIOLATION) return violation(*c, err);
    core::log().error("client={} pid={}: {}; disconnecting", id.toString(), c->pid, err.describe());
    return detach(*c, err.describe());
  }
  if (s == core::IoStatus::CLOSED || goodbye || (events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR))) {
    drain(*c, /*toTheEnd=*/true);  // everything it committed before leaving is still delivered
    if (c->alive) detach(*c, goodbye ? "closed" : "hung up");
  }
}

void ServiceWorker::Impl::drain(ClientRecord& c, bool toTheEnd) {
  int handled = 0;
  // The fast lane decodes straight into ev.data. One event serves every batch (a nested drain,
  // from a handler, gets its own): a map there (what most posts carry) keeps its storage for the
  // next post, so a small post allocates nothing. Its ports go when the batch ends.
  std::optional<ExtendableMessageEvent> nested;
  ExtendableMessageEvent& ev = drainDepth_ == 0 ? batchEvent_ : nested.emplace();
  ++drainDepth_;
  struct EndBatch {
    Impl& impl;
    ExtendableMessageEvent& ev;
    ~EndBatch() {
      --impl.drainDepth_;
      ev.ports.clear();
      ev.typed.reset();
    }
  } endBatch{*this, ev};
  for (;;) {
    wire::Inbound in;
    wire::PlainMessage plain;
    Error err;
    auto s = c.conn->receive(in, plain, ev.data, PLAIN_KINDS, err);
    if (s == Connection::RecvStatus::VIOLATION) return violation(c, err);
    if (s == Connection::RecvStatus::OK || s == Connection::RecvStatus::PLAIN) {
      // A plain envelope (wire::isPlain) had every pointer outside its Value checked at receipt,
      // and its Value is decoded inside readValue's own exception boundary; a fast-lane post is
      // decoded whole before it gets here; other envelopes were walked for bounds. What a walk
      // cannot prove (a pointer of the wrong kind, a list of zero-sized elements) throws as it is
      // read, and ends here.
      bool ok = false;
      try {
        ok = s == Connection::RecvStatus::PLAIN ? handlePlain(c, plain, ev) : handleEnvelope(c, std::move(in));
      } catch (const kj::Exception& e) {
        // The last line of defence: a read of the client's bytes that the checks at receipt did
        // not foresee (service-worker code cannot get here: callUser() catches what it throws).
        // The offender goes; the daemon and everyone else carry on.
        if (c.alive)
          violation(c, makeError(Errc::PROTOCOL_VIOLATION, std::string("malformed message: ") + e.getDescription().cStr()));
        ok = false;
      }
      // Its ports go now: dropping one closes it, which may write to this client and find its
      // ring broken (detaching it), so that is known before anything touches c again.
      ev.ports.clear();
      ev.typed.reset();
      if (!ok) return;
      if (!c.alive) return;
      if (handled++ == 0) lastActivity_ = Clock::now();
      // Give the space back as we go: a writer that keeps feeding us must see the ring drain
      // (and one that waits for space is woken), not only when we stop.
      if (handled % PUBLISH_EVERY == 0) c.conn->publishConsumed();
      if (handled < DRAIN_BUDGET || toTheEnd) continue;
      // Fairness: let other clients in, come back for the rest.
      c.conn->publishConsumed();
      if (!c.drainScheduled) {
        c.drainScheduled = true;
        ClientId id = c.id;
        loop_->post([this, id] {
          if (auto* cr = find(id); cr && cr->alive) {
            cr->drainScheduled = false;
            drain(*cr);
          }
        });
      }
      return;
    }
    c.conn->publishConsumed();
    if (opts_.spin.count() > 0) return;  // the spin loop re-arms before sleeping
    if (!c.conn->armAndCheck()) return;
  }
}

bool ServiceWorker::Impl::handleEnvelope(ClientRecord& c, wire::Inbound&& inbound) {
  auto owner = std::make_shared<const wire::Inbound>(std::move(inbound));
  auto env = owner->envelope();
  if (env.isClientState()) {
    auto st = env.getClientState();
    c.visible = st.getVisible();
    // Only a setFocus call is a focus event; a visibility report leaves the focus where it is.
    if (st.getFocusChanged() && c.type == ClientType::WINDOW) {
      if (st.getFocused())
        takeFocus(c);
      else
        c.focused = false;
    }
    return true;
  }
  if (env.isBcJoin() || env.isBcLeave() || env.isBcPost()) return handleBroadcast(c, env, owner);
  if (env.isPortPost() || env.isPortClose() || env.isPortAck()) return handlePortEnvelope(c, env, owner);
  if (!env.isControllerPost()) {
    violation(c, makeError(Errc::PROTOCOL_VIOLATION, "a client may only post to its controller on the ring"));
    return false;
  }
  auto post = env.getControllerPost();
  const MessageSeq seq = env.getSeq();
  const ClientId id = c.id;
  switch (admitPost(c, seq, post.getReplyId())) {
    case Gate::DELIVER: break;
    case Gate::REFUSED: return true;
    case Gate::VIOLATION: return false;
  }
  if (auto ok = router_->checkShipped(id, post.getPorts()); !ok) {
    violation(c, ok.error());
    return false;
  }
  ExtendableMessageEvent ev;
  // The ports are the service worker's now, whatever becomes of the payload.
  for (auto& p : router_->toServiceWorker(id, post.getPorts())) ev.ports.emplace_back(p);
  if (auto r = core::readPayload(post.getPayload(), owner, types_, ev); !r) {
    // A plain envelope's Value is checked only as it is decoded: malformed bytes are still a
    // protocol violation, a value this build cannot represent is a messageerror.
    if (auto whole = owner->checkAll(); !whole) {
      violation(c, whole.error());
      return false;
    }
    ++counters_.messageErrors;
    core::log().warn("messageerror from client={} seq={}: {}", id.toString(), seq, r.error().describe());
    if (onMessageError_)
      core::callUser("onMessageError", [&] { onMessageError_(MessageErrorEvent{"serviceworker", r.error()}, handleFor(c)); });
    ackIfWanted(id, seq, post.getWantAck());
    return true;
  }
  deliverPost(c, seq, post.getWantAck(), ev);
  return true;
}

bool ServiceWorker::Impl::handlePlain(ClientRecord& c, const wire::PlainMessage& m, ExtendableMessageEvent& ev) {
  if (m.kind == schema::Envelope::PORT_CLOSE) {
    if (auto ok = router_->onPortClose(c.id, PortId(m.to), m.portSeq); !ok) {
      violation(c, ok.error());
      return false;
    }
    return true;
  }
  switch (admitPost(c, m.seq, m.replyId)) {
    case Gate::DELIVER: break;
    case Gate::REFUSED: return true;
    case Gate::VIOLATION: return false;
  }
  if (m.hasPort) {
    // The port is the service worker's now (the general path's checkShipped + toServiceWorker).
    auto port = router_->adoptRegistered(c.id, PortId(m.port.portId), PortId(m.port.peerId), m.port.sendSeq,
                                         m.port.recvNext, m.port.silentPeer);
    if (!port) {
      violation(c, port.error());
      return false;
    }
    ev.ports.emplace_back(std::move(*port));
  }
  deliverPost(c, m.seq, m.wantAck, ev);
  return true;
}

ServiceWorker::Impl::Gate ServiceWorker::Impl::admitPost(ClientRecord& c, MessageSeq seq, uint64_t replyId) {
  ++counters_.messagesIn;  // (lastActivity_ is set once per drained batch)
  if (!c.controlled) {
    // Rejected, not consumed: the error (not an ack) is the outcome the sender sees.
    sendError(c, Errc::INVALID_STATE, "client is not controlled by this service worker", seq);
    return Gate::REFUSED;
  }
  if (replyId != 0) {
    violation(c, makeError(Errc::PROTOCOL_VIOLATION, "one-shot reply ids are gone since protocol 2 (use a port)"));
    return Gate::VIOLATION;
  }
  return Gate::DELIVER;
}

void ServiceWorker::Impl::deliverPost(ClientRecord& c, MessageSeq seq, bool wantAck, ExtendableMessageEvent& ev) {
  const ClientId id = c.id;  // the handler may detach c
  refreshHandle(ev.source, c);
  if (onMessage_) core::callUser("the service worker's message handler", [&] { onMessage_(ev); });
  ackIfWanted(id, seq, wantAck);
}

void ServiceWorker::Impl::ackIfWanted(const ClientId& id, MessageSeq seq, bool wantAck) {
  if (!wantAck) return;
  if (auto* cr = find(id); cr && cr->alive) {
    MessageSeq s;
    auto mb = newEnvelope(*cr, s);
    mb->getRoot<schema::Envelope>().initAck().setSeq(seq);
    (void)enqueue(*cr, std::move(mb), s);
  }
}

void ServiceWorker::Impl::violation(ClientRecord& c, const Error& err) {
  ++counters_.protocolViolations;
  core::log().warn("protocol violation by client={} pid={}: {}; disconnecting", c.id.toString(), c.pid, err.message);
  if (c.conn) core::sendControlError(c.conn->socketFd(), Errc::PROTOCOL_VIOLATION, err.message);
  detach(c, "ProtocolViolation: " + err.message);
}

void ServiceWorker::Impl::detach(ClientRecord& c, const std::string& reason, bool goodbye) {
  if (!c.alive) return;
  c.alive = false;
  ++counters_.detached;
  if (goodbye && c.conn) {
    capnp::MallocMessageBuilder mb(64);
    mb.initRoot<schema::Control>().initGoodbye().setReason(reason);
    c.conn->sendControl(mb);
  }
  loop_->unwatch(c.socketWatch);
  loop_->unwatch(c.doorbellWatch);
  for (auto& o : c.backlog) {
    ++counters_.undelivered;
    if (onUndelivered_)
      core::callUser("onUndelivered", [&] {
        onUndelivered_(c.id, o.seq, makeError(Errc::DISCONNECTED, "client went away before it was delivered"));
      });
  }
  c.backlog.clear();
  router_->clientGone(c.id);  // its ports close: every surviving peer gets `close`
  std::vector<std::string> touched;
  for (auto& [name, ch] : channels_) {
    auto& m = ch->members;
    auto before = m.size();
    m.erase(std::remove_if(m.begin(), m.end(), [&](const auto& p) { return p.first == c.id; }), m.end());
    if (m.size() != before) touched.push_back(name);
  }
  for (const auto& name : touched) maybeDropChannel(name);  // a member process that exits leaves
  c.conn.reset();  // closes the socket and unmaps the segment
  core::log().info("detached client={} pid={}: {}", c.id.toString(), c.pid, reason);
  ClientId id = c.id;
  if (onDetached_) core::callUser("onClientDetached", [&] { onDetached_(id, reason); });
  // Erase later: callers up the stack may still hold a reference.
  loop_->post([this, id] {
    auto it = clients_.find(id);
    if (it != clients_.end() && !it->second->alive) clients_.erase(it);
  });
}

// ------------------------------------------------------------------------------------------------ outbound

std::shared_ptr<capnp::MallocMessageBuilder> ServiceWorker::Impl::newEnvelope(ClientRecord& c, MessageSeq& seq) {
  auto mb = std::make_shared<capnp::MallocMessageBuilder>(64);  // grows when needed
  auto env = mb->initRoot<schema::Envelope>();
  env.setSchemaVersion(schema::SCHEMA_VERSION);
  seq = c.nextSeq++;
  env.setSeq(seq);
  return mb;
}

Result<MessageSeq> ServiceWorker::Impl::enqueue(ClientRecord& c, std::shared_ptr<capnp::MallocMessageBuilder> mb,
                                                MessageSeq seq) {
  if (!c.backlog.empty()) {
    c.backlog.push_back(Outgoing{std::move(mb), seq});
    flushBacklog(c);
    return seq;
  }
  switch (c.conn->send(*mb, seq)) {
    case Connection::SendStatus::OK:
      ++counters_.messagesOut;
      c.conn->wakePeerIfSleeping();
      return seq;
    case Connection::SendStatus::FULL:
      c.backlog.push_back(Outgoing{std::move(mb), seq});
      return seq;
    case Connection::SendStatus::TOO_BIG:
      ++counters_.oversize;
      return makeError(Errc::QUOTA_EXCEEDED, "message larger than --max-message-bytes");
    case Connection::SendStatus::BROKEN:
      downRingBroken(c);
      return makeError(Errc::DISCONNECTED, "client disconnected");
  }
  return seq;
}

void ServiceWorker::Impl::flushBacklog(ClientRecord& c) {
  bool sent = false;
  while (!c.backlog.empty() && c.alive) {
    auto& front = c.backlog.front();
    auto s = c.conn->send(*front.message, front.seq);
    if (s == Connection::SendStatus::FULL) break;
    if (s == Connection::SendStatus::BROKEN) {
      downRingBroken(c);
      return;
    }
    if (s == Connection::SendStatus::OK) {
      ++counters_.messagesOut;
      sent = true;
    }
    c.backlog.pop_front();
  }
  if (sent && c.alive) c.conn->wakePeerIfSleeping();
  if (c.backlog.empty() && c.unresponsive) {
    c.unresponsive = false;
    core::log().info("client={} drains again", c.id.toString());
  }
}

Result<MessageSeq> ServiceWorker::Impl::postToClient(const ClientId& id, const core::OutgoingPayload& payload,
                                                     TransferList& transfer) {
  auto ports = detail::checkTransfer(nullptr, *this, transfer);
  if (!ports) return ports.error();
  ClientRecord* c = find(id);
  if (!c || !c->alive) {
    ++counters_.undelivered;
    return makeError(Errc::NOT_FOUND, "client " + id.toString() + " is gone");
  }
  if (c->backlog.size() >= opts_.maxBacklog) {
    ++counters_.queueFull;
    if (!c->unresponsive) {
      c->unresponsive = true;
      ++counters_.unresponsive;
      core::log().warn("client={} pid={} unresponsive: {} messages waiting; rejecting further posts", id.toString(),
                   c->pid, c->backlog.size());
    }
    return makeError(Errc::QUEUE_FULL, "client is not draining its queue");
  }
  if (ports->empty() && payload.value) {
    wire::PlainMessage m;
    m.kind = schema::Envelope::CLIENT_POST;
    switch (sendDirect(*c, m, *payload.value)) {
      case Direct::SENT: return m.seq;
      case Direct::GONE:
      case Direct::BROKEN: return makeError(Errc::DISCONNECTED, "client disconnected");
      case Direct::NOT_NOW: break;
    }
  }
  MessageSeq seq;
  auto mb = newEnvelope(*c, seq);
  auto post = mb->getRoot<schema::Envelope>().initClientPost();
  core::writePayload(payload, post.initPayload());
  if (!ports->empty()) {
    if (wire::encodedBytes(*mb) > opts_.maxMessageBytes) {
      ++counters_.oversize;
      return makeError(Errc::QUOTA_EXCEEDED, "message larger than --max-message-bytes; nothing sent");
    }
    router_->shipToClient(id, *ports, post.initPorts(static_cast<unsigned>(ports->size())));
    auto r = enqueue(*c, mb, seq);
    if (!r) router_->undeliverable(id, mb->getRoot<schema::Envelope>().asReader().getClientPost().getPorts());
    return r;
  }
  return enqueue(*c, std::move(mb), seq);
}

bool ServiceWorker::Impl::handlePortEnvelope(ClientRecord& c, schema::Envelope::Reader env,
                                             const std::shared_ptr<const wire::Inbound>& owner) {
  const ClientId id = c.id;
  if (env.isPortPost()) {
    auto post = env.getPortPost();
    if (auto ok = router_->checkPost(id, post); !ok) {
      violation(c, ok.error());
      return false;
    }
    lastActivity_ = Clock::now();
    router_->onPortPost(id, post, env.getSeq(), owner);
    return true;
  }
  if (env.isPortClose()) {
    auto pc = env.getPortClose();
    if (auto ok = router_->onPortClose(id, PortId(pc.getPort()), pc.getRecvNext()); !ok) {
      violation(c, ok.error());
      return false;
    }
    return true;
  }
  auto ack = env.getPortAck();
  router_->onPortAck(id, PortId(ack.getPort()), ack.getRecvNext());
  return true;
}

void ServiceWorker::Impl::sendError(ClientRecord& c, Errc code, const std::string& message, uint64_t refSeq) {
  if (c.backlog.size() >= opts_.maxBacklog) {
    // A client that does not drain cannot grow our memory with error reports about its posts.
    ++counters_.undelivered;
    core::log().debug("client={} not draining: error report for seq={} dropped ({})", c.id.toString(), refSeq,
                      errorName(code));
    return;
  }
  MessageSeq seq;
  auto mb = newEnvelope(c, seq);
  auto e = mb->getRoot<schema::Envelope>().initError();
  e.setName(std::string(errorName(code)));
  e.setMessage(message);
  e.setRefSeq(refSeq);
  (void)enqueue(c, std::move(mb), seq);
}

// ------------------------------------------------------------------------------------------------ clients

ClientRecord* ServiceWorker::Impl::find(const ClientId& id) const {
  auto it = clients_.find(id);
  return it == clients_.end() ? nullptr : it->second.get();
}

void ServiceWorker::Impl::refreshHandle(std::optional<ClientHandle>& h, const ClientRecord& c) const {
  // The drain loop's event keeps the handle of the message before, most often for this client:
  // brought up to date in place, it costs no string copy.
  if (!h || h->id_ != c.id || h->sw_ != owner_) {
    h = handleFor(c);
    return;
  }
  fillHandle(*h, c);
}

void ServiceWorker::Impl::fillHandle(ClientHandle& h, const ClientRecord& c) {
  if (h.url_ != c.url) h.url_ = c.url;
  h.type_ = c.type;
  h.frameType_ = c.frameType;
  h.focused_ = c.focused;
  h.visible_ = c.visible;
  h.controlled_ = c.controlled;
  h.pid_ = c.pid;
}

ClientHandle ServiceWorker::Impl::handleFor(const ClientRecord& c) const {
  ClientHandle h;
  h.sw_ = owner_;
  h.id_ = c.id;
  fillHandle(h, c);
  return h;
}

void ServiceWorker::Impl::takeFocus(ClientRecord& c) {
  // One window has the focus at a time: it moves.
  for (auto& [id, other] : clients_) other->focused = false;
  c.focused = true;
  c.focusOrder = ++focusCounter_;
}

bool ServiceWorker::Impl::sendSimple(ClientRecord& c, const std::function<void(schema::Envelope::Builder)>& fill) {
  MessageSeq seq;
  auto mb = newEnvelope(c, seq);
  fill(mb->getRoot<schema::Envelope>());
  return enqueue(c, std::move(mb), seq).ok();
}

size_t ServiceWorker::Impl::claim() {
  size_t n = 0;
  for (auto& [id, c] : clients_) {
    if (!c->alive || c->controlled) continue;
    c->controlled = true;
    sendSimple(*c, [](schema::Envelope::Builder e) { e.initControllerChange().setControlled(true); });
    ++n;
  }
  counters_.claimed += n;
  core::log().info("claim: {} client(s) now controlled", n);
  return n;
}

Result<ClientRecord*> ServiceWorker::Impl::windowToCommand(const ClientId& id) {
  ClientRecord* c = find(id);
  if (!c || !c->alive) return makeError(Errc::NOT_FOUND, "client " + id.toString() + " is gone");
  if (c->type != ClientType::WINDOW) return makeError(Errc::TYPE, "not a window client");
  if (!c->controlled) return makeError(Errc::INVALID_STATE, "this service worker does not control the client");
  return c;
}

Result<ClientHandle> ServiceWorker::Impl::focus(const ClientId& id) {
  auto c = windowToCommand(id);
  if (!c) return c.error();
  takeFocus(**c);
  if (!sendSimple(**c, [](schema::Envelope::Builder e) { e.setFocus(); }))
    return makeError(Errc::QUEUE_FULL, "could not tell the client");
  return handleFor(**c);
}

Result<ClientHandle> ServiceWorker::Impl::navigate(const ClientId& id, const std::string& url) {
  auto c = windowToCommand(id);
  if (!c) return c.error();
  if (url.empty() || url.size() > 2048) return makeError(Errc::TYPE, "invalid url");
  if (!sendSimple(**c, [&](schema::Envelope::Builder e) { e.initNavigate().setUrl(url); }))
    return makeError(Errc::QUEUE_FULL, "could not tell the client");
  (*c)->url = url;
  return handleFor(**c);
}

std::vector<ClientHandle> ServiceWorker::Impl::matchAll(const MatchAllOptions& o) const {
  std::vector<const ClientRecord*> picked;
  for (const auto& [id, c] : clients_) {
    if (!c->alive) continue;
    if (!o.includeUncontrolled && !c->controlled) continue;
    if (o.type != ClientType::ALL && c->type != o.type) continue;
    picked.push_back(c.get());
  }
  // Windows focused at least once, most recent first; then never-focused windows by creation;
  // then workers by creation.
  auto rank = [](const ClientRecord* c) { return c->type == ClientType::WORKER ? 2 : (c->focusOrder ? 0 : 1); };
  std::sort(picked.begin(), picked.end(), [&](const ClientRecord* a, const ClientRecord* b) {
    if (rank(a) != rank(b)) return rank(a) < rank(b);
    if (rank(a) == 0) return a->focusOrder > b->focusOrder;
    return a->order < b->order;
  });
  std::vector<ClientHandle> out;
  out.reserve(picked.size());
  for (const auto* c : picked) out.push_back(handleFor(*c));
  return out;
}

std::optional<ClientHandle> ServiceWorker::Impl::get(const ClientId& id) const {
  const ClientRecord* c = find(id);
  if (!c || !c->alive) return std::nullopt;
  return handleFor(*c);
}

// ------------------------------------------------------------------------------------------------ broadcast

class ServiceWorker::Impl::Hub final : public detail::BroadcastHub {
 public:
  explicit Hub(Impl* impl) : impl_(impl) {}
  void open(const std::shared_ptr<detail::BcObject>& obj) override { impl_->bcOpenLocal(obj); }
  Result<MessageSeq> post(detail::BcObject& obj, const core::OutgoingPayload& p, bool) override {
    return impl_->bcPostLocal(obj, p);
  }
  void close(detail::BcObject& obj) override { impl_->bcCloseLocal(obj); }

 private:
  Impl* impl_;
};

Result<Channel*> ServiceWorker::Impl::channel(const std::string& name) {
  if (name.size() > 1024) return makeError(Errc::TYPE, "channel name longer than 1024 bytes");
  auto it = channels_.find(name);
  if (it != channels_.end()) return it->second.get();
  auto ch = std::make_unique<Channel>();
  ch->name = name;
  ch->ringId = nextRingId_++;
  ch->capacity = opts_.bcRingBytes;
  const uint64_t bytes = queue::BROADCAST_HEADER_BYTES + ch->capacity;
  auto fd = shm::createMemfd("swipc-bc", bytes);
  if (!fd) return fd.error();
  auto map = shm::Mapping::map(fd->get(), bytes, shm::Access::READ_WRITE);
  if (!map) return map.error();
  // Our mapping stays writable; every later writable mapping (the members') is refused.
  if (auto r = shm::addSeals(fd->get(), shm::SEALS_FIXED_SIZE | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL); !r) return r.error();
  ch->fd = std::move(*fd);
  ch->map = std::move(*map);
  auto* header = new (ch->map.data()) queue::BroadcastHeader();
  ch->writer = queue::BroadcastWriter(header, ch->map.data() + queue::BROADCAST_HEADER_BYTES, ch->capacity);
  ++counters_.channelsOpen;
  core::log().info("channel '{}' opened (ring {} bytes)", name, ch->capacity);
  Channel* raw = ch.get();
  channels_.emplace(name, std::move(ch));
  return raw;
}

void ServiceWorker::Impl::maybeDropChannel(const std::string& name) {
  auto it = channels_.find(name);
  if (it == channels_.end() || !it->second->members.empty() || !it->second->local.empty()) return;
  core::log().info("channel '{}' closed (last member left)", name);
  channels_.erase(it);
}

void ServiceWorker::Impl::publish(Channel& ch, uint64_t tag, const core::OutgoingPayload* out,
                                  schema::Payload::Reader* in, const std::shared_ptr<const wire::Inbound>& owner,
                                  uint32_t localSender) {
  const uint64_t seq = ch.nextSeq++;
  capnp::MallocMessageBuilder mb(256);
  auto env = mb.initRoot<schema::Envelope>();
  env.setSchemaVersion(schema::SCHEMA_VERSION);
  env.setSeq(seq);
  auto msg = env.initBcMessage();
  if (in)
    msg.setPayload(*in);
  else
    core::writePayload(*out, msg.initPayload());
  const size_t bytes = wire::encodedBytes(mb);
  std::vector<uint64_t> buf(bytes / 8);
  wire::encodeInto(mb, reinterpret_cast<uint8_t*>(buf.data()), bytes);
  ch.writer.append(wire::RECORD_ENVELOPE, seq, tag, buf.data(), static_cast<uint32_t>(bytes));
  ++counters_.broadcastsPosted;
  lastActivity_ = Clock::now();
  if (!ch.local.empty()) {
    // Service-worker objects of this channel get it now, in creation order.
    auto ownerCopy = owner;
    if (!ownerCopy) {
      auto r = wire::Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(buf.data()), bytes,
                                           wire::readerOptions(opts_.maxMessageBytes));
      if (r) ownerCopy = std::make_shared<const wire::Inbound>(std::move(*r));
    }
    auto event = std::make_shared<MessageEvent>();
    Result<void> decoded = makeError(Errc::DATA_CLONE, "undecodable");
    if (ownerCopy) {
      auto payload = in ? *in : ownerCopy->envelope().getBcMessage().getPayload();
      decoded = core::readPayload(payload, ownerCopy, types_, *event);
    }
    std::vector<std::shared_ptr<detail::BcObject>> targets;
    for (auto& [id, obj] : ch.local)
      if (id != localSender) targets.push_back(obj);
    for (auto& obj : targets) {
      if (obj->closed) continue;
      auto onMessage = obj->onMessage;  // copies: a handler may close() its own object
      auto onError = obj->onMessageError;
      if (decoded && onMessage)
        core::callUser("a BroadcastChannel handler", [&] { onMessage(*event); });
      else if (!decoded && onError)
        core::callUser("a BroadcastChannel handler", [&] { onError(MessageErrorEvent{"broadcastchannel", decoded.error()}); });
    }
  }
  ch.writer.wakeAll();
}

bool ServiceWorker::Impl::handleBroadcast(ClientRecord& c, schema::Envelope::Reader env,
                                          const std::shared_ptr<const wire::Inbound>& owner) {
  const MessageSeq seq = env.getSeq();
  if (env.isBcJoin()) {
    auto j = env.getBcJoin();
    const std::string name = j.getName().cStr();
    const uint32_t objectId = j.getObjectId();
    auto ch = channel(name);
    if (!ch) {
      sendError(c, ch.error().code, ch.error().message, seq);
      return true;
    }
    for (const auto& m : (*ch)->members) {
      if (m.first == c.id && m.second == objectId) {
        violation(c, makeError(Errc::PROTOCOL_VIOLATION, "BroadcastChannel object joined twice"));
        return false;
      }
    }
    if (!c.ringsSent.count((*ch)->ringId)) {
      capnp::MallocMessageBuilder mb(64);
      auto r = mb.initRoot<schema::Control>().initBcRing();
      r.setRingId((*ch)->ringId);
      r.setCapacity((*ch)->capacity);
      auto words = capnp::messageToFlatArray(mb);
      if (core::sendDatagram(c.conn->socketFd(), words.begin(), words.size() * sizeof(capnp::word), {(*ch)->fd.get()}) !=
          core::IoStatus::OK) {
        sendError(c, Errc::INVALID_STATE, "could not pass the channel ring (client not reading its socket)", seq);
        maybeDropChannel(name);
        return true;
      }
      c.ringsSent.insert((*ch)->ringId);
    }
    (*ch)->members.emplace_back(c.id, objectId);
    const uint64_t startPos = (*ch)->writer.tail();
    const uint64_t startSeq = (*ch)->nextSeq;
    const uint64_t ringId = (*ch)->ringId;
    sendSimple(c, [&](schema::Envelope::Builder e) {
      auto r = e.initBcJoined();
      r.setObjectId(objectId);
      r.setRingId(ringId);
      r.setStartPos(startPos);
      r.setStartSeq(startSeq);
      r.setSenderTag(c.tagPrefix);
    });
    return true;
  }
  if (env.isBcLeave()) {
    const uint32_t objectId = env.getBcLeave().getObjectId();
    for (auto& [name, ch] : channels_) {
      auto& m = ch->members;
      auto it = std::find(m.begin(), m.end(), std::make_pair(c.id, objectId));
      if (it != m.end()) {
        m.erase(it);
        // The page unmaps the ring with its last object on it: send the memfd again next time.
        if (std::none_of(m.begin(), m.end(), [&](const auto& p) { return p.first == c.id; }))
          c.ringsSent.erase(ch->ringId);
        std::string n = name;
        maybeDropChannel(n);
        break;
      }
    }
    return true;
  }
  auto post = env.getBcPost();
  const uint32_t objectId = post.getObjectId();
  Channel* target = nullptr;
  for (auto& [name, ch] : channels_) {
    for (const auto& m : ch->members)
      if (m.first == c.id && m.second == objectId) target = ch.get();
    if (target) break;
  }
  if (!target) {
    sendError(c, Errc::INVALID_STATE, "BroadcastChannel object is not open", seq);
    return true;
  }
  // Size check on the record we will write: payload + envelope framing.
  if (post.totalSize().wordCount * sizeof(capnp::word) + 64 > target->writer.maxPayload()) {
    ++counters_.oversize;
    sendError(c, Errc::QUOTA_EXCEEDED,
              "message larger than a channel ring record (" + std::to_string(target->writer.maxPayload()) +
                  " bytes; see --bc-ring-bytes)",
              seq);
    return true;
  }
  auto payload = post.getPayload();
  publish(*target, c.tagPrefix | objectId, nullptr, &payload, owner, 0);
  if (post.getWantAck()) {
    sendSimple(c, [&](schema::Envelope::Builder e) { e.initAck().setSeq(seq); });
  }
  return true;
}

void ServiceWorker::Impl::bcOpenLocal(const std::shared_ptr<detail::BcObject>& obj) {
  auto ch = channel(obj->name);
  if (!ch) {
    core::log().error("BroadcastChannel '{}': {}", obj->name, ch.error().describe());
    return;
  }
  obj->id = nextLocalBcId_++;
  obj->fromSeq = (*ch)->nextSeq;
  obj->joined = true;
  (*ch)->local.emplace(obj->id, obj);
}

Result<MessageSeq> ServiceWorker::Impl::bcPostLocal(detail::BcObject& obj, const core::OutgoingPayload& payload) {
  auto it = channels_.find(obj.name);
  if (it == channels_.end() || !it->second->local.count(obj.id))
    return makeError(Errc::INVALID_STATE, "BroadcastChannel is not open");
  Channel& ch = *it->second;
  // Encode once to check the size before anything is written.
  capnp::MallocMessageBuilder probe(256);
  core::writePayload(payload, probe.initRoot<schema::Payload>());
  if (wire::encodedBytes(probe) + 64 > ch.writer.maxPayload())
    return makeError(Errc::QUOTA_EXCEEDED, "message larger than a channel ring record");
  const MessageSeq seq = ch.nextSeq;
  publish(ch, detail::bcTag(0, obj.id), &payload, nullptr, nullptr, obj.id);
  return seq;
}

void ServiceWorker::Impl::bcCloseLocal(detail::BcObject& obj) {
  auto it = channels_.find(obj.name);
  if (it == channels_.end()) return;
  it->second->local.erase(obj.id);
  maybeDropChannel(obj.name);
}

// ------------------------------------------------------------------------------------------------ openWindow

namespace {
std::string findPageClient() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    std::string dir(buf, static_cast<size_t>(n));
    dir = dir.substr(0, dir.rfind('/'));
    for (const std::string& cand : {dir + "/page_client", dir + "/../page_client/page_client"}) {
      if (::access(cand.c_str(), X_OK) == 0) return cand;
    }
  }
  return "page_client";  // from PATH
}

void replaceAll(std::string& s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) s.replace(pos, from.size(), to);
}
}  // namespace

std::vector<std::string> ServiceWorker::Impl::windowArgv(const std::string& url) const {
  std::vector<std::string> argv = opts_.windowCommand;
  if (argv.empty())
    argv = {findPageClient(), "--scope", "{scope}", "--runtime-dir", "{runtime-dir}", "--url", "{url}", "listen"};
  for (auto& a : argv) {
    replaceAll(a, "{url}", url);
    replaceAll(a, "{scope}", opts_.scope);
    replaceAll(a, "{runtime-dir}", runtimeRoot_);
  }
  return argv;
}

void ServiceWorker::Impl::openWindow(const std::string& url, std::function<void(std::optional<ClientHandle>)> done) {
  char hex[33];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(core::randomU64()),
                static_cast<unsigned long long>(core::randomU64()));
  const std::string token = hex;
  const auto argv = windowArgv(url);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> envStore;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "SWIPC_OPEN_TOKEN=", 17) != 0) envStore.emplace_back(*e);
  envStore.push_back("SWIPC_OPEN_TOKEN=" + token);
  std::vector<char*> envp;
  for (auto& e : envStore) envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);  // the daemon blocks signals it reads via signalfd
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], nullptr, &attr, args.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    ++counters_.openWindowFailures;
    core::log().warn("openWindow({}): cannot start {}: {}", url, argv[0], std::strerror(rc));
    done(std::nullopt);
    return;
  }
  OpenWindow o;
  o.pid = pid;
  o.done = std::move(done);
  o.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (o.pidfd) {
    auto w = loop_->watch(o.pidfd.get(), EPOLLIN, [this, token](uint32_t) {
      auto it = opens_.find(token);
      if (it == opens_.end()) return;
      int status = 0;
      if (::waitpid(it->second.pid, &status, WNOHANG) != it->second.pid) return;
      std::string why = WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                                          : "killed by signal " + std::to_string(WTERMSIG(status));
      finishOpen(token, std::nullopt, "the page " + why + " before attaching");
      loop_->unwatch(it->second.watch);
      opens_.erase(token);
    });
    if (w) o.watch = *w;
  }
  o.timer = loop_->addTimer(deadlineIn(opts_.openWindowTimeout), [this, token] {
    auto it = opens_.find(token);
    if (it == opens_.end() || it->second.attached) return;
    it->second.timer = 0;
    ::kill(it->second.pid, SIGKILL);  // reaped by the pidfd watch, so no zombie is left
    finishOpen(token, std::nullopt,
               "the page did not attach within " + std::to_string(opts_.openWindowTimeout.count()) + " ms");
  });
  core::log().info("openWindow({}): spawned pid={} ({})", url, pid, argv[0]);
  opens_.emplace(token, std::move(o));
}

void ServiceWorker::Impl::finishOpen(const std::string& token, std::optional<ClientHandle> result,
                                     const std::string& why) {
  auto it = opens_.find(token);
  if (it == opens_.end() || !it->second.done) return;
  auto done = std::move(it->second.done);
  it->second.done = nullptr;
  if (it->second.timer) loop_->cancelTimer(it->second.timer);
  it->second.timer = 0;
  if (result) {
    it->second.attached = true;
    ++counters_.windowsOpened;
  } else {
    ++counters_.openWindowFailures;
    core::log().warn("openWindow: pid={} failed: {}", it->second.pid, why);
  }
  done(std::move(result));
}

// ------------------------------------------------------------------------------------------------ public

ServiceWorker::ServiceWorker(ServiceWorkerOptions opts)
    : impl_(std::make_unique<Impl>(this, std::move(opts))), clients_(this) {
  impl_->hub_ = std::make_shared<Impl::Hub>(impl_.get());
}
std::shared_ptr<detail::BroadcastHub> ServiceWorker::broadcastHub() { return impl_->hub_; }
ServiceWorker::~ServiceWorker() = default;
Result<void> ServiceWorker::listen() { return impl_->listen(); }
Result<void> ServiceWorker::run() { return impl_->run(); }
void ServiceWorker::stop() { impl_->stop(); }
void ServiceWorker::post(std::function<void()> fn) {
  SWIPC_REQUIRE(impl_->loop_ != nullptr, "post() before listen()");
  impl_->loop_->post(std::move(fn));
}
void ServiceWorker::wake() {
  if (impl_->loop_) impl_->loop_->wake();
}
int ServiceWorker::fd() const { return impl_->loop_ ? impl_->loop_->fd() : -1; }
void ServiceWorker::dispatch() {
  if (impl_->loop_) impl_->dispatchOnce(Clock::now());
}
void ServiceWorker::onMessage(std::function<void(ExtendableMessageEvent&)> fn) { impl_->onMessage_ = std::move(fn); }
void ServiceWorker::onMessageError(std::function<void(const MessageErrorEvent&, const ClientHandle&)> fn) {
  impl_->onMessageError_ = std::move(fn);
}
void ServiceWorker::onUndelivered(std::function<void(const ClientId&, MessageSeq, const Error&)> fn) {
  impl_->onUndelivered_ = std::move(fn);
}
void ServiceWorker::onClientAttached(std::function<void(const ClientHandle&)> fn) { impl_->onAttached_ = std::move(fn); }
void ServiceWorker::onClientDetached(std::function<void(const ClientId&, const std::string&)> fn) {
  impl_->onDetached_ = std::move(fn);
}
TypeRegistry& ServiceWorker::types() { return impl_->types_; }
Clients& ServiceWorker::clients() { return clients_; }
const Clients& ServiceWorker::clients() const { return clients_; }
std::vector<ClientHandle> Clients::matchAll(const MatchAllOptions& opts) const { return sw_->impl_->matchAll(opts); }
std::optional<ClientHandle> Clients::get(const ClientId& id) const { return sw_->impl_->get(id); }
size_t Clients::claim() { return sw_->impl_->claim(); }
void Clients::openWindow(const std::string& url, std::function<void(std::optional<ClientHandle>)> done) {
  sw_->impl_->openWindow(url, std::move(done));
}
const ServiceWorkerOptions& ServiceWorker::options() const { return impl_->opts_; }
Counters ServiceWorker::counters() const {
  Counters c = impl_->counters_;
  const auto& ps = impl_->router_->stats();
  c.portMessagesRouted = ps.routed;
  c.portsTransferred = ps.transferred;
  c.portsClosed = ps.closed;
  c.portMessagesDropped = ps.dropped;
  c.portsOpen = impl_->router_->size();
  return c;
}
detail::PortHost& ServiceWorker::portHost() { return *impl_; }
size_t ServiceWorker::clientCount() const {
  size_t n = 0;
  for (const auto& [id, c] : impl_->clients_) n += c->alive ? 1 : 0;
  return n;
}

Result<MessageSeq> ClientHandle::postMessage(const Value& data, TransferList transfer) {
  SWIPC_REQUIRE(sw_ != nullptr, "ClientHandle not from a ServiceWorker");
  core::OutgoingPayload p;
  p.value = &data;
  return sw_->impl().postToClient(id_, p, transfer);
}

Result<MessageSeq> ClientHandle::postTyped(uint64_t typeId, const TypedBuilder& build, TransferList transfer) {
  SWIPC_REQUIRE(sw_ != nullptr, "ClientHandle not from a ServiceWorker");
  core::OutgoingPayload p;
  p.typeId = typeId;
  p.build = &build;
  return sw_->impl().postToClient(id_, p, transfer);
}

Result<ClientHandle> ClientHandle::focus() {
  SWIPC_REQUIRE(sw_ != nullptr, "ClientHandle not from a ServiceWorker");
  return sw_->impl().focus(id_);
}

Result<ClientHandle> ClientHandle::navigate(const std::string& url) {
  SWIPC_REQUIRE(sw_ != nullptr, "ClientHandle not from a ServiceWorker");
  return sw_->impl().navigate(id_, url);
}

Value ClientHandle::describe() const {
  return Value::map({{"id", id_.toString()},
                     {"url", url_},
                     {"type", std::string(clientTypeName(type_))},
                     {"frameType", std::string(frameTypeName(frameType_))},
                     {"focused", focused_},
                     {"visibilityState", std::string(visibilityState())}});
}

std::string_view frameTypeName(FrameType t) {
  switch (t) {
    case FrameType::TOP_LEVEL: return "top-level";
    case FrameType::AUXILIARY: return "auxiliary";
    case FrameType::NONE: return "none";
  }
  return "none";
}

Value Counters::toValue() const {
  return Value::map({{"attached", int64_t(attached)},
                     {"detached", int64_t(detached)},
                     {"attachTimeouts", int64_t(attachTimeouts)},
                     {"versionMismatches", int64_t(versionMismatches)},
                     {"rejectedClients", int64_t(rejectedClients)},
                     {"protocolViolations", int64_t(protocolViolations)},
                     {"messagesIn", int64_t(messagesIn)},
                     {"messagesOut", int64_t(messagesOut)},
                     {"messageErrors", int64_t(messageErrors)},
                     {"queueFull", int64_t(queueFull)},
                     {"unresponsive", int64_t(unresponsive)},
                     {"undelivered", int64_t(undelivered)},
                     {"oversize", int64_t(oversize)},
                     {"repliesDropped", int64_t(repliesDropped)},
                     {"windowsOpened", int64_t(windowsOpened)},
                     {"openWindowFailures", int64_t(openWindowFailures)},
                     {"claimed", int64_t(claimed)},
                     {"broadcastsPosted", int64_t(broadcastsPosted)},
                     {"channelsOpen", int64_t(channelsOpen)},
                     {"portMessagesRouted", int64_t(portMessagesRouted)},
                     {"portsTransferred", int64_t(portsTransferred)},
                     {"portsClosed", int64_t(portsClosed)},
                     {"portMessagesDropped", int64_t(portMessagesDropped)},
                     {"portsOpen", int64_t(portsOpen)}});
}

}  // namespace swipc
