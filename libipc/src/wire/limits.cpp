#include "wire/limits.h"

namespace swipc::wire {

capnp::ReaderOptions readerOptions(uint64_t maxMessageBytes) {
  capnp::ReaderOptions o;
  o.traversalLimitInWords = (maxMessageBytes / sizeof(capnp::word)) * 2 + 1024;
  // One level of a Value costs Cap'n Proto up to three (a map: the entry list, the entry struct,
  // the Value struct), so MAX_NESTING levels need three times that; + the envelope's own structs
  // around the Value. With MAX_NESTING + 8, maps deeper than ~24 and lists deeper than ~36, which
  // MAX_NESTING allows and writeValue writes, could not be read back (tests/fuzz json_value).
  o.nestingLimit = 3 * MAX_NESTING + 8;
  return o;
}

}  // namespace swipc::wire
