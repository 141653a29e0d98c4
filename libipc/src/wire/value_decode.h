// The one Value decoder, over any reader shaped like schema::Value::Reader: Cap'n Proto's
// generated reader (value_codec.cpp) and the fast lane's (plain_post.cpp), each instantiating it
// where its reader's accessors can be inlined.
#pragma once

#include <capnp/any.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "swipc/error.h"
#include "swipc/value.h"
#include "value.capnp.h"
#include "wire/limits.h"

namespace swipc::wire::decode {

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

template <typename List>
bool elementsTakeSpace(const List& l, const char* what, Error& err) {
  if (!zeroSized(l)) return true;
  err = makeError(Errc::DATA_CLONE, std::string("malformed value: a ") + what + " of zero-sized elements");
  return false;
}

/// `out` (null) becomes `v`, constructed in place: an assignment would dispatch on both variants
/// and then destroy the temporary, a cost that shows in every small message.
template <typename T>
Value& become(Value& out, T&& v) {
  std::destroy_at(&out);
  return *std::construct_at(&out, std::forward<T>(v));
}

/// `s` becomes the `n` bytes at `p` (cheaper than assign(): the bytes never overlap `s`).
inline void overwrite(std::string& s, const char* p, size_t n) {
  s.resize(n);
  if (n) std::memcpy(s.data(), p, n);
}

/// The list or map (C) `out` already holds, or a fresh one. A held one (a reused event's, from the
/// message before) lends its storage and its elements, unless it has grown large. Room for
/// `count` elements is reserved, at most RESERVE_MAX up front: the count is the sender's word,
/// and growth is still amortised for the containers that really are large.
template <typename C>
C& containerIn(Value& out, size_t count) {
  auto held = [](Value& v) -> C* {
    if constexpr (std::is_same_v<C, Value::List>)
      return v.isList() ? &v.asList() : nullptr;
    else
      return v.isMap() ? &v.asMap() : nullptr;
  };
  C* c = held(out);
  if (!c || c->capacity() > RESERVE_MAX) c = held(become(out, C{}));
  c->reserve(std::min<size_t>(count, RESERVE_MAX));
  return *c;
}

/// Drops what a reused container held beyond the first `n` elements.
template <typename C>
void keepFirst(C& c, size_t n) {
  if (c.size() > n) c.erase(c.begin() + static_cast<std::ptrdiff_t>(n), c.end());
}

/// Decodes `in` into `out` (whatever it held is replaced). False with `err` set when it cannot.
/// `Reader` is schema::Value::Reader or the fast lane's plain::ValueReader (same shape).
template <typename Reader>
bool readInto(Reader in, Value& out, int depth, Error& err) {
  if (depth > MAX_NESTING) {
    err = makeError(Errc::DATA_CLONE, "value nested deeper than " + std::to_string(MAX_NESTING));
    return false;
  }
  switch (in.which()) {
    case schema::Value::NONE:
      if (!out.isNull()) become(out, Value{});
      return true;
    case schema::Value::BOOLEAN: become(out, in.getBoolean()); return true;
    case schema::Value::INT: become(out, static_cast<int64_t>(in.getInt())); return true;
    case schema::Value::FLOAT: become(out, static_cast<double>(in.getFloat())); return true;
    case schema::Value::TEXT: {
      auto t = in.getText();
      if (out.isText())
        overwrite(out.asText(), t.cStr(), t.size());  // (the event's from the message before)
      else
        become(out, std::string(t.cStr(), t.size()));
      return true;
    }
    case schema::Value::BYTES: {
      auto d = in.getBytes();
      become(out, Bytes{std::vector<uint8_t>(d.begin(), d.end())});
      return true;
    }
    case schema::Value::LIST: {
      auto l = in.getList();
      if (!elementsTakeSpace(l, "list", err)) return false;
      auto& list = containerIn<Value::List>(out, l.size());
      for (unsigned i = 0; i < l.size(); ++i) {
        if (i == list.size()) list.emplace_back();
        if (!readInto(l[i], list[i], depth + 1, err)) return false;
      }
      keepFirst(list, l.size());
      return true;
    }
    case schema::Value::MAP: {
      auto entries = in.getMap();
      if (!elementsTakeSpace(entries, "map", err)) return false;
      // Entries a reused map already holds are overwritten in place: a small post allocates nothing.
      auto& map = containerIn<Value::Map>(out, entries.size());
      // Keys are viewed in the message itself (our private copy), which outlives the decode and
      // never moves, unlike the map's own strings.
      std::optional<std::unordered_map<std::string_view, size_t>> index;  // only for large maps
      const bool hashed = entries.size() > LINEAR_DEDUP_MAX;
      if (hashed) index.emplace();
      size_t n = 0;  // entries decoded so far; map[n..] are left over from before
      for (auto e : entries) {
        auto k = e.getKey();
        const std::string_view key(k.cStr(), k.size());
        // A repeated key replaces the earlier value in place (maps keep first-insertion order).
        size_t at = n;
        if (hashed) {
          if (auto it = index->find(key); it != index->end()) at = it->second;
        } else {
          for (size_t i = 0; i < n && at == n; ++i)
            if (map[i].first == key) at = i;
        }
        if (at == n) {
          if (n < map.size())
            overwrite(map[n].first, key.data(), key.size());
          else
            map.emplace_back(std::piecewise_construct, std::forward_as_tuple(key), std::forward_as_tuple());
          if (hashed) index->emplace(key, n);
          ++n;
        }
        if (!readInto(e.getValue(), map[at].second, depth + 1, err)) return false;
      }
      keepFirst(map, n);
      return true;
    }
  }
  err = makeError(Errc::DATA_CLONE, "unknown value kind " + std::to_string(static_cast<int>(in.which())));
  return false;
}

}  // namespace swipc::wire::decode
