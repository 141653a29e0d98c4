#include "swipc/json.h"

#include <array>
#include <cmath>
#include <limits>

namespace swipc {

namespace {
constexpr char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::string_view BYTES_KEY = "$bytes";

int decodeChar(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace

std::string base64Encode(const std::vector<uint8_t>& bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t n = uint32_t{bytes[i]} << 16 | uint32_t{bytes[i + 1]} << 8 | bytes[i + 2];
    out += ALPHABET[n >> 18];
    out += ALPHABET[(n >> 12) & 63];
    out += ALPHABET[(n >> 6) & 63];
    out += ALPHABET[n & 63];
  }
  size_t rest = bytes.size() - i;
  if (rest == 1) {
    uint32_t n = uint32_t{bytes[i]} << 16;
    out += ALPHABET[n >> 18];
    out += ALPHABET[(n >> 12) & 63];
    out += "==";
  } else if (rest == 2) {
    uint32_t n = uint32_t{bytes[i]} << 16 | uint32_t{bytes[i + 1]} << 8;
    out += ALPHABET[n >> 18];
    out += ALPHABET[(n >> 12) & 63];
    out += ALPHABET[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

bool base64Decode(std::string_view text, std::vector<uint8_t>& out) {
  out.clear();
  if (text.size() % 4 != 0) return false;
  for (size_t i = 0; i < text.size(); i += 4) {
    std::array<int, 4> d{};
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      char c = text[i + k];
      if (c == '=') {
        // Padding only in the last quantum, only in its last two places, and only trailing.
        if (i + 4 != text.size() || k < 2) return false;
        d[k] = 0;
        ++pad;
      } else {
        if (pad) return false;
        d[k] = decodeChar(c);
        if (d[k] < 0) return false;
      }
    }
    uint32_t n = uint32_t(d[0]) << 18 | uint32_t(d[1]) << 12 | uint32_t(d[2]) << 6 | uint32_t(d[3]);
    out.push_back(static_cast<uint8_t>(n >> 16));
    if (pad < 2) out.push_back(static_cast<uint8_t>(n >> 8));
    if (pad < 1) out.push_back(static_cast<uint8_t>(n));
  }
  return true;
}

nlohmann::ordered_json toJson(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::NONE: return nullptr;
    case Value::Kind::BOOL: return v.asBool();
    case Value::Kind::INT: return v.asInt();
    case Value::Kind::FLOAT: {
      double d = v.asFloat();
      // JSON has no NaN/Infinity; null is what JSON.stringify writes for them.
      if (!std::isfinite(d)) return nullptr;
      return d;
    }
    case Value::Kind::TEXT: return v.asText();
    case Value::Kind::BYTES: return nlohmann::ordered_json{{std::string(BYTES_KEY), base64Encode(v.asBytes().data)}};
    case Value::Kind::LIST: {
      auto arr = nlohmann::ordered_json::array();
      for (const auto& item : v.asList()) arr.push_back(toJson(item));
      return arr;
    }
    case Value::Kind::MAP: {
      auto obj = nlohmann::ordered_json::object();
      for (const auto& [k, item] : v.asMap()) obj[k] = toJson(item);
      return obj;
    }
  }
  return nullptr;
}

Result<Value> fromJson(const nlohmann::ordered_json& j) {
  using T = nlohmann::ordered_json::value_t;
  switch (j.type()) {
    case T::null:
    case T::discarded: return Value{};
    case T::boolean: return Value{j.get<bool>()};
    case T::number_integer: return Value{j.get<int64_t>()};
    case T::number_unsigned: {
      auto u = j.get<uint64_t>();
      if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return Value{static_cast<int64_t>(u)};
      return Value{static_cast<double>(u)};
    }
    case T::number_float: return Value{j.get<double>()};
    case T::string: return Value{j.get<std::string>()};
    case T::binary: {
      const auto& b = j.get_binary();
      return Value{Bytes{std::vector<uint8_t>(b.begin(), b.end())}};
    }
    case T::array: {
      Value::List list;
      list.reserve(j.size());
      for (const auto& item : j) {
        auto v = fromJson(item);
        if (!v) return v.error();
        list.push_back(std::move(*v));
      }
      return Value{std::move(list)};
    }
    case T::object: {
      if (j.size() == 1 && j.contains(BYTES_KEY) && j[std::string(BYTES_KEY)].is_string()) {
        Bytes b;
        if (!base64Decode(j[std::string(BYTES_KEY)].get<std::string>(), b.data))
          return makeError(Errc::TYPE, "\"$bytes\" is not valid base64");
        return Value{std::move(b)};
      }
      Value::Map map;
      map.reserve(j.size());
      for (const auto& [k, item] : j.items()) {
        auto v = fromJson(item);
        if (!v) return v.error();
        map.emplace_back(k, std::move(*v));
      }
      return Value{std::move(map)};
    }
  }
  return makeError(Errc::TYPE, "unsupported JSON value");
}

Result<Value> parseJsonValue(std::string_view text) {
  auto j = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return makeError(Errc::TYPE, "not valid JSON: " + std::string(text.substr(0, 80)));
  return fromJson(j);
}

std::string toJsonText(const Value& v) { return toJson(v).dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace); }

}  // namespace swipc
