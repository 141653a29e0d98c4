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

/// Reads every pointer of `in` that readValue() reads, with the same accessors, and builds
/// nothing: what the walk at receipt (totalSize) cannot prove, a pointer of the wrong kind (a
/// text where a struct belongs), a text without its NUL, a list of zero-sized elements, is
/// found here. ProtocolViolation when one is; a value this build merely cannot represent (an
/// unknown kind, nesting past MAX_NESTING) passes, for its receiver to raise messageerror.
/// Reads are charged to the reader's traversal budget: call it on a reader of its own.
Result<void> checkValue(schema::Value::Reader in);

}  // namespace swipc::wire
