#include "federation/remote_post.h"

#include <unistd.h>

#include <cstring>
#include <nlohmann/json.hpp>

namespace swipc::federation {

namespace {

constexpr size_t pad8(size_t n) { return (n + 7) & ~size_t{7}; }

}  // namespace

size_t remotePostBytes(std::string_view node, const ChannelName& channel, size_t envelopeBytes) {
  return sizeof(RemotePostHeader) + pad8(node.size() + channel.size()) + envelopeBytes;
}

void writeRemotePost(uint8_t* out, std::string_view node, uint64_t epoch, const ChannelName& channel, uint32_t run,
                     uint64_t seq, const uint8_t* envelope, size_t envelopeBytes) {
  SWIPC_REQUIRE(node.size() <= MAX_NODE_NAME && channel.size() <= MAX_CHANNEL_NAME, "node or channel name too long");
  RemotePostHeader h{};
  h.magic = REMOTE_POST_MAGIC;
  h.version = REMOTE_POST_VERSION;
  h.nodeLen = static_cast<uint16_t>(node.size());
  h.channelLen = static_cast<uint32_t>(channel.size());
  h.run = run;
  h.epoch = epoch;
  h.seq = seq;
  const size_t names = pad8(node.size() + channel.size());
  std::memcpy(out, &h, sizeof h);
  std::memcpy(out + sizeof h, node.data(), node.size());
  std::memcpy(out + sizeof h + node.size(), channel.str().data(), channel.size());
  std::memset(out + sizeof h + node.size() + channel.size(), 0, names - node.size() - channel.size());
  if (envelopeBytes) std::memcpy(out + sizeof h + names, envelope, envelopeBytes);
}

std::vector<uint8_t> encodeRemotePost(std::string_view node, uint64_t epoch, const ChannelName& channel, uint64_t seq,
                                      const uint8_t* envelope, size_t envelopeBytes, uint32_t run) {
  std::vector<uint8_t> out(remotePostBytes(node, channel, envelopeBytes));
  writeRemotePost(out.data(), node, epoch, channel, run, seq, envelope, envelopeBytes);
  return out;
}

Result<RemotePost> decodeRemotePost(const uint8_t* data, size_t bytes) {
  auto bad = [](const std::string& why) { return makeError(Errc::PROTOCOL_VIOLATION, "cross-node post: " + why); };
  RemotePostHeader h;
  if (bytes < sizeof h) return bad("shorter than its header (" + std::to_string(bytes) + " bytes)");
  std::memcpy(&h, data, sizeof h);
  if (h.magic != REMOTE_POST_MAGIC) return bad("bad magic");
  if (h.version != REMOTE_POST_VERSION)
    return bad("version " + std::to_string(h.version) + " (expected " + std::to_string(REMOTE_POST_VERSION) +
               "; every node of a scope runs one version)");
  if (h.nodeLen == 0 || h.nodeLen > MAX_NODE_NAME) return bad("node name of " + std::to_string(h.nodeLen) + " bytes");
  if (h.channelLen > MAX_CHANNEL_NAME) return bad("channel name of " + std::to_string(h.channelLen) + " bytes");
  const size_t names = pad8(size_t{h.nodeLen} + h.channelLen);
  if (bytes < sizeof h + names) return bad("names past the end of the frame");
  const size_t envelopeBytes = bytes - sizeof h - names;
  if (envelopeBytes == 0 || envelopeBytes % 8 != 0) return bad("envelope of " + std::to_string(envelopeBytes) + " bytes");
  if (h.seq == 0) return bad("seq 0");
  RemotePost p;
  p.node.assign(reinterpret_cast<const char*>(data + sizeof h), h.nodeLen);
  p.channel = ChannelName(std::string(reinterpret_cast<const char*>(data + sizeof h + h.nodeLen), h.channelLen));
  if (!validNodeName(p.node)) return bad("invalid node name");
  p.epoch = h.epoch;
  p.seq = h.seq;
  p.run = h.run;
  p.envelope = data + sizeof h + names;
  p.envelopeBytes = envelopeBytes;
  return p;
}

std::string encodeHeartbeat(const Heartbeat& hb) {
  nlohmann::json marks = nlohmann::json::array();
  for (const auto& m : hb.marks) marks.push_back({toHex(m.channel.str()), m.seq, m.run});
  nlohmann::json j{{"node", hb.node}, {"epoch", hb.epoch}, {"intervalMs", hb.intervalMs}, {"marks", marks}};
  if (hb.interest) {
    nlohmann::json interest = nlohmann::json::array();
    for (const auto& name : *hb.interest) interest.push_back(toHex(name.str()));
    j["interest"] = std::move(interest);
  }
  if (hb.leaving) j["leaving"] = true;
  if (hb.receiveBreaks) j["receiveBreaks"] = hb.receiveBreaks;
  return j.dump();
}

Result<Heartbeat> decodeHeartbeat(std::string_view text) {
  auto bad = [](const std::string& why) { return makeError(Errc::PROTOCOL_VIOLATION, "heartbeat: " + why); };
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return bad("not a JSON object");
  Heartbeat hb;
  auto node = j.find("node");
  auto epoch = j.find("epoch");
  auto interval = j.find("intervalMs");
  auto marks = j.find("marks");
  if (node == j.end() || !node->is_string()) return bad("no node");
  if (epoch == j.end() || !epoch->is_number_unsigned()) return bad("no epoch");
  if (interval == j.end() || !interval->is_number_unsigned()) return bad("no intervalMs");
  if (marks == j.end() || !marks->is_array()) return bad("no marks");
  hb.node = node->get<std::string>();
  if (!validNodeName(hb.node)) return bad("invalid node name");
  hb.epoch = epoch->get<uint64_t>();
  hb.intervalMs = static_cast<uint32_t>(std::min<uint64_t>(interval->get<uint64_t>(), 3600000));
  for (const auto& m : *marks) {
    if (!m.is_array() || m.size() != 3 || !m[0].is_string() || !m[1].is_number_unsigned() ||
        !m[2].is_number_unsigned() || m[2].get<uint64_t>() > UINT32_MAX)
      return bad("malformed mark");
    auto name = fromHex(m[0].get<std::string>());
    if (!name || name->size() > MAX_CHANNEL_NAME) return bad("malformed channel in a mark");
    hb.marks.push_back({ChannelName(std::move(*name)), m[1].get<uint64_t>(), static_cast<uint32_t>(m[2].get<uint64_t>())});
  }
  if (auto breaks = j.find("receiveBreaks"); breaks != j.end()) {
    if (!breaks->is_number_unsigned()) return bad("receiveBreaks is not a count");
    hb.receiveBreaks = breaks->get<uint64_t>();
  }
  if (auto leaving = j.find("leaving"); leaving != j.end()) {
    if (!leaving->is_boolean()) return bad("leaving is not a boolean");
    hb.leaving = leaving->get<bool>();
  }
  if (auto interest = j.find("interest"); interest != j.end()) {
    if (!interest->is_array()) return bad("interest is not a list");
    hb.interest.emplace();
    for (const auto& c : *interest) {
      if (!c.is_string()) return bad("malformed channel in interest");
      auto name = fromHex(c.get<std::string>());
      if (!name || name->size() > MAX_CHANNEL_NAME) return bad("malformed channel in interest");
      hb.interest->emplace_back(std::move(*name));
    }
  }
  return hb;
}

std::string Subjects::bcFor(const ChannelName& name) const { return bcPrefix + channelToken(name); }

namespace {
/// A NATS subject token for a scope or node name ('.' separates tokens; '~' is in neither).
std::string subjectToken(std::string_view name) {
  std::string token(name);
  for (char& c : token)
    if (c == '.') c = '~';
  return token;
}
}  // namespace

Subjects subjectsFor(std::string_view scope) {
  const std::string token = subjectToken(scope);
  Subjects s;
  s.nodes = "swipc." + token + ".node";
  s.bcPrefix = "swipc." + token + ".bc.";
  s.bcWildcard = s.bcPrefix + "*";
  s.everything = "swipc." + token + ".>";
  s.directPrefix = "swipc-to." + token + ".";
  return s;
}

std::string Subjects::directFor(std::string_view node) const { return directPrefix + subjectToken(node); }

std::vector<std::string> subscriptionsFor(const Subjects& subjects, std::string_view node) {
  return {subjects.everything, subjects.directFor(node)};
}

std::string channelToken(const ChannelName& name) {
  std::string token = "c";  // (not "c" + toHex(…): GCC 12 warns falsely about that at -O3)
  token += toHex(name.str());
  return token;
}

std::string toHex(std::string_view bytes) {
  static constexpr char DIGITS[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(DIGITS[c >> 4]);
    out.push_back(DIGITS[c & 15]);
  }
  return out;
}

std::optional<std::string> fromHex(std::string_view hex) {
  if (hex.size() % 2) return std::nullopt;
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = digit(hex[i]), lo = digit(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

bool validNodeName(std::string_view name) {
  if (name.empty() || name.size() > MAX_NODE_NAME) return false;
  for (char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string defaultNodeName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "node";
  std::string name(buf);
  if (auto dot = name.find('.'); dot != std::string::npos) name.resize(dot);
  return validNodeName(name) ? name : "node";
}

}  // namespace swipc::federation
