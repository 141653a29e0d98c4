#include "swipc/client.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>

#include <array>
#include <atomic>
#include <map>
#include <sys/eventfd.h>
#include <deque>
#include <unordered_map>

#include "core/broadcast_object.h"
#include "api/broadcast_waiter.h"
#include "core/payload.h"
#include "core/port_state.h"
#include "core/identity.h"
#include "core/attach.h"
#include "core/log.h"
#include "queue/broadcast_ring.h"
#include "shm/memfd.h"
#include "swipc/broadcast_channel.h"
#include "wire/limits.h"
#include "core/event_loop.h"
#include "core/paths.h"

namespace swipc {

using core::Connection;
using core::EventLoop;

namespace {
/// What a page reads on the fast lane (wire/plain_post.h).
constexpr uint32_t PLAIN_KINDS = wire::kindBit(schema::Envelope::CLIENT_POST) | wire::kindBit(schema::Envelope::PORT_MESSAGE);
}  // namespace

class Client::Impl final : public detail::PortHost {
 public:
  explicit Impl(ClientOptions o) : opts_(std::move(o)), controller_(nullptr) {}
  ~Impl() override { close(); }

  Result<void> start();
  void close();

  Result<MessageSeq> sendPost(const core::OutgoingPayload& payload, const PostOptions& opts, TransferList& transfer);
  void messageSWAsync(const Value& data, std::function<void(Result<Value>)> done, std::optional<Deadline> deadline);
  Result<Value> messageSW(const Value& data, Deadline deadline);
  void startMessages();
  void dispatchOnce(Deadline until);
  void flushDeferred();

  ClientOptions opts_;
  core::ScopePaths paths_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<Connection> conn_;
  core::ResumeToken token_{};
  bool haveToken_ = false;
  ClientId id_;
  bool controlled_ = false;
  bool closed_ = false;
  std::atomic<bool> stopRequested_{false};  // stop() may come from any thread
  std::string swVersion_;
  Controller controller_;
  TypeRegistry types_;

  std::function<void(const MessageEvent&)> onMessage_;
  std::function<void(const MessageErrorEvent&)> onMessageError_;
  std::function<void(bool)> onControllerChange_;
  std::function<void(MessageSeq, const Error&)> onUndelivered_;
  std::function<void(MessageSeq)> onDelivered_;
  std::function<void(const std::string&)> onNavigate_;
  std::function<void()> onFocus_;
  bool focused_ = false;
  bool visible_ = true;

  Result<void> sendState(bool focusChanged);
  /// `wake` false: do not ring the daemon for this one (it is read with the next message).
  Result<MessageSeq> sendEnvelope(const std::function<void(schema::Envelope::Builder)>& fill, const PostOptions& opts,
                                  bool track, bool wake = true);
  /// The loop behind every send: `attempt(seq)` tries once (Connection::SendStatus); a full ring
  /// is waited out up to opts.waitForSpace.
  template <typename Attempt>
  Result<MessageSeq> sendWith(const Attempt& attempt, const PostOptions& opts, bool track, bool wake);

  // ---- MessagePort (PortHost)
  Result<void> postRemote(detail::PortState& from, const core::OutgoingPayload& payload,
                          std::vector<detail::PortPtr>& transfer) override;
  void closeRemote(detail::PortState& port) override;
  /// portClose{port, its recvNext} on the fast lane.
  Result<MessageSeq> sendPortClose(const detail::PortState& port, bool wake);
  void ackRemote(detail::PortState& port) override;
  void track(const detail::PortPtr& port) override { ports_[port->id.value()] = port; }
  void untrack(detail::PortState& port) override;
  void later(std::function<void()> fn) override { loop_->post(std::move(fn)); }
  void deliver(std::function<void()> fn) override;
  /// A SW -> client event: delivered now when messages are started, else held until they are.
  void deliverOrHold(std::function<void()> fire);
  const TypeRegistry& types() const override { return types_; }
  uint64_t maxMessageBytes() const override { return conn_ ? conn_->maxMessageBytes() : wire::DEFAULT_MAX_MESSAGE_BYTES; }
  PortId newPortId() override {
    uint64_t v = 0;
    while (v == 0) v = core::randomIdU64();
    return PortId(v);
  }
  /// A live REMOTE port by id (nullptr when unknown, closed, moved on or disentangled).
  detail::PortPtr routable(uint64_t id);
  void endRemotePorts();
  /// The fast lane takes port messages only for messageSW's reply ports (which want the Value as
  /// it is); any other port gets its messages whole, through the general path.
  class PlainFilter final : public wire::PlainFilter {
   public:
    explicit PlainFilter(Impl& impl) : impl_(impl) {}
    bool wantsValue(const wire::PlainMessage& m) const override {
      if (m.kind != schema::Envelope::PORT_MESSAGE) return true;
      auto port = impl_.routable(m.to);
      return port && port->interceptValue;
    }

   private:
    Impl& impl_;
  };
  PlainFilter plainFilter_{*this};
  std::unordered_map<uint64_t, std::weak_ptr<detail::PortState>> ports_;

  // ---- BroadcastChannel (client side)
  class Hub;
  void bcOpen(const std::shared_ptr<detail::BcObject>& obj);
  Result<MessageSeq> bcPost(detail::BcObject& obj, const core::OutgoingPayload& payload, bool wantAck);
  void bcClose(detail::BcObject& obj);
  void bcJoined(schema::BcJoined::Reader j);
  void readBroadcasts();
  void readBroadcastsDeferred();
  void refreshWaiter();
  void dropRingIfUnused(const std::string& name);
  bool joinPending(const std::string& name) const;

  struct RingView {
    uint64_t ringId = 0;
    std::shared_ptr<shm::Mapping> map;
    queue::BroadcastReader reader;
    uint64_t expectedSeq = 0;
  };
  std::shared_ptr<Hub> hub_;
  std::map<uint32_t, std::shared_ptr<detail::BcObject>> bcObjects_;  // by id = creation order
  uint32_t nextBcId_ = 1;
  std::unordered_map<std::string, RingView> rings_;
  uint64_t senderTag_ = 0;
  std::unique_ptr<api::BroadcastWaiter> waiter_;
  UniqueFd bcWakeFd_;

 private:
  struct Outstanding {
    MessageSeq seq;
    uint64_t endPos;  // up-ring tail after this message: consumed once the daemon's head passes it
    bool wantAck;
  };
  struct PendingReply {
    std::function<void(Result<Value>)> done;
    EventLoop::TimerId timer = 0;
    MessageSeq seq = 0;
    detail::PortPtr port;  // port1 of the request's MessageChannel
    bool hasDeadline = false;
  };

  void install(core::Attached attached);
  void onSocket(uint32_t events);
  void onWake();
  void drainIncoming();
  void handleEnvelope(wire::Inbound&& in);
  void daemonLost(const std::string& reason);
  void scheduleReconnect();
  void tryReconnect();
  void pruneOutstanding();
  bool waitForSpace(Deadline deadline);
  void failReply(uint64_t replyId, Error err);
  /// Resolves messageSW `replyId` (once): its timer stops, its reply port closes.
  void settleReply(uint64_t replyId, Result<Value> result);

  EventLoop::WatchId socketWatch_ = 0;
  EventLoop::WatchId wakeWatch_ = 0;  // the daemon's wake pipe: the down ring has news
  uint64_t generation_ = 0;  // bumps whenever conn_ is replaced or dropped
  MessageSeq nextSeq_ = 1;   // sender-local, keeps increasing across re-attaches
  std::deque<Outstanding> outstanding_;
  std::unordered_map<uint64_t, PendingReply> replies_;
  uint64_t nextReplyId_ = 1;
  bool started_ = false;
  std::deque<std::function<void()>> held_;      // SW -> client events until startMessages()
  std::deque<std::function<void()>> deferred_;  // events that arrived inside a blocking call
  int blockingDepth_ = 0;
  bool deferredWake_ = false;  // something was sent without ringing the daemon
  int sendDepth_ = 0;          // > 0 while a send waits for ring space
  void ringDeferred() {
    if (deferredWake_ && conn_) conn_->wakePeerIfSleeping();
    deferredWake_ = false;
  }
  EventLoop::TimerId reconnectTimer_ = 0;
  std::chrono::milliseconds backoff_{50};
  std::array<capnp::word, 1024> scratch_{};
};

// ------------------------------------------------------------------------------------------------ attach

Result<void> Client::Impl::start() {
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
  auto loop = EventLoop::create();
  if (!loop) return loop.error();
  loop_ = std::move(*loop);
  bcWakeFd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!bcWakeFd_) return makeError(Errc::SYSTEM, "eventfd for broadcast wake-ups");
  if (auto w = loop_->watch(bcWakeFd_.get(), EPOLLIN, [this](uint32_t) {
        uint64_t v;
        [[maybe_unused]] auto n = ::read(bcWakeFd_.get(), &v, sizeof v);
        readBroadcasts();
      });
      !w)
    return w.error();
  hub_ = std::make_shared<Hub>(this);
  core::HelloInfo hello;
  hello.protocolVersion = schema::PROTOCOL_VERSION;
  hello.type = opts_.type == ClientType::WORKER ? ClientType::WORKER : ClientType::WINDOW;
  hello.url = opts_.url;
  hello.controlled = opts_.controlled;
  hello.openToken = opts_.openToken;
  auto attached = core::attachToDaemon(paths_.socket, hello, deadlineIn(opts_.attachTimeout));
  if (!attached) return attached.error();
  install(std::move(*attached));
  return {};
}

void Client::Impl::install(core::Attached attached) {
  conn_ = std::move(attached.connection);
  ++generation_;
  id_ = attached.welcome.clientId;
  token_ = attached.welcome.resumeToken;
  haveToken_ = true;
  controlled_ = attached.welcome.controlled;
  swVersion_ = attached.welcome.swVersion;
  auto w = loop_->watch(conn_->socketFd(), EPOLLIN | EPOLLRDHUP, [this](uint32_t ev) { onSocket(ev); });
  SWIPC_ASSERT(w.ok(), "cannot watch the control socket");
  socketWatch_ = *w;
  auto ww = loop_->watch(conn_->wakeReadFd(), EPOLLIN, [this](uint32_t) { onWake(); });
  SWIPC_ASSERT(ww.ok(), "cannot watch the wake pipe");
  wakeWatch_ = *ww;
  core::log().debug("attached client={} controlled={} sw_version={}", id_.toString(), controlled_, swVersion_);
}

void Client::Impl::close() {
  if (closed_) return;
  closed_ = true;
  for (auto& [id, obj] : bcObjects_) obj->closed = true;
  bcObjects_.clear();
  waiter_.reset();
  hub_.reset();
  if (reconnectTimer_) loop_->cancelTimer(reconnectTimer_);
  if (conn_) {
    drainIncoming();
    capnp::MallocMessageBuilder mb(64);
    mb.initRoot<schema::Control>().initGoodbye().setReason("client closed");
    conn_->sendControl(mb);
    daemonLost("client closed");
  }
  // A client that exits closes its ports (the daemon closes them for us as we detach). After the
  // last drain, so ports that arrived in it are ended too.
  std::vector<detail::PortPtr> all;
  for (auto& [id, w] : ports_)
    if (auto p = w.lock()) all.push_back(std::move(p));
  ports_.clear();
  for (auto& p : all) p->hostGone();
}

void Client::Impl::scheduleReconnect() {
  if (closed_ || !opts_.reconnect || reconnectTimer_) return;
  reconnectTimer_ = loop_->addTimer(deadlineIn(backoff_), [this] {
    reconnectTimer_ = 0;
    tryReconnect();
  });
  backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(400));
}

void Client::Impl::tryReconnect() {
  if (closed_ || conn_) return;
  core::HelloInfo hello;
  hello.protocolVersion = schema::PROTOCOL_VERSION;
  hello.type = opts_.type == ClientType::WORKER ? ClientType::WORKER : ClientType::WINDOW;
  hello.url = opts_.url;
  hello.controlled = opts_.controlled;
  if (haveToken_) hello.resumeToken = token_;
  auto attached = core::attachToDaemon(paths_.socket, hello,
                                       deadlineIn(std::min(opts_.attachTimeout, std::chrono::milliseconds(1000))));
  if (!attached) {
    core::log().debug("re-attach failed: {}", attached.error().describe());
    scheduleReconnect();
    return;
  }
  backoff_ = std::chrono::milliseconds(50);
  install(std::move(*attached));
  if (focused_ || !visible_) (void)sendState(focused_);  // the new daemon learns our window state
  for (auto& [id, obj] : bcObjects_) {  // BroadcastChannel memberships survive a daemon restart
    obj->joined = false;
    (void)sendEnvelope(
        [&, id = id](schema::Envelope::Builder e) {
          auto j = e.initBcJoin();
          j.setObjectId(id);
          j.setName(obj->name);
        },
        PostOptions{}, false);
  }
  core::log().info("re-attached client={} controlled={}", id_.toString(), controlled_);
  if (controlled_) {
    deliver([this] {
      if (onControllerChange_) onControllerChange_(true);
    });
  }
}

void Client::Impl::daemonLost(const std::string& reason) {
  if (!conn_) return;
  // The daemon is gone: its head index is final. What it read was delivered, the rest was not.
  const uint64_t consumed = conn_->outConsumed();
  std::vector<std::pair<MessageSeq, bool>> delivered;  // seq, wantAck
  std::vector<MessageSeq> lost;
  for (const auto& o : outstanding_) {
    if (o.endPos <= consumed) {
      if (o.wantAck) delivered.emplace_back(o.seq, true);
    } else {
      lost.push_back(o.seq);
    }
  }
  outstanding_.clear();
  std::vector<uint64_t> pendingReplies;
  for (auto& [rid, r] : replies_) pendingReplies.push_back(rid);
  loop_->unwatch(socketWatch_);
  loop_->unwatch(wakeWatch_);
  readBroadcasts();  // what is still in the rings was posted before the daemon died
  rings_.clear();
  refreshWaiter();
  for (auto& [id, obj] : bcObjects_) obj->joined = false;
  conn_.reset();
  ++generation_;
  const bool wasControlled = controlled_;
  controlled_ = false;
  if (closed_)
    core::log().debug("detached: {}", reason);
  else
    core::log().info("daemon lost ({}): {} message(s) not delivered", reason, lost.size());
  for (uint64_t rid : pendingReplies)
    failReply(rid, makeError(Errc::DISCONNECTED, "the service worker went away before replying (" + reason + ")"));
  endRemotePorts();  // the daemon routed them: their peers are unreachable now
  for (auto& [seq, ack] : delivered) {
    deliver([this, seq = seq] {
      if (onDelivered_) onDelivered_(seq);
    });
  }
  if (closed_) lost.clear();  // graceful: the daemon drains our ring before it detaches us
  for (MessageSeq seq : lost) {
    deliver([this, seq, reason] {
      if (onUndelivered_)
        onUndelivered_(seq, makeError(Errc::DISCONNECTED, "not delivered: the daemon never read it (" + reason + ")"));
    });
  }
  if (wasControlled && !closed_) {
    deliver([this] {
      if (onControllerChange_) onControllerChange_(false);
    });
  }
  scheduleReconnect();
}

// ------------------------------------------------------------------------------------------------ inbound

void Client::Impl::onWake() {
  if (!conn_) return;
  conn_->drainWakes();  // before reading the ring: a wake that comes after is for news after
  drainIncoming();
}

void Client::Impl::onSocket(uint32_t events) {
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
  if (s == core::IoStatus::FAILED) return daemonLost("ProtocolViolation: " + err.message);
  if (s == core::IoStatus::CLOSED || (events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)))
    return daemonLost(lostReason.empty() ? "daemon hung up" : lostReason);
  if (!lostReason.empty()) return daemonLost(lostReason);
}

void Client::Impl::drainIncoming() {
  if (!conn_) return;
  const uint64_t gen = generation_;
  for (;;) {
    wire::Inbound in;
    wire::PlainMessage plain;
    Value data;
    Error err;
    auto s = conn_->receive(in, plain, data, PLAIN_KINDS, err, &plainFilter_);
    if (s == Connection::RecvStatus::VIOLATION) {
      core::log().error("daemon wrote a malformed message: {}", err.describe());
      return daemonLost("ProtocolViolation: " + err.message);
    }
    if (s == Connection::RecvStatus::EMPTY) {
      conn_->publishConsumed();
      if (!conn_->armAndCheck()) break;
      continue;
    }
    if (s == Connection::RecvStatus::PLAIN && plain.kind == schema::Envelope::PORT_MESSAGE) {
      // A port message with a Value and no ports, for messageSW's reply port (plainFilter_).
      if (auto port = routable(plain.to)) port->receiveValue(plain.portSeq, data);
    } else if (s == Connection::RecvStatus::PLAIN) {
      auto ev = std::make_shared<MessageEvent>();
      ev->data = std::move(data);
      deliverOrHold([this, ev] {
        if (onMessage_) onMessage_(*ev);
      });
    } else {
      handleEnvelope(std::move(in));
    }
    if (gen != generation_ || !conn_) return;
  }
  pruneOutstanding();
}

void Client::Impl::handleEnvelope(wire::Inbound&& inbound) {
  auto owner = std::make_shared<const wire::Inbound>(std::move(inbound));
  auto env = owner->envelope();
  switch (env.which()) {
    case schema::Envelope::CLIENT_POST: {
      auto ev = std::make_shared<MessageEvent>();
      auto r = core::readPayload(env.getClientPost().getPayload(), owner, types_, *ev);
      // The ports are live at once (their messages queue at them); the event hands them over.
      for (auto& p : detail::adoptDescriptors(*this, env.getClientPost().getPorts(), owner)) ev->ports.emplace_back(p);
      std::function<void()> fire;
      if (r) {
        fire = [this, ev] {
          if (onMessage_) onMessage_(*ev);
        };
      } else {
        Error e = r.error();
        fire = [this, e] {
          if (onMessageError_) onMessageError_(MessageErrorEvent{"client", e});
        };
      }
      deliverOrHold(std::move(fire));
      return;
    }
    case schema::Envelope::PORT_MESSAGE: {
      auto pm = env.getPortMessage();
      auto port = routable(pm.getTo());
      if (!port) return;  // moved on or closed: the daemon re-sends or closes what it carried
      detail::QueuedPortMessage m;
      m.seq = pm.getSeq();
      m.keepAlive = owner;
      m.payload = pm.getPayload();
      m.ports = detail::adoptDescriptors(*this, pm.getPorts(), owner);
      port->receive(std::move(m), true);
      return;
    }
    case schema::Envelope::PORT_CLOSED: {
      auto port = routable(env.getPortClosed().getPort());
      if (!port) return;
      // Answer, so the daemon can forget the port; it is disentangled here from now on.
      (void)sendPortClose(*port, true);
      port->peerClosed(true);
      return;
    }
    case schema::Envelope::ACK: {
      MessageSeq seq = env.getAck().getSeq();
      for (auto it = outstanding_.begin(); it != outstanding_.end(); ++it) {
        if (it->seq == seq) {
          outstanding_.erase(it);
          break;
        }
      }
      deliver([this, seq] {
        if (onDelivered_) onDelivered_(seq);
      });
      return;
    }
    case schema::Envelope::BC_JOINED:
      bcJoined(env.getBcJoined());
      return;
    case schema::Envelope::CONTROLLER_CHANGE: {
      const bool now = env.getControllerChange().getControlled();
      if (now == controlled_) return;
      controlled_ = now;
      if (now) opts_.controlled = true;  // stay controlled across re-attaches, as a claimed page does
      deliver([this, now] {
        if (onControllerChange_) onControllerChange_(now);
      });
      return;
    }
    case schema::Envelope::NAVIGATE: {
      std::string url = env.getNavigate().getUrl().cStr();
      opts_.url = url;
      deliver([this, url] {
        if (onNavigate_) onNavigate_(url);
      });
      return;
    }
    case schema::Envelope::FOCUS: {
      focused_ = true;
      deliver([this] {
        if (onFocus_) onFocus_();
      });
      return;
    }
    case schema::Envelope::ERROR: {
      auto e = env.getError();
      Errc code = Errc::PROTOCOL_VIOLATION;
      errorFromName(e.getName().cStr(), code);
      Error err = makeError(code, e.getMessage().cStr());
      MessageSeq ref = e.getRefSeq();
      for (auto& [rid, r] : replies_) {
        if (r.seq == ref) {
          failReply(rid, err);
          break;
        }
      }
      for (auto it = outstanding_.begin(); it != outstanding_.end(); ++it) {
        if (it->seq == ref) {
          outstanding_.erase(it);
          break;
        }
      }
      core::log().warn("daemon rejected message seq={}: {}", ref, err.describe());
      deliver([this, ref, err] {
        if (onUndelivered_) onUndelivered_(ref, err);
      });
      return;
    }
    default:
      core::log().warn("ignoring envelope kind {} from the daemon", static_cast<int>(env.which()));
      return;
  }
}

void Client::Impl::failReply(uint64_t replyId, Error err) { settleReply(replyId, std::move(err)); }

void Client::Impl::settleReply(uint64_t replyId, Result<Value> result) {
  auto it = replies_.find(replyId);
  if (it == replies_.end()) return;
  PendingReply pr = std::move(it->second);
  replies_.erase(it);
  if (pr.timer) loop_->cancelTimer(pr.timer);
  if (pr.port) pr.port->close();
  pr.done(std::move(result));
}

void Client::Impl::pruneOutstanding() {
  if (!conn_ || outstanding_.empty()) return;
  const uint64_t consumed = conn_->outConsumed();
  while (!outstanding_.empty() && !outstanding_.front().wantAck && outstanding_.front().endPos <= consumed)
    outstanding_.pop_front();
}

detail::PortPtr Client::Impl::routable(uint64_t id) {
  auto it = ports_.find(id);
  if (it == ports_.end()) return nullptr;
  auto p = it->second.lock();
  if (!p || p->mode != detail::PortState::Mode::REMOTE || p->peerGone) return nullptr;
  return p;
}

void Client::Impl::untrack(detail::PortState& port) {
  auto it = ports_.find(port.id.value());
  if (it == ports_.end()) return;
  auto cur = it->second.lock();
  if (!cur || cur.get() == &port) ports_.erase(it);
}

void Client::Impl::endRemotePorts() {
  std::vector<detail::PortPtr> remote;
  for (auto& [id, w] : ports_)
    if (auto p = w.lock(); p && p->mode == detail::PortState::Mode::REMOTE && !p->peerGone) remote.push_back(std::move(p));
  for (auto& p : remote) p->peerClosed(false);
}

Result<void> Client::Impl::postRemote(detail::PortState& from, const core::OutgoingPayload& payload,
                                      std::vector<detail::PortPtr>& transfer) {
  if (!conn_) return {};  // the daemon is gone: its ports are disentangled already
  auto r = sendEnvelope(
      [&](schema::Envelope::Builder e) {
        auto pp = e.initPortPost();
        pp.setFrom(from.id.value());
        pp.setSeq(from.sendSeq);
        core::writePayload(payload, pp.initPayload());
        detail::ShipContext ctx;
        detail::describeAll(transfer, pp.initPorts(static_cast<unsigned>(transfer.size())), ctx);
      },
      PostOptions{}, true);
  if (!r) return r.error();
  ++from.sendSeq;
  detail::commitAll(transfer);
  return {};
}

Result<MessageSeq> Client::Impl::sendPortClose(const detail::PortState& port, bool wake) {
  wire::PlainMessage m;
  m.kind = schema::Envelope::PORT_CLOSE;
  m.to = port.id.value();
  m.portSeq = port.recvNext;
  const Value none;
  const size_t bytes = wire::plainBytes(m, none);
  return sendWith(
      [&](MessageSeq s) {
        m.seq = s;
        return conn_->sendPlain(m, none, bytes);
      },
      PostOptions{}, false, wake);
}

void Client::Impl::closeRemote(detail::PortState& port) {
  if (!conn_ || closed_) return;
  auto r = sendPortClose(port, !port.quietClose);
  if (!r) core::log().warn("port {}: close not sent: {}", port.id.toString(), r.error().describe());
}

void Client::Impl::ackRemote(detail::PortState& port) {
  if (!conn_) return;
  const uint64_t id = port.id.value();
  const uint64_t recvNext = port.recvNext;
  (void)sendEnvelope(
      [&](schema::Envelope::Builder e) {
        auto a = e.initPortAck();
        a.setPort(id);
        a.setRecvNext(recvNext);
      },
      PostOptions{.waitForSpace = std::chrono::milliseconds(0)}, false);
}

void Client::Impl::deliverOrHold(std::function<void()> fire) {
  if (started_)
    deliver(std::move(fire));
  else
    held_.push_back(std::move(fire));
}

void Client::Impl::deliver(std::function<void()> fn) {
  if (blockingDepth_ > 0) {
    deferred_.push_back(std::move(fn));
    return;
  }
  fn();
}

void Client::Impl::flushDeferred() {
  while (!deferred_.empty() && blockingDepth_ == 0) {
    auto fn = std::move(deferred_.front());
    deferred_.pop_front();
    fn();
  }
}

void Client::Impl::startMessages() {
  if (started_) return;
  started_ = true;
  while (!held_.empty()) {
    auto fn = std::move(held_.front());
    held_.pop_front();
    deliver(std::move(fn));
  }
}

void Client::Impl::dispatchOnce(Deadline until) {
  flushDeferred();
  ringDeferred();
  loop_->runOnce(until);
  flushDeferred();
}

// ------------------------------------------------------------------------------------------------ outbound

bool Client::Impl::waitForSpace(Deadline deadline) {
  // The daemon writes our wake pipe once it frees space (we set writerWaiting on FULL); the
  // socket tells us if it goes away meanwhile.
  const uint64_t gen = generation_;
  while (conn_ && gen == generation_) {
    auto now = Clock::now();
    if (now >= deadline) return false;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    pollfd p[2] = {{conn_->socketFd(), POLLIN, 0}, {conn_->wakeReadFd(), POLLIN, 0}};
    ::poll(p, 2, static_cast<int>(std::min<int64_t>(ms + 1, 10)));
    if (p[0].revents || p[1].revents) {
      ++blockingDepth_;
      if (p[1].revents) onWake();
      if (p[0].revents && conn_ && gen == generation_)
        onSocket((p[0].revents & POLLHUP) ? uint32_t{EPOLLHUP} : uint32_t{0});
      --blockingDepth_;
      if (!deferred_.empty()) loop_->wake();
    }
    return conn_ && gen == generation_;
  }
  return false;
}

Result<MessageSeq> Client::Impl::sendEnvelope(const std::function<void(schema::Envelope::Builder)>& fill,
                                              const PostOptions& opts, bool track, bool wake) {
  return sendWith(
      [&](MessageSeq seq) {
        // Built afresh for every attempt: waiting for space handles incoming messages, which may
        // send (port closes, acks) and change the state of ports this message describes. A send
        // nested in that wait must not reuse the scratch arena the outer one is using.
        std::optional<capnp::MallocMessageBuilder> heap;
        std::optional<capnp::MallocMessageBuilder> onScratch;
        capnp::MallocMessageBuilder* mb;
        if (sendDepth_ == 0) {
          onScratch.emplace(kj::arrayPtr(scratch_.data(), scratch_.size()));
          mb = &*onScratch;
        } else {
          heap.emplace(1024);
          mb = &*heap;
        }
        auto env = mb->initRoot<schema::Envelope>();
        env.setSchemaVersion(schema::SCHEMA_VERSION);
        env.setSeq(seq);
        fill(env);
        return conn_->send(*mb, seq);  // the builders go (and the scratch is zeroed) before any wait
      },
      opts, track, wake);
}

template <typename Attempt>
Result<MessageSeq> Client::Impl::sendWith(const Attempt& attempt, const PostOptions& opts, bool track, bool wake) {
  if (closed_) return makeError(Errc::DISCONNECTED, "client is closed");
  if (!conn_) return makeError(Errc::DISCONNECTED, "not attached to a daemon");
  std::optional<Deadline> deadline;  // from the first full ring (a clock read only when needed)
  for (;;) {
    const MessageSeq seq = nextSeq_;
    switch (attempt(seq)) {
      case Connection::SendStatus::OK:
        ++nextSeq_;
        if (track) outstanding_.push_back(Outstanding{seq, conn_->outPublished(), opts.requestAck});
        if (wake) {
          conn_->wakePeerIfSleeping();
          deferredWake_ = false;
        } else {
          deferredWake_ = true;  // rung before this loop next waits (dispatchOnce)
        }
        if (outstanding_.size() > 4096) pruneOutstanding();
        return seq;
      case Connection::SendStatus::TOO_BIG:
        return makeError(Errc::QUOTA_EXCEEDED, "message larger than the daemon's limit of " +
                                                   std::to_string(conn_->maxMessageBytes()) + " bytes; nothing sent");
      case Connection::SendStatus::BROKEN:
        daemonLost("ring corrupt");
        return makeError(Errc::DISCONNECTED, "connection to the daemon broke");
      case Connection::SendStatus::FULL: {
        conn_->wakePeer();  // make sure the daemon is draining
        ++sendDepth_;
        if (!deadline) deadline = deadlineIn(opts.waitForSpace);
        const bool space = waitForSpace(*deadline);
        --sendDepth_;
        if (!space) {
          if (!conn_) return makeError(Errc::DISCONNECTED, "daemon went away while the queue was full");
          return makeError(Errc::QUEUE_FULL, "the daemon's queue stayed full; nothing sent");
        }
        break;
      }
    }
  }
}

Result<void> Client::Impl::sendState(bool focusChanged) {
  if (closed_) return makeError(Errc::DISCONNECTED, "client is closed");
  if (!conn_) return {};  // remembered; sent after the next attach
  auto r = sendEnvelope(
      [&](schema::Envelope::Builder e) {
        auto st = e.initClientState();
        st.setFocused(focused_);
        st.setVisible(visible_);
        st.setFocusChanged(focusChanged);
      },
      PostOptions{}, false);
  if (!r) return r.error();
  return {};
}

Result<MessageSeq> Client::Impl::sendPost(const core::OutgoingPayload& payload, const PostOptions& opts,
                                          TransferList& transfer) {
  if (closed_) return makeError(Errc::DISCONNECTED, "client is closed");
  if (!conn_ || !controlled_) return makeError(Errc::INVALID_STATE, "no controller: not controlled by a service worker");
  if (transfer.size() == 0 && payload.value) {
    // The fast lane: written straight into the ring (wire/plain_post.h). One that does not fit
    // in a ring record is built below and goes out of line.
    wire::PlainMessage m;
    m.kind = schema::Envelope::CONTROLLER_POST;
    m.wantAck = opts.requestAck;
    const size_t bytes = wire::plainBytes(m, *payload.value);
    if (conn_->fitsInline(bytes)) {
      return sendWith(
          [&](MessageSeq s) {
            m.seq = s;
            return conn_->sendPlain(m, *payload.value, bytes);
          },
          opts, true, true);
    }
  }
  auto ports = detail::checkTransfer(nullptr, *this, transfer);
  if (!ports) return ports.error();
  auto seq = sendEnvelope(
      [&](schema::Envelope::Builder e) {
        auto post = e.initControllerPost();
        core::writePayload(payload, post.initPayload());
        post.setWantAck(opts.requestAck);
        detail::ShipContext ctx;
        detail::describeAll(*ports, post.initPorts(static_cast<unsigned>(ports->size())), ctx);
      },
      opts, true);
  if (seq) detail::commitAll(*ports);  // sent: the ports now belong to the service worker
  return seq;
}

// ------------------------------------------------------------------------------------------------ broadcast

class Client::Impl::Hub final : public detail::BroadcastHub {
 public:
  explicit Hub(Impl* impl) : impl_(impl) {}
  void open(const std::shared_ptr<detail::BcObject>& obj) override { impl_->bcOpen(obj); }
  Result<MessageSeq> post(detail::BcObject& obj, const core::OutgoingPayload& p, bool wantAck) override {
    return impl_->bcPost(obj, p, wantAck);
  }
  void close(detail::BcObject& obj) override { impl_->bcClose(obj); }

 private:
  Impl* impl_;
};

void Client::Impl::bcOpen(const std::shared_ptr<detail::BcObject>& obj) {
  obj->id = nextBcId_++;
  bcObjects_.emplace(obj->id, obj);
  if (!conn_) return;  // joins when (re-)attached
  auto r = sendEnvelope(
      [&](schema::Envelope::Builder e) {
        auto j = e.initBcJoin();
        j.setObjectId(obj->id);
        j.setName(obj->name);
      },
      PostOptions{}, false);
  if (!r) core::log().warn("BroadcastChannel '{}': join not sent: {}", obj->name, r.error().describe());
}

Result<MessageSeq> Client::Impl::bcPost(detail::BcObject& obj, const core::OutgoingPayload& payload, bool wantAck) {
  if (!conn_) return makeError(Errc::DISCONNECTED, "not attached to a daemon");
  PostOptions opts;
  opts.requestAck = wantAck;
  return sendEnvelope(
      [&](schema::Envelope::Builder e) {
        auto p = e.initBcPost();
        p.setObjectId(obj.id);
        core::writePayload(payload, p.initPayload());
        p.setWantAck(wantAck);
      },
      opts, true);
}

void Client::Impl::bcClose(detail::BcObject& obj) {
  const std::string name = obj.name;
  const uint32_t id = obj.id;
  bcObjects_.erase(id);
  if (conn_) {
    (void)sendEnvelope([&](schema::Envelope::Builder e) { e.initBcLeave().setObjectId(id); }, PostOptions{}, false);
  }
  dropRingIfUnused(name);
}

void Client::Impl::dropRingIfUnused(const std::string& name) {
  for (const auto& [id, o] : bcObjects_)
    if (o->name == name) return;
  if (rings_.erase(name)) refreshWaiter();
}

bool Client::Impl::joinPending(const std::string& name) const {
  for (const auto& [id, o] : bcObjects_)
    if (o->name == name && !o->joined) return true;
  return false;
}

void Client::Impl::refreshWaiter() {
  if (rings_.empty()) {
    waiter_.reset();
    return;
  }
  if (!waiter_) {
    int fd = bcWakeFd_.get();
    waiter_ = std::make_unique<api::BroadcastWaiter>([fd] {
      uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
    });
  }
  std::vector<const std::atomic<uint32_t>*> words;
  std::vector<std::shared_ptr<const void>> alive;
  for (auto& [name, r] : rings_) {
    words.push_back(&r.reader.wakeWord());
    alive.push_back(r.map);
  }
  waiter_->setWords(std::move(words), std::move(alive));
}

void Client::Impl::bcJoined(schema::BcJoined::Reader j) {
  auto it = bcObjects_.find(j.getObjectId());
  senderTag_ = j.getSenderTag();
  if (it == bcObjects_.end()) return;  // closed meanwhile; its leave is on its way
  auto obj = it->second;
  auto ring = rings_.find(obj->name);
  if (ring == rings_.end() || ring->second.ringId != j.getRingId()) {
    uint64_t capacity = 0;
    UniqueFd fd = conn_->takeRingFd(j.getRingId(), capacity);
    if (!fd) {
      core::log().error("BroadcastChannel '{}': the daemon never sent ring {}", obj->name, j.getRingId());
      return;
    }
    const uint64_t bytes = queue::BROADCAST_HEADER_BYTES + capacity;
    auto size = shm::fileSize(fd.get());
    if (capacity < 1024 || (capacity & (capacity - 1)) || !size || *size < bytes) {
      core::log().error("BroadcastChannel '{}': malformed ring from the daemon", obj->name);
      return;
    }
    auto map = shm::Mapping::map(fd.get(), bytes, shm::Access::READ_ONLY);
    if (!map) {
      core::log().error("BroadcastChannel '{}': {}", obj->name, map.error().describe());
      return;
    }
    RingView v;
    v.ringId = j.getRingId();
    v.map = std::make_shared<shm::Mapping>(std::move(*map));
    auto* header = reinterpret_cast<const queue::BroadcastHeader*>(v.map->data());
    v.reader = queue::BroadcastReader(header, v.map->data() + queue::BROADCAST_HEADER_BYTES, capacity, j.getStartPos());
    v.expectedSeq = j.getStartSeq();
    rings_[obj->name] = std::move(v);
    refreshWaiter();
  }
  obj->fromSeq = j.getStartSeq();
  obj->joined = true;
  deliver([obj] {
    if (auto fn = obj->onJoined; !obj->closed && fn) fn();
  });
  readBroadcasts();
}

void Client::Impl::readBroadcasts() {
  // Callbacks may close objects (erasing from bcObjects_/rings_): run them after the walk.
  ++blockingDepth_;
  readBroadcastsDeferred();
  --blockingDepth_;
  flushDeferred();
}

void Client::Impl::readBroadcastsDeferred() {
  queue::BroadcastRecord rec;
  const capnp::ReaderOptions options = wire::readerOptions(wire::DEFAULT_MAX_MESSAGE_BYTES);
  for (auto& [name, ring] : rings_) {
    if (joinPending(name)) continue;  // its start position is not known yet
    while (ring.reader.next(rec) == queue::BroadcastReader::Status::OK) {
      if (rec.seq < ring.expectedSeq) continue;
      std::shared_ptr<MessageEvent> event;
      std::optional<Error> decodeError;
      for (auto& [id, obj] : bcObjects_) {
        if (obj->name != name || !obj->joined || obj->closed || obj->fromSeq > rec.seq) continue;
        const uint64_t from = std::max(ring.expectedSeq, obj->fromSeq);
        if (rec.seq > from) {
          uint64_t missed = rec.seq - from;
          deliver([obj, missed] {
            if (auto fn = obj->onLapped; !obj->closed && fn) fn(missed);
          });
        }
        if (rec.tag == detail::bcTag(senderTag_, obj->id)) continue;  // the poster is excluded
        if (!event && !decodeError) {
          auto in = wire::Inbound::copyEnvelope(rec.bytes(), rec.length, options);
          if (in && in->envelope().isBcMessage()) {
            auto owner = std::make_shared<const wire::Inbound>(std::move(*in));
            event = std::make_shared<MessageEvent>();
            if (auto r = core::readPayload(owner->envelope().getBcMessage().getPayload(), owner, types_, *event); !r) {
              decodeError = r.error();
              event.reset();
            }
          } else {
            decodeError = in ? makeError(Errc::DATA_CLONE, "not a channel message") : in.error();
          }
        }
        if (event) {
          deliver([obj, event] {
            if (auto fn = obj->onMessage; !obj->closed && fn) fn(*event);  // a copy: the handler may close()
          });
        } else {
          Error e = *decodeError;
          deliver([obj, e] {
            if (auto fn = obj->onMessageError; !obj->closed && fn) fn(MessageErrorEvent{"broadcastchannel", e});
          });
        }
      }
      ring.expectedSeq = rec.seq + 1;
    }
  }
}

void Client::Impl::messageSWAsync(const Value& data, std::function<void(Result<Value>)> done,
                                  std::optional<Deadline> deadline) {
  // A real MessageChannel: port2 travels with the request, the first reply on port1 wins.
  const uint64_t replyId = nextReplyId_++;
  detail::PortPtr port1;
  std::optional<Result<MessageSeq>> seq;
  if (conn_ && controlled_ && !closed_) {
    // The fast lane: the request registers the pair itself, so port2 never needs an object
    // here; port1 is REMOTE from the start. The same descriptor the general path would write.
    const PortId a = newPortId();
    PortId b = newPortId();
    while (b == a) b = newPortId();
    wire::PlainMessage m;
    m.kind = schema::Envelope::CONTROLLER_POST;
    m.hasPort = true;
    m.port = wire::PlainPort{b.value(), a.value(), 1, 1, true};
    const size_t bytes = wire::plainBytes(m, data);
    if (conn_->fitsInline(bytes)) {
      seq = sendWith(
          [&](MessageSeq s) {
            m.seq = s;
            return conn_->sendPlain(m, data, bytes);
          },
          PostOptions{}, true, true);
      if (*seq) {
        port1 = std::make_shared<detail::PortState>(this, a, b, detail::PortState::Mode::REMOTE);
        track(port1);
      }
    }
  }
  if (!seq) {
    auto [p1, p2] = detail::PortState::createPair(*this);
    p1->quietClose = true;  // marks port2's descriptor silentPeer
    core::OutgoingPayload p;
    p.value = &data;
    TransferList transfer{MessagePort(p2)};
    p2.reset();
    seq = sendPost(p, PostOptions{}, transfer);
    port1 = std::move(p1);
  }
  if (!*seq) {
    if (port1) port1->close();
    done(seq->error());
    return;
  }
  // Its close needs no wake-up: the daemon has usually dropped port2 already; otherwise it reads
  // the close with our next message.
  port1->quietClose = true;
  port1->interceptValue = [this, replyId](Value& v) { settleReply(replyId, std::move(v)); };
  port1->intercept = [this, replyId](detail::QueuedPortMessage& m) {
    if (!replies_.count(replyId)) return;  // answered already, or timed out: not even decoded
    MessageEvent ev;
    auto r = core::readPayload(m.payload, m.keepAlive, types_, ev);
    if (r)
      settleReply(replyId, std::move(ev.data));
    else
      settleReply(replyId, r.error());
  };
  port1->interceptClose = [this, replyId] {
    auto it = replies_.find(replyId);
    if (it == replies_.end() || it->second.hasDeadline) return;  // with a deadline, the deadline decides
    failReply(replyId, makeError(Errc::ABORT, "the service worker dropped the reply port without answering"));
  };
  PendingReply pr;
  pr.done = std::move(done);
  pr.seq = **seq;
  pr.port = std::move(port1);
  pr.hasDeadline = deadline.has_value();
  if (deadline) {
    pr.timer = loop_->addTimer(*deadline, [this, replyId] {
      auto it = replies_.find(replyId);
      if (it == replies_.end()) return;
      it->second.timer = 0;
      failReply(replyId, makeError(Errc::TIMEOUT, "no reply from the service worker before the deadline"));
    });
  }
  replies_.emplace(replyId, std::move(pr));
}

Result<Value> Client::Impl::messageSW(const Value& data, Deadline deadline) {
  std::optional<Result<Value>> result;
  ++blockingDepth_;
  messageSWAsync(
      data, [&result](Result<Value> r) { result.emplace(std::move(r)); },
      deadline == NO_DEADLINE ? std::nullopt : std::optional<Deadline>(deadline));
  while (!result) {
    if (opts_.spin.count() > 0 && conn_) {
      // Spin phase: clear our sleeping flag so the daemon skips the wake-up, poll the ring.
      conn_->disarm();
      const auto spinUntil = Clock::now() + opts_.spin;
      while (!result && conn_ && Clock::now() < spinUntil) {
        if (conn_->hasIncoming()) drainIncoming();
      }
      if (result) break;
    }
    if (conn_ && conn_->armAndCheck()) {
      drainIncoming();
      continue;
    }
    loop_->runOnce(NO_DEADLINE);
  }
  if (conn_) conn_->armAndCheck();
  --blockingDepth_;
  if (!deferred_.empty()) loop_->wake();
  return std::move(*result);
}

// ------------------------------------------------------------------------------------------------ public

Result<Client> Client::connect(const ClientOptions& opts) {
  auto impl = std::make_unique<Impl>(opts);
  if (auto r = impl->start(); !r) return r.error();
  return Client(std::move(impl));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  impl_->controller_ = Controller(this);
}
Client::Client(Client&& o) noexcept : impl_(std::move(o.impl_)) {
  if (impl_) impl_->controller_ = Controller(this);
}
Client& Client::operator=(Client&& o) noexcept {
  impl_ = std::move(o.impl_);
  if (impl_) impl_->controller_ = Controller(this);
  return *this;
}
Client::~Client() = default;

const ClientId& Client::id() const { return impl_->id_; }
bool Client::controlled() const { return impl_->controlled_; }
bool Client::attached() const { return impl_->conn_ != nullptr; }
Controller* Client::controller() { return impl_->controlled_ && impl_->conn_ ? &impl_->controller_ : nullptr; }
const std::string& Client::swVersion() const { return impl_->swVersion_; }
void Client::onMessage(std::function<void(const MessageEvent&)> fn) { impl_->onMessage_ = std::move(fn); }
void Client::onMessageError(std::function<void(const MessageErrorEvent&)> fn) { impl_->onMessageError_ = std::move(fn); }
void Client::onControllerChange(std::function<void(bool)> fn) { impl_->onControllerChange_ = std::move(fn); }
void Client::onUndelivered(std::function<void(MessageSeq, const Error&)> fn) { impl_->onUndelivered_ = std::move(fn); }
void Client::onDelivered(std::function<void(MessageSeq)> fn) { impl_->onDelivered_ = std::move(fn); }
void Client::onNavigate(std::function<void(const std::string&)> fn) { impl_->onNavigate_ = std::move(fn); }
void Client::onFocus(std::function<void()> fn) { impl_->onFocus_ = std::move(fn); }
const std::string& Client::url() const { return impl_->opts_.url; }
Result<void> Client::setFocus(bool focused) {
  impl_->focused_ = focused;
  return impl_->sendState(true);
}
Result<void> Client::setVisibility(bool visible) {
  impl_->visible_ = visible;
  return impl_->sendState(false);
}
TypeRegistry& Client::types() { return impl_->types_; }
void Client::startMessages() { impl_->startMessages(); }
Result<Value> Client::messageSW(const Value& data, Deadline deadline) { return impl_->messageSW(data, deadline); }
void Client::messageSWAsync(const Value& data, std::function<void(Result<Value>)> done,
                            std::optional<Deadline> deadline) {
  impl_->messageSWAsync(data, std::move(done), deadline);
}
int Client::fd() const { return impl_->loop_->fd(); }
void Client::dispatch() { impl_->dispatchOnce(Clock::now()); }
void Client::run() {
  // A stop() that came before run() still counts; the request is consumed when run() returns.
  while (!impl_->stopRequested_) impl_->dispatchOnce(NO_DEADLINE);
  impl_->stopRequested_ = false;
}
bool Client::runUntil(Deadline deadline) {
  while (!impl_->stopRequested_) {
    if (Clock::now() >= deadline) return false;
    impl_->dispatchOnce(deadline);
  }
  impl_->stopRequested_ = false;
  return true;
}
bool Client::runUntil(const std::function<bool()>& pred, Deadline deadline) {
  while (!pred()) {
    if (impl_->stopRequested_.exchange(false) || Clock::now() >= deadline) return pred();
    impl_->dispatchOnce(deadline);
  }
  return true;
}
void Client::stop() {
  impl_->stopRequested_ = true;
  impl_->loop_->wake();
}
void Client::post(std::function<void()> fn) { impl_->loop_->post(std::move(fn)); }
void Client::wake() { impl_->loop_->wake(); }
void Client::close() { impl_->close(); }
std::shared_ptr<detail::BroadcastHub> Client::broadcastHub() { return impl_->hub_; }
detail::PortHost& Client::portHost() { return *impl_; }

Result<MessageSeq> Controller::postMessage(const Value& data, const PostOptions& opts) {
  TransferList none;
  return postMessage(data, std::move(none), opts);
}

Result<MessageSeq> Controller::postMessage(const Value& data, TransferList transfer, const PostOptions& opts) {
  core::OutgoingPayload p;
  p.value = &data;
  return client_->impl_->sendPost(p, opts, transfer);
}

Result<MessageSeq> Controller::postTyped(uint64_t typeId, const TypedBuilder& build, const PostOptions& opts) {
  TransferList none;
  return postTyped(typeId, build, std::move(none), opts);
}

Result<MessageSeq> Controller::postTyped(uint64_t typeId, const TypedBuilder& build, TransferList transfer,
                                         const PostOptions& opts) {
  core::OutgoingPayload p;
  p.typeId = typeId;
  p.build = &build;
  return client_->impl_->sendPost(p, opts, transfer);
}

}  // namespace swipc
