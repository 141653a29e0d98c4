// Outbound: everything the daemon sends a client goes through here. An envelope gets the
// client's next sequence number (newEnvelope), then goes into the client's down ring or, when the
// ring is full, into its backlog (enqueue), which flushBacklog() empties as the client drains.
// The backlog is bounded (ServiceWorkerOptions::maxBacklog): a client that stops draining is
// marked unresponsive and further posts to it are refused, never silently dropped.
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

#include "daemon/client_table.h"
#include "envelope.capnp.h"
#include "swipc/error.h"
#include "wire/plain_post.h"

namespace swipc::daemon {

class Outbound {
 public:
  /// A message the daemon had accepted for a client that went away before it was handed over.
  using UndeliveredFn = std::function<void(const ClientId&, MessageSeq, const Error&)>;

  /// Registers a detach hook: a leaving client's backlog is reported undelivered, message by message.
  Outbound(ClientTable& clients, Counters& counters, size_t maxBacklog);
  Outbound(const Outbound&) = delete;
  Outbound& operator=(const Outbound&) = delete;

  /// A fresh envelope for `c`, its schema version and seq (the client's next) set.
  std::shared_ptr<capnp::MallocMessageBuilder> newEnvelope(ClientRecord& c, MessageSeq& seq);
  /// Into the ring, or behind what waits in the backlog. QuotaExceededError when over the
  /// client's max message size; Disconnected when its ring turned out corrupt (it is detached).
  Result<MessageSeq> enqueue(ClientRecord& c, std::shared_ptr<capnp::MallocMessageBuilder> mb, MessageSeq seq);
  /// Moves what the backlog holds into the ring while there is room.
  void flushBacklog(ClientRecord& c);
  /// The backlog is at its bound.
  bool backlogFull(const ClientRecord& c) const { return c.backlog.size() >= maxBacklog_; }
  /// The gate of a post from service-worker code: QueueFull when the backlog is at its bound (the
  /// client is then marked unresponsive, once, and logged).
  Result<void> admitPost(ClientRecord& c);
  /// An error report about envelope `refSeq` (dropped, counted, when the client does not drain).
  void sendError(ClientRecord& c, Errc code, const std::string& message, uint64_t refSeq);
  /// newEnvelope + fill + enqueue; false when it could not be handed over.
  bool sendSimple(ClientRecord& c, const std::function<void(schema::Envelope::Builder)>& fill);

  /// The fast lane: `m` (its seq set here) carrying `data`, written straight into the ring.
  /// NOT_NOW when it must be built and enqueue()d instead (a backlog waits: it goes behind that;
  /// the ring is full; it needs more than one record); BROKEN when the ring turned out corrupt
  /// (the client is detached).
  enum class Direct { SENT, NOT_NOW, BROKEN };
  Direct sendDirect(ClientRecord& c, wire::PlainMessage& m, const Value& data);

  /// A write into the client's down ring found its indices corrupt: a ProtocolViolation.
  void downRingBroken(ClientRecord& c);

  void onUndelivered(UndeliveredFn fn) { undelivered_ = std::move(fn); }
  size_t maxBacklog() const { return maxBacklog_; }

 private:
  void pushBacklog(ClientRecord& c, std::shared_ptr<capnp::MallocMessageBuilder> mb, MessageSeq seq);
  void popBacklog(ClientRecord& c);
  /// The client left: what waits for it is reported undelivered.
  void dropBacklog(ClientRecord& c);

  ClientTable& clients_;
  Counters& counters_;
  size_t maxBacklog_;
  UndeliveredFn undelivered_;
};

}  // namespace swipc::daemon
