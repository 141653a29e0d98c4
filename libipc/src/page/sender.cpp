#include "page/sender.h"

#include <poll.h>
#include <sys/epoll.h>

#include <algorithm>

#include <capnp/message.h>

#include "core/log.h"

namespace swipc::page {

using core::Connection;

Sender::Sender(ConnectionState& link, HeldQueue& queue, PageEvents& events, core::EventLoop& loop, OpTable& ops)
    : link_(link), queue_(queue), events_(events), loop_(loop) {
  ops.on(schema::Envelope::ACK, [this](schema::Envelope::Reader env, const auto&) {
    const MessageSeq seq = env.getAck().getSeq();
    forget(seq);
    events_.delivered(seq);
  });
  ops.on(schema::Envelope::ERROR, [this](schema::Envelope::Reader env, const auto&) {
    auto e = env.getError();
    Errc code = Errc::PROTOCOL_VIOLATION;
    errorFromName(e.getName().cStr(), code);
    Error err = makeError(code, e.getMessage().cStr());
    const MessageSeq ref = e.getRefSeq();
    for (const auto& hook : rejected_) hook(ref, err);
    forget(ref);
    core::log().warn("daemon rejected message seq={}: {}", ref, err.describe());
    events_.undelivered(ref, err);
  });
}

void Sender::forget(MessageSeq seq) {
  for (auto it = outstanding_.begin(); it != outstanding_.end(); ++it) {
    if (it->seq == seq) {
      outstanding_.erase(it);
      return;
    }
  }
}

// ------------------------------------------------------------------------------------------------ sending

template <typename Attempt>
std::optional<Result<MessageSeq>> Sender::sendWith(const Attempt& attempt, const PostOptions& opts, bool track,
                                                   bool wake) {
  if (link_.closed()) return makeError(Errc::DISCONNECTED, "client is closed");
  if (!link_.attached()) return makeError(Errc::DISCONNECTED, "not attached to a daemon");
  std::optional<Deadline> deadline;  // from the first full ring (a clock read only when needed)
  for (;;) {
    const MessageSeq seq = nextSeq_;
    Connection* conn = link_.conn();
    switch (attempt(*conn, seq)) {
      case Connection::ValueStatus::SENT:
        ++nextSeq_;
        if (track) outstanding_.push_back(Outstanding{seq, conn->outPublished(), opts.requestAck});
        if (wake) {
          conn->wakePeerIfSleeping();
          deferredWake_ = false;
        } else {
          deferredWake_ = true;  // rung before this loop next waits (ringDeferred)
        }
        if (outstanding_.size() > 4096) pruneOutstanding();
        return seq;
      case Connection::ValueStatus::NOT_INLINE:
        return std::nullopt;
      case Connection::ValueStatus::TOO_BIG:
        return makeError(Errc::QUOTA_EXCEEDED, "message larger than the daemon's limit of " +
                                                   std::to_string(conn->maxMessageBytes()) + " bytes; nothing sent");
      case Connection::ValueStatus::BROKEN:
        link_.lost("ring corrupt");
        return makeError(Errc::DISCONNECTED, "connection to the daemon broke");
      case Connection::ValueStatus::FULL: {
        conn->wakePeer();  // make sure the daemon is draining
        ++sendDepth_;
        if (!deadline) deadline = deadlineIn(opts.waitForSpace);
        const bool space = waitForSpace(*deadline);
        --sendDepth_;
        if (!space) {
          if (!link_.attached()) return makeError(Errc::DISCONNECTED, "daemon went away while the queue was full");
          return makeError(Errc::QUEUE_FULL, "the daemon's queue stayed full; nothing sent");
        }
        break;
      }
    }
  }
}

Result<MessageSeq> Sender::sendEnvelope(const Fill& fill, const PostOptions& opts, bool track, bool wake) {
  auto sent = sendWith(
      [&](Connection& conn, MessageSeq seq) {
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
        // The builders go (and the scratch is zeroed) before any wait.
        switch (conn.send(*mb, seq)) {
          case Connection::SendStatus::OK: return Connection::ValueStatus::SENT;
          case Connection::SendStatus::FULL: return Connection::ValueStatus::FULL;
          case Connection::SendStatus::TOO_BIG: return Connection::ValueStatus::TOO_BIG;
          case Connection::SendStatus::BROKEN: break;
        }
        return Connection::ValueStatus::BROKEN;
      },
      opts, track, wake);
  return std::move(*sent);  // an envelope is always sendable inline or out of line
}

std::optional<Result<MessageSeq>> Sender::sendValue(wire::PlainMessage& m, const Value& data, const PostOptions& opts,
                                                    bool track, bool wake) {
  return sendWith(
      [&](Connection& conn, MessageSeq seq) {
        m.seq = seq;
        return conn.sendValue(m, data);
      },
      opts, track, wake);
}

Result<void> Sender::sendState(bool focusChanged) {
  if (link_.closed()) return makeError(Errc::DISCONNECTED, "client is closed");
  if (!link_.attached()) return {};  // remembered; sent after the next attach
  const bool focused = link_.focused();
  const bool visible = link_.visible();
  auto r = sendEnvelope(
      [&](schema::Envelope::Builder e) {
        auto st = e.initClientState();
        st.setFocused(focused);
        st.setVisible(visible);
        st.setFocusChanged(focusChanged);
      },
      PostOptions{}, false);
  if (!r) return r.error();
  return {};
}

bool Sender::waitForSpace(Deadline deadline) {
  // The daemon writes our wake pipe once it frees space (we set writerWaiting on FULL); the
  // socket tells us if it goes away meanwhile.
  const uint64_t gen = link_.generation();
  while (link_.attached() && gen == link_.generation()) {
    auto now = Clock::now();
    if (now >= deadline) return false;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    pollfd p[2] = {{link_.conn()->socketFd(), POLLIN, 0}, {link_.conn()->wakeReadFd(), POLLIN, 0}};
    ::poll(p, 2, static_cast<int>(std::min<int64_t>(ms + 1, 10)));
    if (p[0].revents || p[1].revents) {
      queue_.enterBlocking();
      if (p[1].revents) link_.onWake();
      if (p[0].revents && link_.attached() && gen == link_.generation())
        link_.onSocket((p[0].revents & POLLHUP) ? uint32_t{EPOLLHUP} : uint32_t{0});
      queue_.leaveBlocking();
      if (queue_.hasDeferred()) loop_.wake();
    }
    return link_.attached() && gen == link_.generation();
  }
  return false;
}

// ------------------------------------------------------------------------------------------------ accounting

void Sender::pruneOutstanding() {
  if (!link_.attached() || outstanding_.empty()) return;
  const uint64_t consumed = link_.conn()->outConsumed();
  while (!outstanding_.empty() && !outstanding_.front().wantAck && outstanding_.front().endPos <= consumed)
    outstanding_.pop_front();
}

Sender::Loss Sender::settleOnLoss() {
  Loss loss;
  const uint64_t consumed = link_.conn()->outConsumed();
  for (const auto& o : outstanding_) {
    if (o.endPos <= consumed) {
      if (o.wantAck) loss.delivered.push_back(o.seq);
    } else {
      loss.lost.push_back(o.seq);
    }
  }
  outstanding_.clear();
  return loss;
}

void Sender::reportLoss(const Loss& loss, const std::string& reason, bool closing) {
  for (MessageSeq seq : loss.delivered) events_.delivered(seq);
  if (closing) return;  // graceful: the daemon drains our ring before it detaches us
  for (MessageSeq seq : loss.lost)
    events_.undelivered(seq, makeError(Errc::DISCONNECTED, "not delivered: the daemon never read it (" + reason + ")"));
}

}  // namespace swipc::page
