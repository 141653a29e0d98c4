// Value <-> Cap'n Proto (schemas/value.capnp).
#pragma once

#include "swipc/error.h"
#include "swipc/value.h"
#include "value.capnp.h"

namespace swipc::wire {

void writeValue(const Value& v, schema::Value::Builder out);
/// DataCloneError for a value this build cannot represent (an unknown union member from a newer
/// peer, or nesting deeper than MAX_NESTING).
Result<Value> readValue(schema::Value::Reader in);

namespace plain {
class ValueReader;
}
/// The same decoder over the fast lane's reader (wire/plain_post.h): false for anything it
/// cannot decode (the caller then takes the general path, which names the error); malformed
/// bytes throw plain::NotPlain.
bool readValueInto(plain::ValueReader in, Value& out);

}  // namespace swipc::wire
