#include "wire/value_codec.h"

#include <kj/exception.h>

#include "wire/limits.h"

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
Result<Value> readValueAt(schema::Value::Reader in, int depth) {
  if (depth > MAX_NESTING) return makeError(Errc::DATA_CLONE, "value nested deeper than " + std::to_string(MAX_NESTING));
  switch (in.which()) {
    case schema::Value::NONE: return Value{};
    case schema::Value::BOOLEAN: return Value{in.getBoolean()};
    case schema::Value::INT: return Value{static_cast<int64_t>(in.getInt())};
    case schema::Value::FLOAT: return Value{in.getFloat()};
    case schema::Value::TEXT: {
      auto t = in.getText();
      return Value{std::string(t.cStr(), t.size())};
    }
    case schema::Value::BYTES: {
      auto d = in.getBytes();
      return Value{Bytes{std::vector<uint8_t>(d.begin(), d.end())}};
    }
    case schema::Value::LIST: {
      Value::List list;
      auto l = in.getList();
      list.reserve(l.size());
      for (auto item : l) {
        auto v = readValueAt(item, depth + 1);
        if (!v) return v.error();
        list.push_back(std::move(*v));
      }
      return Value{std::move(list)};
    }
    case schema::Value::MAP: {
      Value out{Value::Map{}};
      for (auto e : in.getMap()) {
        auto v = readValueAt(e.getValue(), depth + 1);
        if (!v) return v.error();
        auto k = e.getKey();
        out.set(std::string(k.cStr(), k.size()), std::move(*v));
      }
      return out;
    }
  }
  return makeError(Errc::DATA_CLONE, "unknown value kind " + std::to_string(static_cast<int>(in.which())));
}
}  // namespace

Result<Value> readValue(schema::Value::Reader in) {
  try {
    return readValueAt(in, 0);
  } catch (const kj::Exception& e) {
    return makeError(Errc::DATA_CLONE, std::string("malformed value: ") + e.getDescription().cStr());
  }
}

}  // namespace swipc::wire
