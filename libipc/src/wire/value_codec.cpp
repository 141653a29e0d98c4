#include "wire/value_codec.h"

#include <kj/debug.h>
#include <kj/exception.h>

#include "wire/value_decode.h"

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


Result<Value> readValue(schema::Value::Reader in) {
  Value out;
  Error err;
  try {
    if (!decode::readInto(in, out, 0, err)) return err;
  } catch (const kj::Exception& e) {
    return makeError(Errc::DATA_CLONE, std::string("malformed value: ") + e.getDescription().cStr());
  }
  return out;
}

namespace {

/// False when a struct list's elements take no space (no encoder writes one; reading one costs a
/// word of traversal budget per element it claims).
template <typename List>
void requireSpace(const List& l) {
  KJ_REQUIRE(!decode::zeroSized(l), "a list of zero-sized elements");
}

void checkInto(schema::Value::Reader in, int depth) {
  if (depth > MAX_NESTING) return;  // the receiver refuses it as too deep (DataCloneError)
  switch (in.which()) {
    case schema::Value::TEXT: (void)in.getText(); return;
    case schema::Value::BYTES: (void)in.getBytes(); return;
    case schema::Value::LIST: {
      auto l = in.getList();
      requireSpace(l);
      for (auto v : l) checkInto(v, depth + 1);
      return;
    }
    case schema::Value::MAP: {
      auto entries = in.getMap();
      requireSpace(entries);
      for (auto e : entries) {
        (void)e.getKey();
        checkInto(e.getValue(), depth + 1);
      }
      return;
    }
    default: return;  // data only, or a kind of a newer peer's (its receiver decides)
  }
}

}  // namespace

Result<void> checkValue(schema::Value::Reader in) {
  try {
    checkInto(in, 0);
  } catch (const kj::Exception& e) {
    return makeError(Errc::PROTOCOL_VIOLATION, std::string("malformed value: ") + e.getDescription().cStr());
  }
  return {};
}

}  // namespace swipc::wire
