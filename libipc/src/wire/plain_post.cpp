#include "wire/plain_post.h"

#include <capnp/schema.h>

#include <algorithm>
#include <cstring>

#include "swipc/error.h"
#include "value.capnp.h"
#include "wire/value_decode.h"

// The reader's accessors are used only in this file, by the decoder instantiated here, and are
// inlined into it.
#define INLINE [[gnu::always_inline]] inline

namespace swipc::wire {
namespace plain {

// ---- where the fields are: read once from the compiled schemas ----

struct StructSize {
  uint32_t dataWords = 0;
  uint32_t pointers = 0;
  uint32_t words() const { return dataWords + pointers; }
};

struct Layout {
  StructSize envelope, entry;
  uint32_t envDiscriminant = 0;  // in 16-bit units, like every offset named "...Discriminant"
  uint32_t envVersion = 0;       // 16-bit units
  uint32_t envSeq = 0;           // 64-bit units
  uint32_t envControllerPost = 0, envClientPost = 0, envPortMessage = 0, envPortClose = 0;  // pointer indices
  uint32_t postPayload = 0, postPorts = 0;            // pointer indices
  uint32_t postReplyId = 0;                           // 64-bit units
  uint32_t postWantAck = 0;                           // bit offset
  uint32_t payloadDiscriminant = 0;
  uint32_t payloadValue = 0;  // pointer index
  uint32_t valueDiscriminant = 0;
  uint32_t valueBoolean = 0;  // bit offset
  uint32_t valueInt = 0, valueFloat = 0;  // 64-bit units
  uint32_t valueText = 0, valueBytes = 0, valueList = 0, valueMap = 0;  // pointer indices
  uint32_t entryKey = 0, entryValue = 0;                                // pointer indices
  uint32_t pdPortId = 0, pdPeerId = 0, pdSendSeq = 0, pdRecvNext = 0;   // 64-bit units
  uint32_t pdRegister = 0, pdPeerClosed = 0, pdSilentPeer = 0;          // bit offsets
  uint32_t pdQueued = 0;                                                // pointer index
  uint32_t pmTo = 0, pmSeq = 0;                                         // 64-bit units
  uint32_t pmPayload = 0, pmPorts = 0;                                  // pointer indices
  uint32_t pcPort = 0, pcRecvNext = 0;                                  // 64-bit units
  uint32_t envBcPost = 0, envBcMessage = 0;                             // pointer indices
  uint32_t bpObjectId = 0;                                              // 32-bit units
  uint32_t bpWantAck = 0;                                               // bit offset
  uint32_t bpPayload = 0, bmPayload = 0;                                // pointer indices
  // What the writer uses: the smallest struct that holds what is set (Cap'n Proto readers take
  // any size and read what is missing as zero), as its canonical form would.
  StructSize valueOf[8];  // by Value::Kind
  StructSize payloadOfValue;
  StructSize postWithAck, postWithoutAck;
  StructSize descriptorWritten;  // every data field, no queue (a null pointer)
  StructSize portMessageWritten, portCloseWritten;
  StructSize bcMessageWritten;
};

}  // namespace plain

namespace {

using plain::Layout;
using plain::StructSize;

template <typename T>
StructSize sizeOf() {
  auto s = capnp::Schema::from<T>().getProto().getStruct();
  return StructSize{s.getDataWordCount(), s.getPointerCount()};
}

template <typename T>
uint32_t discriminantOf() {
  return capnp::Schema::from<T>().getProto().getStruct().getDiscriminantOffset();
}

template <typename T>
uint32_t slotOf(const char* field) {
  auto slot = capnp::Schema::from<T>().getFieldByName(field).getProto().getSlot();
  // The fast lane reads a missing field as zero and leaves zero fields unwritten: a field with
  // an explicit default would break both, so a schema that adds one fails here, at startup.
  SWIPC_REQUIRE(!slot.getHadExplicitDefault(), "plain_post: a field the fast lane uses has an explicit default");
  return slot.getOffset();
}

[[gnu::noinline]] Layout computeLayout() {
  Layout l;
  l.envelope = sizeOf<schema::Envelope>();
  l.entry = sizeOf<schema::Value::Entry>();
  l.envDiscriminant = discriminantOf<schema::Envelope>();
  l.envVersion = slotOf<schema::Envelope>("schemaVersion");
  l.envSeq = slotOf<schema::Envelope>("seq");
  l.envControllerPost = slotOf<schema::Envelope>("controllerPost");
  l.envClientPost = slotOf<schema::Envelope>("clientPost");
  l.postPayload = slotOf<schema::Post>("payload");
  l.postPorts = slotOf<schema::Post>("ports");
  l.postReplyId = slotOf<schema::Post>("replyId");
  l.postWantAck = slotOf<schema::Post>("wantAck");
  l.payloadDiscriminant = discriminantOf<schema::Payload>();
  l.payloadValue = slotOf<schema::Payload>("value");
  l.valueDiscriminant = discriminantOf<schema::Value>();
  l.valueBoolean = slotOf<schema::Value>("boolean");
  l.valueInt = slotOf<schema::Value>("int");
  l.valueFloat = slotOf<schema::Value>("float");
  l.valueText = slotOf<schema::Value>("text");
  l.valueBytes = slotOf<schema::Value>("bytes");
  l.valueList = slotOf<schema::Value>("list");
  l.valueMap = slotOf<schema::Value>("map");
  l.entryKey = slotOf<schema::Value::Entry>("key");
  l.entryValue = slotOf<schema::Value::Entry>("value");
  l.envPortMessage = slotOf<schema::Envelope>("portMessage");
  l.envPortClose = slotOf<schema::Envelope>("portClose");
  l.pdPortId = slotOf<schema::PortDescriptor>("portId");
  l.pdPeerId = slotOf<schema::PortDescriptor>("peerId");
  l.pdSendSeq = slotOf<schema::PortDescriptor>("sendSeq");
  l.pdRecvNext = slotOf<schema::PortDescriptor>("recvNext");
  l.pdRegister = slotOf<schema::PortDescriptor>("register");
  l.pdPeerClosed = slotOf<schema::PortDescriptor>("peerClosed");
  l.pdSilentPeer = slotOf<schema::PortDescriptor>("silentPeer");
  l.pdQueued = slotOf<schema::PortDescriptor>("queued");
  l.pmTo = slotOf<schema::PortMessage>("to");
  l.pmSeq = slotOf<schema::PortMessage>("seq");
  l.pmPayload = slotOf<schema::PortMessage>("payload");
  l.pmPorts = slotOf<schema::PortMessage>("ports");
  l.pcPort = slotOf<schema::PortClose>("port");
  l.pcRecvNext = slotOf<schema::PortClose>("recvNext");
  l.envBcPost = slotOf<schema::Envelope>("bcPost");
  l.envBcMessage = slotOf<schema::Envelope>("bcMessage");
  l.bpObjectId = slotOf<schema::BcPost>("objectId");
  l.bpWantAck = slotOf<schema::BcPost>("wantAck");
  l.bpPayload = slotOf<schema::BcPost>("payload");
  l.bmPayload = slotOf<schema::BcMessage>("payload");
  const uint32_t tagWords = l.valueDiscriminant / 4 + 1;
  auto withData = [&](uint32_t words) { return std::max(tagWords, words); };
  l.valueOf[static_cast<int>(Value::Kind::NONE)] = {0, 0};  // a null pointer reads as none
  l.valueOf[static_cast<int>(Value::Kind::BOOL)] = {withData(l.valueBoolean / 64 + 1), 0};
  l.valueOf[static_cast<int>(Value::Kind::INT)] = {withData(l.valueInt + 1), 0};
  l.valueOf[static_cast<int>(Value::Kind::FLOAT)] = {withData(l.valueFloat + 1), 0};
  l.valueOf[static_cast<int>(Value::Kind::TEXT)] = {tagWords, l.valueText + 1};
  l.valueOf[static_cast<int>(Value::Kind::BYTES)] = {tagWords, l.valueBytes + 1};
  l.valueOf[static_cast<int>(Value::Kind::LIST)] = {tagWords, l.valueList + 1};
  l.valueOf[static_cast<int>(Value::Kind::MAP)] = {tagWords, l.valueMap + 1};
  l.payloadOfValue = {schema::Payload::VALUE == 0 ? 0 : l.payloadDiscriminant / 4 + 1, l.payloadValue + 1};
  l.postWithoutAck = {0, l.postPayload + 1};  // replyId is 0 and ports are null: no data, one pointer
  l.postWithAck = {l.postWantAck / 64 + 1, l.postPayload + 1};
  const uint32_t bitsWord = std::max({l.pdRegister, l.pdPeerClosed, l.pdSilentPeer}) / 64;
  l.descriptorWritten = {std::max({l.pdPortId, l.pdPeerId, l.pdSendSeq, l.pdRecvNext, bitsWord}) + 1, 0};
  l.portMessageWritten = {std::max(l.pmTo, l.pmSeq) + 1, l.pmPayload + 1};  // ports stay null
  l.portCloseWritten = {std::max(l.pcPort, l.pcRecvNext) + 1, 0};
  l.bcMessageWritten = {0, l.bmPayload + 1};
  return l;
}

INLINE const Layout& layout() {
  static const Layout l = computeLayout();  // (not at load time: a static initialiser may use the lane)
  return l;
}

uint32_t pointerOf(schema::Envelope::Which kind) {
  switch (kind) {
    case schema::Envelope::CLIENT_POST: return layout().envClientPost;
    case schema::Envelope::PORT_MESSAGE: return layout().envPortMessage;
    case schema::Envelope::PORT_CLOSE: return layout().envPortClose;
    case schema::Envelope::BC_POST: return layout().envBcPost;
    case schema::Envelope::BC_MESSAGE: return layout().envBcMessage;
    default: return layout().envControllerPost;
  }
}

// ---- pointer words (Cap'n Proto encoding: low two bits are the kind) ----

constexpr uint64_t KIND_STRUCT = 0, KIND_LIST = 1;
constexpr uint64_t ELEMENT_BYTE = 2, ELEMENT_COMPOSITE = 7;

/// Signed word offset from the end of the pointer word, as encoded in bits 2..31.
int64_t pointerOffset(uint64_t w) { return static_cast<int32_t>(static_cast<uint32_t>(w)) >> 2; }

uint64_t structPointer(int64_t offset, StructSize s) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(offset) << 2) | KIND_STRUCT) |
         (static_cast<uint64_t>(s.dataWords) << 32) | (static_cast<uint64_t>(s.pointers) << 48);
}

uint64_t listPointer(int64_t offset, uint64_t elementSize, uint64_t count) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(offset) << 2) | KIND_LIST) | (elementSize << 32) |
         (count << 35);
}

size_t wordsFor(size_t bytes) { return (bytes + 7) / 8; }

}  // namespace

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

// ------------------------------------------------------------------------------------------------ writing

namespace {

StructSize sizeOfValue(const Layout& L, const Value& v) { return L.valueOf[static_cast<int>(v.kind())]; }

/// Elements of a list are inline and share one size: the largest any of them needs (and never
/// zero: readers refuse lists of zero-sized elements).
StructSize elementSize(const Layout& L, const Value::List& l) {
  StructSize s{L.valueOf[static_cast<int>(Value::Kind::TEXT)].dataWords, 0};
  for (const auto& e : l) {
    const StructSize e1 = sizeOfValue(L, e);
    s.dataWords = std::max(s.dataWords, e1.dataWords);
    s.pointers = std::max(s.pointers, e1.pointers);
  }
  return s;
}

/// Words a Value's content takes after its own struct.
size_t contentWords(const Layout& L, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::TEXT: return wordsFor(v.asText().size() + 1);
    case Value::Kind::BYTES: return wordsFor(v.asBytes().data.size());
    case Value::Kind::LIST: {
      const auto& l = v.asList();
      size_t n = 1 + l.size() * elementSize(L, l).words();
      for (const auto& e : l) n += contentWords(L, e);
      return n;
    }
    case Value::Kind::MAP: {
      size_t n = 1 + v.asMap().size() * L.entry.words();
      for (const auto& [k, e] : v.asMap()) n += wordsFor(k.size() + 1) + sizeOfValue(L, e).words() + contentWords(L, e);
      return n;
    }
    default: return 0;
  }
}

/// Writes into a zeroed segment; `next` is the first free word.
class Writer {
 public:
  Writer(uint64_t* seg, size_t words) : seg_(seg), words_(words), L_(layout()) {}

  size_t alloc(size_t words) {
    SWIPC_REQUIRE(words <= words_ - next_, "writePlainPost: the value does not fit the size given");
    const size_t at = next_;
    next_ += words;
    return at;
  }
  size_t used() const { return next_; }

  void setStruct(size_t ptrAt, size_t at, StructSize s) {
    seg_[ptrAt] = structPointer(static_cast<int64_t>(at) - static_cast<int64_t>(ptrAt) - 1, s);
  }
  void set16(size_t structAt, uint32_t offset, uint16_t v) {
    seg_[structAt + offset / 4] |= static_cast<uint64_t>(v) << (16 * (offset % 4));
  }
  void set32(size_t structAt, uint32_t offset, uint32_t v) {
    seg_[structAt + offset / 2] |= static_cast<uint64_t>(v) << (32 * (offset % 2));
  }
  void setBit(size_t structAt, uint32_t bit, bool v) {
    if (v) seg_[structAt + bit / 64] |= uint64_t{1} << (bit % 64);
  }
  void setWord(size_t structAt, uint32_t offset, uint64_t v) { seg_[structAt + offset] = v; }

  void setBytes(size_t ptrAt, const void* p, size_t n, bool text) {
    const size_t count = n + (text ? 1 : 0);  // the NUL is already there: the segment is zeroed
    const size_t at = alloc(wordsFor(count));
    if (n) std::memcpy(seg_ + at, p, n);
    seg_[ptrAt] = listPointer(static_cast<int64_t>(at) - static_cast<int64_t>(ptrAt) - 1, ELEMENT_BYTE, count);
  }

  /// A struct list of `count` elements of `s`; returns the first element's word.
  size_t setStructList(size_t ptrAt, size_t count, StructSize s) {
    const size_t words = count * s.words();
    const size_t tag = alloc(1 + words);
    seg_[tag] = structPointer(static_cast<int64_t>(count), s);  // the tag: element count, element size
    seg_[ptrAt] = listPointer(static_cast<int64_t>(tag) - static_cast<int64_t>(ptrAt) - 1, ELEMENT_COMPOSITE, words);
    return tag + 1;
  }

  /// A Value pointed to from `ptrAt`, in a struct of its own size (none: the pointer stays null).
  void valueAt(size_t ptrAt, const Value& v) {
    const StructSize size = sizeOfValue(L_, v);
    if (size.words() == 0) return;
    const size_t at = alloc(size.words());
    setStruct(ptrAt, at, size);
    value(at, size, v);
  }

  /// Writes `v` into the struct at `at`, of `size` (at least what its kind needs).
  void value(size_t at, StructSize size, const Value& v) {
    const size_t ptrs = at + size.dataWords;  // pointer slots follow the data words
    switch (v.kind()) {
      case Value::Kind::NONE: break;
      case Value::Kind::BOOL:
        set16(at, L_.valueDiscriminant, schema::Value::BOOLEAN);
        setBit(at, L_.valueBoolean, v.asBool());
        break;
      case Value::Kind::INT:
        set16(at, L_.valueDiscriminant, schema::Value::INT);
        setWord(at, L_.valueInt, static_cast<uint64_t>(v.asInt()));
        break;
      case Value::Kind::FLOAT: {
        set16(at, L_.valueDiscriminant, schema::Value::FLOAT);
        const double d = v.asFloat();
        uint64_t bits;
        std::memcpy(&bits, &d, sizeof bits);
        setWord(at, L_.valueFloat, bits);
        break;
      }
      case Value::Kind::TEXT:
        set16(at, L_.valueDiscriminant, schema::Value::TEXT);
        setBytes(ptrs + L_.valueText, v.asText().data(), v.asText().size(), true);
        break;
      case Value::Kind::BYTES:
        set16(at, L_.valueDiscriminant, schema::Value::BYTES);
        setBytes(ptrs + L_.valueBytes, v.asBytes().data.data(), v.asBytes().data.size(), false);
        break;
      case Value::Kind::LIST: {
        set16(at, L_.valueDiscriminant, schema::Value::LIST);
        const auto& l = v.asList();
        const StructSize element = elementSize(L_, l);
        size_t e = setStructList(ptrs + L_.valueList, l.size(), element);
        for (const auto& item : l) {
          value(e, element, item);
          e += element.words();
        }
        break;
      }
      case Value::Kind::MAP: {
        set16(at, L_.valueDiscriminant, schema::Value::MAP);
        const auto& m = v.asMap();
        size_t e = setStructList(ptrs + L_.valueMap, m.size(), L_.entry);
        for (const auto& [key, item] : m) {
          const size_t entryPtrs = e + L_.entry.dataWords;
          setBytes(entryPtrs + L_.entryKey, key.data(), key.size(), true);
          valueAt(entryPtrs + L_.entryValue, item);
          e += L_.entry.words();
        }
        break;
      }
    }
  }

 private:
  uint64_t* seg_;
  size_t words_;
  const Layout& L_;
  size_t next_ = 0;
};

/// The struct an envelope of `m`'s kind points to, at the smallest size holding what is set.
StructSize bodySize(const Layout& L, const PlainMessage& m) {
  switch (m.kind) {
    case schema::Envelope::PORT_MESSAGE: return L.portMessageWritten;
    case schema::Envelope::PORT_CLOSE: return L.portCloseWritten;
    case schema::Envelope::BC_MESSAGE: return L.bcMessageWritten;
    case schema::Envelope::BC_POST: {
      const bool data = m.objectId != 0 || m.wantAck;
      return {data ? std::max(L.bpObjectId / 2, L.bpWantAck / 64) + 1 : 0, L.bpPayload + 1};
    }
    default: {
      StructSize s = m.wantAck ? L.postWithAck : L.postWithoutAck;
      if (m.hasPort) s.pointers = std::max(s.pointers, L.postPorts + 1);
      return s;
    }
  }
}

size_t segmentWords(const PlainMessage& m, const Value& data) {
  const Layout& L = layout();
  size_t n = 1 + L.envelope.words() + bodySize(L, m).words();
  if (m.hasPort) n += 1 + L.descriptorWritten.words();
  if (m.hasValue()) n += L.payloadOfValue.words() + sizeOfValue(L, data).words() + contentWords(L, data);
  return n;
}

}  // namespace

size_t plainBytes(const PlainMessage& m, const Value& data) { return (1 + segmentWords(m, data)) * sizeof(capnp::word); }

void writePlain(const PlainMessage& m, const Value& data, uint8_t* dst, size_t bytes) {
  // `bytes` came from plainBytes(m, data); the writer checks at the end that it used exactly that.
  SWIPC_REQUIRE(bytes % sizeof(capnp::word) == 0 && bytes >= 2 * sizeof(capnp::word),
                "writePlain: wrong destination size");
  const size_t segWords = bytes / sizeof(capnp::word) - 1;
  std::memset(dst, 0, bytes);
  auto* words = reinterpret_cast<uint64_t*>(dst);
  words[0] = static_cast<uint64_t>(segWords) << 32;  // one segment of segWords words
  const Layout& L = layout();
  Writer w(words + 1, segWords);
  const size_t root = w.alloc(1);
  const size_t env = w.alloc(L.envelope.words());
  w.setStruct(root, env, L.envelope);
  w.set16(env, L.envVersion, schema::SCHEMA_VERSION);
  w.set16(env, L.envDiscriminant, static_cast<uint16_t>(m.kind));
  w.setWord(env, L.envSeq, m.seq);
  const StructSize size = bodySize(L, m);
  const size_t body = w.alloc(size.words());
  w.setStruct(env + L.envelope.dataWords + pointerOf(m.kind), body, size);
  const size_t bodyPtrs = body + size.dataWords;
  size_t payloadPtr = 0;
  switch (m.kind) {
    case schema::Envelope::PORT_MESSAGE:
      w.setWord(body, L.pmTo, m.to);
      w.setWord(body, L.pmSeq, m.portSeq);
      payloadPtr = bodyPtrs + L.pmPayload;
      break;
    case schema::Envelope::PORT_CLOSE:
      w.setWord(body, L.pcPort, m.to);
      w.setWord(body, L.pcRecvNext, m.portSeq);
      break;
    case schema::Envelope::BC_MESSAGE: payloadPtr = bodyPtrs + L.bmPayload; break;
    case schema::Envelope::BC_POST:
      if (size.dataWords) {
        w.set32(body, L.bpObjectId, m.objectId);
        w.setBit(body, L.bpWantAck, m.wantAck);
      }
      payloadPtr = bodyPtrs + L.bpPayload;
      break;
    default:
      w.setBit(body, L.postWantAck, m.wantAck);
      payloadPtr = bodyPtrs + L.postPayload;
      if (m.hasPort) {
        const size_t d = w.setStructList(bodyPtrs + L.postPorts, 1, L.descriptorWritten);
        w.setWord(d, L.pdPortId, m.port.portId);
        w.setWord(d, L.pdPeerId, m.port.peerId);
        w.setWord(d, L.pdSendSeq, m.port.sendSeq);
        w.setWord(d, L.pdRecvNext, m.port.recvNext);
        w.setBit(d, L.pdRegister, true);
        w.setBit(d, L.pdSilentPeer, m.port.silentPeer);
      }
      break;
  }
  if (m.hasValue()) {
    const size_t payload = w.alloc(L.payloadOfValue.words());
    w.setStruct(payloadPtr, payload, L.payloadOfValue);
    if (L.payloadOfValue.dataWords) w.set16(payload, L.payloadDiscriminant, schema::Payload::VALUE);
    w.valueAt(payload + L.payloadOfValue.dataWords + L.payloadValue, data);
  }
  SWIPC_REQUIRE(w.used() == segWords, "writePlain: size mismatch");
}

}  // namespace swipc::wire

#undef INLINE
