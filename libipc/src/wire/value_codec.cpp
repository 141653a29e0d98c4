#include "wire/value_codec.h"

#include <capnp/any.h>
#include <kj/exception.h>

#include <algorithm>
#include <string_view>
#include <unordered_map>

#include "wire/limits.h"
#include "wire/plain_post.h"

namespace swipc::wire {

void writeValue(const Value& v, schema::Value::Builder out) {
  switch (v.kind()) {
    case Value::Kind::NONE: out.setNone(); break;
    case Value::Kind::BOOL: out.setBoolean(v.asBool()); break;
    case Value::Kind::INT: out.setInt(v.asInt()); break;
    case Value::Kind::FLOAT: out.setFloat(v.asFloat()); break;
    case Value::Kind::TEXT: out.setText(capnp::Text::Reader(v.asText().data(), v.asText().size())); break;
    case Value::Kind::BYTES: {
      const auto& b = v.asBytes().data;
      out.setBytes(capnp::Data::Reader(b.data(), b.size()));
      break;
    }
    case Value::Kind::LIST: {
      const auto& l = v.asList();
      auto lb = out.initList(static_cast<unsigned>(l.size()));
      for (unsigned i = 0; i < l.size(); ++i) writeValue(l[i], lb[i]);
      break;
    }
    case Value::Kind::MAP: {
      const auto& m = v.asMap();
      auto mb = out.initMap(static_cast<unsigned>(m.size()));
      for (unsigned i = 0; i < m.size(); ++i) {
        mb[i].setKey(capnp::Text::Reader(m[i].first.data(), m[i].first.size()));
        writeValue(m[i].second, mb[i].initValue());
      }
      break;
    }
  }
}

namespace {

/// Map entries up to this count are de-duplicated by a linear scan; larger maps use a hash index
/// so a hostile million-key map costs O(n), not O(n^2).
constexpr size_t LINEAR_DEDUP_MAX = 16;
/// Largest up-front reservation for a list or map (its count comes from the sender).
constexpr size_t RESERVE_MAX = 1024;

/// False (with `err` set) when the elements of a struct list take no space at all. No encoder of
/// Value writes such a list (a Value always has its union tag, an Entry its two pointers); a
/// sender that does gets a million elements for free, so it is refused before the decoder loops
/// over them. `what` names the list in the error.
template <typename List>
bool zeroSized(const List& l) {
  if (l.size() == 0) return false;
  capnp::AnyStruct::Reader first(l[0]);
  return first.getDataSection().size() == 0 && first.getPointerSection().size() == 0;
}
template <typename T>
bool zeroSized(const plain::ListReader<T>& l) {
  return l.zeroSized();
}

template <typename List>
bool elementsTakeSpace(const List& l, const char* what, Error& err) {
  if (!zeroSized(l)) return true;
  err = makeError(Errc::DATA_CLONE, std::string("malformed value: a ") + what + " of zero-sized elements");
  return false;
}

/// Decodes `in` into `out` (which is null on entry). False with `err` set when it cannot.
/// `Reader` is schema::Value::Reader or the fast lane's plain::ValueReader (same shape).
template <typename Reader>
bool readInto(Reader in, Value& out, int depth, Error& err) {
  if (depth > MAX_NESTING) {
    err = makeError(Errc::DATA_CLONE, "value nested deeper than " + std::to_string(MAX_NESTING));
    return false;
  }
  switch (in.which()) {
    case schema::Value::NONE: return true;
    case schema::Value::BOOLEAN: out = Value{in.getBoolean()}; return true;
    case schema::Value::INT: out = Value{static_cast<int64_t>(in.getInt())}; return true;
    case schema::Value::FLOAT: out = Value{in.getFloat()}; return true;
    case schema::Value::TEXT: {
      auto t = in.getText();
      out = Value{std::string(t.cStr(), t.size())};
      return true;
    }
    case schema::Value::BYTES: {
      auto d = in.getBytes();
      out = Value{Bytes{std::vector<uint8_t>(d.begin(), d.end())}};
      return true;
    }
    case schema::Value::LIST: {
      auto l = in.getList();
      if (!elementsTakeSpace(l, "list", err)) return false;
      out = Value{Value::List{}};
      auto& list = out.asList();
      list.reserve(std::min<size_t>(l.size(), RESERVE_MAX));
      for (unsigned i = 0; i < l.size(); ++i) {
        list.emplace_back();
        if (!readInto(l[i], list.back(), depth + 1, err)) return false;
      }
      return true;
    }
    case schema::Value::MAP: {
      auto entries = in.getMap();
      if (!elementsTakeSpace(entries, "map", err)) return false;
      out = Value{Value::Map{}};
      auto& map = out.asMap();
      // Reserve no more than a sane amount up front: the count is the sender's word, and growth
      // is still amortised for the maps that really are large.
      map.reserve(std::min<size_t>(entries.size(), RESERVE_MAX));
      // Keys are viewed in the message itself (our private copy), which outlives the decode and
      // never moves, unlike the map's own strings.
      std::unordered_map<std::string_view, size_t> index;  // only for large maps
      const bool hashed = entries.size() > LINEAR_DEDUP_MAX;
      for (auto e : entries) {
        auto k = e.getKey();
        const std::string_view key(k.cStr(), k.size());
        // A repeated key replaces the earlier value in place (maps keep first-insertion order).
        size_t at = map.size();
        if (hashed) {
          if (auto it = index.find(key); it != index.end()) at = it->second;
        } else {
          for (size_t i = 0; i < map.size() && at == map.size(); ++i)
            if (map[i].first == key) at = i;
        }
        if (at == map.size()) {
          map.emplace_back(std::string(key), Value{});
          if (hashed) index.emplace(key, at);
        } else {
          map[at].second = Value{};
        }
        if (!readInto(e.getValue(), map[at].second, depth + 1, err)) return false;
      }
      return true;
    }
  }
  err = makeError(Errc::DATA_CLONE, "unknown value kind " + std::to_string(static_cast<int>(in.which())));
  return false;
}

}  // namespace

bool readValueInto(plain::ValueReader in, Value& out) {
  Error err;
  return readInto(in, out, 0, err);
}

Result<Value> readValue(schema::Value::Reader in) {
  Value out;
  Error err;
  try {
    if (!readInto(in, out, 0, err)) return err;
  } catch (const kj::Exception& e) {
    return makeError(Errc::DATA_CLONE, std::string("malformed value: ") + e.getDescription().cStr());
  }
  return out;
}

}  // namespace swipc::wire
