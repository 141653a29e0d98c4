// Outbound: everything the daemon sends a client goes through here. An envelope gets the
// client's next sequence number (newEnvelope), then goes into the client's down ring or, when the
// ring is full, into its backlog (enqueue), which flushBacklog() empties as the client drains.
// Every daemon→client queue is this one backlog, bounded in messages and in bytes, per client and
// per uid (ServiceWorkerOptions::maxBacklog, maxBacklogBytes, maxBacklogBytesPerUid):
//   - at a bound, posts from service-worker code fail with QueueFull (admitPost) and the client is
//     marked unresponsive (counted, logged once);
//   - the daemon's own traffic (acks, notices, replies, port messages) may take the backlog to
//     twice the bounds; a client that would pass that is disconnected as unresponsive at once;
//   - a client that stays unresponsive without draining anything for unresponsiveTimeout is
//     disconnected too.
// Disconnected means: told (goodbye with the reason), detached, its backlog reported undelivered
// message by message, and the memory handed back.
//
// The fast lane (sendDirect) writes a Value straight into the ring through
// core::Connection::sendValue, when nothing waits in the backlog ahead of it.
//
// @concurrent: single-threaded; the daemon's loop thread.
#pragma once

#include <capnp/message.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "core/event_loop.h"
#include "daemon/client_table.h"
#include "envelope.capnp.h"
#include "swipc/error.h"
#include "wire/plain_post.h"

namespace swipc::daemon {

class Outbound {
 public:
  /// A message the daemon had accepted for a client that went away before it was handed over.
  using UndeliveredFn = std::function<void(const ClientId&, MessageSeq, const Error&)>;

  /// Registers a detach hook: a leaving client's backlog is reported undelivered, message by
  /// message. Bounds from `options` (read at each use; it must outlive this).
  Outbound(ClientTable& clients, Counters& counters, core::EventLoop& loop, const ServiceWorkerOptions& options);
  Outbound(const Outbound&) = delete;
  Outbound& operator=(const Outbound&) = delete;

  /// A fresh envelope for `c`, its schema version and seq (the client's next) set.
  std::shared_ptr<capnp::MallocMessageBuilder> newEnvelope(ClientRecord& c, MessageSeq& seq);
  /// Into the ring, or behind what waits in the backlog. QuotaExceededError when over the
  /// client's max message size; Disconnected when its ring turned out corrupt (it is detached).
  Result<MessageSeq> enqueue(ClientRecord& c, std::shared_ptr<capnp::MallocMessageBuilder> mb, MessageSeq seq);
  /// Moves what the backlog holds into the ring while there is room.
  void flushBacklog(ClientRecord& c);
  /// The backlog is at one of its bounds (messages, bytes, or its uid's bytes).
  bool backlogFull(const ClientRecord& c) const;
  /// The gate of a post from service-worker code: QueueFull when the backlog is at its bound (the
  /// client is then marked unresponsive, once, and logged).
  Result<void> admitPost(ClientRecord& c);
  /// An error report about envelope `refSeq` (dropped, counted, when the client does not drain).
  void sendError(ClientRecord& c, Errc code, const std::string& message, uint64_t refSeq);
  /// newEnvelope + fill + enqueue; false when it could not be handed over.
  bool sendSimple(ClientRecord& c, const std::function<void(schema::Envelope::Builder)>& fill);

  /// The fast lane: `m` (its seq set here) carrying `data`, written straight into the ring.
  /// NOT_NOW when it must be built and enqueue()d instead (a backlog waits: it goes behind that;
  /// the ring is full; it is over --max-message-bytes). One larger than a ring record goes out of
  /// line, written once without a builder. BROKEN when the ring turned out corrupt
  /// (the client is detached).
  enum class Direct { SENT, NOT_NOW, BROKEN };
  Direct sendDirect(ClientRecord& c, wire::PlainMessage& m, const Value& data);

  /// A write into the client's down ring found its indices corrupt: a ProtocolViolation.
  void downRingBroken(ClientRecord& c);

  void onUndelivered(UndeliveredFn fn) { undelivered_ = std::move(fn); }
  size_t maxBacklog() const { return opts_.maxBacklog; }
  /// Bytes waiting in the backlogs of every client of `uid`.
  uint64_t uidBacklogBytes(uid_t uid) const;

 private:
  /// Into the backlog; false (and the client disconnected) when that would pass twice a bound.
  bool pushBacklog(ClientRecord& c, std::shared_ptr<capnp::MallocMessageBuilder> mb, MessageSeq seq);
  void popBacklog(ClientRecord& c);
  void chargeUid(uid_t uid, int64_t bytes);
  /// Marks `c` unresponsive (once: counted, logged) and arms its unresponsive timer.
  void markUnresponsive(ClientRecord& c);
  void armUnresponsiveTimer(ClientRecord& c, Deadline when);
  void onUnresponsiveTimer(const ClientId& id);
  void disconnectUnresponsive(ClientRecord& c, const std::string& why);
  /// The client left: what waits for it is reported undelivered, its memory handed back.
  void dropBacklog(ClientRecord& c);

  ClientTable& clients_;
  Counters& counters_;
  core::EventLoop& loop_;
  const ServiceWorkerOptions& opts_;
  std::unordered_map<uid_t, uint64_t> uidBytes_;
  UndeliveredFn undelivered_;
};

}  // namespace swipc::daemon
