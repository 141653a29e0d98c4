// FederationFeature, clients across nodes (DESIGN §16): matchAll / get / postMessage that reach
// other nodes as requests on their own subjects, and this node's answers to theirs.
#include "federation/federation_feature.h"

#include "core/log.h"

namespace swipc::federation {

// ------------------------------------------------------------------------------------------------ clients

std::vector<std::string> FederationFeature::liveNodes() const {
  std::vector<std::string> out;
  for (const auto& [name, peer] : peers_)
    if (peer.alive) out.push_back(name);
  return out;
}

void FederationFeature::matchAllRemote(const MatchAllOptions& opts, std::function<void(std::vector<RemoteClient>)> done) {
  ClientsRequest r;
  r.kind = ClientsRequest::Kind::MATCH_ALL;
  r.options = opts;
  Pending p;
  p.onList = std::move(done);
  ask(std::move(r), liveNodes(), std::move(p));
}

void FederationFeature::getRemote(const ClientId& id, std::function<void(std::optional<RemoteClient>)> done) {
  ClientsRequest r;
  r.kind = ClientsRequest::Kind::GET;
  r.id = id;
  Pending p;
  p.onClient = std::move(done);
  ask(std::move(r), liveNodes(), std::move(p));
}

void FederationFeature::postRemote(const std::string& node, const ClientId& id, const Value& data,
                                   std::function<void(Result<void>)> done) {
  auto peer = peers_.find(node);
  if (!link_ || !link_->connectedGuess())
    return done(makeError(Errc::DISCONNECTED, "not connected to NATS: node " + node + " is out of reach"));
  if (peer == peers_.end() || !peer->second.alive)
    return done(makeError(Errc::NOT_FOUND, "node " + node + " is not live"));
  ClientsRequest r;
  r.kind = ClientsRequest::Kind::POST;
  r.id = id;
  r.data = data;
  Pending p;
  p.onOutcome = std::move(done);
  ask(std::move(r), {node}, std::move(p));
}

void FederationFeature::postAnywhere(const ClientId& id, const Value& data, std::function<void(Result<void>)> done) {
  if (!link_ || !link_->connectedGuess())
    return done(makeError(Errc::DISCONNECTED, "not connected to NATS: the other nodes are out of reach"));
  ClientsRequest r;
  r.kind = ClientsRequest::Kind::POST;
  r.id = id;
  r.data = data;
  Pending p;
  p.onOutcome = std::move(done);
  ask(std::move(r), liveNodes(), std::move(p));
}

void FederationFeature::ask(ClientsRequest request, std::vector<std::string> nodes, Pending pending) {
  const uint64_t req = nextReq_++;
  request.req = req;
  request.from = node_;
  pending.kind = request.kind;
  if (request.kind == ClientsRequest::Kind::POST)
    pending.outcome = makeError(Errc::NOT_FOUND, "no client " + request.id.toString() + " on any live node");
  const std::string frame = encodeRequest(request);
  const bool connected = link_ && link_->connectedGuess();
  for (const auto& n : nodes) {
    if (connected && link_->tryPublish(subjects_.directFor(n), frame)) {
      pending.waiting.insert(n);
      ++host_->counters().federationRequestsOut;
    } else if (request.kind == ClientsRequest::Kind::POST) {
      pending.outcome = makeError(Errc::DISCONNECTED, "the request to node " + n + " did not go out (NATS)");
    }
  }
  auto [it, _] = pending_.emplace(req, std::move(pending));
  if (it->second.waiting.empty()) return finish(req, false);
  it->second.timer = host_->loop().addTimer(deadlineIn(REMOTE_TIMEOUT), [this, req] { finish(req, true); });
  it->second.timerArmed = true;
}

void FederationFeature::finish(uint64_t req, bool timedOut) {
  auto it = pending_.find(req);
  if (it == pending_.end()) return;
  Pending p = std::move(it->second);
  pending_.erase(it);
  if (p.timerArmed && !timedOut && host_) host_->loop().cancelTimer(p.timer);
  if (timedOut && !p.waiting.empty()) {
    ++host_->counters().federationTimeouts;
    std::string who;
    for (const auto& n : p.waiting) who += (who.empty() ? "" : ", ") + n;
    core::log().warn("federation: no answer from node(s) {} within {} ms", who, REMOTE_TIMEOUT.count());
    // A node that did not answer may have had the client: not "not found" then.
    if (p.kind == ClientsRequest::Kind::POST && !p.outcome && p.outcome.error().code == Errc::NOT_FOUND)
      p.outcome = makeError(Errc::TIMEOUT, "node " + who + " did not answer within " +
                                               std::to_string(REMOTE_TIMEOUT.count()) + " ms");
  }
  switch (p.kind) {
    case ClientsRequest::Kind::MATCH_ALL: {
      std::vector<RemoteClient> all;
      for (auto& [node, list] : p.lists)
        for (auto& c : list) all.push_back(std::move(c));
      if (p.onList) p.onList(std::move(all));
      break;
    }
    case ClientsRequest::Kind::GET:
      if (p.onClient) p.onClient(std::move(p.client));
      break;
    case ClientsRequest::Kind::POST:
      if (p.onOutcome) p.onOutcome(std::move(p.outcome));
      break;
  }
}

void FederationFeature::onDirect(std::span<const uint8_t> data) {
  const std::string_view frame(reinterpret_cast<const char*>(data.data()), data.size());
  auto kind = peekKind(frame);
  if (kind && *kind == FrameKind::ANSWER) {
    auto a = decodeAnswer(frame);
    if (a) return onAnswer(std::move(*a));
    kind = a.error();
  } else if (kind) {
    auto r = decodeRequest(frame);
    if (r) return serve(*r);
    kind = r.error();
  }
  ++host_->counters().federationRejected;
  core::log().warn("federation: {}", kind.error().describe());
}

void FederationFeature::serve(const ClientsRequest& r) {
  if (!validNodeName(r.from)) {
    ++host_->counters().federationRejected;
    core::log().warn("federation: a clients request from an invalid node name refused");
    return;
  }
  ++host_->counters().federationRequestsIn;
  std::string answer;
  switch (r.kind) {
    case ClientsRequest::Kind::MATCH_ALL: {
      std::vector<RemoteClient> list;
      for (const auto& c : local_.matchAll(r.options)) list.push_back(describeForRemote(c, node_));
      answer = encodeMatchAllAnswer(r.req, node_, list);
      break;
    }
    case ClientsRequest::Kind::GET: {
      std::optional<RemoteClient> c;
      if (auto h = local_.get(r.id)) c = describeForRemote(*h, node_);
      answer = encodeGetAnswer(r.req, node_, c);
      break;
    }
    case ClientsRequest::Kind::POST:
      answer = encodeOutcomeAnswer(r.req, node_, local_.post(r.id, r.data));
      break;
  }
  if (!link_->tryPublish(subjects_.directFor(r.from), answer))
    core::log().warn("federation: the answer to node {} did not go out (NATS); it will time out there", r.from);
}

void FederationFeature::onAnswer(ClientsAnswer a) {
  auto it = pending_.find(a.req);
  if (it == pending_.end() || !it->second.waiting.erase(a.from)) return;  // late (timed out) or not asked
  Pending& p = it->second;
  switch (p.kind) {
    case ClientsRequest::Kind::MATCH_ALL:
      p.lists[a.from] = std::move(a.clients);
      break;
    case ClientsRequest::Kind::GET:
      if (a.client) {
        p.client = std::move(a.client);
        return finish(a.req, false);  // client ids are unique: the first who has it is the one
      }
      break;
    case ClientsRequest::Kind::POST:
      if (a.outcome) {
        p.outcome = std::move(a.outcome);
        return finish(a.req, false);  // delivered: the client was there
      }
      if (a.outcome.error().code != Errc::NOT_FOUND) p.outcome = std::move(a.outcome);  // it was there
      break;
  }
  if (p.waiting.empty()) finish(a.req, false);
}

}  // namespace swipc::federation
