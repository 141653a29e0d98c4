#include "page/broadcast.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/payload.h"
#include "shm/memfd.h"
#include "wire/codec.h"
#include "wire/limits.h"
#include "wire/plain_post.h"

namespace swipc::page {

using detail::BcObject;

/// What BroadcastChannel objects hold (weakly): it forwards to the page's broadcast feature.
class PageBroadcast::Hub final : public detail::BroadcastHub {
 public:
  explicit Hub(PageBroadcast& bc) : bc_(bc) {}
  void open(const std::shared_ptr<BcObject>& obj) override { bc_.open(obj); }
  Result<MessageSeq> post(BcObject& obj, const core::OutgoingPayload& p, bool wantAck) override {
    return bc_.post(obj, p, wantAck);
  }
  void close(BcObject& obj) override { bc_.close(obj); }

 private:
  PageBroadcast& bc_;
};

Result<std::unique_ptr<PageBroadcast>> PageBroadcast::create(PageContext& ctx) {
  std::unique_ptr<PageBroadcast> bc(new PageBroadcast(ctx));
  bc->wakeFd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!bc->wakeFd_) return makeError(Errc::SYSTEM, "eventfd for broadcast wake-ups");
  PageBroadcast* self = bc.get();
  auto w = ctx.loop.watch(bc->wakeFd_.get(), EPOLLIN, [self](uint32_t) {
    uint64_t v;
    [[maybe_unused]] auto n = ::read(self->wakeFd_.get(), &v, sizeof v);
    self->readBroadcasts();
  });
  if (!w) return w.error();
  bc->wakeWatch_ = *w;
  bc->hub_ = std::make_shared<Hub>(*bc);
  ctx.ops.on(schema::Envelope::BC_JOINED,
             [self](schema::Envelope::Reader env, const auto&) { self->joined(env.getBcJoined()); });
  ctx.sender.onRejected([self](MessageSeq seq, const Error& err) { self->joinRefused(seq, err); });
  return bc;
}

PageBroadcast::~PageBroadcast() {
  waiter_.reset();  // its thread signals wakeFd_
  if (wakeWatch_) ctx_.loop.unwatch(wakeWatch_);
}

// ------------------------------------------------------------------------------------------------ objects

Result<MessageSeq> PageBroadcast::sendJoin(const BcObject& obj) {
  auto seq = ctx_.sender.sendEnvelope(
      [&](schema::Envelope::Builder e) {
        auto j = e.initBcJoin();
        j.setObjectId(obj.id);
        j.setName(obj.name);
      },
      PostOptions{}, false);
  if (seq) joinSeqOf_[obj.id] = *seq;
  return seq;
}

void PageBroadcast::joinRefused(MessageSeq seq, const Error& err) {
  // Refusals are rare: a scan of the joins still waiting for their answer is fine.
  auto it = std::find_if(joinSeqOf_.begin(), joinSeqOf_.end(), [seq](const auto& j) { return j.second == seq; });
  if (it == joinSeqOf_.end()) return;  // not a join of ours
  const uint32_t id = it->first;
  joinSeqOf_.erase(it);
  auto obj = objects_.find(id);
  if (obj == objects_.end()) return;
  // The daemon refused the join (QuotaExceededError past --max-channels[-per-client]): this object
  // never receives anything; it is closed, so its posts fail here with InvalidStateError.
  std::shared_ptr<BcObject> refused = obj->second;
  forget(*refused);
  refused->closed = true;
  core::log().warn("BroadcastChannel '{}': join refused: {}", refused->name, err.describe());
  if (auto fn = refused->onJoinRefused) fn(err);
}

void PageBroadcast::open(const std::shared_ptr<BcObject>& obj) {
  obj->id = nextId_++;
  objects_.emplace(obj->id, obj);
  byChannel_[ChannelName(obj->name)].push_back(obj);  // ids grow: creation order
  if (!ctx_.link.attached()) return;  // joins when (re-)attached
  auto r = sendJoin(*obj);
  if (!r) core::log().warn("BroadcastChannel '{}': join not sent: {}", obj->name, r.error().describe());
}

Result<MessageSeq> PageBroadcast::post(BcObject& obj, const core::OutgoingPayload& payload, bool wantAck) {
  if (!ctx_.link.attached()) return makeError(Errc::DISCONNECTED, "not attached to a daemon");
  PostOptions opts;
  opts.requestAck = wantAck;
  if (payload.value) {  // the fast lane (wire/plain_post.h); one larger than an up-ring record is built below
    wire::PlainMessage m;
    m.kind = schema::Envelope::BC_POST;
    m.objectId = obj.id;
    m.wantAck = wantAck;
    if (auto sent = ctx_.sender.sendValue(m, *payload.value, opts, true)) return std::move(*sent);
  }
  return ctx_.sender.sendEnvelope(
      [&](schema::Envelope::Builder e) {
        auto p = e.initBcPost();
        p.setObjectId(obj.id);
        core::writePayload(payload, p.initPayload());
        p.setWantAck(wantAck);
      },
      opts, true);
}

void PageBroadcast::close(BcObject& obj) {
  const ChannelName name(obj.name);
  const uint32_t id = obj.id;
  forget(obj);
  joinSeqOf_.erase(id);
  if (ctx_.link.attached()) {
    (void)ctx_.sender.sendEnvelope([&](schema::Envelope::Builder e) { e.initBcLeave().setObjectId(id); }, PostOptions{},
                                   false);
  }
  dropRingIfUnused(name);
}

void PageBroadcast::reattached() {
  for (auto& [id, obj] : objects_) {  // memberships survive a daemon restart
    obj->joined = false;
    (void)sendJoin(*obj);
  }
}

void PageBroadcast::detaching() {
  readBroadcasts();  // what is still in the rings was posted before the daemon died
  rings_.clear();
  refreshWaiter();
  for (auto& [id, obj] : objects_) obj->joined = false;
  joinSeqOf_.clear();  // the dead daemon answers none of them; reattached() joins again
}

void PageBroadcast::closing() {
  for (auto& [id, obj] : objects_) obj->closed = true;
  objects_.clear();
  byChannel_.clear();
  waiter_.reset();
  hub_.reset();
}

void PageBroadcast::forget(const BcObject& obj) {
  objects_.erase(obj.id);
  auto it = byChannel_.find(ChannelName(obj.name));
  if (it == byChannel_.end()) return;
  auto& v = it->second;
  v.erase(std::remove_if(v.begin(), v.end(), [&](const auto& o) { return o->id == obj.id; }), v.end());
  if (v.empty()) byChannel_.erase(it);
}

void PageBroadcast::dropRingIfUnused(const ChannelName& name) {
  if (byChannel_.count(name)) return;
  if (rings_.erase(name)) refreshWaiter();
}

bool PageBroadcast::joinPending(const ChannelName& name) const {
  auto it = byChannel_.find(name);
  if (it == byChannel_.end()) return false;
  return std::any_of(it->second.begin(), it->second.end(), [](const auto& o) { return !o->joined; });
}

// ------------------------------------------------------------------------------------------------ rings

void PageBroadcast::refreshWaiter() {
  if (rings_.empty()) {
    waiter_.reset();
    return;
  }
  if (!waiter_) {
    int fd = wakeFd_.get();
    waiter_ = std::make_unique<BroadcastWaiter>([fd] {
      uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
    });
  }
  std::vector<const std::atomic<uint32_t>*> words;
  std::vector<std::shared_ptr<const void>> alive;
  for (auto& [name, r] : rings_) {
    words.push_back(&r.reader.wakeWord());
    alive.push_back(r.map);
  }
  waiter_->setWords(std::move(words), std::move(alive));
}

Result<PageBroadcast::RingView> PageBroadcast::mapRing(uint64_t ringId, uint64_t startPos) {
  uint64_t capacity = 0;
  UniqueFd fd = ctx_.link.conn()->takeRingFd(ringId, capacity);
  if (!fd) return makeError(Errc::PROTOCOL_VIOLATION, "the daemon never sent ring " + std::to_string(ringId));
  // Mapped as announced (read-only: the daemon sealed it against writers), then trusted only as
  // far as its region header says, and only if the two agree.
  const uint64_t bytes = queue::broadcastRegionBytes(capacity);
  auto size = shm::fileSize(fd.get());
  if (capacity > queue::MAX_BROADCAST_CAPACITY || !size || *size < bytes)
    return makeError(Errc::PROTOCOL_VIOLATION, "malformed ring from the daemon (" + std::to_string(capacity) +
                                                   " bytes announced)");
  auto map = shm::Mapping::map(fd.get(), bytes, shm::Access::READ_ONLY);
  if (!map) return map.error();
  auto region = queue::readBroadcastHeader(map->data(), map->size());
  if (!region) return makeError(region.error().code, "malformed ring from the daemon: " + region.error().message);
  if (region->capacity != capacity)
    return makeError(Errc::PROTOCOL_VIOLATION, "malformed ring from the daemon: announced " + std::to_string(capacity) +
                                                   " data bytes, its header says " + std::to_string(region->capacity));
  RingView v;
  v.ringId = ringId;
  v.map = std::make_shared<shm::Mapping>(std::move(*map));
  v.reader = queue::openBroadcastReader(v.map->data(), *region, startPos);
  return v;
}

void PageBroadcast::joined(schema::BcJoined::Reader j) {
  joinSeqOf_.erase(j.getObjectId());
  auto it = objects_.find(j.getObjectId());
  senderTag_ = j.getSenderTag();
  if (it == objects_.end()) return;  // closed meanwhile; its leave is on its way
  auto obj = it->second;
  const ChannelName name(obj->name);
  auto ring = rings_.find(name);
  if (ring == rings_.end() || ring->second.ringId != j.getRingId()) {
    auto v = mapRing(j.getRingId(), j.getStartPos());
    if (!v) {
      core::log().error("BroadcastChannel '{}': {}", obj->name, v.error().describe());
      return;
    }
    v->expectedSeq = j.getStartSeq();
    rings_[name] = std::move(*v);
    refreshWaiter();
  }
  obj->fromSeq = j.getStartSeq();
  obj->joined = true;
  ctx_.queue.deliver([obj] {
    if (auto fn = obj->onJoined; !obj->closed && fn) fn();
  });
  readBroadcasts();
}

// ------------------------------------------------------------------------------------------------ reading

void PageBroadcast::readBroadcasts() {
  // Callbacks may close objects (erasing from objects_/rings_): run them after the walk.
  ctx_.queue.enterBlocking();
  readBroadcastsDeferred();
  ctx_.queue.leaveBlocking();
  ctx_.queue.flushDeferred();
}

void PageBroadcast::readBroadcastsDeferred() {
  queue::BroadcastRecord rec;
  const capnp::ReaderOptions options = wire::readerOptions(wire::DEFAULT_MAX_MESSAGE_BYTES);
  for (auto& [name, ring] : rings_) {
    if (joinPending(name)) continue;  // its start position is not known yet
    // Not changed during the walk: every callback runs after it (readBroadcasts()). A ring with
    // no object left (one whose join was refused) is still read, its records passed over.
    static const std::vector<std::shared_ptr<BcObject>> NONE;
    auto members = byChannel_.find(name);
    const auto& objects = members == byChannel_.end() ? NONE : members->second;
    while (ring.reader.next(rec) == queue::BroadcastReader::Status::OK) {
      if (rec.seq < ring.expectedSeq) continue;
      std::shared_ptr<MessageEvent> event;
      std::optional<Error> decodeError;
      for (const auto& obj : objects) {
        if (!obj->joined || obj->closed || obj->fromSeq > rec.seq) continue;
        const uint64_t from = std::max(ring.expectedSeq, obj->fromSeq);
        if (rec.seq > from) {
          uint64_t missed = rec.seq - from;
          laps_.emplace_back(obj->id, missed);
          ctx_.queue.deliver([obj = obj, missed] {
            if (auto fn = obj->onLapped; !obj->closed && fn) fn(missed);
          });
        }
        if (rec.type == wire::RECORD_BC_GAP) continue;  // posts another node made that never came: counted above
        if (rec.tag == detail::bcTag(senderTag_, obj->id)) continue;  // the poster is excluded
        if (!event && !decodeError) {
          auto decoded = decodeRecord(rec, options);
          if (decoded)
            event = std::move(*decoded);
          else
            decodeError = decoded.error();
        }
        if (event) {
          ctx_.queue.deliver([obj = obj, event] {
            if (auto fn = obj->onMessage; !obj->closed && fn) fn(*event);  // a copy: the handler may close()
          });
        } else {
          Error e = *decodeError;
          ctx_.queue.deliver([obj = obj, e] {
            if (auto fn = obj->onMessageError; !obj->closed && fn) fn(MessageErrorEvent{"broadcastchannel", e});
          });
        }
      }
      ring.expectedSeq = rec.seq + 1;
    }
  }
  reportLaps();
}

Result<std::shared_ptr<MessageEvent>> PageBroadcast::decodeRecord(const queue::BroadcastRecord& rec,
                                                                  const capnp::ReaderOptions& options) const {
  auto event = std::make_shared<MessageEvent>();
  // A Value, as the daemon writes most records: decoded straight from the record (already a
  // private copy) by the fast lane. Anything else, or anything odd, takes the general path.
  wire::PlainMessage m;
  if (rec.length % sizeof(capnp::word) == 0 &&
      wire::readPlain(reinterpret_cast<const capnp::word*>(rec.words.data()), rec.length / sizeof(capnp::word), options,
                      wire::kindBit(schema::Envelope::BC_MESSAGE), m, event->data))
    return event;
  event->data = Value{};
  auto in = wire::Inbound::copyEnvelope(rec.bytes(), rec.length, options);
  if (!in) return in.error();
  if (!in->envelope().isBcMessage()) return makeError(Errc::DATA_CLONE, "not a channel message");
  auto owner = std::make_shared<const wire::Inbound>(std::move(*in));
  Result<void> r;
  try {  // a wrong-kind pointer in the record throws on read: that record's messageerror
    r = core::readPayload(owner->envelope().getBcMessage().getPayload(), owner, ctx_.types, *event);
  } catch (const kj::Exception& e) {
    r = makeError(Errc::DATA_CLONE, std::string("malformed channel message: ") + e.getDescription().cStr());
  }
  if (!r) return r.error();
  return event;
}

void PageBroadcast::reportLaps() {
  // A figure for swctl (the channel's laps), sent after the walk: best effort, it never holds
  // reading up. A full ring to the daemon loses the report (no wait for space: a wait would
  // handle incoming records meanwhile, and may read the rings again, into laps_).
  if (laps_.empty()) return;
  const auto laps = std::exchange(laps_, {});
  if (!ctx_.link.attached()) return;
  PostOptions now;
  now.waitForSpace = std::chrono::milliseconds(0);
  for (const auto& [id, missed] : laps) {
    (void)ctx_.sender.sendEnvelope(
        [&](schema::Envelope::Builder e) {
          auto l = e.initBcLapped();
          l.setObjectId(id);
          l.setMissed(missed);
        },
        now, false, /*wake=*/false);
  }
  ctx_.sender.ringDeferred();
}

}  // namespace swipc::page
