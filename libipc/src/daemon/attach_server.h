// AttachServer: the daemon's listening socket and the attach handshake (DESIGN §3). It accepts a
// connection, checks the peer's credentials (SO_PEERCRED: our uid; with allowGroup also a peer
// any of whose groups, supplementary ones included, is our gid) and the limits (clients in all,
// connections per uid that have not sent their Hello yet, attached clients per uid), waits for
// the Hello until attachTimeout, checks it (protocol version, a client id not attached already),
// sends the Welcome with the client's segment, and hands the new ClientRecord (id, url, type,
// pid, uid, connection) to the admit callback. Every refusal is counted, logged and told to the
// peer as a named control error (QuotaExceededError, InvalidAccessError, ...).
//
// File descriptors (daemon/fd_budget.h): start() raises the soft RLIMIT_NOFILE to the hard limit
// and logs it. Each Hello asks the FdBudget: the client gets its own wake fds (3 fds here) while
// fds are plentiful, socket wakes (1 fd) past a quarter of the limit, and a Hello that would eat
// into the reserve is refused with QuotaExceededError ("... file descriptor limit ..."), counted
// in rejectedClients and fdLimitRefused, and logged once per burst (one line, then at most one
// summary line per FD_LOG_INTERVAL while refusals go on). accept() failing with EMFILE/ENFILE
// closes a spare fd to accept and refuse that connection; when even that fails the listening
// socket is not watched for LISTEN_PAUSE (never a busy loop).
//
// A connection may send an InspectRequest instead of a Hello (swctl, DESIGN §17): it is answered
// from the inspect callback with one InspectReply, sent without blocking (a peer that does not
// read loses it), and closed. Inspectors pass the same uid check but no client limit: a
// connection accepted while --max-clients (or --max-clients-per-uid) is reached waits for its
// first datagram like any other, and only a Hello is then refused.
//
// @concurrent: single-threaded; the daemon's loop thread.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/unique_fd.h"
#include "core/attach.h"
#include "core/event_loop.h"
#include "core/socket.h"
#include "daemon/client_table.h"
#include "daemon/fd_budget.h"
#include "swipc/service_worker.h"

namespace swipc::daemon {

class AttachServer {
 public:
  /// A client passed the handshake: the record is not in the table yet (the callee inserts it).
  using Admit = std::function<void(std::unique_ptr<ClientRecord> record, const core::HelloInfo& hello)>;

  AttachServer(ClientTable& clients, core::EventLoop& loop, Counters& counters, const ServiceWorkerOptions& options);
  ~AttachServer();
  AttachServer(const AttachServer&) = delete;
  AttachServer& operator=(const AttachServer&) = delete;

  void onAdmit(Admit fn) { admit_ = std::move(fn); }
  /// Answers an inspector's command: JSON text, or an error told to the inspector.
  using Inspect = std::function<Result<std::string>(std::string_view command)>;
  void onInspect(Inspect fn) { inspect_ = std::move(fn); }
  /// Listens on `socketPath` (mode 0600, or 0660 with allowGroup); a stale socket is replaced.
  /// With `inherited` (socket activation) serves that listening socket instead, which must be
  /// bound to `socketPath` (core::adoptListeningSeqpacket); its file is then left in place at
  /// stop(), for the socket unit that owns the name. `epoch` goes into every Welcome.
  Result<void> start(const std::string& socketPath, uint64_t epoch, UniqueFd inherited = {});
  /// Stops listening (the socket file goes, unless inherited) and drops every handshake still pending.
  void stop();
  bool listening() const { return listenFd_.valid(); }
  /// Connections accepted whose Hello has not come yet.
  size_t pendingCount() const { return pending_.size(); }
  /// Of those, the ones from `uid`.
  size_t pendingCount(uid_t uid) const;
  /// The fd budget (set by start()).
  const std::optional<FdBudget>& fdBudget() const { return fds_; }

  static constexpr std::chrono::milliseconds FD_LOG_INTERVAL{10000};
  static constexpr std::chrono::milliseconds LISTEN_PAUSE{100};

 private:
  struct Pending {
    UniqueFd socket;
    core::EventLoop::WatchId watch = 0;
    core::EventLoop::TimerId timer = 0;
    core::PeerCred cred;
    std::optional<Error> overLimit;  // the client limit it crossed: a Hello is refused with this
    bool overUidLimit = false;       // that limit is --max-clients-per-uid
  };

  void onListenReadable();
  /// Accepts one connection and refuses it (out of fds: the spare fd makes room for that).
  void refuseForLackOfFds();
  /// Whether a peer with these credentials may talk to us at all (uid, or a group with allowGroup).
  bool peerAllowed(int fd, const core::PeerCred& cred) const;
  /// The per-uid limits a new connection from `uid` would cross: an error naming it, or none.
  std::optional<Error> overUidQuota(uid_t uid) const;
  void onPendingReadable(uint64_t pendingId);
  void dropPending(uint64_t pendingId);
  /// Welcomes the client: with its own wake fds, or with `socketWakes` (FdBudget's choice).
  void admit(Pending p, const core::HelloInfo& hello, bool socketWakes);
  /// The pending connection sent an InspectRequest: answer it (never blocking) and drop it.
  void answerInspect(uint64_t pendingId, std::string_view command);
  /// A client admitted by us left (the detach hook) or was never inserted: uncount it.
  void forgetAttached(const ClientId& id);
  /// Stops watching the listening socket for LISTEN_PAUSE (out of fds even for the spare).
  void pauseListening();

  /// One warning line per burst of like refusals: the first is logged at once, later ones are
  /// counted and summed up at most once per FD_LOG_INTERVAL until a quiet interval ends it.
  struct BurstLog {
    core::EventLoop::TimerId timer = 0;
    uint64_t unlogged = 0;
  };
  /// Logs `first` (a burst begins) or counts one more refusal of `what`.
  void noteBurst(BurstLog& b, const std::string& first, const char* what);
  void armBurstTimer(BurstLog& b, const char* what);

  ClientTable& clients_;
  core::EventLoop& loop_;
  Counters& counters_;
  const ServiceWorkerOptions& opts_;
  Admit admit_;
  Inspect inspect_;
  std::string socketPath_;
  bool ownsSocketFile_ = true;  // false: inherited (socket activation); stop() leaves the file
  UniqueFd listenFd_;
  core::EventLoop::WatchId listenWatch_ = 0;
  UniqueFd spareFd_;  // released to accept-and-refuse when the process runs out of fds
  std::optional<FdBudget> fds_;
  BurstLog fdRefusals_;     // Hellos refused at the fd limit
  BurstLog acceptRefusals_; // connections refused because accept() said EMFILE/ENFILE
  core::EventLoop::TimerId listenPause_ = 0;
  uint64_t epoch_ = 0;
  uint64_t nextPending_ = 1;
  std::unordered_map<uint64_t, Pending> pending_;
  std::unordered_map<uid_t, size_t> pendingByUid_;   // entries of pending_ per peer uid
  std::unordered_map<uid_t, size_t> attachedByUid_;  // alive clients per uid
  std::unordered_map<ClientId, uid_t> uidOf_;        // the uid each of them was admitted as
  ClientTable::HookId detachHook_ = 0;
};

}  // namespace swipc::daemon
