// Sender: the one way out of the page. Every envelope the page sends goes through sendWith(),
// which numbers it (sender-local seq, increasing across re-attaches), waits out a full up ring
// (up to PostOptions::waitForSpace, handling what arrives meanwhile), and remembers what the
// daemon has not consumed yet, so that a daemon's death reports each post as delivered or not
// (never silently lost, never duplicated).
//
//   sendValue(m, value)   the fast lane: written straight into the ring (core::Connection::
//                         sendValue); nullopt when it does not fit one record
//   sendEnvelope(fill)    anything else: built (on a reused scratch arena) and sent inline or
//                         out of line
//
// It also owns the daemon's answers about our posts: ack (consumed) and error (refused).
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <capnp/common.h>

#include "core/event_loop.h"
#include "page/connection_state.h"
#include "page/held_queue.h"
#include "page/op_table.h"
#include "page/page_events.h"
#include "swipc/client.h"

namespace swipc::page {

/// @concurrent: single-threaded (the page's loop thread).
class Sender {
 public:
  using Fill = std::function<void(schema::Envelope::Builder)>;

  Sender(ConnectionState& link, HeldQueue& queue, PageEvents& events, core::EventLoop& loop, OpTable& ops);
  Sender(const Sender&) = delete;
  Sender& operator=(const Sender&) = delete;

  /// Sends the envelope `fill` writes (header already set). `track`: delivery is accounted for
  /// (onDelivered with opts.requestAck, onUndelivered when the daemon dies first). `wake` false:
  /// the daemon is not rung for this one (it is read with the next message, or rung by
  /// ringDeferred()). Disconnected, QueueFull, QuotaExceededError; the seq on success.
  Result<MessageSeq> sendEnvelope(const Fill& fill, const PostOptions& opts, bool track, bool wake = true);
  /// The fast lane: `m` (its seq is set here) carrying `data`, written straight into the ring.
  /// nullopt when it does not fit one ring record (nothing was sent: build the envelope and
  /// sendEnvelope() it); otherwise as sendEnvelope().
  std::optional<Result<MessageSeq>> sendValue(wire::PlainMessage& m, const Value& data, const PostOptions& opts,
                                              bool track, bool wake = true);
  /// Tells the daemon the page's window state (ConnectionState's focused/visible).
  Result<void> sendState(bool focusChanged);

  /// Rings the daemon for what was sent without a wake-up (before the loop next waits).
  void ringDeferred() {
    if (deferredWake_ && link_.conn()) link_.conn()->wakePeerIfSleeping();
    deferredWake_ = false;
  }
  /// Forgets tracked posts the daemon has consumed that wait for no ack.
  void pruneOutstanding();

  /// `hook(seq, error)` runs when the daemon refuses post `seq`, before onUndelivered.
  /// Adds a hook told of every envelope the daemon refused (its seq and the daemon's reason).
  void onRejected(std::function<void(MessageSeq, const Error&)> hook) { rejected_.push_back(std::move(hook)); }

  /// What became of the tracked posts when the connection went.
  struct Loss {
    std::vector<MessageSeq> delivered;  // consumed, and waiting for an ack
    std::vector<MessageSeq> lost;       // never consumed
  };
  /// The daemon is gone, the connection still here: its consumed index is final. Splits and
  /// forgets every tracked post.
  Loss settleOnLoss();
  /// Reports `loss` (onDelivered, then onUndelivered, which `closing` leaves out: the daemon
  /// drains a ring before it detaches a client that says goodbye).
  void reportLoss(const Loss& loss, const std::string& reason, bool closing);

 private:
  struct Outstanding {
    MessageSeq seq;
    uint64_t endPos;  // up-ring tail after this message: consumed once the daemon's head passes it
    bool wantAck;
  };

  /// The loop behind every send: `attempt(seq)` tries once (a Connection::ValueStatus); a full
  /// ring is waited out up to opts.waitForSpace. nullopt when the attempt said NOT_INLINE.
  template <typename Attempt>
  std::optional<Result<MessageSeq>> sendWith(const Attempt& attempt, const PostOptions& opts, bool track, bool wake);
  /// Waits for the daemon to free ring space (or go away); handles what arrives meanwhile,
  /// deferring its events. False at the deadline or when the connection changed.
  bool waitForSpace(Deadline deadline);
  void forget(MessageSeq seq);

  ConnectionState& link_;
  HeldQueue& queue_;
  PageEvents& events_;
  core::EventLoop& loop_;
  std::vector<std::function<void(MessageSeq, const Error&)>> rejected_;
  MessageSeq nextSeq_ = 1;  // sender-local, keeps increasing across re-attaches
  std::deque<Outstanding> outstanding_;
  bool deferredWake_ = false;  // something was sent without ringing the daemon
  int sendDepth_ = 0;          // > 0 while a send waits for ring space
  std::array<capnp::word, 1024> scratch_{};
};

}  // namespace swipc::page
