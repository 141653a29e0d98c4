// The fast lane's (wire/plain_post.h) shared parts: where the fields are, read once from the
// compiled schemas, and Cap'n Proto's pointer words. Internal to wire/plain_post*.cpp.
#pragma once

#include <cstddef>
#include <cstdint>

#include "envelope.capnp.h"

namespace swipc::wire::plain {

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


/// Reads the layout from the compiled schemas (plain_layout.cpp); use layout().
Layout computeLayout();

inline const Layout& layout() {
  static const Layout l = computeLayout();  // (not at load time: a static initialiser may use the lane)
  return l;
}

/// The pointer index, in the Envelope, of the struct of `kind`.
inline uint32_t pointerOf(schema::Envelope::Which kind) {
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
inline int64_t pointerOffset(uint64_t w) { return static_cast<int32_t>(static_cast<uint32_t>(w)) >> 2; }

inline uint64_t structPointer(int64_t offset, StructSize s) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(offset) << 2) | KIND_STRUCT) |
         (static_cast<uint64_t>(s.dataWords) << 32) | (static_cast<uint64_t>(s.pointers) << 48);
}

inline uint64_t listPointer(int64_t offset, uint64_t elementSize, uint64_t count) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(offset) << 2) | KIND_LIST) | (elementSize << 32) |
         (count << 35);
}

inline size_t wordsFor(size_t bytes) { return (bytes + 7) / 8; }

}  // namespace swipc::wire::plain
