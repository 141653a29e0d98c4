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

}  // namespace swipc::wire
