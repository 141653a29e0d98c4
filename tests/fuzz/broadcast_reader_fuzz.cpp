// Fuzz target broadcast_reader: a member's reading of a BroadcastChannel ring (queue/
// broadcast_ring.cpp) over a region whose every byte is hostile, then what the page does with
// each record it gets (page/broadcast.cpp's decodeRecord: the fast lane on the record's copy, else
// copy, validate as an Envelope, decode the bcMessage payload).
//
// Input: startPos u64 (the join position the daemon would announce), then the region itself
// (region header, indices, data) as the member maps it. Properties: readBroadcastHeader accepts
// or refuses without reading past the mapping; the reader never reads outside the data area,
// returns only records that lie inside it, and terminates; decoding a record never throws.
#include <capnp/message.h>
#include <kj/exception.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "core/payload.h"
#include "fuzz_support.h"
#include "queue/broadcast_ring.h"
#include "swipc/message_event.h"
#include "wire/codec.h"
#include "wire/limits.h"
#include "wire/plain_post.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace swipc;
  if (size < 8) return 0;
  uint64_t startPos;
  std::memcpy(&startPos, data, 8);
  const size_t regionBytes = size - 8;
  // The member's mapping: 8-aligned, exactly the region's size (ASan sees a read past it).
  std::vector<uint64_t> words((regionBytes + 7) / 8);
  if (regionBytes) std::memcpy(words.data(), data + 8, regionBytes);
  auto region = queue::readBroadcastHeader(words.data(), regionBytes);
  if (!region) return 0;
  if (region->totalBytes > regionBytes) {
    std::fprintf(stderr, "readBroadcastHeader accepted a region larger than the mapping\n");
    std::abort();
  }
  auto reader = queue::openBroadcastReader(words.data(), *region, startPos);
  static const TypeRegistry types;
  const capnp::ReaderOptions options = wire::readerOptions(wire::DEFAULT_MAX_MESSAGE_BYTES);
  queue::BroadcastRecord rec;
  // Nothing writes the ring while we read: a reader that keeps returning records would loop.
  for (int i = 0; i < 256 && reader.next(rec) == queue::BroadcastReader::Status::OK; ++i) {
    if (rec.length > queue::broadcastMaxPayload(region->capacity) || rec.words.size() * 8 < rec.length) {
      std::fprintf(stderr, "reader returned a record larger than the ring allows\n");
      std::abort();
    }
    // The page first tries the fast lane on the record's private copy (PageBroadcast::decodeRecord).
    if (rec.length % sizeof(capnp::word) == 0) {
      wire::PlainMessage m;
      Value data;
      if (wire::readPlain(reinterpret_cast<const capnp::word*>(rec.words.data()), rec.length / sizeof(capnp::word),
                          options, wire::kindBit(schema::Envelope::BC_MESSAGE), m, data))
        continue;
    }
    auto in = wire::Inbound::copyEnvelope(rec.bytes(), rec.length, options);
    if (!in || !in->envelope().isBcMessage()) continue;
    auto owner = std::make_shared<const wire::Inbound>(std::move(*in));
    MessageEvent event;
    // A payload pointer of the wrong kind is not refused by copyEnvelope (wire::isPlain: it makes
    // the envelope walked, and its receiver reports a messageerror), so reading it may throw here;
    // the page must catch it the same way (tests/fuzz/crashes/broadcast_reader/ has the input
    // that showed page/broadcast.cpp reading it outside a try).
    try {
      (void)core::readPayload(owner->envelope().getBcMessage().getPayload(), owner, types, event);
    } catch (const kj::Exception&) {
    }
  }
  return 0;
}
