// Fuzz target json_value: the JSON <-> Value module (common/json.cpp, common/value.cpp) and the
// Value <-> Cap'n Proto codec (wire/value_codec.cpp). JSON reaches it from page_client's stdin
// and from the inspector; Cap'n Proto Values reach it from every other process.
//
// Input: byte 0 picks the mode, the rest is the text / the message.
//   even: JSON text. Properties: parsing never crashes; when it parses, json -> Value -> json is
//         stable (the text written from the Value parses again and is written the same), and
//         Value -> capnp -> Value gives an equal Value (or a DataCloneError for nesting deeper
//         than wire::MAX_NESTING, and only then).
//   odd:  a Cap'n Proto message whose root is a Value. Properties: readValue never crashes;
//         when it reads, writing the Value and reading it back gives the same Value and the same
//         bytes; toJsonText never throws, and its JSON, once parsed, is stable from then on.
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "swipc/json.h"
#include "swipc/value.h"
#include "value.capnp.h"
#include "wire/limits.h"
#include "wire/value_codec.h"

namespace {

using swipc::Value;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "json_value property broken: %s\n", what);
  std::abort();
}

/// Equality where NaN equals NaN with the same bits (Value's operator== follows IEEE).
bool same(const Value& a, const Value& b) {
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::FLOAT: {
      const double x = a.asFloat(), y = b.asFloat();
      return std::memcmp(&x, &y, sizeof x) == 0;
    }
    case Value::Kind::LIST: {
      const auto &l = a.asList(), &m = b.asList();
      if (l.size() != m.size()) return false;
      for (size_t i = 0; i < l.size(); ++i)
        if (!same(l[i], m[i])) return false;
      return true;
    }
    case Value::Kind::MAP: {
      const auto &l = a.asMap(), &m = b.asMap();
      if (l.size() != m.size()) return false;
      for (size_t i = 0; i < l.size(); ++i)
        if (l[i].first != m[i].first || !same(l[i].second, m[i].second)) return false;
      return true;
    }
    default: return a == b;
  }
}

int depth(const Value& v) {
  int d = 0;
  if (v.isList())
    for (const auto& x : v.asList()) d = std::max(d, depth(x));
  if (v.isMap())
    for (const auto& [k, x] : v.asMap()) d = std::max(d, depth(x));
  return (v.isList() || v.isMap()) ? d + 1 : 0;
}

/// A message's words, as plain integers (capnp::word is not copyable).
using Words = std::vector<uint64_t>;

Words encode(const Value& v) {
  capnp::MallocMessageBuilder mb;
  swipc::wire::writeValue(v, mb.initRoot<swipc::schema::Value>());
  auto flat = capnp::messageToFlatArray(mb);
  Words out(flat.size());
  std::memcpy(out.data(), flat.begin(), flat.size() * sizeof(capnp::word));
  return out;
}

swipc::Result<Value> decode(const Words& words) {
  try {
    capnp::FlatArrayMessageReader r(kj::arrayPtr(reinterpret_cast<const capnp::word*>(words.data()), words.size()),
                                    swipc::wire::readerOptions(words.size() * sizeof(capnp::word)));
    return swipc::wire::readValue(r.getRoot<swipc::schema::Value>());
  } catch (const kj::Exception& e) {
    return swipc::makeError(swipc::Errc::DATA_CLONE, e.getDescription().cStr());
  }
}

/// Value -> capnp -> Value: equal, or refused only for nesting past the limit.
void capnpRoundTrip(const Value& v) {
  auto words = encode(v);
  auto back = decode(words);
  if (!back) {
    if (back.error().code == swipc::Errc::DATA_CLONE && depth(v) > swipc::wire::MAX_NESTING) return;
    fail("a Value written to capnp does not read back");
  }
  if (!same(v, *back)) fail("Value -> capnp -> Value changed the value");
  if (encode(*back) != words) fail("re-encoding a read Value changed its bytes");
}

/// JSON text written from a Value: parses again (when `mustParse`) and is written the same.
void jsonStable(const Value& v, bool mustParse) {
  const std::string t1 = swipc::toJsonText(v);
  auto p1 = swipc::parseJsonValue(t1);
  if (!p1) {
    // A Value with a map {"$bytes": <text that is not base64>} has no faithful JSON form: its
    // text reads as a bad BYTES. JSON input cannot produce such a Value.
    if (mustParse) fail("JSON written from a Value parsed from JSON does not parse");
    return;
  }
  const std::string t2 = swipc::toJsonText(*p1);
  if (mustParse && t2 != t1) fail("json -> Value -> json is not stable");
  auto p2 = swipc::parseJsonValue(t2);
  if (!p2 || swipc::toJsonText(*p2) != t2) fail("json -> Value -> json is not stable after one round");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool capnpMode = data[0] & 1;
  const uint8_t* body = data + 1;
  const size_t n = size - 1;
  if (!capnpMode) {
    auto v = swipc::parseJsonValue(std::string_view(reinterpret_cast<const char*>(body), n));
    if (!v) return 0;
    jsonStable(*v, /*mustParse=*/true);
    capnpRoundTrip(*v);
    return 0;
  }
  Words words(n / sizeof(uint64_t));
  if (words.empty()) return 0;
  std::memcpy(words.data(), body, words.size() * sizeof(uint64_t));
  auto v = decode(words);
  if (!v) return 0;
  capnpRoundTrip(*v);
  jsonStable(*v, /*mustParse=*/false);
  return 0;
}
