#include "wire/limits.h"

namespace swipc::wire {

capnp::ReaderOptions readerOptions(uint64_t maxMessageBytes) {
  capnp::ReaderOptions o;
  o.traversalLimitInWords = (maxMessageBytes / sizeof(capnp::word)) * 2 + 1024;
  o.nestingLimit = MAX_NESTING + 8;  // + the envelope's own structs around the Value
  return o;
}

}  // namespace swipc::wire
