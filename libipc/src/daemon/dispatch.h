// Dispatch: what the daemon does with what a client sends. Modules register a handler per
// envelope kind (schema::Envelope::Which); the drain loop reads each client's up ring and hands
// every envelope to the handler of its kind. A kind nobody registered is a ProtocolViolation:
// the client is disconnected with the reason.
//
// Two lanes. The general path hands over a validated wire::Inbound. The fast lane
// (wire/plain_post.h) covers the commonest small envelopes: a kind with a plain handler is read
// straight from the ring copy, its Value decoded into the drain's reused event, without building
// a Cap'n Proto reader; what the fast lane does not take comes through the general path.
//
// @concurrent: single-threaded; the daemon's loop thread.
#pragma once

#include <array>
#include <cstddef>
#include <functional>
#include <memory>

#include "core/event_loop.h"
#include "daemon/client_table.h"
#include "daemon/outbound.h"
#include "envelope.capnp.h"
#include "swipc/service_worker.h"
#include "wire/codec.h"
#include "wire/plain_post.h"

namespace swipc::daemon {

class Dispatch {
 public:
  /// Handles one envelope from `c`; `owner` keeps its bytes. False: stop reading this client now
  /// (it was disconnected, or must not be read further).
  using Handler =
      std::function<bool(ClientRecord& c, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>& owner)>;
  /// Handles one fast-lane envelope; its Value (if its kind carries one) is in ev.data. A
  /// function and its object rather than a std::function: it runs for every small post, and this
  /// costs one indirect call. Make one with PlainHandler::of<&T::method>(object).
  class PlainHandler {
   public:
    using Fn = bool (*)(void* self, ClientRecord& c, const wire::PlainMessage& m, ExtendableMessageEvent& ev);
    PlainHandler() = default;
    PlainHandler(std::nullptr_t) {}  // NOLINT(google-explicit-constructor): "no handler"
    PlainHandler(Fn fn, void* self) : fn_(fn), self_(self) {}
    /// `Method` (bool(ClientRecord&, const wire::PlainMessage&, ExtendableMessageEvent&)) of `self`.
    template <auto Method, typename T>
    static PlainHandler of(T* self) {
      return PlainHandler(
          [](void* s, ClientRecord& c, const wire::PlainMessage& m, ExtendableMessageEvent& ev) {
            return (static_cast<T*>(s)->*Method)(c, m, ev);
          },
          self);
    }
    explicit operator bool() const { return fn_ != nullptr; }
    bool operator()(ClientRecord& c, const wire::PlainMessage& m, ExtendableMessageEvent& ev) const {
      return fn_(self_, c, m, ev);
    }

   private:
    Fn fn_ = nullptr;
    void* self_ = nullptr;
  };

  /// Records a client handles in one turn before others get theirs.
  static constexpr int DRAIN_BUDGET = 256;
  /// Records between two publications of the consumed position.
  static constexpr int PUBLISH_EVERY = 32;
  /// Envelope kinds a table can hold (wire::kindBit's range).
  static constexpr unsigned KINDS = 32;

  /// `spinning`: the daemon's loop busy-polls rings (and re-arms them itself before it sleeps).
  Dispatch(ClientTable& clients, Outbound& outbound, core::EventLoop& loop, bool spinning)
      : clients_(clients), outbound_(outbound), loop_(loop), spinning_(spinning) {}
  Dispatch(const Dispatch&) = delete;
  Dispatch& operator=(const Dispatch&) = delete;

  /// Registers (or replaces) the handler for envelopes of `kind`.
  void handle(schema::Envelope::Which kind, Handler handler);
  /// Registers (or replaces) the fast-lane handler for `kind` (one of wire::PlainMessage's kinds);
  /// a `handle()` for the same kind takes what the fast lane does not read.
  void handlePlain(schema::Envelope::Which kind, PlainHandler handler);
  /// Forgets both handlers of `kind`: its envelopes are violations again.
  void remove(schema::Envelope::Which kind);
  bool handles(schema::Envelope::Which kind) const;

  /// Watches the client's socket (control datagrams, hang-up) and doorbell (records to drain).
  Result<void> connect(ClientRecord& c);
  /// Handles what the client committed: DRAIN_BUDGET records, then yields to others — or, when
  /// the client is leaving, everything (it will not ring again).
  void drain(ClientRecord& c, bool toTheEnd = false);
  /// Hands one envelope the general path read to its handler (or disconnects the client).
  bool dispatch(ClientRecord& c, wire::Inbound&& inbound);

  /// When a client last had something handled (the spin phase keeps polling after that).
  Clock::time_point lastActivity() const { return lastActivity_; }
  void markActive() { lastActivity_ = Clock::now(); }

 private:
  void onSocket(const ClientId& id, uint32_t events);
  static unsigned index(schema::Envelope::Which kind);

  ClientTable& clients_;
  Outbound& outbound_;
  core::EventLoop& loop_;
  bool spinning_;
  std::array<Handler, KINDS> handlers_{};
  std::array<PlainHandler, KINDS> plain_{};
  uint32_t plainKinds_ = 0;  // wire::kindBit of every kind with a plain handler
  ExtendableMessageEvent batchEvent_;  // drain()'s, reused from post to post
  int drainDepth_ = 0;
  Clock::time_point lastActivity_{};
};

}  // namespace swipc::daemon
