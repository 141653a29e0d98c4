#include "wire/plain_post.h"

#include <algorithm>
#include <cstring>

#include "swipc/error.h"
#include "value.capnp.h"
#include "wire/plain_layout.h"
#include "wire/value_decode.h"

// The reader's accessors are used only in this file, by the decoder instantiated here, and are
// inlined into it.
#define INLINE [[gnu::always_inline]] inline

namespace swipc::wire {

using plain::Layout;
using plain::StructSize;
using plain::layout;
using plain::pointerOf;
using plain::pointerOffset;

// ------------------------------------------------------------------------------------------------ reading

namespace plain {
namespace {

INLINE void charge(Segment& seg, uint64_t words) {
  words = std::max<uint64_t>(words, 1);
  if (words > seg.traversalLeft) throw NotPlain{};
  seg.traversalLeft -= words;
}

/// Word index of the target of the pointer at `ptr`, checked to leave `size` words in the segment.
INLINE size_t target(const Segment& seg, const uint64_t* ptr, uint64_t w, uint64_t size) {
  const int64_t at = static_cast<int64_t>(ptr - seg.begin) + 1 + pointerOffset(w);
  if (at < 0 || static_cast<uint64_t>(at) + size > seg.words) throw NotPlain{};
  return static_cast<size_t>(at);
}

/// A byte list (Text or Data) at `ptr`: its bytes, or {nullptr, 0} for a null pointer.
INLINE std::pair<const uint8_t*, size_t> readBytes(Segment& seg, const uint64_t* ptr) {
  if (!ptr || *ptr == 0) return {nullptr, 0};
  const uint64_t w = *ptr;
  if ((w & 3) != KIND_LIST || ((w >> 32) & 7) != ELEMENT_BYTE) throw NotPlain{};
  const uint64_t n = w >> 35;
  const size_t at = target(seg, ptr, w, wordsFor(n));
  charge(seg, wordsFor(n));
  return {reinterpret_cast<const uint8_t*>(seg.begin + at), static_cast<size_t>(n)};
}

}  // namespace

INLINE StructView readStruct(Segment& seg, const uint64_t* ptr, int nestingLeft) {
  if (nestingLeft <= 0) throw NotPlain{};
  if (!ptr || *ptr == 0) return StructView{&seg, nullptr, 0, 0, nestingLeft - 1};  // every field default
  const uint64_t w = *ptr;
  if ((w & 3) != KIND_STRUCT) throw NotPlain{};  // a far pointer, a list, a capability
  const StructSize size{static_cast<uint32_t>((w >> 32) & 0xFFFF), static_cast<uint32_t>(w >> 48)};
  const size_t at = target(seg, ptr, w, size.words());
  charge(seg, size.words());
  return StructView{&seg, seg.begin + at, size.dataWords, size.pointers, nestingLeft - 1};
}

INLINE StructListView readStructList(Segment& seg, const uint64_t* ptr, int nestingLeft) {
  if (nestingLeft <= 1) throw NotPlain{};  // the list and then its elements
  if (!ptr || *ptr == 0) return StructListView{&seg, nullptr, 0, 0, 0, nestingLeft - 2};
  const uint64_t w = *ptr;
  if ((w & 3) != KIND_LIST || ((w >> 32) & 7) != ELEMENT_COMPOSITE) throw NotPlain{};
  const uint64_t wordCount = w >> 35;
  const size_t at = target(seg, ptr, w, 1 + wordCount);
  const uint64_t tag = seg.begin[at];
  if ((tag & 3) != KIND_STRUCT) throw NotPlain{};
  const uint32_t count = static_cast<uint32_t>(tag) >> 2;
  const StructSize size{static_cast<uint32_t>((tag >> 32) & 0xFFFF), static_cast<uint32_t>(tag >> 48)};
  if (static_cast<uint64_t>(count) * size.words() > wordCount) throw NotPlain{};
  charge(seg, 1 + wordCount);
  return StructListView{&seg, seg.begin + at + 1, count, size.dataWords, size.pointers, nestingLeft - 2};
}

INLINE Text EntryReader::getKey() const {
  auto [p, n] = readBytes(*s_.seg, s_.pointer(s_.seg->layout->entryKey));
  if (!p) return Text("", 0);
  if (n == 0 || p[n - 1] != 0) throw NotPlain{};  // text is NUL-terminated
  return Text(reinterpret_cast<const char*>(p), n - 1);
}

INLINE ValueReader EntryReader::getValue() const {
  return ValueReader(readStruct(*s_.seg, s_.pointer(s_.seg->layout->entryValue), s_.nestingLeft));
}

INLINE schema::Value::Which ValueReader::which() const {
  return static_cast<schema::Value::Which>(s_.u16(s_.seg->layout->valueDiscriminant));
}
INLINE bool ValueReader::getBoolean() const { return s_.bit(s_.seg->layout->valueBoolean); }
INLINE int64_t ValueReader::getInt() const { return static_cast<int64_t>(s_.word(s_.seg->layout->valueInt)); }
INLINE double ValueReader::getFloat() const {
  const uint64_t bits = s_.word(s_.seg->layout->valueFloat);
  double d;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}
INLINE Text ValueReader::getText() const {
  auto [p, n] = readBytes(*s_.seg, s_.pointer(s_.seg->layout->valueText));
  if (!p) return Text("", 0);
  if (n == 0 || p[n - 1] != 0) throw NotPlain{};
  return Text(reinterpret_cast<const char*>(p), n - 1);
}
INLINE Data ValueReader::getBytes() const {
  auto [p, n] = readBytes(*s_.seg, s_.pointer(s_.seg->layout->valueBytes));
  return Data(p, n);
}
INLINE ListReader<ValueReader> ValueReader::getList() const {
  return ListReader<ValueReader>(readStructList(*s_.seg, s_.pointer(s_.seg->layout->valueList), s_.nestingLeft));
}
INLINE ListReader<EntryReader> ValueReader::getMap() const {
  return ListReader<EntryReader>(readStructList(*s_.seg, s_.pointer(s_.seg->layout->valueMap), s_.nestingLeft));
}

}  // namespace plain

namespace {

/// The one descriptor a controller post may carry on the fast lane: a fresh pair, nothing queued.
bool readFreshPort(plain::Segment& seg, const plain::StructView& d, PlainPort& out) {
  const Layout& L = *seg.layout;
  if (!d.bit(L.pdRegister) || d.bit(L.pdPeerClosed)) return false;
  if (plain::readStructList(seg, d.pointer(L.pdQueued), d.nestingLeft).count != 0) return false;
  out.portId = d.word(L.pdPortId);
  out.peerId = d.word(L.pdPeerId);
  out.sendSeq = d.word(L.pdSendSeq);
  out.recvNext = d.word(L.pdRecvNext);
  out.silentPeer = d.bit(L.pdSilentPeer);
  return true;
}

/// The Value of the payload at `ptr`, decoded into `data`; false for a typed payload.
INLINE bool readValuePayload(plain::Segment& seg, const uint64_t* ptr, int nestingLeft, Value& data) {
  const Layout& L = *seg.layout;
  auto payload = plain::readStruct(seg, ptr, nestingLeft);
  if (payload.u16(L.payloadDiscriminant) != schema::Payload::VALUE) return false;
  auto value = plain::readStruct(seg, payload.pointer(L.payloadValue), payload.nestingLeft);
  Error err;  // whatever it says, the general path says again, with its name
  return decode::readInto(plain::ValueReader(value), data, 0, err);
}

}  // namespace

bool readPlain(const capnp::word* words, size_t count, const capnp::ReaderOptions& options, uint32_t kinds,
               PlainMessage& out, Value& data, const PlainFilter* filter) {
  if (count < 2) return false;
  const auto* w = reinterpret_cast<const uint64_t*>(words);
  if ((w[0] & 0xFFFF'FFFFu) != 0) return false;  // more than one segment
  const uint64_t segWords = w[0] >> 32;
  if (segWords < 1 || segWords > count - 1) return false;
  const Layout& L = layout();
  // Every word is read at most once on this path; a quarter of the general limit leaves the
  // general path (which reads the envelope's own pointers twice) room to accept all we accept.
  plain::Segment seg{&L, w + 1, static_cast<size_t>(segWords),
                     std::min<uint64_t>(2 * segWords + 16, options.traversalLimitInWords / 4)};
  try {
    auto env = plain::readStruct(seg, seg.begin, static_cast<int>(options.nestingLimit));
    if (env.u16(L.envVersion) != schema::SCHEMA_VERSION) return false;
    const uint16_t which = env.u16(L.envDiscriminant);
    if (which >= 32 || (kinds & (uint32_t{1} << which)) == 0) return false;
    out.kind = static_cast<schema::Envelope::Which>(which);
    out.seq = env.word(L.envSeq);
    auto body = plain::readStruct(seg, env.pointer(pointerOf(out.kind)), env.nestingLeft);
    switch (out.kind) {
      case schema::Envelope::CONTROLLER_POST:
      case schema::Envelope::CLIENT_POST: {
        auto ports = plain::readStructList(seg, body.pointer(L.postPorts), body.nestingLeft);
        out.hasPort = ports.count != 0;
        if (out.hasPort) {
          if (ports.count != 1 || out.kind != schema::Envelope::CONTROLLER_POST) return false;
          if (!readFreshPort(seg, ports.at(0), out.port)) return false;
        }
        out.replyId = body.word(L.postReplyId);
        out.wantAck = body.bit(L.postWantAck);
        if (filter && !filter->wantsValue(out)) return false;
        return readValuePayload(seg, body.pointer(L.postPayload), body.nestingLeft, data);
      }
      case schema::Envelope::PORT_MESSAGE:
        if (plain::readStructList(seg, body.pointer(L.pmPorts), body.nestingLeft).count != 0) return false;
        out.to = body.word(L.pmTo);
        out.portSeq = body.word(L.pmSeq);
        if (filter && !filter->wantsValue(out)) return false;
        return readValuePayload(seg, body.pointer(L.pmPayload), body.nestingLeft, data);
      case schema::Envelope::PORT_CLOSE:
        out.to = body.word(L.pcPort);
        out.portSeq = body.word(L.pcRecvNext);
        return !filter || filter->wantsValue(out);
      case schema::Envelope::BC_POST:
        out.objectId = body.u32(L.bpObjectId);
        out.wantAck = body.bit(L.bpWantAck);
        if (filter && !filter->wantsValue(out)) return false;
        return readValuePayload(seg, body.pointer(L.bpPayload), body.nestingLeft, data);
      case schema::Envelope::BC_MESSAGE:
        if (filter && !filter->wantsValue(out)) return false;
        return readValuePayload(seg, body.pointer(L.bmPayload), body.nestingLeft, data);
      default: return false;
    }
  } catch (const plain::NotPlain&) {
    return false;
  }
}


}  // namespace swipc::wire

#undef INLINE
