// AttachServer: the daemon's listening socket and the attach handshake (DESIGN §3). It accepts a
// connection, checks the peer's credentials (SO_PEERCRED: our uid, or our gid with allowGroup)
// and the client limit, waits for the Hello until attachTimeout, checks it (protocol version, a
// client id not attached already), sends the Welcome with the client's segment, and hands the
// new ClientRecord (id, url, type, pid, connection) to the admit callback. Every refusal is
// counted and told to the peer as a named control error.
//
// @concurrent: single-threaded; the daemon's loop thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/unique_fd.h"
#include "core/attach.h"
#include "core/event_loop.h"
#include "core/socket.h"
#include "daemon/client_table.h"
#include "swipc/service_worker.h"

namespace swipc::daemon {

class AttachServer {
 public:
  /// A client passed the handshake: the record is not in the table yet (the callee inserts it).
  using Admit = std::function<void(std::unique_ptr<ClientRecord> record, const core::HelloInfo& hello)>;

  AttachServer(ClientTable& clients, core::EventLoop& loop, Counters& counters, const ServiceWorkerOptions& options)
      : clients_(clients), loop_(loop), counters_(counters), opts_(options) {}
  ~AttachServer() { stop(); }
  AttachServer(const AttachServer&) = delete;
  AttachServer& operator=(const AttachServer&) = delete;

  void onAdmit(Admit fn) { admit_ = std::move(fn); }
  /// Listens on `socketPath` (mode 0600, or 0660 with allowGroup); a stale socket is replaced.
  /// `epoch` goes into every Welcome.
  Result<void> start(const std::string& socketPath, uint64_t epoch);
  /// Stops listening (the socket file goes) and drops every handshake still pending.
  void stop();
  bool listening() const { return listenFd_.valid(); }
  /// Connections accepted whose Hello has not come yet.
  size_t pendingCount() const { return pending_.size(); }

 private:
  struct Pending {
    UniqueFd socket;
    core::EventLoop::WatchId watch = 0;
    core::EventLoop::TimerId timer = 0;
    core::PeerCred cred;
  };

  void onListenReadable();
  /// Accepts one connection and refuses it (out of fds: the spare fd makes room for that).
  void refuseForLackOfFds();
  void onPendingReadable(uint64_t pendingId);
  void dropPending(uint64_t pendingId);
  void admit(Pending p, const core::HelloInfo& hello);

  ClientTable& clients_;
  core::EventLoop& loop_;
  Counters& counters_;
  const ServiceWorkerOptions& opts_;
  Admit admit_;
  std::string socketPath_;
  UniqueFd listenFd_;
  core::EventLoop::WatchId listenWatch_ = 0;
  UniqueFd spareFd_;  // released to accept-and-refuse when the process runs out of fds
  uint64_t epoch_ = 0;
  uint64_t nextPending_ = 1;
  std::unordered_map<uint64_t, Pending> pending_;
};

}  // namespace swipc::daemon
