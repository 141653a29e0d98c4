@0xeec20a6bd2d8b27e;
# Framing and control: one Envelope per ring record, one Control per socket datagram.
# SCHEMA_VERSION below must change whenever an incompatible change is made here.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("swipc::schema");

using import "value.capnp".Value;
using import "sync.capnp".SyncCall;
using import "sync.capnp".SyncResult;
using import "fetch.capnp".FetchCall;
using import "fetch.capnp".FetchResult;
using import "fetch.capnp".FetchProgress;

const schemaVersion :UInt16 = 1;
const protocolVersion :UInt32 = 5;   # 2: MessagePort transfer (PortDescriptor, port* kinds)
                                     # 3: the daemon wakes a client through a pipe (Welcome fd 3)
                                     # 4: Welcome.socketWakes (one fd; wakes as socket datagrams)
                                     # 5: bcLapped (page -> daemon)

# An application-defined Cap'n Proto struct posted instead of a Value.
struct TypedPayload {
  typeId @0 :UInt64;      # the struct's Cap'n Proto type id; receivers check it
  content @1 :AnyPointer;
}

struct Payload {
  union {
    value @0 :Value;
    typed @1 :TypedPayload;
  }
}

# ---- MessagePort ----
# A port travelling in a transfer list: its state and the messages queued at it, which follow it
# to the new owner. The daemon is the single authority on where a port lives and checks every
# descriptor a client sends (the sender must own the port, or register a fresh pair).
struct PortDescriptor {
  portId @0 :UInt64;
  peerId @1 :UInt64;               # the entangled end
  sendSeq @2 :UInt64;              # the seq this end's next post will carry (contiguous from 1)
  recvNext @3 :UInt64;             # the next seq it expects from its peer: everything before is
                                   # delivered or in `queued`; the daemon re-sends the rest
  register @4 :Bool;               # page -> daemon: first shipment of a local pair; register both
  peerClosed @5 :Bool;             # daemon -> page: the peer is already gone (close on arrival)
  queued @6 :List(PortMessage);    # received here, not yet delivered (port not started)
  silentPeer @7 :Bool;             # register only: the end that stays closes by itself and needs
                                   # no portClosed (messageSW's reply port)
}

# One message on a port. As an Envelope kind (daemon -> page) `to` is the destination end.
struct PortMessage {
  to @0 :UInt64;
  seq @1 :UInt64;                  # the sending end's seq
  payload @2 :Payload;
  ports @3 :List(PortDescriptor);
}

struct PortPost {                  # page -> daemon: post on the port `from` owns (to its peer)
  from @0 :UInt64;
  seq @1 :UInt64;
  payload @2 :Payload;
  ports @3 :List(PortDescriptor);
}

struct PortClose {                 # page -> daemon: this end closed (also after portClosed)
  port @0 :UInt64;
  recvNext @1 :UInt64;             # it received everything before this; later messages to it,
                                   # still in flight, are dropped (their ports closed by the daemon)
}

struct PortClosed {                # daemon -> page: the peer of `port` closed or died
  port @0 :UInt64;
}

struct PortAck {                   # page -> daemon: `port` has received everything before recvNext
  port @0 :UInt64;
  recvNext @1 :UInt64;
}

struct Post {
  payload @0 :Payload;
  replyId @1 :UInt64;              # unused since protocol 2 (messageSW replies on a MessagePort)
  ports @2 :List(PortDescriptor);
  wantAck @3 :Bool;                # daemon answers with an Ack once it has consumed this post
}

struct Reply {                     # unused since protocol 2
  replyId @0 :UInt64;
  payload @1 :Payload;
}

struct Ack {
  seq @0 :UInt64;                  # the sender-local seq of the consumed envelope
}

struct ErrorReport {
  name @0 :Text;                   # one of the names in swipc/error.h
  message @1 :Text;
  refSeq @2 :UInt64;               # the envelope this is about, 0 if none
}

# page -> daemon: window state that drives matchAll order.
struct ClientState {
  focused @0 :Bool;
  visible @1 :Bool;
  focusChanged @2 :Bool;           # setFocus was called: `focused` is news (a focus event)
}

struct ControllerChange {
  controlled @0 :Bool;
}

struct Navigate {
  url @0 :Text;
}

# ---- BroadcastChannel ----

struct BcJoin {                    # page -> daemon: object `objectId` opens channel `name`
  objectId @0 :UInt32;
  name @1 :Text;
}

struct BcLeave {                   # page -> daemon
  objectId @0 :UInt32;
}

struct BcPost {                    # page -> daemon: post once; the daemon writes the channel ring
  objectId @0 :UInt32;
  payload @1 :Payload;
  wantAck @2 :Bool;                # daemon answers with an Ack once the post is in the ring
}

struct BcJoined {                  # daemon -> page: the join is in effect
  objectId @0 :UInt32;
  ringId @1 :UInt64;               # the ring's memfd came (once) in a Control.bcRing datagram
  startPos @2 :UInt64;             # ring tail when the join was processed
  startSeq @3 :UInt64;             # first channel seq this object receives
  senderTag @4 :UInt64;            # this client's tag prefix (records it posted carry it)
}

struct BcLapped {                  # page -> daemon: object `objectId` was lapped (swctl channels' laps)
  objectId @0 :UInt32;
  missed @1 :UInt64;               # records it missed
}

struct BcMessage {                 # one record in a channel ring (written by the daemon only)
  payload @0 :Payload;
}

struct Envelope {
  schemaVersion @0 :UInt16;
  seq @1 :UInt64;                  # sender-local, increasing from 1
  union {
    controllerPost @2 :Post;       # page -> service worker
    clientPost @3 :Post;           # service worker -> page
    reply @4 :Reply;               # service worker -> page, answer on a one-shot reply port
    ack @5 :Ack;                   # daemon -> page
    error @6 :ErrorReport;         # either way
    clientState @7 :ClientState;   # page -> daemon (setFocus / setVisibility)
    controllerChange @8 :ControllerChange;  # daemon -> page (clients.claim())
    navigate @9 :Navigate;         # daemon -> page (WindowClient.navigate)
    focus @10 :Void;               # daemon -> page (WindowClient.focus)
    bcJoin @11 :BcJoin;
    bcLeave @12 :BcLeave;
    bcPost @13 :BcPost;
    bcJoined @14 :BcJoined;
    bcMessage @15 :BcMessage;      # only inside channel rings
    portMessage @16 :PortMessage;  # daemon -> page
    portPost @17 :PortPost;        # page -> daemon
    portClose @18 :PortClose;      # page -> daemon
    portClosed @19 :PortClosed;    # daemon -> page
    portAck @20 :PortAck;          # page -> daemon
    syncCall @21 :SyncCall;        # page -> daemon (Background Sync, schemas/sync.capnp)
    syncResult @22 :SyncResult;    # daemon -> page
    fetchCall @23 :FetchCall;      # page -> daemon (Background Fetch, schemas/fetch.capnp)
    fetchResult @24 :FetchResult;  # daemon -> page
    fetchProgress @25 :FetchProgress;  # daemon -> page
    bcLapped @26 :BcLapped;        # page -> daemon
  }
}

enum ClientType {
  window @0;
  worker @1;
}

# ---- control plane (SOCK_SEQPACKET datagrams) ----

struct Hello {
  protocolVersion @0 :UInt32;
  clientType @1 :ClientType;
  url @2 :Text;
  resumeToken @3 :Data;            # empty on first attach
  controlled @4 :Bool;
  openToken @5 :Data;              # set by a page the daemon spawned (clients.openWindow)
}

# Sent with three fds: the segment memfd, the up doorbell eventfd and the wake pipe's read end;
# with socketWakes, with the segment memfd only.
struct Welcome {
  clientId @0 :Data;               # 16 bytes
  resumeToken @1 :Data;            # 32 bytes; present it again to keep clientId
  layoutVersion @2 :UInt32;
  upRingBytes @3 :UInt32;
  downRingBytes @4 :UInt32;
  daemonEpoch @5 :UInt64;
  maxMessageBytes @6 :UInt64;
  controlled @7 :Bool;
  swVersion @8 :Text;
  socketWakes @9 :Bool;            # no doorbell, no wake pipe: each side wakes the other with an
                                   # 8-byte datagram "swipcWK!" on the control socket (a daemon
                                   # short of fds, see README "Limits")
}

# Sent with one fd: a sealed memfd holding one whole Envelope too large for a ring record.
struct OutOfLine {
  seq @0 :UInt64;
  bytes @1 :UInt64;
}

# Sent with one fd: a channel ring memfd sealed F_SEAL_FUTURE_WRITE (map it read-only).
struct BcRing {
  ringId @0 :UInt64;
  capacity @1 :UInt64;             # data bytes (power of two)
}

# Sent with one fd: a read-only file (a Background Fetch body) that an envelope sent right after
# names by `token`.
struct FileFd {
  token @0 :UInt64;
}

struct Goodbye {
  reason @0 :Text;
}

# swctl (DESIGN §17): sent instead of a Hello on a fresh connection. The daemon answers one
# inspectReply from its loop and closes: no client id, no rings, not counted as a client.
struct InspectRequest {
  command @0 :Text;                # status | clients | channels | ports | sync | fetches
}

# The answer: one JSON object, inline in `json`; when it is too large for a datagram, `json` is
# empty and the datagram carries one fd, a sealed memfd holding `bytes` bytes of JSON.
struct InspectReply {
  json @0 :Text;
  bytes @1 :UInt64;
}

struct Control {
  union {
    hello @0 :Hello;
    welcome @1 :Welcome;
    error @2 :ErrorReport;
    outOfLine @3 :OutOfLine;
    goodbye @4 :Goodbye;
    bcRing @5 :BcRing;
    fileFd @6 :FileFd;
    inspect @7 :InspectRequest;
    inspectReply @8 :InspectReply;
  }
}
