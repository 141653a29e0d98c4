// Cap'n Proto framing: copy -> validate -> decode for inbound bytes; sizing and serializing for
// outbound builders. Nothing here decodes in place from memory a peer can still write.
#pragma once

#include <sys/uio.h>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "common/unique_fd.h"
#include "envelope.capnp.h"
#include "shm/mapping.h"
#include "swipc/error.h"

namespace swipc::wire {

/// Ring record types (the queue layer only knows they are not PAD).
inline constexpr uint32_t RECORD_ENVELOPE = 1;
/// Payload: OutOfLineRecord. The envelope itself travels as a sealed memfd over the socket.
inline constexpr uint32_t RECORD_OUT_OF_LINE = 2;
/// BroadcastChannel ring only: posts from another node that never arrived here (DESIGN §16). Its
/// seq is the missed posts' last one, so a reader reports them as lapped; its payload, the count
/// (u64), is informative. Nothing is delivered for it.
inline constexpr uint32_t RECORD_BC_GAP = 3;

/// The payload of a RECORD_OUT_OF_LINE ring record. The sealed memfd carrying the envelope went
/// over the socket first, in a Control.outOfLine datagram with the same `seq`.
///
///   0           8             16
///   +-----------+-------------+
///   | seq u64   | bytes u64   |
///   +-----------+-------------+
///   seq: the same as in the memfd's notice; bytes: the envelope's encoded size (the receiver
///   checks it against its max message size and the memfd's size before mapping)
///
/// @concurrent: written by the sending side into its ring record; the receiver copies it out of
/// the ring once and validates the copy.
struct OutOfLineRecord {
  uint64_t seq;
  uint64_t bytes;
};
static_assert(std::is_standard_layout_v<OutOfLineRecord> && std::is_trivially_copyable_v<OutOfLineRecord>);
static_assert(offsetof(OutOfLineRecord, seq) == 0);
static_assert(offsetof(OutOfLineRecord, bytes) == 8);
static_assert(sizeof(OutOfLineRecord) == 16);
static_assert(alignof(OutOfLineRecord) == 8);

/// Seals a receiver requires on an out-of-line memfd before mapping it.
inline constexpr unsigned SEALS_IMMUTABLE = 0x0001 /*SEAL*/ | 0x0002 /*SHRINK*/ | 0x0004 /*GROW*/ | 0x0008 /*WRITE*/;

/// True when `env` is "plain": apart from data fields, the only thing it points to is a Value
/// payload and port descriptors with no queued messages (no text, no typed content), which
/// receivers decode at once inside readValue()'s own exception
/// boundary. A payload or port list it cannot read makes the envelope not plain (walked at
/// receipt, its payload then a messageerror at the receiver); throws kj::Exception only for the
/// envelope's own root and kind.
bool isPlain(schema::Envelope::Reader env);

/// Relayed bytes: a payload or a transfer list one client sends on to another endpoint is copied
/// verbatim by the daemon (Cap'n Proto copies a pointer of any kind as it is), so the receiver
/// reads what the sender wrote. These read everything a receiver reads (payload union, Value
/// content via checkValue(), typed header; descriptors and, recursively, the messages queued in
/// them) and build nothing. ProtocolViolation when a pointer is of the wrong kind or malformed;
/// an application's typed content is the receiver's to check against its schema. Reads are
/// charged to the reader's traversal budget.
Result<void> checkPayload(schema::Payload::Reader payload);
Result<void> checkPorts(capnp::List<schema::PortDescriptor>::Reader ports);

/// An inbound message that owns its bytes: a private aligned copy, or an immutable (sealed)
/// mapping. Nothing in it can change after the copy, so Cap'n Proto's bounds-checked readers see
/// the same bytes however often they are read (no double fetch).
///
/// Validation: every envelope that is not plain (isPlain) has been fully traversed once within the
/// traversal and nesting limits, so every pointer in it is known good. A plain envelope's root,
/// kind, port descriptors, payload and Value pointers have been checked, so every read outside the
/// Value's content is known good; the content is checked as readValue() decodes it (inside its
/// own exception boundary, reporting a malformed one as an error). A receiver that needs to tell
/// a malformed plain message from one it merely cannot represent calls checkAll(). Pointers that
/// nothing reads (say, in a Value's unused pointer slot) are not checked at all.
///
/// Clients trust their daemon's encoder further: a plain port message queued at an unstarted port
/// is decoded when the port starts (a malformed one is a messageerror there), and is re-encoded as
/// is if the port moves on.
class Inbound {
 public:
  Inbound() = default;

  /// Copies `n` bytes from `src` (shared memory) and validates them as an Envelope.
  static Result<Inbound> copyEnvelope(const uint8_t* src, size_t n, const capnp::ReaderOptions& options);
  /// Maps a sealed memfd read-only and validates it as an Envelope (zero copy).
  static Result<Inbound> mapEnvelope(UniqueFd fd, uint64_t n, const capnp::ReaderOptions& options);
  /// Validates an already private, word-aligned buffer as a Control message.
  static Result<Inbound> adoptControl(kj::Array<capnp::word> words, const capnp::ReaderOptions& options);

  schema::Envelope::Reader envelope() const { return root_; }
  schema::Control::Reader control() const { return reader_->getRoot<schema::Control>(); }
  /// Size in bytes of the encoded message.
  size_t bytes() const { return bytes_; }
  bool valid() const { return reader_ != nullptr; }
  /// True when the whole message was traversed at receipt (it was not plain).
  bool walked() const { return walked_; }
  /// Traverses the whole message (a fresh reader, so the consumer's budget is untouched).
  /// PROTOCOL_VIOLATION when any pointer in it is malformed or over the limits.
  Result<void> checkAll() const;
  /// Checks every payload and transfer list the envelope carries (checkPayload, checkPorts) on a
  /// fresh reader, so the consumer's traversal budget is untouched: a client's post, port post
  /// or broadcast post before the daemon relays what is in it. Kinds without a payload pass.
  Result<void> checkPayloads() const;

 private:
  template <typename Root>
  static Result<Inbound> validate(Inbound in, const capnp::ReaderOptions& options);

  kj::Array<capnp::word> words_;
  std::shared_ptr<shm::Mapping> mapping_;
  kj::ArrayPtr<const capnp::word> words() const;

  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
  schema::Envelope::Reader root_;
  capnp::ReaderOptions options_;
  size_t bytes_ = 0;
  bool walked_ = false;
};

/// Encoded size in bytes of a builder's message (framing included).
size_t encodedBytes(capnp::MessageBuilder& message);
/// Writes the message into `dst`, which must have exactly encodedBytes(message) bytes.
void encodeInto(capnp::MessageBuilder& message, uint8_t* dst, size_t bytes);
/// Writes the message into a fresh memfd sealed immutable (for out-of-line transfer).
Result<UniqueFd> encodeToSealedMemfd(capnp::MessageBuilder& message, size_t bytes);
/// A fresh memfd holding the `count` byte ranges of `parts` (`bytes` in all) back to back,
/// sealed immutable.
Result<UniqueFd> sealedMemfdOf(const struct iovec* parts, size_t count, size_t bytes);

}  // namespace swipc::wire
