#include "wire/value_codec.h"

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

}  // namespace swipc::wire
