// Value: swipc's structured clone (null, bool, int64, float64, text, bytes, list, map).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace swipc {

/// Raw bytes inside a Value (JSON form: {"$bytes":"<base64>"}).
struct Bytes {
  std::vector<uint8_t> data;
  friend bool operator==(const Bytes&, const Bytes&) = default;
};

/// A self-contained, copyable value tree. Maps keep insertion order; keys are unique.
class Value {
 public:
  enum class Kind { NONE, BOOL, INT, FLOAT, TEXT, BYTES, LIST, MAP };
  using List = std::vector<Value>;
  using Map = std::vector<std::pair<std::string, Value>>;

  Value() = default;
  Value(std::nullptr_t) {}                                   // NOLINT(implicit)
  Value(bool b) : v_(b) {}                                   // NOLINT(implicit)
  Value(int i) : v_(int64_t{i}) {}                           // NOLINT(implicit)
  Value(int64_t i) : v_(i) {}                                // NOLINT(implicit)
  Value(uint32_t i) : v_(int64_t{i}) {}                      // NOLINT(implicit)
  Value(double d) : v_(d) {}                                 // NOLINT(implicit)
  Value(const char* s) : v_(std::string(s)) {}               // NOLINT(implicit)
  Value(std::string s) : v_(std::move(s)) {}                 // NOLINT(implicit)
  Value(std::string_view s) : v_(std::string(s)) {}          // NOLINT(implicit)
  Value(Bytes b) : v_(std::move(b)) {}                       // NOLINT(implicit)
  Value(List l) : v_(std::move(l)) {}                        // NOLINT(implicit)
  Value(Map m) : v_(std::move(m)) {}                         // NOLINT(implicit)

  static Value map(std::initializer_list<std::pair<std::string, Value>> entries);
  static Value list(std::initializer_list<Value> items);

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool isNull() const { return kind() == Kind::NONE; }
  bool isBool() const { return kind() == Kind::BOOL; }
  bool isInt() const { return kind() == Kind::INT; }
  bool isFloat() const { return kind() == Kind::FLOAT; }
  bool isText() const { return kind() == Kind::TEXT; }
  bool isBytes() const { return kind() == Kind::BYTES; }
  bool isList() const { return kind() == Kind::LIST; }
  bool isMap() const { return kind() == Kind::MAP; }

  /// Typed accessors; calling the wrong one is a programming error (asserts).
  bool asBool() const;
  int64_t asInt() const;
  double asFloat() const;
  const std::string& asText() const;
  std::string& asText();
  const Bytes& asBytes() const;
  const List& asList() const;
  List& asList();
  const Map& asMap() const;
  Map& asMap();

  /// Map lookup; a missing key (or a non-map) yields a null Value.
  const Value& operator[](std::string_view key) const;
  /// Map lookup; nullptr when missing or not a map.
  const Value* find(std::string_view key) const;
  /// Inserts or replaces a map entry (turns a null Value into a map).
  Value& set(std::string key, Value v);

  /// Text of a text value, or `fallback`.
  std::string textOr(std::string_view fallback) const;
  /// Integer of an int value, or `fallback`.
  int64_t intOr(int64_t fallback) const;

  friend bool operator==(const Value& a, const Value& b);

 private:
  std::variant<std::monostate, bool, int64_t, double, std::string, Bytes, List, Map> v_;
};

}  // namespace swipc
