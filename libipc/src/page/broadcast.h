// PageBroadcast: BroadcastChannel on the page side, a feature on the page seam (page/feature.h).
//
//   open(obj) ──bcJoin──► daemon ──bcJoined{ring, startPos, startSeq}──► map the ring read-only,
//                                                                       read from startPos
//   post(obj) ──bcPost──► daemon ──writes the channel ring once──► every member reads it itself
//
// Each channel this page has an object on is one ring (a sealed memfd the daemon sent once),
// mapped read-only and shared by all of the page's objects of that name; a BroadcastWaiter
// thread sleeps on every ring's futex word and wakes the loop. Reading fans each record out to
// the objects that were joined when it was posted, except the one that posted it; a reader that
// was lapped learns how many records it missed (onLapped). Memberships survive a daemon
// restart: re-attaching joins every object again.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "core/broadcast_object.h"
#include "page/broadcast_waiter.h"
#include "page/feature.h"
#include "queue/broadcast_ring.h"
#include "shm/mapping.h"
#include "swipc/types.h"

namespace swipc::page {

/// @concurrent: single-threaded (the page's loop thread); the waiter thread only signals.
class PageBroadcast final : public PageFeature {
 public:
  /// Registers bcJoined with ctx.ops and watches the waiter's eventfd on ctx.loop.
  static Result<std::unique_ptr<PageBroadcast>> create(PageContext& ctx);
  ~PageBroadcast() override;

  /// What BroadcastChannel objects made on this page talk to (nullptr once closed).
  std::shared_ptr<detail::BroadcastHub> hub() const { return hub_; }

  // ---- PageFeature
  void reattached() override;
  void detaching() override;
  void closing() override;

  // ---- the hub's operations
  void open(const std::shared_ptr<detail::BcObject>& obj);
  Result<MessageSeq> post(detail::BcObject& obj, const core::OutgoingPayload& payload, bool wantAck);
  void close(detail::BcObject& obj);

  /// Reads every ring and delivers what is new (callbacks after the walk).
  void readBroadcasts();

 private:
  class Hub;
  struct RingView {
    uint64_t ringId = 0;
    std::shared_ptr<shm::Mapping> map;
    queue::BroadcastReader reader;
    uint64_t expectedSeq = 0;
  };

  explicit PageBroadcast(PageContext& ctx) : ctx_(ctx) {}
  Result<MessageSeq> sendJoin(const detail::BcObject& obj);
  void joined(schema::BcJoined::Reader j);
  /// The daemon refused envelope `seq`: when it was a join, that object is told and closed.
  void joinRefused(MessageSeq seq, const Error& err);
  /// Maps ring `ringId` (its fd came in a Control.bcRing datagram) read-only and checks it.
  Result<RingView> mapRing(uint64_t ringId, uint64_t startPos);
  void readBroadcastsDeferred();
  /// The message in record `rec`; DataCloneError (that record's messageerror) when it cannot be read.
  Result<std::shared_ptr<MessageEvent>> decodeRecord(const queue::BroadcastRecord& rec,
                                                     const capnp::ReaderOptions& options) const;
  /// Tells the daemon of each lapped object the last walk found (bcLapped), then forgets them.
  void reportLaps();
  void refreshWaiter();
  /// Takes `obj` out of objects_ and byChannel_.
  void forget(const detail::BcObject& obj);
  void dropRingIfUnused(const ChannelName& name);
  bool joinPending(const ChannelName& name) const;

  PageContext& ctx_;
  std::shared_ptr<detail::BroadcastHub> hub_;  // a Hub
  std::map<uint32_t, std::shared_ptr<detail::BcObject>> objects_;  // by id = creation order
  /// The same objects by channel, each list in creation order: a record is fanned out to its
  /// channel's objects only, however many other channels the page has open.
  std::unordered_map<ChannelName, std::vector<std::shared_ptr<detail::BcObject>>> byChannel_;
  std::unordered_map<uint32_t, MessageSeq> joinSeqOf_;            // joins not answered yet
  uint32_t nextId_ = 1;
  std::unordered_map<ChannelName, RingView> rings_;
  uint64_t senderTag_ = 0;
  std::vector<std::pair<uint32_t, uint64_t>> laps_;  // (object, missed) found by the walk in progress
  std::unique_ptr<BroadcastWaiter> waiter_;
  UniqueFd wakeFd_;
  core::EventLoop::WatchId wakeWatch_ = 0;
};

}  // namespace swipc::page
