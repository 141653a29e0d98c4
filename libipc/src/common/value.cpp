#include "swipc/value.h"

#include <algorithm>

#include "swipc/error.h"

namespace swipc {

Value Value::map(std::initializer_list<std::pair<std::string, Value>> entries) {
  Map m;
  m.reserve(entries.size());
  for (const auto& entry : entries) {  // (not a structured binding: clang 14 cannot capture one)
    const std::string& k = entry.first;
    auto same = std::find_if(m.begin(), m.end(), [&](const auto& e) { return e.first == k; });
    if (same != m.end())
      same->second = entry.second;  // a repeated key: the last one wins, as set() does
    else
      m.emplace_back(k, entry.second);  // one copy, straight into place
  }
  return Value(std::move(m));
}

Value Value::list(std::initializer_list<Value> items) { return Value{List(items)}; }

#define SWIPC_VALUE_GET(idx, what)                                      \
  SWIPC_REQUIRE(v_.index() == (idx), "Value is not " what);           \
  return std::get<idx>(v_)

bool Value::asBool() const { SWIPC_VALUE_GET(1, "a bool"); }
int64_t Value::asInt() const { SWIPC_VALUE_GET(2, "an int"); }
double Value::asFloat() const { SWIPC_VALUE_GET(3, "a float"); }
const std::string& Value::asText() const { SWIPC_VALUE_GET(4, "text"); }
std::string& Value::asText() { SWIPC_VALUE_GET(4, "text"); }
const Bytes& Value::asBytes() const { SWIPC_VALUE_GET(5, "bytes"); }
const Value::List& Value::asList() const { SWIPC_VALUE_GET(6, "a list"); }
Value::List& Value::asList() { SWIPC_VALUE_GET(6, "a list"); }
const Value::Map& Value::asMap() const { SWIPC_VALUE_GET(7, "a map"); }
Value::Map& Value::asMap() { SWIPC_VALUE_GET(7, "a map"); }
#undef SWIPC_VALUE_GET

const Value* Value::find(std::string_view key) const {
  if (!isMap()) return nullptr;
  for (const auto& [k, v] : std::get<Map>(v_))
    if (k == key) return &v;
  return nullptr;
}

const Value& Value::operator[](std::string_view key) const {
  static const Value NONE;
  const Value* v = find(key);
  return v ? *v : NONE;
}

Value& Value::set(std::string key, Value v) {
  if (isNull()) v_ = Map{};
  SWIPC_REQUIRE(isMap(), "Value::set on a non-map");
  auto& m = std::get<Map>(v_);
  for (auto& [k, old] : m) {
    if (k == key) {
      old = std::move(v);
      return old;
    }
  }
  m.emplace_back(std::move(key), std::move(v));
  return m.back().second;
}

std::string Value::textOr(std::string_view fallback) const {
  return isText() ? asText() : std::string(fallback);
}

int64_t Value::intOr(int64_t fallback) const { return isInt() ? asInt() : fallback; }

bool operator==(const Value& a, const Value& b) { return a.v_ == b.v_; }

}  // namespace swipc
