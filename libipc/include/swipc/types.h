// Strong ids and small vocabulary types shared by the public API.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace swipc {

using Clock = std::chrono::steady_clock;
/// A point in time after which a wait gives up. Deadline::max() waits forever.
using Deadline = Clock::time_point;

inline Deadline deadlineIn(std::chrono::milliseconds d) { return Clock::now() + d; }
inline constexpr Deadline NO_DEADLINE = Deadline::max();

/// A client's 128-bit unguessable id, printed as 32 lowercase hex characters.
class ClientId {
 public:
  ClientId() = default;
  explicit ClientId(const std::array<uint8_t, 16>& bytes) : bytes_(bytes) {}

  /// Parses 32 hex characters; false when the text is not a client id.
  static bool parse(std::string_view hex, ClientId& out);
  std::string toString() const;
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  bool empty() const;

  friend bool operator==(const ClientId&, const ClientId&) = default;
  friend auto operator<=>(const ClientId&, const ClientId&) = default;

 private:
  std::array<uint8_t, 16> bytes_{};
};

/// A BroadcastChannel name (exact match; any bytes the wire limits allow). A type, so a channel
/// name is never confused with a URL, a tag or a scope.
class ChannelName {
 public:
  ChannelName() = default;
  explicit ChannelName(std::string name) : name_(std::move(name)) {}
  const std::string& str() const { return name_; }
  bool empty() const { return name_.empty(); }
  size_t size() const { return name_.size(); }

  friend bool operator==(const ChannelName&, const ChannelName&) = default;
  friend auto operator<=>(const ChannelName&, const ChannelName&) = default;

 private:
  std::string name_;
};

enum class ClientType { WINDOW, WORKER, ALL };

std::string_view clientTypeName(ClientType t);

/// The per-sender sequence number of a posted message (the envelope's seq).
using MessageSeq = uint64_t;

/// Validated scope name: [A-Za-z0-9._-]{1,64}.
bool isValidScope(std::string_view scope);

/// The runtime directory: $SWIPC_RUNTIME_DIR, else $XDG_RUNTIME_DIR/swipc, else /tmp/swipc-<uid>.
std::string defaultRuntimeDir();

}  // namespace swipc

template <>
struct std::hash<swipc::ChannelName> {
  size_t operator()(const swipc::ChannelName& n) const noexcept { return std::hash<std::string>{}(n.str()); }
};

template <>
struct std::hash<swipc::ClientId> {
  size_t operator()(const swipc::ClientId& id) const noexcept {
    size_t h = 0;
    for (int i = 0; i < 8; ++i) h = (h << 8) | id.bytes()[i];
    return h;
  }
};
