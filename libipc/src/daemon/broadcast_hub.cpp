#include "daemon/broadcast_hub.h"

#include <fcntl.h>

#include <algorithm>

#include "core/log.h"
#include "core/user_code.h"
#include "shm/memfd.h"
#include "wire/limits.h"
#include "wire/plain_post.h"

namespace swipc::daemon {

namespace {
/// The tag of a post from another node: no object here has it (client tags carry a prefix >= 1 << 32,
/// service-worker objects' ids start at 1), so every object here receives it.
constexpr uint64_t REMOTE_TAG = 0;
}  // namespace

// ------------------------------------------------------------------------------------------------ channels

Result<BroadcastHub::Channel*> BroadcastHub::channel(const ChannelName& name) {
  if (name.size() > 1024) return makeError(Errc::TYPE, "channel name longer than 1024 bytes");
  auto it = channels_.find(name);
  if (it != channels_.end()) return it->second.get();
  auto ch = std::make_unique<Channel>();
  ch->name = name;
  ch->ringId = nextRingId_++;
  ch->capacity = config_.ringBytes;
  const uint64_t bytes = queue::broadcastRegionBytes(ch->capacity);
  auto fd = shm::createMemfd("swipc-bc", bytes);
  if (!fd) return fd.error();
  auto map = shm::Mapping::map(fd->get(), bytes, shm::Access::READ_WRITE);
  if (!map) return map.error();
  // Our mapping stays writable; every later writable mapping (the members') is refused.
  if (auto r = shm::addSeals(fd->get(), shm::SEALS_FIXED_SIZE | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL); !r) return r.error();
  ch->fd = std::move(*fd);
  ch->map = std::move(*map);
  ch->writer = queue::formatBroadcastRegion(ch->map.data(), bytes, ch->capacity);
  ++counters_.channelsOpen;
  core::log().info("channel '{}' opened (ring {} bytes)", name.str(), ch->capacity);
  Channel* raw = ch.get();
  channels_.emplace(name, std::move(ch));
  if (channelObserver_) channelObserver_(name, true);
  return raw;
}

void BroadcastHub::maybeDrop(const ChannelName& name) {
  auto it = channels_.find(name);
  if (it == channels_.end() || !it->second->members.empty() || !it->second->local.empty()) return;
  core::log().info("channel '{}' closed (last member left)", name.str());
  channels_.erase(it);
  if (channelObserver_) channelObserver_(name, false);
}

const BroadcastHub::Channel* BroadcastHub::find(const ChannelName& name) const {
  auto it = channels_.find(name);
  return it == channels_.end() ? nullptr : it->second.get();
}

std::vector<ChannelName> BroadcastHub::channelNames() const {
  std::vector<ChannelName> out;
  out.reserve(channels_.size());
  for (const auto& [name, ch] : channels_) out.push_back(name);
  return out;
}

void BroadcastHub::clear() {
  auto names = channelNames();
  channels_.clear();
  members_.clear();
  if (channelObserver_)
    for (const auto& name : names) channelObserver_(name, false);
}

// ------------------------------------------------------------------------------------------------ publish

bool BroadcastHub::publish(Channel& ch, uint64_t tag, const PostPayload& p, uint32_t localSender) {
  // Every kind of post is measured exactly, as the record it makes, before anything is written:
  // one limit whoever posts and whichever way the record is written.
  const uint64_t seq = ch.nextSeq;
  size_t bytes = 0;
  if (p.value) {
    // The fast lane's writer: the record straight from the Value, no builder.
    wire::PlainMessage m;
    m.kind = schema::Envelope::BC_MESSAGE;
    m.seq = seq;
    bytes = wire::plainBytes(m, *p.value);
    if (bytes > ch.writer.maxPayload()) return false;
    if (record_.size() < bytes / 8) record_.resize(bytes / 8);
    wire::writePlain(m, *p.value, reinterpret_cast<uint8_t*>(record_.data()), bytes);
  } else {
    // A relayed payload that alone is larger than a record is refused before it is copied.
    if (p.in && p.in->totalSize().wordCount * sizeof(capnp::word) > ch.writer.maxPayload()) return false;
    // The builder is gone before anything below can call out (a service-worker handler that
    // posts comes back here and takes the scratch segment again).
    capnp::MallocMessageBuilder mb(kj::arrayPtr(scratch_.get(), SCRATCH_WORDS));
    auto env = mb.initRoot<schema::Envelope>();
    env.setSchemaVersion(schema::SCHEMA_VERSION);
    env.setSeq(seq);
    auto msg = env.initBcMessage();
    if (p.in)
      msg.setPayload(*p.in);
    else
      core::writePayload(*p.out, msg.initPayload());
    bytes = wire::encodedBytes(mb);
    if (bytes > ch.writer.maxPayload()) return false;
    if (record_.size() < bytes / 8) record_.resize(bytes / 8);
    wire::encodeInto(mb, reinterpret_cast<uint8_t*>(record_.data()), bytes);
  }
  ++ch.nextSeq;
  // record_ is read until deliverLocal() has copied it, and by nothing that calls out before.
  const uint64_t* buf = record_.data();
  ch.writer.append(wire::RECORD_ENVELOPE, seq, tag, buf, static_cast<uint32_t>(bytes));
  if (postObserver_ && tag != REMOTE_TAG) postObserver_(ch.name, reinterpret_cast<const uint8_t*>(buf), bytes);
  ++counters_.broadcastsPosted;
  const bool first = pendingWakes_.empty();
  if (!ch.wakePending) {
    ch.wakePending = true;
    pendingWakes_.push_back(ch.name);
  }
  sink_.published(first);
  if (!ch.local.empty()) deliverLocal(ch, buf, bytes, p, localSender);
  return true;
}

void BroadcastHub::flushWakes() {
  std::vector<ChannelName> names;
  names.swap(pendingWakes_);
  for (const auto& name : names) {
    auto it = channels_.find(name);
    if (it == channels_.end() || !it->second->wakePending) continue;  // closed meanwhile
    it->second->wakePending = false;
    it->second->writer.wakeAll();
  }
}

void BroadcastHub::deliverLocal(Channel& ch, const uint64_t* words, size_t bytes, const PostPayload& p,
                                uint32_t localSender) {
  // Service-worker objects of this channel get it now, in creation order.
  auto event = std::make_shared<MessageEvent>();
  Result<void> decoded{};
  if (p.value && localSender == 0) {
    event->data = *p.value;  // decoded from a client's or another node's bytes: as every reader sees it
  } else {
    // The relayed payload, or the record just written: a Value service-worker code posted is
    // read back, so these objects get what the pages get (one too deep to read is a messageerror
    // here too, and a repeated key resolves as there).
    std::shared_ptr<const wire::Inbound> owner = p.owner ? *p.owner : nullptr;
    if (!owner) {
      auto r = wire::Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(words), bytes,
                                           wire::readerOptions(config_.maxMessageBytes));
      if (r) owner = std::make_shared<const wire::Inbound>(std::move(*r));
    }
    decoded = makeError(Errc::DATA_CLONE, "undecodable");
    if (owner) {
      auto payload = p.in ? *p.in : owner->envelope().getBcMessage().getPayload();
      decoded = core::readPayload(payload, owner, types_, *event);
    }
  }
  if (remoteNode_) event->node = *remoteNode_;
  std::vector<std::shared_ptr<detail::BcObject>> targets;
  for (auto& [id, obj] : ch.local)
    if (id != localSender) targets.push_back(obj);
  for (auto& obj : targets) {
    if (obj->closed) continue;
    auto onMessage = obj->onMessage;  // copies: a handler may close() its own object
    auto onError = obj->onMessageError;
    if (decoded && onMessage)
      core::callUser("a BroadcastChannel handler", [&] { onMessage(*event); });
    else if (!decoded && onError)
      core::callUser("a BroadcastChannel handler",
                     [&] { onError(MessageErrorEvent{"broadcastchannel", decoded.error()}); });
  }
}

// ------------------------------------------------------------------------------------------------ clients

Result<void> BroadcastHub::admitJoin(const ClientId& id, const ChannelName& name) {
  auto member = members_.find(id);
  const size_t objects = member == members_.end() ? 0 : member->second.objects;
  if (objects >= config_.maxObjectsPerClient) {
    ++counters_.channelQuotaRefused;
    core::log().warn("client={} refused channel '{}': it has {} BroadcastChannel objects open (--max-channels-per-client)",
                     id.toString(), name.str(), objects);
    return makeError(Errc::QUOTA_EXCEEDED, "too many BroadcastChannel objects open in this client (" +
                                               std::to_string(config_.maxObjectsPerClient) +
                                               "; see --max-channels-per-client)");
  }
  if (channels_.size() >= config_.maxChannels && !channels_.count(name)) {
    ++counters_.channelQuotaRefused;
    core::log().warn("client={} refused new channel '{}': {} channels open in the scope (--max-channels)",
                     id.toString(), name.str(), channels_.size());
    return makeError(Errc::QUOTA_EXCEEDED, "too many BroadcastChannel names open in this scope (" +
                                               std::to_string(config_.maxChannels) + "; see --max-channels)");
  }
  return {};
}

void BroadcastHub::objectsJoined(const ClientId& id, int delta) {
  if (auto it = members_.find(id); it != members_.end()) {
    it->second.objects = static_cast<size_t>(static_cast<int64_t>(it->second.objects) + delta);
  }
  sink_.channelsJoined(id, delta);
}

bool BroadcastHub::clientJoin(const ClientId& id, const ChannelName& name, uint32_t objectId, MessageSeq seq) {
  if (auto ok = admitJoin(id, name); !ok) {
    sink_.reportError(id, ok.error().code, ok.error().message, seq);
    return true;
  }
  auto ch = channel(name);
  if (!ch) {
    sink_.reportError(id, ch.error().code, ch.error().message, seq);
    return true;
  }
  for (const auto& m : (*ch)->members) {
    if (m.first == id && m.second == objectId) {
      sink_.violation(id, makeError(Errc::PROTOCOL_VIOLATION, "BroadcastChannel object joined twice"));
      return false;
    }
  }
  auto [it, fresh] = members_.try_emplace(id);
  Member& member = it->second;
  if (fresh) member.tagPrefix = (nextTag_++) << 32;
  const uint64_t ringId = (*ch)->ringId;
  if (!member.ringsSent.count(ringId)) {
    if (!sink_.passRing(id, ringId, (*ch)->capacity, (*ch)->fd.get())) {
      sink_.reportError(id, Errc::INVALID_STATE, "could not pass the channel ring (client not reading its socket)",
                        seq);
      maybeDrop(name);
      return true;
    }
    member.ringsSent.insert(ringId);
  }
  (*ch)->members.emplace_back(id, objectId);
  objectsJoined(id, 1);
  sink_.joined(id, Joined{objectId, ringId, (*ch)->writer.tail(), (*ch)->nextSeq, member.tagPrefix});
  return true;
}

void BroadcastHub::clientLeave(const ClientId& id, uint32_t objectId) {
  for (auto& [name, ch] : channels_) {
    auto& m = ch->members;
    auto it = std::find(m.begin(), m.end(), std::make_pair(id, objectId));
    if (it == m.end()) continue;
    m.erase(it);
    objectsJoined(id, -1);
    // The page unmaps the ring with its last object on it: send the memfd again next time.
    if (std::none_of(m.begin(), m.end(), [&](const auto& p) { return p.first == id; }))
      if (auto mem = members_.find(id); mem != members_.end()) mem->second.ringsSent.erase(ch->ringId);
    const ChannelName n = name;
    maybeDrop(n);
    return;
  }
}

void BroadcastHub::clientLapped(const ClientId& id, uint32_t objectId, uint64_t missed) {
  if (missed == 0) return;
  for (auto& [name, ch] : channels_) {
    const auto& m = ch->members;
    if (std::find(m.begin(), m.end(), std::make_pair(id, objectId)) == m.end()) continue;
    ++ch->laps;
    return;
  }
  // An object that left meanwhile (its leave was sent after its last reading): nothing to count.
}

BroadcastHub::Channel* BroadcastHub::posterChannel(const ClientId& id, uint32_t objectId, MessageSeq seq,
                                                  uint64_t& tag) {
  Channel* target = nullptr;
  for (auto& [name, ch] : channels_) {
    for (const auto& m : ch->members)
      if (m.first == id && m.second == objectId) target = ch.get();
    if (target) break;
  }
  auto member = members_.find(id);
  if (!target || member == members_.end()) {
    sink_.reportError(id, Errc::INVALID_STATE, "BroadcastChannel object is not open", seq);
    return nullptr;
  }
  tag = detail::bcTag(member->second.tagPrefix, objectId);
  return target;
}

void BroadcastHub::refuseOversize(const Channel& ch, const ClientId& id, MessageSeq seq) {
  ++counters_.oversize;
  sink_.reportError(id, Errc::QUOTA_EXCEEDED,
                    "message larger than a channel ring record (" + std::to_string(ch.writer.maxPayload()) +
                        " bytes; see --bc-ring-bytes)",
                    seq);
}

void BroadcastHub::clientPost(const ClientId& id, schema::BcPost::Reader post, MessageSeq seq,
                              const std::shared_ptr<const wire::Inbound>& owner) {
  uint64_t tag = 0;
  Channel* target = posterChannel(id, post.getObjectId(), seq, tag);
  if (!target) return;
  auto payload = post.getPayload();
  if (!publish(*target, tag, PostPayload{nullptr, nullptr, &payload, &owner}, 0)) return refuseOversize(*target, id, seq);
  if (post.getWantAck()) sink_.ack(id, seq);
}

void BroadcastHub::clientPostValue(const ClientId& id, uint32_t objectId, const Value& data, bool wantAck,
                                   MessageSeq seq) {
  uint64_t tag = 0;
  Channel* target = posterChannel(id, objectId, seq, tag);
  if (!target) return;
  if (!publish(*target, tag, PostPayload{&data}, 0)) return refuseOversize(*target, id, seq);
  if (wantAck) sink_.ack(id, seq);
}

void BroadcastHub::clientGone(const ClientId& id) {
  std::vector<ChannelName> touched;
  int left = 0;
  for (auto& [name, ch] : channels_) {
    auto& m = ch->members;
    auto before = m.size();
    m.erase(std::remove_if(m.begin(), m.end(), [&](const auto& p) { return p.first == id; }), m.end());
    if (m.size() != before) {
      touched.push_back(name);
      left += static_cast<int>(before - m.size());
    }
  }
  members_.erase(id);
  if (left) sink_.channelsJoined(id, -left);
  for (const auto& name : touched) maybeDrop(name);  // a member process that exits leaves
}

// ------------------------------------------------------------------------------------------------ service-worker objects

void BroadcastHub::open(const std::shared_ptr<detail::BcObject>& obj) {
  auto ch = channel(ChannelName(obj->name));
  if (!ch) {
    core::log().error("BroadcastChannel '{}': {}", obj->name, ch.error().describe());
    return;
  }
  obj->id = nextLocalId_++;
  obj->fromSeq = (*ch)->nextSeq;
  obj->joined = true;
  (*ch)->local.emplace(obj->id, obj);
}

Result<MessageSeq> BroadcastHub::post(detail::BcObject& obj, const core::OutgoingPayload& payload, bool) {
  auto it = channels_.find(ChannelName(obj.name));
  if (it == channels_.end() || !it->second->local.count(obj.id))
    return makeError(Errc::INVALID_STATE, "BroadcastChannel is not open");
  Channel& ch = *it->second;
  const MessageSeq seq = ch.nextSeq;
  const PostPayload p = payload.value ? PostPayload{payload.value} : PostPayload{nullptr, &payload};
  if (!publish(ch, detail::bcTag(0, obj.id), p, obj.id))
    return makeError(Errc::QUOTA_EXCEEDED, "message larger than a channel ring record");
  return seq;
}

void BroadcastHub::close(detail::BcObject& obj) {
  const ChannelName name(obj.name);
  auto it = channels_.find(name);
  if (it == channels_.end()) return;
  it->second->local.erase(obj.id);
  maybeDrop(name);
}

// ------------------------------------------------------------------------------------------------ federation

bool BroadcastHub::injectRemote(const ChannelName& name, const std::string& fromNode, schema::Payload::Reader payload,
                                const std::shared_ptr<const wire::Inbound>& owner) {
  return inject(name, fromNode, PostPayload{nullptr, nullptr, &payload, &owner});
}

bool BroadcastHub::injectRemoteValue(const ChannelName& name, const std::string& fromNode, const Value& data) {
  return inject(name, fromNode, PostPayload{&data});
}

bool BroadcastHub::inject(const ChannelName& name, const std::string& fromNode, const PostPayload& p) {
  auto it = channels_.find(name);
  if (it == channels_.end()) return false;
  remoteNode_ = &fromNode;
  const bool written = publish(*it->second, REMOTE_TAG, p, 0);
  remoteNode_ = nullptr;
  if (!written) {  // larger than this node's records: one missed post for every object here
    ++counters_.oversize;
    reportRemoteGap(name, 1);
  }
  return written;
}

bool BroadcastHub::reportRemoteGap(const ChannelName& name, uint64_t missed) {
  auto it = channels_.find(name);
  if (it == channels_.end() || missed == 0) return false;
  Channel& ch = *it->second;
  // Readers report lapped(seq - expected) at the first record past a hole in the sequence, and
  // deliver nothing for a gap record: one at expected + missed makes them report exactly missed.
  ch.nextSeq += missed;
  const uint64_t seq = ch.nextSeq++;
  ch.writer.append(wire::RECORD_BC_GAP, seq, REMOTE_TAG, &missed, sizeof missed);
  ch.writer.wakeAll();
  std::vector<std::shared_ptr<detail::BcObject>> targets;
  for (auto& [id, obj] : ch.local) targets.push_back(obj);
  ch.laps += targets.size();  // the service-worker objects (client objects report theirs)
  for (auto& obj : targets) {
    auto onLapped = obj->onLapped;  // a copy: a handler may close() its own object
    if (!obj->closed && onLapped) core::callUser("a BroadcastChannel handler", [&] { onLapped(missed); });
  }
  return true;
}

std::vector<BroadcastHub::ChannelStats> BroadcastHub::stats() const {
  std::vector<ChannelStats> out;
  out.reserve(channels_.size());
  for (const auto& [name, ch] : channels_) {
    ChannelStats s;
    s.name = name;
    s.members = ch->members.size() + ch->local.size();
    s.posts = ch->nextSeq - 1;
    s.laps = ch->laps;
    s.capacity = ch->capacity;
    s.retainedBytes = std::min(ch->writer.tail(), ch->capacity);
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(), [](const ChannelStats& a, const ChannelStats& b) { return a.name < b.name; });
  return out;
}

}  // namespace swipc::daemon
