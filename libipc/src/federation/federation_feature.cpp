#include "federation/federation_feature.h"

#include <chrono>
#include <cstring>

#include "core/log.h"
#include "wire/codec.h"
#include "wire/limits.h"
#include "wire/plain_post.h"

namespace swipc::federation {

FederationFeature::~FederationFeature() { stop(); }

Result<void> FederationFeature::start(daemon::FeatureHost& host) {
  const auto& opts = host.options();
  const auto& fed = opts.federation;
  node_ = fed.node.empty() ? defaultNodeName() : fed.node;
  if (!validNodeName(node_))
    return makeError(Errc::TYPE, "--node '" + node_ + "': a node name is [A-Za-z0-9._-]{1,64}");
  if (fed.natsServers.empty()) return makeError(Errc::TYPE, "federation without a NATS server (--nats)");
  host_ = &host;
  epoch_ = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  subjects_ = subjectsFor(opts.scope);
  sent_.clear();
  nextRun_ = 1;
  ticks_ = 0;
  announced_ = 0;
  // At least two ticks (the repeats of the run's last mark, runs.h, are counted on top).
  idleTicks_ = std::max<uint64_t>(
      2, static_cast<uint64_t>((fed.channelIdle + HEARTBEAT_INTERVAL - std::chrono::milliseconds(1)) / HEARTBEAT_INTERVAL));
  peers_.clear();
  unannounced_.clear();
  for (auto& n : refusedByLimit_) n = 0;
  for (auto& t : lastLimitLog_) t = Clock::time_point{};
  wanted_.clear();
  wantAll_ = 0;
  announceSoon_ = false;
  tracker_ = SequenceTracker{};
  interest_.clear();
  for (auto& name : hub_->channelNames()) interest_.insert(std::move(name));
  alive_ = std::make_shared<bool>(true);
  linkUp_ = false;
  inGrace_ = false;
  silentPeers_ = 0;
  lastAnnounce_ = Clock::time_point{};
  interestTooLarge_ = false;

  NatsLink::Options lo;
  lo.servers = fed.natsServers;
  lo.clientName = "swipc " + opts.scope + " " + node_;
  lo.subjects = subscriptionsFor(subjects_, node_);
  NatsLink::Events ev;
  ev.message = [this](std::string_view subject, std::span<const uint8_t> data) { onMessage(subject, data); };
  ev.state = [this](NatsLink::State s, const std::string& url) { onState(s, url); };
  ev.error = [this](const std::string& what) { core::log().warn("federation: NATS: {}", what); };
  core::log().info("federation: node={} scope={} nats={} (connecting)", node_, opts.scope, fed.natsServers.front());
  link_ = NatsLink::start(host.loop(), std::move(lo), std::move(ev));
  bundledSeen_ = 0;
  hub_->onLocalPost([this](const ChannelName& name, const uint8_t* env, size_t bytes) { localPost(name, env, bytes); });
  hub_->onChannel([this](const ChannelName& name, bool open) { localChannel(name, open); });
  timer_ = host.loop().addTimer(deadlineIn(HEARTBEAT_INTERVAL), [this] { tick(); });
  timerArmed_ = true;
  return {};
}

void FederationFeature::stop() {
  if (!host_) return;
  hub_->onLocalPost(nullptr);
  hub_->onChannel(nullptr);
  alive_.reset();  // an announcement posted to the loop does nothing now
  // Leaving: the others stop publishing our channels to us. What is still queued is dropped
  // by the link; its marks here count those posts, so the others see them as gaps.
  if (link_) link_->setLast(subjects_.nodes, heartbeatText(true));
  if (timerArmed_) host_->loop().cancelTimer(timer_);
  timerArmed_ = false;
  link_.reset();  // closes the connection, joins the sender; no callback after this
  while (!pending_.empty()) finish(pending_.begin()->first, true);  // each caller hears, once
  core::log().info("federation: node={} left (posts not sent: {})", node_, notSent_);
  host_ = nullptr;
}

// ------------------------------------------------------------------------------------------------ out

void FederationFeature::localPost(const ChannelName& name, const uint8_t* envelope, size_t bytes) {
  if (name.size() > MAX_CHANNEL_NAME) return;
  if (!wanted(name)) {  // no other node has an object of it: not part of any node's stream
    ++host_->counters().federationLocalOnly;
    return;
  }
  auto [it, fresh] = sent_.try_emplace(name);
  Sent& sent = it->second;
  if (fresh) {
    sent.subject = subjects_.bcFor(name);
    sent.run = nextRun_++;
  }
  sent.lastTick = ticks_;
  sent.announcedAtPost = announced_;
  const uint64_t seq = ++sent.seq;
  // Numbered whether or not it goes out: a post NATS does not take is a gap its receivers see.
  const bool queued =
      link_->tryPublishWith(sent.subject, remotePostBytes(node_, name, bytes), [&](uint8_t* out) {
        writeRemotePost(out, node_, epoch_, name, sent.run, seq, envelope, bytes);
      });
  if (!queued) return notPublished();
  ++host_->counters().federationPostsOut;
  syncBundled();
}

void FederationFeature::notPublished() {
  ++notSent_;
  ++host_->counters().federationNotSent;
  // Said on this side too, at most every 10 s: the other nodes log the gaps they see, but only
  // here is it known why (NATS unreachable, or slower than the posts made here).
  const auto now = Clock::now();
  if (notSentLogged_ != 0 && now - lastNotSentLog_ < std::chrono::seconds(10)) return;
  core::log().warn("federation: {} post(s) not published since the last such line ({} in all): {}; the other nodes "
                   "learn them as missed (logged at most every 10 s)",
                   notSent_ - notSentLogged_, notSent_,
                   link_->connectedGuess() ? "the NATS queue is full (NATS is slower than the posts made here)"
                                           : "NATS is unreachable");
  notSentLogged_ = notSent_;
  lastNotSentLog_ = now;
}

void FederationFeature::syncBundled() {
  // Added, not assigned: the link (and its count) is new each time the feature starts.
  const uint64_t now = link_->bundled();
  host_->counters().federationBundled += now - bundledSeen_;
  bundledSeen_ = now;
}

void FederationFeature::localChannel(const ChannelName& name, bool open) {
  if (name.size() > MAX_CHANNEL_NAME) return;  // never published either
  const bool changed = open ? interest_.insert(name).second : interest_.erase(name) > 0;
  if (changed) announceSoon();
}

void FederationFeature::announceSoon() {
  if (announceSoon_) return;
  // Coalesced and spaced: a page opening a hundred channels, or opening and closing one in a
  // loop, costs one announcement per ANNOUNCE_SPACING at most.
  announceSoon_ = true;
  const auto due = std::max(Clock::now(), lastAnnounce_ + ANNOUNCE_SPACING);
  host_->loop().addTimer(due, [this, alive = std::weak_ptr<bool>(alive_)] {
    if (alive.expired() || !host_) return;
    announceSoon_ = false;
    announce(false);
  });
}

void FederationFeature::setInterest(const std::string& node, std::optional<std::vector<ChannelName>> interest) {
  Peer& peer = peers_[node];
  std::optional<std::set<ChannelName>> next;
  if (interest) next.emplace(std::make_move_iterator(interest->begin()), std::make_move_iterator(interest->end()));
  if (peer.announced && next == peer.interest) return;
  if (peer.announced) uncount(peer);  // the old set out of the counts
  if (!next) {
    ++wantAll_;
  } else {
    for (const auto& name : *next) ++wanted_[name];
  }
  // What changed, for whoever follows along (tests wait on these lines).
  if (!next) {
    core::log().debug("federation: node {} wants every channel", node);
  } else {
    for (const auto& name : *next)
      if (!peer.interest || !peer.interest->count(name)) core::log().debug("federation: node {} wants '{}'", node, name.str());
    if (peer.interest)
      for (const auto& name : *peer.interest)
        if (!next->count(name)) core::log().debug("federation: node {} no longer wants '{}'", node, name.str());
  }
  peer.interest = std::move(next);
  peer.announced = true;
}

std::string FederationFeature::heartbeatText(bool leaving) {
  Heartbeat hb;
  hb.node = node_;
  hb.epoch = epoch_;
  hb.intervalMs = static_cast<uint32_t>(HEARTBEAT_INTERVAL.count());
  hb.leaving = leaving;
  hb.receiveBreaks = link_ ? link_->receiveBreaks() : 0;
  hb.marks.reserve(sent_.size());
  // Every mark, always: a node that hears us for the first time takes its baselines from them.
  for (const auto& [name, sent] : sent_) hb.marks.push_back({name, sent.seq, sent.run});
  if (!leaving) hb.interest.emplace(interest_.begin(), interest_.end());
  else hb.interest.emplace();  // wants nothing, whatever the size: "every channel" would stay for ever
  std::string text = encodeHeartbeat(hb);
  if (text.size() > MAX_HEARTBEAT_BYTES && !leaving) {
    // Too many channels to list: say nothing, so that the others publish every channel to us
    // (what every node did before interest), rather than an announcement NATS would refuse.
    const size_t listed = text.size();
    hb.interest.reset();
    text = encodeHeartbeat(hb);
    if (!interestTooLarge_)
      core::log().warn("federation: the announcement ({} channels with objects here, {} marks) is too long ({} bytes, "
                       "{} without the channel list): the other nodes publish every channel to this one",
                       interest_.size(), hb.marks.size(), listed, text.size());
    interestTooLarge_ = true;
  } else {
    interestTooLarge_ = false;
  }
  return text;
}

void FederationFeature::announce(bool tick) {
  lastAnnounce_ = Clock::now();
  syncBundled();
  // Only the tick's announcements count as repeats of a run's last mark (runs.h): they are a
  // second apart, so a cut shorter than SILENT_AFTER misses a few of them, never all.
  if (link_->tryPublish(subjects_.nodes, heartbeatText(false)) && tick) ++announced_;
}

void FederationFeature::updateSilence() {
  const auto now = Clock::now();
  size_t silent = 0;
  for (const auto& [name, peer] : peers_) {
    if (peer.left) continue;
    const auto quiet = now - peer.lastHeard;
    if (quiet > SILENT_AFTER && quiet < PEER_FORGET) ++silent;
  }
  if (silent != silentPeers_)
    core::log().debug("federation: {} other node(s) silent: {}", silent,
                      silent ? "every channel is published" : "publishing by interest");
  silentPeers_ = silent;
}

void FederationFeature::endIdleRuns() {
  if (!linkUp_ || inGrace_) return;
  std::vector<runs::Hearing> hearing;
  const auto now = Clock::now();
  for (const auto& [name, peer] : peers_) hearing.push_back({peer.left, now - peer.lastHeard, peer.heardSince});
  const uint64_t heardSince = runs::heardByAllSince(hearing, SILENT_AFTER);
  if (heardSince == UINT64_MAX) return;  // someone may have missed a tail: it needs the marks
  for (auto it = sent_.begin(); it != sent_.end();) {
    const Sent& run = it->second;
    if (!runs::mayEnd(ticks_ - run.lastTick, idleTicks_, run.announcedAtPost, announced_, heardSince)) {
      ++it;
      continue;
    }
    core::log().debug("federation: '{}' not posted on for {} s: its run {} ends at seq {} (a next post starts a new one)",
                      it->first.str(), ticks_ - it->second.lastTick, it->second.run, it->second.seq);
    it = sent_.erase(it);
  }
}

void FederationFeature::forgetGonePeers() {
  // Only nodes that left: their interest is empty already, and their numbering ended with them
  // (another life of them has another epoch). A node that went silent without leaving may come
  // back with posts we must count, to objects that still want its channels: it is kept (up to
  // MAX_PEERS, makeRoomForPeer).
  const auto now = Clock::now();
  std::vector<std::string> gone;
  for (const auto& [name, peer] : peers_)
    if (peer.left && now - peer.lastHeard >= runs::PEER_GONE) gone.push_back(name);
  for (const auto& name : gone) {
    core::log().debug("federation: node {} left over an hour ago: forgotten", name);
    dropPeer(name);
  }
  for (auto it = unannounced_.begin(); it != unannounced_.end();) {
    if (now - it->second < UNANNOUNCED_TTL) {
      ++it;
      continue;
    }
    if (!peers_.count(it->first)) {
      tracker_.forgetNode(it->first);
      core::log().debug("federation: posts of node {} came, never an announcement of it: forgotten", it->first);
    }
    it = unannounced_.erase(it);
  }
}

bool FederationFeature::makeRoomForPeer() {
  // A node that left first (nothing of it is needed any more), else the one silent longest.
  auto oldest = peers_.end();
  auto before = [](const Peer& a, const Peer& b) {
    if (a.left != b.left) return a.left;
    return a.lastHeard < b.lastHeard;
  };
  for (auto it = peers_.begin(); it != peers_.end(); ++it)
    if (!it->second.alive && (oldest == peers_.end() || before(it->second, oldest->second))) oldest = it;
  if (oldest == peers_.end()) return false;
  core::log().info("federation: node {} (gone) forgotten: {} nodes known, the most kept", oldest->first, peers_.size());
  dropPeer(oldest->first);
  return true;
}

void FederationFeature::uncount(const Peer& peer) {
  if (!peer.interest) {
    --wantAll_;
    return;
  }
  for (const auto& name : *peer.interest)
    if (auto it = wanted_.find(name); it != wanted_.end() && --it->second == 0) wanted_.erase(it);
}

void FederationFeature::dropPeer(const std::string& node) {
  auto it = peers_.find(node);
  if (it == peers_.end()) return;
  if (it->second.announced) uncount(it->second);
  tracker_.forgetNode(node);
  peers_.erase(it);
  updateSilence();
}

void FederationFeature::refuseByLimit(Limit limit, const std::string& what) {
  ++host_->counters().federationRejected;
  const auto k = static_cast<size_t>(limit);
  ++refusedByLimit_[k];
  const auto now = Clock::now();
  if (refusedByLimit_[k] > 1 && now - lastLimitLog_[k] < std::chrono::seconds(10)) return;
  lastLimitLog_[k] = now;
  core::log().warn("federation: {} ({} refused so far; logged at most every 10 s)", what, refusedByLimit_[k]);
}

void FederationFeature::tick() {
  timer_ = host_->loop().addTimer(deadlineIn(HEARTBEAT_INTERVAL), [this] { tick(); });
  ++ticks_;
  forgetGonePeers();
  endIdleRuns();  // before the announcement: it goes out without them, ahead of any later post
  announce(true);
  const auto now = Clock::now();
  for (auto& [name, peer] : peers_) {
    if (peer.alive && now - peer.lastHeard > NODE_TIMEOUT) {
      peer.alive = false;
      core::log().warn("federation: node {} gone (silent for {} ms)", name,
                       std::chrono::duration_cast<std::chrono::milliseconds>(now - peer.lastHeard).count());
    }
  }
  updateSilence();
}

void FederationFeature::startGrace() {
  linkUp_ = true;
  inGrace_ = true;
  graceUntil_ = Clock::now() + INTEREST_GRACE;
  host_->loop().addTimer(graceUntil_, [this, alive = std::weak_ptr<bool>(alive_)] {
    if (alive.expired() || !host_ || !linkUp_ || Clock::now() < graceUntil_) return;
    inGrace_ = false;
    core::log().debug("federation: publishing by the other nodes' announced interest from now on");
  });
}

void FederationFeature::onState(NatsLink::State s, const std::string& url) {
  switch (s) {
    case NatsLink::State::CONNECTED:
      everConnected_ = true;
      startGrace();
      core::log().info("federation: connected to NATS at {} (node {})", url, node_);
      break;
    case NatsLink::State::RECONNECTED:
      startGrace();
      core::log().info("federation: reconnected to NATS at {} (node {})", url, node_);
      break;
    case NatsLink::State::DISCONNECTED:
      linkUp_ = false;
      ++host_->counters().federationDisconnects;
      core::log().warn("federation: disconnected from NATS (node {}); local delivery goes on, reconnecting", node_);
      return;
    case NatsLink::State::CLOSED:
      linkUp_ = false;
      core::log().warn("federation: NATS connection closed (node {})", node_);
      return;
  }
  announce(false);  // at once: the others learn our marks (posts made while we were away are gaps)
}

// ------------------------------------------------------------------------------------------------ in

void FederationFeature::onMessage(std::string_view subject, std::span<const uint8_t> data) {
  if (subject.compare(0, subjects_.directPrefix.size(), subjects_.directPrefix) == 0)
    onDirect(data);
  else if (subject == subjects_.nodes)
    onHeartbeat(data);
  else if (subject.compare(0, subjects_.bcPrefix.size(), subjects_.bcPrefix) == 0)
    onRemotePost(data);
  // else: a subject of a later protocol version; nothing of ours
}

void FederationFeature::onHeartbeat(std::span<const uint8_t> data) {
  auto hb = decodeHeartbeat(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
  if (!hb) {
    ++host_->counters().federationRejected;
    core::log().warn("federation: {}", hb.error().describe());
    return;
  }
  if (hb->node == node_) return;  // a namesake on another host: a configuration error
  const bool known = peers_.count(hb->node) > 0;
  // The last word of a node not known here: nothing to forget, and it takes no place.
  if (hb->leaving && !known) return;
  if (!known && peers_.size() >= MAX_PEERS && !makeRoomForPeer())
    return refuseByLimit(Limit::PEERS, "announcement of node " + hb->node + " refused: " + std::to_string(peers_.size()) +
                         " nodes known, all alive (the most a node keeps)");
  unannounced_.erase(hb->node);
  auto [it, fresh] = peers_.try_emplace(hb->node);
  Peer& peer = it->second;
  // The last word of an earlier process of a node that restarted meanwhile: not about this one.
  if (hb->leaving && !fresh && peer.epoch != hb->epoch) return;
  if (hb->leaving) {
    if (peer.alive) core::log().info("federation: node {} left (epoch {})", hb->node, hb->epoch);
    peer.alive = false;
    peer.left = true;
  } else {
    if (!peer.alive || peer.epoch != hb->epoch) {
      core::log().info("federation: node {} {} (epoch {})", hb->node,
                       fresh ? "joined" : peer.alive ? "restarted" : "is back", hb->epoch);
      // It learns our interest and marks soon, not at our next tick (its first posts from us
      // are a baseline for it either way).
      announceSoon();
    }
    // Heard for the first time, again after a silence, in another life, or with its NATS client
    // saying it lost messages or its connection since its last announcement (heard, but it may
    // not have heard us): the repeats of our marks count for it from now (runs.h).
    if (fresh || !peer.alive || peer.left || peer.epoch != hb->epoch || Clock::now() - peer.lastHeard > SILENT_AFTER ||
        hb->receiveBreaks != peer.receiveBreaks)
      peer.heardSince = announced_;
    peer.receiveBreaks = hb->receiveBreaks;
    peer.alive = true;
    peer.left = false;
  }
  peer.epoch = hb->epoch;
  peer.lastHeard = Clock::now();
  if (hb->interest) {
    size_t bytes = 0;
    for (const auto& name : *hb->interest) bytes += name.str().size();
    if (hb->interest->size() > MAX_PEER_INTEREST || bytes > MAX_PEER_INTEREST_BYTES) hb->interest.reset();
  }
  setInterest(hb->node, std::move(hb->interest));
  updateSilence();
  for (const auto& m : hb->marks)
    if (uint64_t missed = tracker_.onMark(hb->node, hb->epoch, m.channel, m.seq, m.run))
      reportGap(hb->node, m.channel, missed);
  for (const auto& name : tracker_.heartbeatDone(hb->node, hb->epoch))
    core::log().debug("federation: node {} ended its run of '{}' (not posted on there for a while)", hb->node,
                      name.str());
}

void FederationFeature::onRemotePost(std::span<const uint8_t> data) {
  auto post = decodeRemotePost(data.data(), data.size());
  if (!post) {
    ++host_->counters().federationRejected;
    core::log().warn("federation: {}", post.error().describe());
    return;
  }
  if (post->node == node_) return;
  if (!peers_.count(post->node) && !unannounced_.count(post->node)) {  // a sender not announced here
    if (unannounced_.size() >= MAX_UNANNOUNCED)
      return refuseByLimit(Limit::UNANNOUNCED, "post of node " + post->node + " refused: " + std::to_string(unannounced_.size()) +
                           " senders not announced here already (the most kept)");
    unannounced_.emplace(post->node, Clock::now());
  }
  auto verdict = tracker_.onPost(post->node, post->epoch, post->channel, post->seq, post->run);
  if (verdict.refused) {
    refuseByLimit(Limit::CHANNELS, "post of node " + post->node + " on '" + post->channel.str() +
                                       "' refused: the channels kept of other nodes are at their budget");
    reportGap(post->node, post->channel, 1);  // its objects here learn of it
    return;
  }
  if (verdict.missed) reportGap(post->node, post->channel, verdict.missed);
  if (!verdict.deliver) return;
  if (!hub_->find(post->channel)) return;  // no object of that channel here
  // Another host is a peer like a page: copy, validate, then read (DESIGN §4). A Value (the
  // commonest post) is read by the fast lane from an aligned private copy, and written again for
  // the ring; anything else the fast lane declines goes the general way.
  const capnp::ReaderOptions options = wire::readerOptions(host_->options().maxMessageBytes);
  const size_t words = post->envelopeBytes / sizeof(capnp::word);  // whole words (decodeRemotePost)
  if (remoteWords_.size() < words) remoteWords_.resize(words);
  std::memcpy(remoteWords_.data(), post->envelope, post->envelopeBytes);
  wire::PlainMessage plain;
  if (wire::readPlain(reinterpret_cast<const capnp::word*>(remoteWords_.data()), words, options,
                      wire::kindBit(schema::Envelope::BC_MESSAGE), plain, remoteValue_)) {
    ++host_->counters().federationPostsIn;
    if (hub_->injectRemoteValue(post->channel, post->node, remoteValue_)) host_->markActive();
    return;
  }
  auto in = wire::Inbound::copyEnvelope(post->envelope, post->envelopeBytes, options);
  Result<void> ok = in ? Result<void>{} : Result<void>{in.error()};
  if (ok && !in->envelope().isBcMessage()) ok = makeError(Errc::PROTOCOL_VIOLATION, "not a channel message");
  if (ok) ok = in->checkPayloads();
  if (!ok) {
    ++host_->counters().federationRejected;
    core::log().warn("federation: post from node {} on '{}' rejected: {}", post->node, post->channel.str(),
                     ok.error().describe());
    reportGap(post->node, post->channel, 1);
    return;
  }
  auto owner = std::make_shared<const wire::Inbound>(std::move(*in));
  ++host_->counters().federationPostsIn;
  if (!hub_->injectRemote(post->channel, post->node, owner->envelope().getBcMessage().getPayload(), owner)) return;
  host_->markActive();
}

void FederationFeature::reportGap(const std::string& node, const ChannelName& channel, uint64_t missed) {
  host_->counters().federationMissed += missed;
  if (hub_->reportRemoteGap(channel, missed))
    core::log().warn("federation: {} post(s) of node {} on '{}' never arrived: reported as lapped", missed, node,
                     channel.str());
}

}  // namespace swipc::federation
