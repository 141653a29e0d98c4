#include "swipc/types.h"

#include "swipc/clients.h"  // FrameType

#include <unistd.h>

#include <cstdlib>

namespace swipc {

namespace {
int hexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

bool ClientId::parse(std::string_view hex, ClientId& out) {
  if (hex.size() != 32) return false;
  std::array<uint8_t, 16> b{};
  for (size_t i = 0; i < 16; ++i) {
    int hi = hexDigit(hex[2 * i]);
    int lo = hexDigit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    b[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  out = ClientId(b);
  return true;
}

std::string ClientId::toString() const {
  static constexpr char DIGITS[] = "0123456789abcdef";
  std::string s(32, '0');
  for (size_t i = 0; i < 16; ++i) {
    s[2 * i] = DIGITS[bytes_[i] >> 4];
    s[2 * i + 1] = DIGITS[bytes_[i] & 0xf];
  }
  return s;
}

bool ClientId::empty() const {
  for (auto b : bytes_)
    if (b) return false;
  return true;
}

std::string_view frameTypeName(FrameType t) {
  switch (t) {
    case FrameType::TOP_LEVEL: return "top-level";
    case FrameType::AUXILIARY: return "auxiliary";
    case FrameType::NONE: return "none";
  }
  return "none";
}

std::string_view clientTypeName(ClientType t) {
  switch (t) {
    case ClientType::WINDOW: return "window";
    case ClientType::WORKER: return "worker";
    case ClientType::ALL: return "all";
  }
  return "window";
}

bool isValidScope(std::string_view scope) {
  if (scope.empty() || scope.size() > 64) return false;
  for (char c : scope) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  // "." and ".." would name directories we do not own.
  return scope != "." && scope != "..";
}

std::string defaultRuntimeDir() {
  if (const char* d = std::getenv("SWIPC_RUNTIME_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x) return std::string(x) + "/swipc";
  return "/tmp/swipc-" + std::to_string(::getuid());
}

}  // namespace swipc
