// PortRouter: the daemon's port table — the one authority on where every registered port lives —
// and the routing of port messages between clients and service-worker code.
//
// A pair is registered when one end is first shipped (descriptor `register`). From then on each
// end is OWNED by a client or by service-worker code in the daemon ("local"). A port in a message
// is moved to the message's destination when the daemon routes that message; while the message
// sits in a ring the port is in transit (owned, in the table, by the receiver). When one end
// closes or its owner dies, the other end's owner is told (portClosed) and that end becomes a
// tombstone until its owner answers with portClose — so late posts on it are not mistaken for
// lies. Nothing is ever in two places: every state change happens here, on the daemon's thread.
//
// Copies: every port message pushed into a client's ring is kept (shared with the backlog) until
// that client acknowledges it (portAck, the recvNext of a descriptor or of a portClose). When the
// port moves on, the copies its old owner never received are put into the descriptor's queue for
// the new owner; when it closes, the ports inside them are closed. So a port's messages follow
// it in order, none twice, none lost — also when its old owner is killed mid-move.
#pragma once

#include <capnp/message.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/port_state.h"
#include "envelope.capnp.h"
#include "swipc/error.h"
#include "swipc/types.h"

namespace swipc::daemon {

using PortList = capnp::List<schema::PortDescriptor>;

class PortRouter {
 public:
  /// What the router needs from the daemon.
  class Sink {
   public:
    virtual ~Sink() = default;
    /// A fresh envelope (seq set) for client `id`; nullptr when it is gone.
    virtual std::shared_ptr<capnp::MallocMessageBuilder> newEnvelope(const ClientId& id, MessageSeq& seq) = 0;
    /// Into the client's ring or backlog. QuotaExceededError when too big; Disconnected if it broke.
    virtual Result<void> enqueue(const ClientId& id, const std::shared_ptr<capnp::MallocMessageBuilder>& env,
                                 MessageSeq seq) = 0;
    /// The client stopped draining: its backlog is at the bound.
    virtual bool backlogFull(const ClientId& id) = 0;
    virtual void reportError(const ClientId& id, Errc code, const std::string& message, uint64_t refSeq) = 0;
    /// Unacknowledged copies one port may pin before its owner is cut off.
    virtual size_t copyLimit() const = 0;
    /// Disconnects a misbehaving client (ProtocolViolation); its ports close.
    virtual void disconnect(const ClientId& id, const Error& why) = 0;
    /// The fast lane: a port message carrying a Value and no ports, written straight into the
    /// client's ring. NOT_NOW: it must take the general path (a backlog waits, the ring is full,
    /// it needs more than a record); GONE: the client is gone; BROKEN: its ring turned out
    /// corrupt (it is disconnected).
    enum class Direct { SENT, NOT_NOW, GONE, BROKEN };
    virtual Direct sendPortValue(const ClientId& id, PortId to, uint64_t portSeq, const Value& data) = 0;
    /// Client `id` owns `delta` more (or fewer) entries of the port table: its accounting.
    virtual void portsOwned(const ClientId& id, int delta) = 0;
    /// Client `id` may own `more` entries besides those it has (live ports and tombstones
    /// waiting for its portClose): QuotaExceededError (counted, logged) when not.
    virtual Result<void> admitPorts(const ClientId& id, size_t more) = 0;
  };

  struct Stats {
    uint64_t routed = 0, transferred = 0, closed = 0, dropped = 0;
    uint64_t quotaRefused = 0;  // messages refused because their sender was at its port quota
  };

  PortRouter(Sink& sink, detail::PortHost& local) : sink_(sink), local_(local) {}

  // ---- checks of what a client sent (ProtocolViolation when it lies)
  /// Every descriptor must ship a port the sender owns, or register a fresh pair; no port twice,
  /// not the posting port (`postingPort`) or its peer.
  /// `registrations` (when set) learns how many fresh pairs `ds` registers (one end of each
  /// stays with `from`: what admitShipped() charges it).
  Result<void> checkShipped(const ClientId& from, PortList::Reader ds, PortId postingPort = {},
                            size_t* registrations = nullptr) const;
  /// A port post: `from` must own the posting port.
  Result<void> checkPost(const ClientId& from, schema::PortPost::Reader post, size_t* registrations = nullptr) const;
  /// Per-client quota (the sink's admitPorts): `from` may keep `registrations` more ports.
  /// QuotaExceededError when not; the caller reports it to the sender and refuses() the list.
  Result<void> admitShipped(const ClientId& from, size_t registrations) {
    if (registrations == 0) return {};
    auto r = sink_.admitPorts(from, registrations);
    if (!r) ++stats_.quotaRefused;
    return r;
  }
  /// A message refused for a quota: it will never be delivered. The ports `from` owned in it
  /// close (their peers get close); the pairs it would have registered never exist.
  void refuse(const ClientId& from, PortList::Reader ds);

  // ---- client -> daemon
  /// Ports of a controller post, adopted by service-worker code (in order).
  std::vector<detail::PortPtr> toServiceWorker(const ClientId& from, PortList::Reader ds);
  /// The fast lane's one port of a controller post: a fresh pair `from` registers, end `id`
  /// shipped to service-worker code, end `peer` staying with `from` (checkShipped's rules for a
  /// single registration). ProtocolViolation when the ids are invalid or taken.
  Result<detail::PortPtr> adoptRegistered(const ClientId& from, PortId id, PortId peer, uint64_t sendSeq,
                                          uint64_t recvNext, bool silentPeer);
  /// `bytes`: the size of the envelope `owner` holds (what a port of service-worker code that
  /// is not started is charged for holding the message).
  void onPortPost(const ClientId& from, schema::PortPost::Reader post, MessageSeq envSeq,
                  const std::shared_ptr<const void>& owner, uint64_t bytes = 0);
  /// A ProtocolViolation error when `from` does not own the port.
  Result<void> onPortClose(const ClientId& from, PortId port, uint64_t recvNext);
  void onPortAck(const ClientId& from, PortId port, uint64_t recvNext);
  /// The client is gone: every port it owned closes (peers get close).
  void clientGone(const ClientId& id);

  // ---- service-worker code -> clients
  /// Ports of a client post from service-worker code: described and routed into `out`, then
  /// neutered here. Call after every check that could still fail the post.
  void shipToClient(const ClientId& to, std::vector<detail::PortPtr>& ports, PortList::Builder out);
  /// The message carrying `ds` to client `to` was never handed over: those ports close.
  void undeliverable(const ClientId& to, PortList::Reader ds);
  Result<void> postFromLocal(detail::PortState& from, const core::OutgoingPayload& payload,
                             std::vector<detail::PortPtr>& transfer);
  void closeLocal(detail::PortState& port);
  void trackLocal(const detail::PortPtr& port);
  void untrackLocal(detail::PortState& port);
  /// Every live port of service-worker code, forgotten here (the host is going away).
  std::vector<detail::PortPtr> takeLocalPorts();

  size_t size() const { return table_.size(); }
  /// Ports with messages routed to their owner that it has not acknowledged yet (the copies that
  /// would follow the port if it moved on): what swctl ports calls in transit.
  size_t inTransit() const;
  const Stats& stats() const { return stats_; }

 private:
  struct Owner {
    bool local = false;
    ClientId client;
    bool is(const ClientId& c) const { return !local && client == c; }
  };
  struct Copy {
    uint64_t seq;
    std::shared_ptr<capnp::MallocMessageBuilder> env;  // root Envelope, kind portMessage
  };
  struct Entry {
    PortId peer;
    Owner owner;
    std::weak_ptr<detail::PortState> state;  // owner.local
    bool closed = false;                      // tombstone: the peer is gone, waits for portClose
    bool silent = false;                      // needs no portClosed once answered (silentPeer)
    bool received = false;                    // a message was routed to it
    std::vector<Copy> copies;  // by seq (few: acknowledged every 64 messages)
  };
  /// A set of port ids that stays a short vector for the usual handful of ports (no allocation
  /// per message), and switches to a hash set beyond that (hostile lists stay O(n)).
  class IdSet {
   public:
    bool insert(uint64_t id);
    bool contains(uint64_t id) const;

   private:
    static constexpr size_t INLINE = 8;
    uint64_t inline_[INLINE] = {};
    size_t size_ = 0;
    std::unordered_set<uint64_t> many_;
  };
  struct CheckContext {
    IdSet seen;
    IdSet registeredPeers;
    size_t count = 0;
    size_t registered = 0;
  };

  Entry* find(PortId id);
  const Entry* find(PortId id) const;
  /// A pair (id, peer) may be registered: two distinct non-zero ids, neither in the table.
  bool canRegister(uint64_t id, uint64_t peer) const;
  /// Enters a fresh pair: `id` shipped to `dest`, `peer` staying with `from`.
  void registerPair(PortId id, PortId peer, const Owner& dest, const Owner& from, bool silentPeer);
  Result<void> checkList(const ClientId& from, PortList::Reader ds, CheckContext& ctx, int depth) const;
  /// Moves every port in `ds` from `from` to `dest`, writing the descriptors `dest` gets.
  void route(PortList::Reader ds, const Owner& from, const Owner& dest, PortList::Builder out);
  void routeOne(schema::PortDescriptor::Reader d, const Owner& from, const Owner& dest,
                schema::PortDescriptor::Builder out);
  void copyMessage(schema::PortMessage::Reader in, const Owner& from, const Owner& dest,
                   schema::PortMessage::Builder out);
  /// The ports of a message that will never be delivered: they close (peers get close).
  void dropPorts(const Owner& from, PortList::Reader ds);
  /// refuse()'s walk: closes what `from` owns in `ds` and in the messages queued there.
  void closeOwned(const ClientId& from, PortList::Reader ds);
  /// Copies with seq >= recvNext were never received by their owner: close the ports in them.
  void dropCopies(const Owner& owner, std::vector<Copy>& copies, uint64_t recvNext);
  void notifyPeerClosed(PortId peer);
  /// Hands a port message to client `target` and keeps its copy; on failure closes its ports.
  Result<void> deliver(const ClientId& target, PortId to, const std::shared_ptr<capnp::MallocMessageBuilder>& env,
                       MessageSeq envSeq, uint64_t portSeq);
  void erase(PortId id);
  /// Every change of an entry's owner goes through these, so a client's count stays exact.
  void setOwner(Entry& e, const Owner& owner);
  void countOwned(const Owner& owner, int delta) {
    if (!owner.local) sink_.portsOwned(owner.client, delta);
  }
  /// Removes entry `it` (its owner's count goes down).
  void eraseEntry(std::unordered_map<uint64_t, Entry>::iterator it);

  Sink& sink_;
  detail::PortHost& local_;
  std::unordered_map<uint64_t, Entry> table_;
  std::unordered_map<uint64_t, std::weak_ptr<detail::PortState>> localStates_;
  Stats stats_;
};

}  // namespace swipc::daemon
