// ConnectionState: this page's link to its scope's daemon, and who the page is to that daemon.
//
//   start() ──attach──► ATTACHED ──hang-up, goodbye, corrupt ring──► DETACHED ──timer──► re-attach
//                         ▲   │                                        │  backoff 50 ms, doubling
//                         │   └──close()──► CLOSED (Goodbye sent;      │  to 400 ms; the Hello
//                         │                  never re-attaches)        │  carries the resume token,
//                         └────────────────────────────────────────────┘  so the id stays the same
//
// It owns the core::Connection, watches its socket and wake pipe on the loop, reads what arrives
// (drainIncoming) and hands it to its Events, which the page wires to its modules: fast-lane
// messages to the ports or the held queue, everything else to the op table. It keeps what the
// daemon is told about the page (id, resume token, url, type, controlled, window state) and owns
// the kinds that change it: controllerChange, navigate and focus.
//
// What ends with a connection (outstanding posts, pending replies, remote ports, channel rings)
// belongs to other modules: lost() asks Events to end it, in the page's order, and calls back
// stopWatching() and release() on the way.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/attach.h"
#include "core/connection.h"
#include "core/event_loop.h"
#include "core/identity.h"
#include "core/paths.h"
#include "page/op_table.h"
#include "page/page_events.h"
#include "swipc/client.h"

namespace swipc::page {

/// @concurrent: single-threaded (the page's loop thread).
class ConnectionState {
 public:
  /// What the page does with what arrives, and when the link changes.
  class Events {
   public:
    /// A fast-lane message (a client post, or a port message the plain filter wanted).
    virtual void plain(const wire::PlainMessage& m, Value& data) = 0;
    /// Any other envelope.
    virtual void envelope(wire::Inbound&& in) = 0;
    /// The incoming ring is empty for now.
    virtual void drained() = 0;
    /// The daemon is gone (or the page detaches): end everything tied to this connection, and
    /// call stopWatching(), release() and scheduleReconnect() on the way.
    virtual void lost(const std::string& reason) = 0;
    /// Attached to a daemon again (a new one, or the same one after a broken link): tell it what
    /// it must know. Runs before the controllerchange the re-attach fires.
    virtual void reattached() = 0;

   protected:
    ~Events() = default;
  };

  /// Runs the attach handshake (default: core::checkScopeDirs, then core::attachToDaemon at the
  /// scope's socket).
  using AttachFn = std::function<Result<core::Attached>(const core::HelloInfo& hello, Deadline deadline)>;

  ConnectionState(ClientOptions opts, core::EventLoop& loop, PageEvents& events, OpTable& ops,
                  AttachFn attach = nullptr);
  ConnectionState(const ConnectionState&) = delete;
  ConnectionState& operator=(const ConnectionState&) = delete;

  void setEvents(Events* events) { sink_ = events; }
  /// The filter the fast lane asks before it decodes a port message (the page's ports).
  void setPlainFilter(const wire::PlainFilter* filter) { filter_ = filter; }

  /// Resolves the scope's paths and attaches (blocking up to opts.attachTimeout):
  /// NoDaemon, AttachTimeout, VersionMismatch, TypeError, ProtocolViolation, InvalidAccessError
  /// (a runtime dir or daemon that is not ours or root's), or the daemon's named refusal.
  Result<void> start();

  // ---- the link
  bool attached() const { return conn_ != nullptr; }
  /// The connection, nullptr while detached.
  core::Connection* conn() const { return conn_.get(); }
  /// Bumps whenever the connection is replaced or dropped: a caller that ran code which may have
  /// re-entered compares it to know whether its connection is still the current one.
  uint64_t generation() const { return generation_; }
  bool closed() const { return closed_; }

  /// The socket has news (events from epoll; EPOLLHUP when it hung up): reads its datagrams,
  /// then the ring; detects the daemon's loss.
  void onSocket(uint32_t events);
  /// The wake pipe has news: reads the ring.
  void onWake();
  /// Reads every envelope in the incoming ring and hands it to Events.
  void drainIncoming();

  /// The daemon is gone (`reason` says why): Events::lost(). Nothing when detached already.
  void lost(const std::string& reason);
  /// Steps of lost(): the loop stops watching the connection's fds...
  void stopWatching();
  /// ... the connection is dropped (generation bumps, the page is uncontrolled); returns
  /// whether it was controlled ...
  bool release();
  /// ... and a re-attach is timed (with backoff), unless closed or reconnect is off.
  void scheduleReconnect();

  /// close(), first step: no more re-attaching. False when closed already.
  bool beginClose();
  /// Tells the daemon this is a normal exit (best effort).
  void sendGoodbye();

  // ---- who the page is
  const ClientId& id() const { return id_; }
  bool controlled() const { return controlled_; }
  const std::string& swVersion() const { return swVersion_; }
  const std::string& url() const { return opts_.url; }
  const ClientOptions& options() const { return opts_; }
  /// Window state (setFocus / setVisibility), kept across re-attaches.
  bool focused() const { return focused_; }
  bool visible() const { return visible_; }
  void setFocused(bool focused) { focused_ = focused; }
  void setVisible(bool visible) { visible_ = visible; }

 private:
  core::HelloInfo hello() const;
  /// No daemon answered and opts.spawnDaemon: starts one (page/daemon_spawn.h), then attaches,
  /// retrying until opts.spawnTimeout.
  Result<core::Attached> spawnAndAttach(const core::HelloInfo& hello);
  void install(core::Attached attached);
  void tryReconnect();

  ClientOptions opts_;
  core::EventLoop& loop_;
  PageEvents& events_;
  AttachFn attach_;
  Events* sink_ = nullptr;
  const wire::PlainFilter* filter_ = nullptr;
  core::ScopePaths paths_;
  std::unique_ptr<core::Connection> conn_;
  uint64_t generation_ = 0;
  bool closed_ = false;
  core::EventLoop::WatchId socketWatch_ = 0;
  core::EventLoop::WatchId wakeWatch_ = 0;  // the daemon's wake pipe: the down ring has news
  core::EventLoop::TimerId reconnectTimer_ = 0;
  std::chrono::milliseconds backoff_{50};

  core::ResumeToken token_{};
  bool haveToken_ = false;
  ClientId id_;
  bool controlled_ = false;
  std::string swVersion_;
  bool focused_ = false;
  bool visible_ = true;
};

}  // namespace swipc::page
