// RingWriter / RingReader: the two process-local roles over one RingHeader + data area.
#pragma once

#include <cstddef>
#include <cstdint>

#include "queue/ring_layout.h"

namespace swipc::queue {

enum class RingStatus {
  OK,
  EMPTY,    // reader: nothing published
  FULL,     // writer: not enough free space right now
  CORRUPT,  // the peer wrote an impossible index or record: treat it as a protocol violation
};

/// The writing side. @concurrent: one thread of one process.
class RingWriter {
 public:
  RingWriter() = default;
  /// `data` has `capacity` bytes (power of two ≥ 64). Starts from the header's current tail.
  RingWriter(RingHeader* header, uint8_t* data, uint64_t capacity);

  /// Largest payload one record can carry (a quarter of the ring).
  uint64_t maxPayload() const { return capacity_ / 4; }

  /// Reserves space for a payload of `length` bytes and returns where to write it; FULL or CORRUPT
  /// otherwise. Nothing is visible to the reader until commit().
  RingStatus tryClaim(uint32_t length, uint8_t*& payload);
  /// Publishes the claimed record with `type`.
  void commit(uint32_t type);
  /// Forgets a claim that will not be committed (nothing was visible to the reader).
  void cancelClaim();
  /// tryClaim + copy + commit.
  RingStatus tryWrite(uint32_t type, const void* bytes, uint32_t length);

  /// Published tail (bytes written so far), this process's copy.
  uint64_t tail() const { return tail_; }
  /// The reader's head as last validated (racy: it only grows).
  uint64_t approxHead() const { return headCache_; }
  /// Re-reads and validates the reader's head; CORRUPT when it is impossible.
  RingStatus refreshHead();

  /// Reader-sleeping handshake: call after commit(); true when the reader must be woken.
  bool readerNeedsWake() const;
  /// Coalescing variant: true (and clears the reader's flag) when the reader sleeps, so only one
  /// wake is sent per sleep; the reader re-arms with setSleeping(true) and re-checks.
  bool takeReaderSleeping();
  /// Marks / clears "writer waiting for space".
  void setWaiting(bool waiting);

  RingHeader* header() const { return header_; }

 private:
  RingHeader* header_ = nullptr;
  uint8_t* data_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;
  uint64_t tail_ = 0;       // our published tail
  uint64_t headCache_ = 0;  // last validated head
  uint64_t claimPos_ = 0;   // position of the claimed record header
  uint32_t claimLen_ = 0;
  uint64_t claimPad_ = 0;
  bool claimed_ = false;
};

/// One record as seen by the reader: the bytes still live in shared memory that the writer may
/// scribble over; copy them before decoding.
struct RecordView {
  uint32_t type = 0;
  uint32_t length = 0;
  const uint8_t* payload = nullptr;
};

/// The reading side. @concurrent: one thread of one process.
class RingReader {
 public:
  RingReader() = default;
  RingReader(RingHeader* header, const uint8_t* data, uint64_t capacity);

  /// The next record (skipping PAD records), EMPTY, or CORRUPT. Reads the writer's tail only
  /// when everything up to the tail it last saw is consumed.
  RingStatus peek(RecordView& out);
  /// Consumes the record returned by the last successful peek and publishes the new head.
  void release();
  /// Publishes everything consumed so far (release() already does; for batching use releaseLocal).
  void releaseLocal();
  void publishHead();

  uint64_t head() const { return head_; }
  /// Writer's tail as last seen (racy).
  uint64_t approxTail() const { return tailCache_; }

  /// Reader-sleeping handshake: mark sleeping, then call hasData() again before blocking.
  void setSleeping(bool sleeping);
  /// True when a record is published (does not validate it).
  bool hasData();
  /// True (and cleared) when the writer asked to be woken after space was freed and at least
  /// `minFree` bytes of the ring are free now (published head; 0: any space).
  bool takeWriterWaiting(uint64_t minFree = 0);
  uint64_t capacity() const { return capacity_; }

  RingHeader* header() const { return header_; }

 private:
  RingHeader* header_ = nullptr;
  const uint8_t* data_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;
  uint64_t head_ = 0;       // consumed (local; published by publishHead)
  uint64_t tailCache_ = 0;
  uint64_t pendingAdvance_ = 0;  // bytes of the last peeked record incl. skipped pads
};

}  // namespace swipc::queue
