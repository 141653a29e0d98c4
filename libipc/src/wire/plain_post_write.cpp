// The fast lane's writer (wire/plain_post.h): what it writes, any Cap'n Proto reader decodes.
#include "wire/plain_post.h"

#include <algorithm>
#include <cstring>

#include "swipc/error.h"
#include "value.capnp.h"
#include "wire/plain_layout.h"

namespace swipc::wire {

using namespace plain;  // NOLINT(google-build-using-namespace): the layout and pointer words


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
