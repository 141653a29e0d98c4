// What the fuzz targets share: the record format of a fuzz input for the ring targets, a raw
// writer that puts records into one ring of a per-client segment exactly as a hostile peer
// would (no library encoder in between), and quiet logs.
//
// Input format of the ring targets (daemon_receive, page_receive): a sequence of records
//
//   +---------+-------------+-------------------+
//   | type u8 | length u16  | length bytes ...  |   (length little-endian, clamped to what is left)
//   +---------+-------------+-------------------+
//
// type 0 is wire::RECORD_ENVELOPE, 1 wire::RECORD_OUT_OF_LINE, anything else is written as is
// (unknown record types are part of what a peer can send). The seed generator writes the same
// format, so corpus files are readable with a hex dump.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "core/log.h"
#include "queue/ring_layout.h"
#include "queue/spsc_ring.h"
#include "shm/layout.h"
#include "shm/mapping.h"
#include "wire/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace swipc::fuzz {

struct FuzzRecord {
  uint32_t type = 0;
  std::string_view bytes;
};

inline uint32_t recordType(uint8_t selector) {
  if (selector == 0) return wire::RECORD_ENVELOPE;
  if (selector == 1) return wire::RECORD_OUT_OF_LINE;
  return selector;
}

/// Splits a fuzz input into records (a truncated tail becomes a shorter record).
inline std::vector<FuzzRecord> splitRecords(const uint8_t* data, size_t size, size_t maxRecords = 64) {
  std::vector<FuzzRecord> out;
  size_t at = 0;
  while (at + 3 <= size && out.size() < maxRecords) {
    const uint32_t type = recordType(data[at]);
    size_t len = data[at + 1] | size_t{data[at + 2]} << 8;
    at += 3;
    if (len > size - at) len = size - at;
    out.push_back({type, std::string_view(reinterpret_cast<const char*>(data + at), len)});
    at += len;
  }
  return out;
}

/// Appends one record in the input format (for the seed generator).
inline void appendRecord(std::vector<uint8_t>& out, uint8_t selector, const uint8_t* bytes, size_t len) {
  out.push_back(selector);
  out.push_back(static_cast<uint8_t>(len & 0xff));
  out.push_back(static_cast<uint8_t>(len >> 8));
  out.insert(out.end(), bytes, bytes + len);
}

enum class Ring { UP, DOWN };

/// A writer of raw records into one ring of a segment, through our own mapping of its memfd:
/// what a hostile peer does. The ring's reader is whatever the target drives.
class RawRing {
 public:
  /// `segmentFd` is not kept; false when the segment cannot be mapped or its header is bad.
  bool open(int segmentFd, size_t segmentBytes, Ring which) {
    auto m = shm::Mapping::map(segmentFd, segmentBytes, shm::Access::READ_WRITE);
    if (!m) return false;
    mapping_ = std::move(m).value();
    auto layout = shm::readHeader(mapping_.data(), mapping_.size(), queue::RING_HEADER_BYTES);
    if (!layout) return false;
    const uint64_t off = which == Ring::UP ? layout->upOffset : layout->downOffset;
    capacity_ = which == Ring::UP ? layout->upCapacity : layout->downCapacity;
    header_ = reinterpret_cast<queue::RingHeader*>(mapping_.data() + off);
    data_ = mapping_.data() + off + queue::RING_HEADER_BYTES;
    return true;
  }
  /// Largest record the ring takes.
  size_t maxPayload() const { return capacity_ / 4; }
  /// Writes one record (truncated to maxPayload()); FULL when the reader has not made room.
  queue::RingStatus write(const FuzzRecord& r) {
    queue::RingWriter w(header_, data_, capacity_);  // from the published tail: nobody else writes here
    const auto len = static_cast<uint32_t>(std::min(r.bytes.size(), maxPayload()));
    return w.tryWrite(r.type, r.bytes.data(), len);
  }

 private:
  shm::Mapping mapping_;
  queue::RingHeader* header_ = nullptr;
  uint8_t* data_ = nullptr;
  uint64_t capacity_ = 0;
};

/// Library logs off: every rejected input would print a line, and the lines are the slow part.
inline void quietLogs() {
  static const bool once = [] {
    core::log().set_level(spdlog::level::off);
    return true;
  }();
  (void)once;
}

}  // namespace swipc::fuzz
