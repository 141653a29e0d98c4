// The fast lane for the commonest envelopes: a post (controllerPost or clientPost) whose payload
// is a Value and which transfers no ports (or registers one fresh port pair, as messageSW does),
// a port message carrying a Value and no ports, a port close, a BroadcastChannel post (bcPost)
// carrying a Value, and a channel ring record (bcMessage) carrying one. It is read and written directly in the Cap'n Proto wire
// format, with the field positions taken from the compiled schemas (capnp reflection), instead of
// through the generated accessors and a MessageBuilder: that is most of what a small post cost.
//
// Reading is all-or-nothing and never the last word: readPlainPost() succeeds only for a
// one-segment message in which every pointer it follows is in bounds, of the expected kind,
// within the traversal and nesting limits, and whose Value decodes completely. For anything else
// (another kind, ports, a typed payload, far pointers, an unknown Value kind, any malformed byte)
// it returns false and the caller takes the general path (wire::Inbound) over the same private
// copy, which classifies the message (ProtocolViolation, VersionMismatch, messageerror). So a
// message accepted here is one the general path would accept with the same Value. One
// difference: Inbound walks a bcPost whole (it is not "plain" there, as its payload is relayed),
// so it refuses one with a bad pointer where no reader looks; the lane reads only what the daemon
// uses and the daemon writes the ring record anew from the Value, so such bytes never reach a
// member either way.
//
// Writing produces a standard one-segment message any Cap'n Proto reader decodes.
#pragma once

#include <cstddef>
#include <cstdint>

#include <capnp/message.h>

#include "envelope.capnp.h"
#include "swipc/value.h"

namespace swipc::wire {

/// A port a controller post registers: one end of a fresh pair the page made (descriptor
/// `register`, nothing queued, the peer not closed). messageSW's reply port travels like this.
struct PlainPort {
  uint64_t portId = 0;
  uint64_t peerId = 0;
  uint64_t sendSeq = 0;
  uint64_t recvNext = 0;
  bool silentPeer = false;
};

/// What a fast-lane envelope carries besides its Value. The fast lane covers:
///   CONTROLLER_POST, CLIENT_POST  a Value; no ports, or (controller posts) one PlainPort;
///   PORT_MESSAGE                  a Value on port `to`, seq `portSeq`, carrying no ports;
///   PORT_CLOSE                    port `to` closed, having received everything before `portSeq`;
///   BC_POST                       a Value posted by the page's BroadcastChannel object `objectId`;
///   BC_MESSAGE                    a Value in a channel ring record (or a cross-node post).
struct PlainMessage {
  schema::Envelope::Which kind = schema::Envelope::CONTROLLER_POST;
  uint64_t seq = 0;
  bool wantAck = false;  // posts
  uint64_t replyId = 0;  // posts; unused since protocol 2, the receiver refuses non-zero
  bool hasPort = false;  // controller posts
  PlainPort port;
  uint64_t to = 0;       // PORT_MESSAGE: the receiving port; PORT_CLOSE: the closed port
  uint64_t portSeq = 0;  // PORT_MESSAGE: the sending end's seq; PORT_CLOSE: recvNext
  uint32_t objectId = 0;  // BC_POST
  bool hasValue() const { return kind != schema::Envelope::PORT_CLOSE; }
};

/// The set of kinds a reader takes from the fast lane.
constexpr uint32_t kindBit(schema::Envelope::Which kind) { return uint32_t{1} << static_cast<unsigned>(kind); }

/// Asked, once the header of a fast-lane message is read, whether this receiver takes its Value
/// from the fast lane (false: the general path reads the message whole, and the Value is never
/// decoded twice).
class PlainFilter {
 public:
  virtual bool wantsValue(const PlainMessage& header) const = 0;

 protected:
  ~PlainFilter() = default;
};

/// Decodes `words` (a private, word-aligned copy of one framed message) as a fast-lane envelope
/// of one of `kinds` (kindBit()s), its Value into `data` (the receiver's event, so nothing is
/// moved afterwards; whatever it held is replaced, a map's storage reused). False when it is
/// anything else, anything about it is unexpected, or `filter` does not want it; `out` and
/// `data` are then unspecified.
bool readPlain(const capnp::word* words, size_t count, const capnp::ReaderOptions& options, uint32_t kinds,
               PlainMessage& out, Value& data, const PlainFilter* filter = nullptr);

/// Encoded size in bytes (framing included) of `m` carrying `data` (ignored for PORT_CLOSE).
/// Structs are written at the smallest size that holds what is set, so a small post takes few
/// cache lines.
size_t plainBytes(const PlainMessage& m, const Value& data);
/// Writes `m` into `dst`, which must be word-aligned and exactly plainBytes(m, data) long (it
/// need not be zeroed).
void writePlain(const PlainMessage& m, const Value& data, uint8_t* dst, size_t bytes);

// ---- the reader's view of a Value, shaped like schema::Value::Reader for readValue's decoder ----

namespace plain {

/// Thrown (and caught inside readPlainPost) when the bytes are not what the fast lane reads.
struct NotPlain {};

/// Where the fields are (from the compiled schemas).
struct Layout;

/// One segment being read, with the budgets every pointer followed is charged to.
struct Segment {
  const Layout* layout = nullptr;
  const uint64_t* begin = nullptr;
  size_t words = 0;
  uint64_t traversalLeft = 0;
};

/// A struct in the segment: its data words and pointers (sizes as the sender wrote them).
struct StructView {
  Segment* seg = nullptr;
  const uint64_t* data = nullptr;
  uint32_t dataWords = 0;
  uint32_t pointers = 0;
  int nestingLeft = 0;

  uint64_t word(uint32_t at) const { return at < dataWords ? data[at] : 0; }
  uint32_t u32(uint32_t at) const {
    const uint32_t w = at / 2;
    return w < dataWords ? static_cast<uint32_t>(data[w] >> (32 * (at % 2))) : 0;
  }
  uint16_t u16(uint32_t at) const {
    const uint32_t w = at / 4;
    return w < dataWords ? static_cast<uint16_t>(data[w] >> (16 * (at % 4))) : 0;
  }
  bool bit(uint32_t at) const {
    const uint32_t w = at / 64;
    return w < dataWords && ((data[w] >> (at % 64)) & 1) != 0;
  }
  /// The pointer word `i`, or nullptr when the struct has fewer pointers (reads as null).
  const uint64_t* pointer(uint32_t i) const { return i < pointers ? data + dataWords + i : nullptr; }
};

/// A list of structs (INLINE_COMPOSITE), all of whose elements lie in bounds.
struct StructListView {
  Segment* seg = nullptr;
  const uint64_t* first = nullptr;
  uint32_t count = 0;
  uint32_t dataWords = 0;
  uint32_t pointers = 0;
  int nestingLeft = 0;

  StructView at(uint32_t i) const {
    return StructView{seg, first + static_cast<size_t>(i) * (dataWords + pointers), dataWords, pointers, nestingLeft};
  }
};

class Text {
 public:
  Text(const char* p, size_t n) : p_(p), n_(n) {}
  const char* cStr() const { return p_; }
  size_t size() const { return n_; }

 private:
  const char* p_;
  size_t n_;
};

class Data {
 public:
  Data(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  const uint8_t* begin() const { return p_; }
  const uint8_t* end() const { return p_ + n_; }
  size_t size() const { return n_; }

 private:
  const uint8_t* p_;
  size_t n_;
};

class ValueReader;

class EntryReader {
 public:
  explicit EntryReader(StructView s) : s_(s) {}
  Text getKey() const;
  ValueReader getValue() const;

 private:
  StructView s_;
};

/// A struct list shaped like capnp's List<T>::Reader (size, [], range-for).
template <typename T>
class ListReader {
 public:
  explicit ListReader(StructListView l) : l_(l) {}
  unsigned size() const { return l_.count; }
  T operator[](unsigned i) const { return T(l_.at(i)); }
  /// No element takes any space (the decoder refuses such lists; none of our encoders writes one).
  bool zeroSized() const { return l_.count != 0 && l_.dataWords + l_.pointers == 0; }

  class Iterator {
   public:
    Iterator(const ListReader* l, unsigned i) : l_(l), i_(i) {}
    T operator*() const { return (*l_)[i_]; }
    Iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator!=(const Iterator& o) const { return i_ != o.i_; }

   private:
    const ListReader* l_;
    unsigned i_;
  };
  Iterator begin() const { return Iterator(this, 0); }
  Iterator end() const { return Iterator(this, l_.count); }

 private:
  StructListView l_;
};

template <typename T>
bool zeroSized(const ListReader<T>& l) {
  return l.zeroSized();
}

class ValueReader {
 public:
  explicit ValueReader(StructView s) : s_(s) {}
  schema::Value::Which which() const;
  bool getBoolean() const;
  int64_t getInt() const;
  double getFloat() const;
  Text getText() const;
  Data getBytes() const;
  ListReader<ValueReader> getList() const;
  ListReader<EntryReader> getMap() const;

 private:
  StructView s_;
};

}  // namespace plain
}  // namespace swipc::wire
