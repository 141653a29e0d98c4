#include "daemon/attach_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/log.h"
#include "wire/codec.h"
#include "wire/limits.h"

namespace swipc::daemon {

AttachServer::AttachServer(ClientTable& clients, core::EventLoop& loop, Counters& counters,
                           const ServiceWorkerOptions& options)
    : clients_(clients), loop_(loop), counters_(counters), opts_(options) {
  detachHook_ = clients_.onDetach([this](ClientRecord& c) { forgetAttached(c.id); });
}

AttachServer::~AttachServer() {
  stop();
  clients_.removeDetachHook(detachHook_);
}

void AttachServer::forgetAttached(const ClientId& id) {
  auto it = uidOf_.find(id);
  if (it == uidOf_.end()) return;
  auto u = attachedByUid_.find(it->second);
  if (u != attachedByUid_.end() && --u->second == 0) attachedByUid_.erase(u);
  uidOf_.erase(it);
}

size_t AttachServer::pendingCount(uid_t uid) const {
  auto it = pendingByUid_.find(uid);
  return it == pendingByUid_.end() ? 0 : it->second;
}

Result<void> AttachServer::start(const std::string& socketPath, uint64_t epoch, UniqueFd inherited) {
  if (listening()) return {};
  // Every client holds fds here: use all the fds the hard limit allows.
  const FdBudget::Limits lim = FdBudget::raiseSoftLimit();
  fds_.emplace(lim.soft);
  core::log().info("file descriptor limit {} (soft was {}, hard {}): {} kept in reserve; a client costs {} fd(s), {} "
                   "with its own wake fds (while no more than {} are in use)",
                   lim.soft, lim.softBefore, lim.hard, fds_->reserve(), FdBudget::FDS_WITH_SOCKET_WAKES,
                   FdBudget::FDS_WITH_WAKE_FDS, lim.soft / FdBudget::WAKE_FDS_SHARE_DIVISOR);
  spareFd_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  const unsigned mode = opts_.allowGroup ? 0660 : 0600;
  const bool adopt = inherited.valid();
  auto sock = adopt ? core::adoptListeningSeqpacket(std::move(inherited), socketPath, mode)
                    : core::listenSeqpacket(socketPath, mode);
  if (!sock) return sock.error();
  auto w = loop_.watch(sock->get(), EPOLLIN, [this](uint32_t) { onListenReadable(); });
  if (!w) {
    if (!adopt) ::unlink(socketPath.c_str());
    return w.error();
  }
  ownsSocketFile_ = !adopt;
  listenFd_ = std::move(*sock);
  listenWatch_ = *w;
  socketPath_ = socketPath;
  epoch_ = epoch;
  return {};
}

void AttachServer::stop() {
  for (BurstLog* b : {&fdRefusals_, &acceptRefusals_}) {
    loop_.cancelTimer(b->timer);
    b->timer = 0;
    b->unlogged = 0;
  }
  loop_.cancelTimer(listenPause_);
  listenPause_ = 0;
  for (auto& [pid, p] : pending_) {
    loop_.unwatch(p.watch);
    loop_.cancelTimer(p.timer);
  }
  pending_.clear();
  pendingByUid_.clear();
  if (!listening()) return;
  loop_.unwatch(listenWatch_);
  listenWatch_ = 0;
  if (ownsSocketFile_) ::unlink(socketPath_.c_str());
  listenFd_.reset();
}

namespace {

/// Tells a connection why it is refused, then closes it. What the peer already sent (its Hello)
/// is read first: closing a socket with unread data resets the peer's end, and its read would
/// then fail before it reaches our reason.
void refuse(UniqueFd socket, Errc code, const std::string& message) {
  core::Datagram unread;
  while (core::recvDatagram(socket.get(), unread, wire::MAX_CONTROL_BYTES) == core::IoStatus::OK) {
  }
  core::sendControlError(socket.get(), code, message);
}

}  // namespace

void AttachServer::noteBurst(BurstLog& b, const std::string& first, const char* what) {
  if (b.timer != 0) {
    ++b.unlogged;
    return;
  }
  core::log().warn("{}", first);
  armBurstTimer(b, what);
}

void AttachServer::armBurstTimer(BurstLog& b, const char* what) {
  b.timer = loop_.addTimer(deadlineIn(FD_LOG_INTERVAL), [this, &b, what] {
    b.timer = 0;
    if (b.unlogged == 0) return;  // a quiet interval: the burst is over
    core::log().warn("refused {} more {} in the last {} s", b.unlogged, what,
                     std::chrono::duration_cast<std::chrono::seconds>(FD_LOG_INTERVAL).count());
    b.unlogged = 0;
    armBurstTimer(b, what);
  });
}

void AttachServer::pauseListening() {
  if (listenPause_ != 0 || listenWatch_ == 0) return;
  loop_.unwatch(listenWatch_);
  listenWatch_ = 0;
  listenPause_ = loop_.addTimer(deadlineIn(LISTEN_PAUSE), [this] {
    listenPause_ = 0;
    if (!listenFd_) return;
    auto w = loop_.watch(listenFd_.get(), EPOLLIN, [this](uint32_t) { onListenReadable(); });
    if (w) {
      listenWatch_ = *w;
    } else {
      pauseListening();
    }
  });
}

void AttachServer::refuseForLackOfFds() {
  // Use the spare to accept and refuse the connection, so the listening socket does not stay
  // readable forever (a busy loop) and the client hears why.
  ++counters_.rejectedClients;
  ++counters_.fdLimitRefused;
  const int err = errno;
  spareFd_.reset();
  UniqueFd refused;
  const bool accepted = core::acceptConnection(listenFd_.get(), refused) == core::IoStatus::OK;
  if (accepted)
    refuse(std::move(refused), Errc::QUOTA_EXCEEDED,
           "daemon is out of file descriptors (its file descriptor limit is reached)");
  spareFd_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  noteBurst(acceptRefusals_,
            std::string("accept: ") + (err == ENFILE ? "the system" : "the daemon") +
                " is out of file descriptors (file descriptor limit " + std::to_string(fds_ ? fds_->limit() : 0) +
                "): refusing connections (" + std::to_string(clients_.size()) + " clients)",
            "connections (out of file descriptors)");
  // Without the spare (or when even it did not make room) the socket would stay readable with
  // nothing we can do: stop watching it for a moment instead of spinning.
  if (!accepted || !spareFd_) pauseListening();
}

void AttachServer::onListenReadable() {
  for (int i = 0; i < 64; ++i) {
    UniqueFd sock;
    auto st = core::acceptConnection(listenFd_.get(), sock);
    if (st == core::IoStatus::FAILED && (errno == EMFILE || errno == ENFILE)) return refuseForLackOfFds();
    if (st != core::IoStatus::OK) return;
    auto cred = core::peerCred(sock.get());
    if (!cred) continue;
    if (!peerAllowed(sock.get(), *cred)) {
      ++counters_.rejectedClients;
      core::log().warn("rejected pid={} uid={} gid={}: not this daemon's user{}", cred->pid, cred->uid, cred->gid,
                       opts_.allowGroup ? " nor in its group" : "");
      refuse(std::move(sock), Errc::INVALID_ACCESS, "peer uid not allowed");
      continue;
    }
    if (pendingCount(cred->uid) >= opts_.maxPendingPerUid) {
      ++counters_.rejectedClients;
      ++counters_.uidQuotaRefused;
      auto over = overUidQuota(cred->uid);
      core::log().warn("rejected pid={} uid={}: {}", cred->pid, cred->uid, over->message);
      refuse(std::move(sock), over->code, over->message);
      continue;
    }
    // The client limits apply to a Hello only: whether this is an inspector is known once its
    // first datagram comes (the pending-per-uid limit above bounds these connections).
    uint64_t pid = nextPending_++;
    Pending p;
    p.cred = *cred;
    if (clients_.size() + pending_.size() >= opts_.maxClients) {
      p.overLimit = makeError(Errc::QUOTA_EXCEEDED, "daemon has reached --max-clients " + std::to_string(opts_.maxClients));
    } else if (auto over = overUidQuota(cred->uid)) {
      p.overLimit = std::move(over);
      p.overUidLimit = true;
    }
    int fd = sock.get();
    p.socket = std::move(sock);
    auto w = loop_.watch(fd, EPOLLIN | EPOLLRDHUP, [this, pid](uint32_t) { onPendingReadable(pid); });
    if (!w) continue;
    p.watch = *w;
    p.timer = loop_.addTimer(deadlineIn(opts_.attachTimeout), [this, pid] {
      auto it = pending_.find(pid);
      if (it == pending_.end()) return;
      ++counters_.attachTimeouts;
      core::log().warn("attach timeout: pid={} sent no Hello within {} ms", it->second.cred.pid,
                       opts_.attachTimeout.count());
      core::sendControlError(it->second.socket.get(), Errc::ATTACH_TIMEOUT, "no Hello before the deadline");
      dropPending(pid);
    });
    ++pendingByUid_[p.cred.uid];
    pending_.emplace(pid, std::move(p));
  }
}

bool AttachServer::peerAllowed(int fd, const core::PeerCred& cred) const {
  if (cred.uid == ::geteuid()) return true;
  if (!opts_.allowGroup) return false;
  // --allow-group: any of the peer's groups counts, not just its primary one (a user is
  // usually in a shared group as a supplementary one).
  const gid_t ours = ::getegid();
  if (cred.gid == ours) return true;
  auto groups = core::peerGroups(fd);
  if (!groups) return false;
  for (gid_t g : *groups)
    if (g == ours) return true;
  return false;
}

std::optional<Error> AttachServer::overUidQuota(uid_t uid) const {
  // dbus-broker style per-user slots: one user's silent connections or many pages cannot take
  // every slot; other users (--allow-group) and root still get in.
  if (pendingCount(uid) >= opts_.maxPendingPerUid)
    return makeError(Errc::QUOTA_EXCEEDED, "uid " + std::to_string(uid) + " has " +
                                               std::to_string(opts_.maxPendingPerUid) +
                                               " connections without a Hello (--max-pending-per-uid)");
  auto it = attachedByUid_.find(uid);
  if (it != attachedByUid_.end() && it->second >= opts_.maxClientsPerUid)
    return makeError(Errc::QUOTA_EXCEEDED, "uid " + std::to_string(uid) + " has " +
                                               std::to_string(opts_.maxClientsPerUid) +
                                               " clients attached (--max-clients-per-uid)");
  return std::nullopt;
}

void AttachServer::dropPending(uint64_t pendingId) {
  auto it = pending_.find(pendingId);
  if (it == pending_.end()) return;
  loop_.unwatch(it->second.watch);
  loop_.cancelTimer(it->second.timer);
  auto u = pendingByUid_.find(it->second.cred.uid);
  if (u != pendingByUid_.end() && --u->second == 0) pendingByUid_.erase(u);
  pending_.erase(it);
}

void AttachServer::onPendingReadable(uint64_t pendingId) {
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
  if (in->control().isInspect()) return answerInspect(pendingId, in->control().getInspect().getCommand().cStr());
  if (auto& over = it->second.overLimit) {
    ++counters_.rejectedClients;
    if (it->second.overUidLimit) ++counters_.uidQuotaRefused;
    core::log().warn("rejected pid={} uid={}: {}", it->second.cred.pid, it->second.cred.uid, over->message);
    core::sendControlError(it->second.socket.get(), over->code, over->message);
    dropPending(pendingId);
    return;
  }
  auto hello = core::parseHello(in->control());
  if (!hello) return fail(hello.error().code, hello.error().message);
  if (hello->protocolVersion != schema::PROTOCOL_VERSION)
    return fail(Errc::VERSION_MISMATCH, "daemon speaks protocol " + std::to_string(schema::PROTOCOL_VERSION) +
                                            ", client " + std::to_string(hello->protocolVersion));
  const FdBudget::Admit fit = fds_ ? fds_->decide() : FdBudget::Admit::WAKE_FDS;
  if (fit == FdBudget::Admit::REFUSE) {
    ++counters_.rejectedClients;
    ++counters_.fdLimitRefused;
    const std::string why = "daemon is near its file descriptor limit (" + std::to_string(fds_->inUse()) + " of " +
                            std::to_string(fds_->limit()) + " in use, " + std::to_string(fds_->reserve()) +
                            " kept in reserve)";
    noteBurst(fdRefusals_,
              "rejected pid=" + std::to_string(it->second.cred.pid) + ": " + why + " with " +
                  std::to_string(clients_.aliveCount()) + " clients; further refusals are summed up",
              "attaches (file descriptor limit)");
    core::sendControlError(it->second.socket.get(), Errc::QUOTA_EXCEEDED, why);
    dropPending(pendingId);
    return;
  }
  Pending p = std::move(it->second);  // the socket moves; its watch, timer and uid stay to be dropped
  dropPending(pendingId);
  admit(std::move(p), *hello, fit == FdBudget::Admit::SOCKET_WAKES);
}

void AttachServer::answerInspect(uint64_t pendingId, std::string_view command) {
  auto it = pending_.find(pendingId);
  const int fd = it->second.socket.get();
  Result<std::string> json = inspect_ ? inspect_(command)
                                      : Result<std::string>(makeError(Errc::INVALID_STATE, "this daemon has no inspector"));
  if (!json) {
    core::sendControlError(fd, json.error().code, json.error().message);
  } else if (!core::sendInspectReply(fd, *json)) {
    core::log().warn("inspector pid={}: its reply ({} bytes) did not go; dropped", it->second.cred.pid, json->size());
  } else {
    core::log().debug("inspector pid={}: {} ({} bytes)", it->second.cred.pid, command, json->size());
  }
  dropPending(pendingId);  // closes the connection: the reply stays readable in the peer's queue
}

void AttachServer::admit(Pending p, const core::HelloInfo& hello, bool socketWakes) {
  core::WelcomeInfo w;
  w.resumeToken = hello.resumeToken ? *hello.resumeToken : core::newResumeToken();
  w.clientId = core::clientIdForToken(w.resumeToken);
  if (clients_.findAlive(w.clientId)) {
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
  w.socketWakes = socketWakes;
  auto conn = core::sendWelcome(std::move(p.socket), w);
  if (!conn) {
    core::log().warn("attach failed pid={}: {}", p.cred.pid, conn.error().describe());
    return;
  }
  if (fds_) fds_->admitted(socketWakes ? FdBudget::FDS_WITH_SOCKET_WAKES : FdBudget::FDS_WITH_WAKE_FDS);
  auto rec = std::make_unique<ClientRecord>();
  rec->id = w.clientId;
  rec->url = hello.url;
  rec->type = hello.type;
  rec->frameType = hello.type == ClientType::WORKER ? FrameType::NONE : FrameType::TOP_LEVEL;
  rec->controlled = hello.controlled;
  rec->pid = p.cred.pid;
  rec->uid = p.cred.uid;
  rec->conn = std::move(*conn);
  const ClientId id = rec->id;
  // Counted before the callee inserts it, so that a detach from inside the callback (the hook
  // counts it down) balances; undone when the callee could not take it.
  uidOf_[id] = p.cred.uid;
  ++attachedByUid_[p.cred.uid];
  if (admit_) admit_(std::move(rec), hello);
  if (!clients_.find(id)) forgetAttached(id);
}

}  // namespace swipc::daemon
