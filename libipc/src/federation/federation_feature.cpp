#include "federation/federation_feature.h"

#include <chrono>

#include "core/log.h"
#include "wire/codec.h"
#include "wire/limits.h"

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
  peers_.clear();
  tracker_ = SequenceTracker{};

  NatsLink::Options lo;
  lo.servers = fed.natsServers;
  lo.clientName = "swipc " + opts.scope + " " + node_;
  lo.subjects = subscriptionsFor(subjects_);
  NatsLink::Events ev;
  ev.message = [this](const std::string& subject, const std::vector<uint8_t>& data) { onMessage(subject, data); };
  ev.state = [this](NatsLink::State s, const std::string& url) { onState(s, url); };
  ev.error = [this](const std::string& what) { core::log().warn("federation: NATS: {}", what); };
  core::log().info("federation: node={} scope={} nats={} (connecting)", node_, opts.scope, fed.natsServers.front());
  link_ = NatsLink::start(host.loop(), std::move(lo), std::move(ev));
  hub_->onLocalPost([this](const ChannelName& name, const uint8_t* env, size_t bytes) { localPost(name, env, bytes); });
  timer_ = host.loop().addTimer(deadlineIn(HEARTBEAT_INTERVAL), [this] { tick(); });
  timerArmed_ = true;
  return {};
}

void FederationFeature::stop() {
  if (!host_) return;
  hub_->onLocalPost(nullptr);
  if (timerArmed_) host_->loop().cancelTimer(timer_);
  timerArmed_ = false;
  link_.reset();  // closes the connection, joins the sender; no callback after this
  core::log().info("federation: node={} left (posts not sent: {})", node_, notSent_);
  host_ = nullptr;
}

// ------------------------------------------------------------------------------------------------ out

void FederationFeature::localPost(const ChannelName& name, const uint8_t* envelope, size_t bytes) {
  if (name.size() > MAX_CHANNEL_NAME) return;
  const uint64_t seq = ++sent_[name];
  // Numbered whether or not it goes out: a post NATS does not take is a gap its receivers see.
  if (!link_->tryPublish(subjects_.bcFor(name), encodeRemotePost(node_, epoch_, name, seq, envelope, bytes))) {
    ++notSent_;
    ++host_->counters().federationNotSent;
    return;
  }
  ++host_->counters().federationPostsOut;
}

void FederationFeature::announce() {
  Heartbeat hb;
  hb.node = node_;
  hb.epoch = epoch_;
  hb.intervalMs = static_cast<uint32_t>(HEARTBEAT_INTERVAL.count());
  hb.marks.reserve(sent_.size());
  for (const auto& [name, seq] : sent_) hb.marks.emplace_back(name, seq);
  std::string text = encodeHeartbeat(hb);
  (void)link_->tryPublish(subjects_.nodes, std::vector<uint8_t>(text.begin(), text.end()));
}

void FederationFeature::tick() {
  timer_ = host_->loop().addTimer(deadlineIn(HEARTBEAT_INTERVAL), [this] { tick(); });
  announce();
  const auto now = Clock::now();
  for (auto& [name, peer] : peers_) {
    if (peer.alive && now - peer.lastHeard > NODE_TIMEOUT) {
      peer.alive = false;
      core::log().warn("federation: node {} gone (silent for {} ms)", name,
                       std::chrono::duration_cast<std::chrono::milliseconds>(now - peer.lastHeard).count());
    }
  }
}

void FederationFeature::onState(NatsLink::State s, const std::string& url) {
  switch (s) {
    case NatsLink::State::CONNECTED:
      everConnected_ = true;
      core::log().info("federation: connected to NATS at {} (node {})", url, node_);
      break;
    case NatsLink::State::RECONNECTED:
      core::log().info("federation: reconnected to NATS at {} (node {})", url, node_);
      break;
    case NatsLink::State::DISCONNECTED:
      ++host_->counters().federationDisconnects;
      core::log().warn("federation: disconnected from NATS (node {}); local delivery goes on, reconnecting", node_);
      return;
    case NatsLink::State::CLOSED:
      core::log().warn("federation: NATS connection closed (node {})", node_);
      return;
  }
  announce();  // at once: the others learn our marks (posts made while we were away are gaps)
}

// ------------------------------------------------------------------------------------------------ in

void FederationFeature::onMessage(const std::string& subject, const std::vector<uint8_t>& data) {
  if (subject == subjects_.nodes)
    onHeartbeat(data);
  else if (subject.compare(0, subjects_.bcPrefix.size(), subjects_.bcPrefix) == 0)
    onRemotePost(data);
  // else: a subject of a later protocol version; nothing of ours
}

void FederationFeature::onHeartbeat(const std::vector<uint8_t>& data) {
  auto hb = decodeHeartbeat(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
  if (!hb) {
    core::log().warn("federation: {}", hb.error().describe());
    return;
  }
  if (hb->node == node_) return;  // a namesake on another host: a configuration error
  auto [it, fresh] = peers_.try_emplace(hb->node);
  Peer& peer = it->second;
  if (!peer.alive || peer.epoch != hb->epoch)
    core::log().info("federation: node {} {} (epoch {})", hb->node, fresh ? "joined" : peer.alive ? "restarted" : "is back",
                     hb->epoch);
  peer.alive = true;
  peer.epoch = hb->epoch;
  peer.lastHeard = Clock::now();
  for (const auto& [channel, seq] : hb->marks)
    if (uint64_t missed = tracker_.onMark(hb->node, hb->epoch, channel, seq)) reportGap(hb->node, channel, missed);
  tracker_.heartbeatDone(hb->node, hb->epoch);
}

void FederationFeature::onRemotePost(const std::vector<uint8_t>& data) {
  auto post = decodeRemotePost(data.data(), data.size());
  if (!post) {
    ++host_->counters().federationRejected;
    core::log().warn("federation: {}", post.error().describe());
    return;
  }
  if (post->node == node_) return;
  auto verdict = tracker_.onPost(post->node, post->epoch, post->channel, post->seq);
  if (verdict.missed) reportGap(post->node, post->channel, verdict.missed);
  if (!verdict.deliver) return;
  if (!hub_->find(post->channel)) return;  // no object of that channel here
  // Another host is a peer like a page: copy, validate, then read (DESIGN §4).
  auto in = wire::Inbound::copyEnvelope(post->envelope, post->envelopeBytes,
                                        wire::readerOptions(host_->options().maxMessageBytes));
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
