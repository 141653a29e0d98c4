#include "wire/plain_layout.h"

#include <capnp/schema.h>

#include <algorithm>

#include "swipc/error.h"
#include "swipc/value.h"
#include "value.capnp.h"

namespace swipc::wire::plain {
namespace {


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

}  // namespace

Layout computeLayout() {
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

}  // namespace swipc::wire::plain
