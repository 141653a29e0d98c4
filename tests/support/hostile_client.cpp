// hostile_client: a client that attaches to a sw_daemon and then breaks the protocol in one
// chosen way, so that tests can check the daemon detects it, disconnects only this client and
// keeps serving everyone else (DESIGN §4 "the reader validates every length and index", §5
// "a malformed envelope from a client is a protocol violation").
//
//   hostile_client --runtime-dir DIR --scope S --mode MODE [--linger-ms N] [--seed N]
//                  [--depth N] [--wakes N] [--fds N] [--to ID] [--ports N]
//
// It does the attach handshake by hand (so that it keeps the segment memfd and can map it
// read-write itself), misbehaves, then waits at most --linger-ms (default 5000) for the daemon to
// hang up. stdout, one line per step:
//
//   attached <clientId>          Welcome received (modes that attach)
//   refused <ErrorName>          the daemon answered the Hello with an error
//   flooding <n> / flooded <n>   flood-wakes only, around the flood
//   reply <text>                 flood-wakes only: a GET_VERSION round trip after the flood (a
//                                new port pair in the post's transfer list, the reply on its peer)
//   port-ready                   port-* modes that first own a port legitimately: PORT_READY came
//   sent-fds <n>                 ool-fd-hoard only: all n out-of-line notices went out
//   down-ring-corrupted          port-drop-corrupt-down only: down ring filled, its head made
//                                impossible, before the post whose dropped port closes
//   bc-joined                    amplified-bc-value only: the channel join is in effect (bcJoined
//                                came), before the malformed post on it
//   refused <ErrorName> after <n>  port-quota: the daemon refused a post once n pairs were sent
//   registered <n>               port-quota: all n pairs went through, nothing refused
//
// Relay modes (--to <clientId>) reach another page through the reference service worker:
//   relay-wrong-kind-queued      RELAY_PORT shipping a fresh port whose queued message's payload
//                                holds a text pointer where the Value struct belongs
//   relay-wrong-kind-post        RELAY_PORT shipping a fresh port, then a post on the end kept
//                                here with such a payload
//   ack-flood [--count N]        N NOOP posts asking for an ack; never reads its down ring
//   echo-flood [--count N] [--pad B]  N ECHO posts of B bytes each; never reads its down ring
//                                (both print flooding <n> / flooded <sent>)
//   port-quota [--ports N]       registers N pairs (NOOP posts of 512 fresh pairs each) and never
//                                answers portClosed
//   disconnected <ErrorName>     hang-up, after a Control.error with that name
//   disconnected hangup          hang-up without an error
//   still-connected              no hang-up within --linger-ms
//   failed <why>                 the tool itself could not do its part (exit 1)
//
// Exit status 0 whenever the misbehaviour was carried out, whatever the daemon did about it;
// 1 when it could not be (no daemon, refused attach, ...); 2 for a usage error.
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/connection.h"
#include "core/paths.h"
#include "core/socket.h"
#include "envelope.capnp.h"
#include "queue/ring_layout.h"
#include "shm/layout.h"
#include "shm/memfd.h"
#include "swipc/error.h"
#include "swipc/types.h"
#include "value.capnp.h"
#include "wire/codec.h"
#include "wire/limits.h"

namespace {

using namespace std::chrono_literals;
using swipc::Clock;
using swipc::Deadline;
using swipc::UniqueFd;
using swipc::core::Datagram;
using swipc::core::IoStatus;
using swipc::queue::RecordHeader;
using swipc::queue::RING_HEADER_BYTES;
using swipc::queue::RingHeader;

struct Options {
  std::string runtimeDir;
  std::string scope = "default";
  std::string mode;
  std::chrono::milliseconds linger{5000};
  uint64_t seed = 0x5eed'5eedULL;
  int depth = 10'000;
  uint64_t wakes = 1'000'000;
  uint64_t fds = 1100;
  std::string to;          // relay-* modes: the client id the ports go to
  uint64_t ports = 100'000;  // port-quota: pairs to register
  uint64_t count = 300'000;  // ack-flood / echo-flood: posts
  uint64_t pad = 0;          // echo-flood: bytes in each ECHO
};

void say(const std::string& line) {
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
}

[[noreturn]] void fail(const std::string& why) {
  say("failed " + why);
  std::fprintf(stderr, "hostile_client: %s\n", why.c_str());
  std::exit(1);
}

// ------------------------------------------------------------------------------------------ socket

bool sendWords(int fd, capnp::MessageBuilder& mb, const std::vector<int>& fds = {}) {
  auto words = capnp::messageToFlatArray(mb);
  return swipc::core::sendDatagram(fd, words.begin(), words.size() * sizeof(capnp::word), fds) == IoStatus::OK;
}

/// Decodes a control datagram; nullopt when it is not one (garbage).
std::optional<swipc::wire::Inbound> decodeControl(const Datagram& d) {
  if (d.bytes.empty() || d.bytes.size() % sizeof(capnp::word) != 0) return std::nullopt;
  auto words = kj::heapArray<capnp::word>(d.bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), d.bytes.data(), d.bytes.size());
  auto in = swipc::wire::Inbound::adoptControl(std::move(words),
                                               swipc::wire::readerOptions(swipc::wire::MAX_CONTROL_BYTES));
  if (!in) return std::nullopt;
  return std::move(*in);
}

/// Reads what the daemon sends on the control socket: remembers the last Control.error's name
/// and whether the daemon hung up.
class SocketWatch {
 public:
  explicit SocketWatch(int fd) : fd_(fd) {}

  /// Reads every pending datagram; true once the daemon has hung up.
  bool pump() {
    for (int ends = 0;;) {
      Datagram d;
      IoStatus s = swipc::core::recvDatagram(fd_, d, 65536);
      if (s == IoStatus::AGAIN) return closed_;
      if (s != IoStatus::OK) {
        // A reset (the daemon closed with our datagrams unread) is reported before what it had
        // queued for us, its Control.error included: read on until the plain end of stream.
        closed_ = true;
        if (++ends >= 2) return true;
        continue;
      }
      ends = 0;
      auto in = decodeControl(d);
      if (in && in->control().isError()) lastError_ = in->control().getError().getName().cStr();
    }
  }
  /// Waits for readability until `deadline`; false when the deadline passed.
  bool waitReadable(Deadline deadline) const {
    auto now = Clock::now();
    if (now >= deadline) return false;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1;
    pollfd p{fd_, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 100)));
    return true;
  }
  /// Waits for the hang-up until `deadline`; true when it happened.
  bool waitHangup(Deadline deadline) {
    for (;;) {
      if (pump()) return true;
      if (!waitReadable(deadline)) return false;
    }
  }
  bool closed() const { return closed_; }
  const std::string& lastError() const { return lastError_; }

 private:
  int fd_;
  bool closed_ = false;
  std::string lastError_;
};

void reportEnd(SocketWatch& watch, Deadline deadline) {
  if (watch.closed() || watch.waitHangup(deadline))
    say("disconnected " + (watch.lastError().empty() ? std::string("hangup") : watch.lastError()));
  else
    say("still-connected");
}

// ------------------------------------------------------------------------------------------ attach

UniqueFd connectOrFail(const Options& o) {
  auto paths = swipc::core::scopePaths(o.runtimeDir, o.scope);
  if (!paths) fail(paths.error().describe());
  auto sock = swipc::core::connectSeqpacket(paths->socket);
  if (!sock) fail(sock.error().describe());
  return std::move(*sock);
}

void sendHello(int fd, uint32_t protocolVersion, const std::string& scope) {
  capnp::MallocMessageBuilder mb(128);
  auto h = mb.initRoot<swipc::schema::Control>().initHello();
  h.setProtocolVersion(protocolVersion);
  h.setClientType(swipc::schema::ClientType::WINDOW);
  h.setUrl("app://" + scope + "/hostile");
  h.setControlled(true);
  if (!sendWords(fd, mb)) fail("could not send Hello");
}

/// The attached hostile client: the library's Connection for well-formed traffic, plus its own
/// read-write view of the segment for everything else.
struct Session {
  std::unique_ptr<swipc::core::Connection> conn;
  std::string clientId;
  uint64_t maxMessageBytes = 0;
  void* base = nullptr;  // our own read-write mapping of the segment (never unmapped: we exit)
  swipc::shm::SegmentLayout layout;

  RingHeader* upHeader() const {
    return reinterpret_cast<RingHeader*>(static_cast<uint8_t*>(base) + layout.upOffset);
  }
  uint8_t* upData() const { return static_cast<uint8_t*>(base) + layout.upOffset + RING_HEADER_BYTES; }
  uint64_t upCapacity() const { return layout.upCapacity; }
  RingHeader* downHeader() const {
    return reinterpret_cast<RingHeader*>(static_cast<uint8_t*>(base) + layout.downOffset);
  }
  uint64_t downCapacity() const { return layout.downCapacity; }
  int socketFd() const { return conn->socketFd(); }
  void ringDoorbell() const {
    uint64_t one = 1;
    (void)!::write(conn->doorbellFd(), &one, sizeof one);
  }
};

/// Waits for the answer to the Hello. Welcome (+ segment memfd + doorbell eventfd): maps the
/// segment, takes `sock` into a Connection, prints `attached <id>`. An error: prints
/// `refused <name>` and leaves `sock` open so the caller can watch for the hang-up.
std::optional<Session> finishAttach(UniqueFd& sock, const SocketWatch& watch, Deadline deadline) {
  for (;;) {
    Datagram d;
    IoStatus s = swipc::core::recvDatagram(sock.get(), d, swipc::wire::MAX_CONTROL_BYTES);
    if (s == IoStatus::AGAIN) {
      if (!watch.waitReadable(deadline)) fail("no answer to Hello before the deadline");
      continue;
    }
    if (s != IoStatus::OK) return std::nullopt;  // hung up without an answer
    auto in = decodeControl(d);
    if (!in) fail("undecodable answer to Hello");
    auto control = in->control();
    if (control.isError()) {
      say(std::string("refused ") + control.getError().getName().cStr());
      return std::nullopt;
    }
    if (!control.isWelcome() || d.fds.size() != 3) fail("expected Welcome with three fds");
    auto w = control.getWelcome();
    if (w.getClientId().size() != 16) fail("Welcome with a malformed client id");
    std::array<uint8_t, 16> id;
    std::memcpy(id.data(), w.getClientId().begin(), 16);
    Session session;
    session.clientId = swipc::ClientId(id).toString();
    session.maxMessageBytes = w.getMaxMessageBytes();
    auto size = swipc::shm::fileSize(d.fds[0].get());
    if (!size) fail(size.error().describe());
    // Our own read-write view of the segment (the daemon seals only its size), beside the one
    // the Connection makes: both map the same pages.
    session.base = ::mmap(nullptr, *size, PROT_READ | PROT_WRITE, MAP_SHARED, d.fds[0].get(), 0);
    if (session.base == MAP_FAILED) fail("mmap segment read-write: " + std::string(std::strerror(errno)));
    auto layout = swipc::shm::readHeader(session.base, *size, RING_HEADER_BYTES);
    if (!layout) fail(layout.error().describe());
    session.layout = *layout;
    auto conn = swipc::core::Connection::openForClient(std::move(sock), std::move(d.fds[0]), std::move(d.fds[1]), std::move(d.fds[2]),
                                                       session.maxMessageBytes);
    if (!conn) fail(conn.error().describe());
    session.conn = std::move(*conn);
    say("attached " + session.clientId);
    return session;
  }
}

// ------------------------------------------------------------------------------------------ ring

/// Writes one record header (+ payload) at ring counter `at`; the caller keeps it inside the ring.
void putRecord(const Session& s, uint64_t at, uint32_t length, uint32_t type, const void* payload = nullptr,
               size_t payloadBytes = 0) {
  const uint64_t pos = at & (s.upCapacity() - 1);
  RecordHeader h{length, type};
  std::memcpy(s.upData() + pos, &h, sizeof h);
  if (payloadBytes) std::memcpy(s.upData() + pos + sizeof h, payload, payloadBytes);
}

uint64_t upTail(const Session& s) { return s.upHeader()->tail.load(std::memory_order_acquire); }
uint64_t upHead(const Session& s) { return s.upHeader()->head.load(std::memory_order_acquire); }
void publishTail(const Session& s, uint64_t t) { s.upHeader()->tail.store(t, std::memory_order_release); }

/// Writes a whole record at the current tail and publishes it.
void appendRecord(const Session& s, uint32_t type, const void* payload, uint32_t length) {
  const uint64_t t = upTail(s);
  putRecord(s, t, length, type, payload, length);
  publishTail(s, t + swipc::queue::RECORD_HEADER_BYTES + swipc::queue::align8(length));
}

// ------------------------------------------------------------------------------------------ envelopes

uint64_t nextSeq = 1;

/// The root Envelope of `mb`, with the schema version and the next seq set.
swipc::schema::Envelope::Builder initEnvelope(capnp::MallocMessageBuilder& mb) {
  auto env = mb.initRoot<swipc::schema::Envelope>();
  env.setSchemaVersion(swipc::schema::SCHEMA_VERSION);
  env.setSeq(nextSeq);
  return env;
}

/// An Envelope carrying a controllerPost of {"type": type} (+ {"pad": bytes} when `padBytes`).
swipc::schema::Post::Builder buildPost(capnp::MallocMessageBuilder& mb, const std::string& type, size_t padBytes = 0) {
  auto env = initEnvelope(mb);
  auto post = env.initControllerPost();
  auto entries = post.initPayload().initValue().initMap(padBytes ? 2 : 1);
  entries[0].setKey("type");
  entries[0].initValue().setText(type);
  if (padBytes) {
    entries[1].setKey("pad");
    entries[1].initValue().initBytes(static_cast<unsigned>(padBytes));
  }
  return post;
}

/// A fresh random port id (never 0).
uint64_t randomPortId() {
  static std::mt19937_64 rng(std::random_device{}());
  for (;;)
    if (uint64_t v = rng()) return v;
}

/// Fills a port descriptor as the library sends it for the first shipment of a new pair.
void setDescriptor(swipc::schema::PortDescriptor::Builder d, uint64_t portId, uint64_t peerId, bool reg,
                   uint64_t sendSeq = 1, uint64_t recvNext = 1) {
  d.setPortId(portId);
  d.setPeerId(peerId);
  d.setSendSeq(sendSeq);
  d.setRecvNext(recvNext);
  d.setRegister(reg);
}

/// A controllerPost of {"type": type} carrying one port: a new pair (port, peer) registered with
/// it, as messageSW does (port goes to the service worker, peer stays here for the reply; with
/// `silentPeer`, as messageSW marks its reply port, the peer is registered to stay here).
void buildPostWithNewPair(capnp::MallocMessageBuilder& mb, const std::string& type, uint64_t port, uint64_t peer,
                          bool silentPeer = false) {
  auto post = buildPost(mb, type);
  auto d = post.initPorts(1)[0];
  setDescriptor(d, port, peer, /*reg=*/true);
  d.setSilentPeer(silentPeer);
}

/// Sends through the library's (well-behaved) ring writer, retrying while the ring is full.
void sendEnvelope(Session& s, capnp::MallocMessageBuilder& mb, SocketWatch& watch) {
  const auto deadline = Clock::now() + 5s;
  for (;;) {
    auto st = s.conn->send(mb, nextSeq);
    if (st == swipc::core::Connection::SendStatus::OK) break;
    if (st != swipc::core::Connection::SendStatus::FULL) fail("the library refused to send the envelope");
    s.conn->wakePeer();
    if (watch.pump()) return;  // disconnected already: the caller reports it
    if (Clock::now() >= deadline) fail("up ring stayed full");
    pollfd p[2] = {{s.socketFd(), POLLIN, 0}, {s.conn->wakeReadFd(), POLLIN, 0}};
    ::poll(p, 2, 5);  // the daemon wakes us through the wake pipe once it has made room
    s.conn->drainWakes();
  }
  ++nextSeq;
  s.conn->wakePeer();
}

/// A sealed-or-not memfd holding the encoded message.
UniqueFd encodeToMemfd(capnp::MallocMessageBuilder& mb, size_t bytes) {
  auto fd = swipc::shm::createMemfd("hostile-ool", bytes);
  if (!fd) fail(fd.error().describe());
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd->get(), 0);
  if (p == MAP_FAILED) fail("mmap out-of-line memfd");
  swipc::wire::encodeInto(mb, static_cast<uint8_t*>(p), bytes);
  ::munmap(p, bytes);
  return std::move(*fd);
}

void appendOutOfLineRecord(const Session& s, uint64_t seq, uint64_t bytes) {
  swipc::wire::OutOfLineRecord rec{seq, bytes};
  appendRecord(s, swipc::wire::RECORD_OUT_OF_LINE, &rec, sizeof rec);
}

// ------------------------------------------------------------------------------------------ modes

using Misbehaviour = std::function<void(Session&, SocketWatch&, const Options&)>;

void scribbleRandom(Session& s, SocketWatch&, const Options& o) {
  std::mt19937_64 rng(o.seed);
  auto* p = reinterpret_cast<uint8_t*>(s.upHeader());
  const size_t n = RING_HEADER_BYTES + s.upCapacity();
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(p + i, &v, 8);
  }
  s.ringDoorbell();
}

void tailPast(Session& s, SocketWatch&, const Options&) {
  putRecord(s, upTail(s), 8, swipc::wire::RECORD_ENVELOPE);
  publishTail(s, upHead(s) + s.upCapacity() * 2);
  s.ringDoorbell();
}

void tailUnaligned(Session& s, SocketWatch&, const Options&) {
  putRecord(s, upTail(s), 8, swipc::wire::RECORD_ENVELOPE);
  publishTail(s, upTail(s) + 12);
  s.ringDoorbell();
}

void badLength(Session& s, SocketWatch&, const Options&) {
  // Longer than a quarter of the ring, but the tail covers it, so only the length check can stop it.
  const uint32_t length = static_cast<uint32_t>(s.upCapacity() / 4 + 8);
  const uint64_t t = upTail(s);
  putRecord(s, t, length, swipc::wire::RECORD_ENVELOPE);
  publishTail(s, t + swipc::queue::RECORD_HEADER_BYTES + length);
  s.ringDoorbell();
}

void emptyEnvelope(Session& s, SocketWatch&, const Options&) {
  // A zero-length envelope as the very first record: nothing has been copied on this connection
  // yet, so the receiving fast lane has no buffer at all.
  appendRecord(s, swipc::wire::RECORD_ENVELOPE, nullptr, 0);
  s.ringDoorbell();
}

void crossingEnd(Session& s, SocketWatch& watch, const Options&) {
  // Legitimate filler posts (about an eighth of the ring each) until the tail sits in the last
  // quarter of the ring...
  const uint64_t cap = s.upCapacity();
  while ((upTail(s) & (cap - 1)) <= cap * 3 / 4) {
    capnp::MallocMessageBuilder mb;
    buildPost(mb, "HOSTILE_FILLER", cap / 8 - 256);
    sendEnvelope(s, mb, watch);
    if (watch.closed()) return;
  }
  // ...and the daemon has consumed them (so that only the crossing check can object)...
  const auto deadline = Clock::now() + 5s;
  s.upHeader()->writerWaiting.store(1, std::memory_order_seq_cst);  // ask for a wake once it has read
  s.ringDoorbell();
  while (upHead(s) != upTail(s)) {
    if (watch.pump()) return;
    if (!watch.waitReadable(deadline)) fail("the daemon did not consume the filler posts");
  }
  // ...then a record that is legal in size but runs past the end instead of padding first.
  const uint64_t t = upTail(s);
  const uint64_t toEnd = cap - (t & (cap - 1));
  const uint32_t length = static_cast<uint32_t>(cap / 4);
  if (swipc::queue::RECORD_HEADER_BYTES + length <= toEnd) fail("filler left the tail too far from the end");
  putRecord(s, t, length, swipc::wire::RECORD_ENVELOPE);
  publishTail(s, t + swipc::queue::RECORD_HEADER_BYTES + length);
  s.ringDoorbell();
}

void badPad(Session& s, SocketWatch&, const Options&) {
  // A PAD must run exactly to the end of the ring; this one claims 16 bytes at offset 0.
  const uint64_t t = upTail(s);
  putRecord(s, t, 16, swipc::queue::RECORD_TYPE_PAD);
  publishTail(s, t + swipc::queue::RECORD_HEADER_BYTES + 16);
  s.ringDoorbell();
}

void badType(Session& s, SocketWatch&, const Options&) {
  const uint64_t payload = 0;
  appendRecord(s, 77, &payload, sizeof payload);
  s.ringDoorbell();
}

void tornRecord(Session& s, SocketWatch&, const Options&) {
  // A plausible segment table (one segment of 7 words), then words that are no valid pointers.
  uint8_t bytes[64];
  std::memset(bytes, 0xff, sizeof bytes);
  const uint32_t table[2] = {0, 7};
  std::memcpy(bytes, table, sizeof table);
  appendRecord(s, swipc::wire::RECORD_ENVELOPE, bytes, sizeof bytes);
  s.ringDoorbell();
}

void badSchemaVersion(Session& s, SocketWatch& watch, const Options&) {
  capnp::MallocMessageBuilder mb;
  buildPost(mb, "GET_VERSION");
  mb.getRoot<swipc::schema::Envelope>().setSchemaVersion(99);
  sendEnvelope(s, mb, watch);
}

void hugeNesting(Session& s, SocketWatch& watch, const Options& o) {
  capnp::MallocMessageBuilder mb;
  buildPost(mb, "GET_VERSION");
  auto v = mb.getRoot<swipc::schema::Envelope>().getControllerPost().getPayload().initValue();
  for (int i = 0; i < o.depth; ++i) v = v.initList(1)[0];
  v.setText("bottom");
  sendEnvelope(s, mb, watch);  // over a ring record's size, so it goes out of line (sealed memfd)
}

/// Flattens `mb`, then makes the text pointer of the Value text `marker` claim far more bytes
/// than the segment holds (everything else stays well formed), and appends it as one record.
/// The daemon does not walk plain envelopes at receipt, so this checks that decoding them still
/// catches the lie.
void appendWithOversizedText(Session& s, capnp::MallocMessageBuilder& mb, const std::string& marker) {
  auto words = capnp::messageToFlatArray(mb);
  auto* w = reinterpret_cast<uint64_t*>(words.begin());
  const size_t n = words.size();
  // The marker's first word (the message is one segment: word 0 is the segment table).
  size_t target = 0;
  for (size_t i = 1; i < n && !target; ++i)
    if (std::memcmp(&w[i], marker.data(), std::min<size_t>(8, marker.size())) == 0) target = i;
  if (!target) fail("marker not found in the encoded message");
  bool patched = false;
  for (size_t i = 1; i < n && !patched; ++i) {
    const uint64_t p = w[i];
    if ((p & 3) != 1) continue;  // list pointers only
    const int64_t offset = static_cast<int32_t>(static_cast<uint32_t>(p)) >> 2;
    const uint32_t elemSize = static_cast<uint32_t>(p >> 32) & 7;
    const uint32_t count = static_cast<uint32_t>(p >> 35);
    if (elemSize != 2 || count != marker.size() + 1) continue;  // BYTE list of the text + NUL
    if (static_cast<int64_t>(i) + 1 + offset != static_cast<int64_t>(target)) continue;
    w[i] = (p & 0xFFFFFFFFull) | (uint64_t{2} << 32) | (uint64_t{0x1FFFFFFF} << 35);
    patched = true;
  }
  if (!patched) fail("text pointer not found in the encoded message");
  appendRecord(s, swipc::wire::RECORD_ENVELOPE, words.begin(), static_cast<uint32_t>(n * sizeof(capnp::word)));
  ++nextSeq;
  s.ringDoorbell();
}

/// A plain-looking ECHO post ({"type": "ECHO", "note": <marker>}, optionally registering a new
/// port pair) whose note text claims more bytes than the message has.
void postWithOversizedText(Session& s, bool withPort) {
  const std::string marker = "MARKER-0123456789";
  capnp::MallocMessageBuilder mb;
  auto post = buildPost(mb, "ECHO");
  if (withPort) setDescriptor(post.initPorts(1)[0], 0x1111222233334444ull, 0x5555666677778888ull, /*reg=*/true);
  auto map = post.initPayload().initValue().initMap(2);
  map[0].setKey("type");
  map[0].initValue().setText("ECHO");
  map[1].setKey("note");
  map[1].initValue().setText(marker);
  appendWithOversizedText(s, mb, marker);
}

void malformedValue(Session& s, SocketWatch&, const Options&) { postWithOversizedText(s, false); }
void malformedValueWithPort(Session& s, SocketWatch&, const Options&) { postWithOversizedText(s, true); }

void wrongKindClientPost(Session& s, SocketWatch& watch, const Options&) {
  capnp::MallocMessageBuilder mb;
  auto env = initEnvelope(mb);
  env.initClientPost().initPayload().initValue().setText("I am the service worker");
  sendEnvelope(s, mb, watch);
}

void wrongKindReply(Session& s, SocketWatch& watch, const Options&) {
  capnp::MallocMessageBuilder mb;
  auto env = initEnvelope(mb);
  auto r = env.initReply();
  r.setReplyId(1);
  r.initPayload().initValue().setText("a reply nobody asked for");
  sendEnvelope(s, mb, watch);
}

void oolUnsealed(Session& s, SocketWatch&, const Options&) {
  capnp::MallocMessageBuilder mb;
  buildPost(mb, "GET_VERSION");
  const size_t bytes = swipc::wire::encodedBytes(mb);
  UniqueFd fd = encodeToMemfd(mb, bytes);  // no seals: the sender could still change it
  capnp::MallocMessageBuilder notice(64);
  auto ool = notice.initRoot<swipc::schema::Control>().initOutOfLine();
  ool.setSeq(nextSeq);
  ool.setBytes(bytes);
  if (!sendWords(s.socketFd(), notice, {fd.get()})) fail("could not send the out-of-line notice");
  appendOutOfLineRecord(s, nextSeq++, bytes);
  s.ringDoorbell();
}

void oolMissingFd(Session& s, SocketWatch&, const Options&) {
  appendOutOfLineRecord(s, nextSeq++, 4096);  // no notice, no fd
  s.ringDoorbell();
}

void oolFdHoard(Session& s, SocketWatch& watch, const Options& o) {
  // Out-of-line notices, each with a (sealed, valid) memfd, for records that never come: the
  // daemon holds every fd until its record arrives, so it must cap how many it keeps.
  capnp::MallocMessageBuilder mb;
  buildPost(mb, "GET_VERSION");
  const size_t bytes = swipc::wire::encodedBytes(mb);
  auto fd = swipc::wire::encodeToSealedMemfd(mb, bytes);
  if (!fd) fail(fd.error().describe());
  const auto deadline = Clock::now() + 10s;
  for (uint64_t i = 0; i < o.fds; ++i) {
    capnp::MallocMessageBuilder notice(64);
    auto ool = notice.initRoot<swipc::schema::Control>().initOutOfLine();
    ool.setSeq(1'000'000 + i);
    ool.setBytes(bytes);
    auto words = capnp::messageToFlatArray(notice);
    for (;;) {
      IoStatus st = swipc::core::sendDatagram(s.socketFd(), words.begin(), words.size() * sizeof(capnp::word),
                                              {fd->get()});
      if (st == IoStatus::OK) break;
      if (st != IoStatus::AGAIN || watch.pump()) return;  // the daemon hung up on us
      if (Clock::now() >= deadline) fail("the daemon stopped reading the socket");
      pollfd p{s.socketFd(), POLLOUT, 0};
      ::poll(&p, 1, 100);
    }
  }
  say("sent-fds " + std::to_string(o.fds));
}

/// Text form of a payload for `reply <text>` lines: the text itself, a map's "type", or a marker.
std::string payloadText(swipc::schema::Payload::Reader p) {
  if (!p.isValue()) return "<typed>";
  auto v = p.getValue();
  if (v.isText()) return v.getText().cStr();
  if (v.isMap())
    for (auto e : v.getMap())
      if (e.getKey() == "type" && e.getValue().isText()) return e.getValue().getText().cStr();
  return "<not text>";
}

/// Waits for a portMessage to port `to`; its payload's text (payloadText), or nullopt when the
/// daemon hung up or the deadline passed.
std::optional<std::string> waitPortMessage(Session& s, SocketWatch& watch, uint64_t to, Deadline deadline) {
  while (!watch.closed()) {
    swipc::wire::Inbound in;
    swipc::Error err;
    auto st = s.conn->receive(in, err);
    if (st == swipc::core::Connection::RecvStatus::VIOLATION) fail("daemon wrote a bad record: " + err.message);
    if (st == swipc::core::Connection::RecvStatus::OK) {
      s.conn->publishConsumed();
      auto env = in.envelope();
      if (env.isPortMessage() && env.getPortMessage().getTo() == to)
        return payloadText(env.getPortMessage().getPayload());
      continue;
    }
    if (s.conn->armAndCheck()) continue;  // arrived while we armed: no wake will come for it
    if (watch.pump()) return std::nullopt;
    if (Clock::now() >= deadline) return std::nullopt;
    pollfd p[2] = {{s.socketFd(), POLLIN, 0}, {s.conn->wakeReadFd(), POLLIN, 0}};
    ::poll(p, 2, 100);  // the daemon writes the wake pipe when it has news; the socket if it leaves
    s.conn->drainWakes();
  }
  return std::nullopt;
}

/// messageSW by hand: GET_VERSION with a new pair's port in its transfer list, then the reply on
/// the pair's other end; prints `reply <text>` (or `no-reply`).
void roundTrip(Session& s, SocketWatch& watch) {
  const uint64_t port = randomPortId(), peer = randomPortId();
  capnp::MallocMessageBuilder mb;
  buildPostWithNewPair(mb, "GET_VERSION", port, peer);
  sendEnvelope(s, mb, watch);
  auto reply = waitPortMessage(s, watch, peer, Clock::now() + 5s);
  if (watch.closed()) return;
  say(reply ? "reply " + *reply : std::string("no-reply"));
}

/// A pair whose `kept` end the reference service worker holds (PORT_INITIALIZATION) and whose
/// `mine` end this client legitimately owns, once PORT_READY arrived on it.
struct OwnedPair {
  uint64_t kept = 0;
  uint64_t mine = 0;
};

std::optional<OwnedPair> initializePort(Session& s, SocketWatch& watch, bool silentPeer = false) {
  OwnedPair pair{randomPortId(), randomPortId()};
  capnp::MallocMessageBuilder mb;
  buildPostWithNewPair(mb, "PORT_INITIALIZATION", pair.kept, pair.mine, silentPeer);
  sendEnvelope(s, mb, watch);
  auto ready = waitPortMessage(s, watch, pair.mine, Clock::now() + 5s);
  if (!ready) {
    if (!watch.closed()) fail("no PORT_READY on the initialized port");
    return std::nullopt;
  }
  if (*ready != "PORT_READY") fail("expected PORT_READY, got " + *ready);
  say("port-ready");
  return pair;
}

/// A portPost from `from` (seq `seq`), optionally transferring one port described by `transfer`.
void sendPortPost(Session& s, SocketWatch& watch, uint64_t from, uint64_t seq,
                  const std::function<void(swipc::schema::PortDescriptor::Builder)>& transfer = {}) {
  capnp::MallocMessageBuilder mb;
  auto env = initEnvelope(mb);
  auto post = env.initPortPost();
  post.setFrom(from);
  post.setSeq(seq);
  post.initPayload().initValue().setText("from a port that is not mine");
  if (transfer) transfer(post.initPorts(1)[0]);
  sendEnvelope(s, mb, watch);
}

/// The well-behaved control for the port-* modes: a port kept by the service worker, then a
/// messageSW-style round trip. Must not be a violation.
void portHonest(Session& s, SocketWatch& watch, const Options&) {
  if (!initializePort(s, watch)) return;
  roundTrip(s, watch);
}

// ---- MessagePort ownership lies (DESIGN §13: the daemon re-checks every transfer it routes)

void portForeignDescriptor(Session& s, SocketWatch& watch, const Options&) {
  // An existing-port descriptor (register=false) for a port this client never owned.
  capnp::MallocMessageBuilder mb;
  auto post = buildPost(mb, "GET_VERSION");
  setDescriptor(post.initPorts(1)[0], randomPortId(), randomPortId(), /*reg=*/false, 5, 5);
  sendEnvelope(s, mb, watch);
}

void portPostUnknown(Session& s, SocketWatch& watch, const Options&) {
  // A port the daemon does not know (an honest client can post on a port whose close it answered
  // while the post waited for ring space): dropped, not a violation; the client is still served.
  sendPortPost(s, watch, randomPortId(), 1);
  roundTrip(s, watch);
}

void portPostNotOwned(Session& s, SocketWatch& watch, const Options&) {
  // The service worker holds `kept`: posting from it is speaking for someone else.
  auto pair = initializePort(s, watch);
  if (!pair) return;
  sendPortPost(s, watch, pair->kept, 1);
}

void portRegisterSelfPeer(Session& s, SocketWatch& watch, const Options&) {
  const uint64_t id = randomPortId();
  capnp::MallocMessageBuilder mb;
  buildPostWithNewPair(mb, "GET_VERSION", id, id);
  sendEnvelope(s, mb, watch);
}

void portRegisterExistingPort(Session& s, SocketWatch& watch, const Options&) {
  // Registers `mine` (already registered, owned here) a second time as a new pair's port.
  auto pair = initializePort(s, watch);
  if (!pair) return;
  capnp::MallocMessageBuilder mb;
  buildPostWithNewPair(mb, "GET_VERSION", pair->mine, randomPortId());
  sendEnvelope(s, mb, watch);
}

void portRegisterExistingPeer(Session& s, SocketWatch& watch, const Options&) {
  // A "new" pair whose peer is the port the service worker holds.
  auto pair = initializePort(s, watch);
  if (!pair) return;
  capnp::MallocMessageBuilder mb;
  buildPostWithNewPair(mb, "GET_VERSION", randomPortId(), pair->kept);
  sendEnvelope(s, mb, watch);
}

void portTransferTwice(Session& s, SocketWatch& watch, const Options&) {
  // One post whose transfer list names `mine` twice (DataCloneError in the library).
  auto pair = initializePort(s, watch);
  if (!pair) return;
  capnp::MallocMessageBuilder mb;
  auto ports = buildPost(mb, "GET_VERSION").initPorts(2);
  for (unsigned i = 0; i < 2; ++i) setDescriptor(ports[i], pair->mine, pair->kept, /*reg=*/false, 1, 2);
  sendEnvelope(s, mb, watch);
}

void portPostTransfersItself(Session& s, SocketWatch& watch, const Options&) {
  // A post on `mine` whose transfer list holds `mine` itself (the library refuses this with
  // DataCloneError before sending; on the wire it is a lie).
  auto pair = initializePort(s, watch);
  if (!pair) return;
  sendPortPost(s, watch, pair->mine, 1, [&](swipc::schema::PortDescriptor::Builder d) {
    setDescriptor(d, pair->mine, pair->kept, /*reg=*/false, /*sendSeq=*/2, /*recvNext=*/2);
  });
}

void portShipSilent(Session& s, SocketWatch& watch, const Options&) {
  // `mine` registered as messageSW's reply port (silentPeer: it stays here, and the daemon writes
  // its messages straight into this client's ring, keeping no copy for a move), then shipped on
  // in a later post. The service worker keeps `kept` (PORT_INITIALIZATION rather than a request
  // it answers and closes), so `mine` is still registered, and owned here, when it is shipped.
  auto pair = initializePort(s, watch, /*silentPeer=*/true);
  if (!pair) return;
  capnp::MallocMessageBuilder mb;
  setDescriptor(buildPost(mb, "GET_VERSION").initPorts(1)[0], pair->mine, pair->kept, /*reg=*/false, /*sendSeq=*/1,
                /*recvNext=*/2);
  sendEnvelope(s, mb, watch);
}

/// Waits until the daemon has published more than `after` in our down ring (we never read it);
/// the new tail, or nullopt when it hung up or the deadline passed.
std::optional<uint64_t> waitDownTailPast(Session& s, SocketWatch& watch, uint64_t after, Deadline deadline) {
  for (;;) {
    const uint64_t t = s.downHeader()->tail.load(std::memory_order_acquire);
    if (t != after) return t;
    if (watch.pump() || Clock::now() >= deadline) return std::nullopt;
    pollfd p[2] = {{s.socketFd(), POLLIN, 0}, {s.conn->wakeReadFd(), POLLIN, 0}};
    ::poll(p, 2, 20);
    s.conn->drainWakes();
  }
}

void portDropCorruptDown(Session& s, SocketWatch& watch, const Options&) {
  // The daemon's ring writer re-reads our down ring's head (the index we own) only when the ring
  // looks full from the head it last saw (0: we never consume). So first fill the ring exactly to
  // its capacity with ECHO replies we leave unread: every write after that must re-read the head.
  const uint64_t cap = s.downCapacity();
  const uint64_t big = cap / 8;  // a reply well under a record's limit (a quarter of the ring)
  uint64_t tail = s.downHeader()->tail.load(std::memory_order_acquire);
  if (s.downHeader()->head.load(std::memory_order_acquire) != 0 || tail > cap)
    fail("the down ring is not fresh");
  const auto deadline = Clock::now() + 10s;
  std::optional<uint64_t> overhead;  // reply record bytes beyond its pad (pads are word multiples)
  while (tail != cap) {
    const uint64_t left = cap - tail;
    uint64_t pad = big;
    if (overhead) {
      if (left < *overhead + 8) fail("cannot fill the down ring exactly: " + std::to_string(left) + " bytes left");
      if (left - *overhead <= big) pad = left - *overhead;              // the last one: exactly to the end
      else if (left - *overhead - big < *overhead + 8) pad = big / 2;  // leave room for a whole last one
    }
    capnp::MallocMessageBuilder mb;
    buildPost(mb, "ECHO", pad);
    sendEnvelope(s, mb, watch);
    if (watch.closed()) return;
    auto t = waitDownTailPast(s, watch, tail, deadline);
    if (!t) {
      if (watch.closed()) return;
      fail("no ECHO reply in the down ring");
    }
    if (!overhead) overhead = *t - tail - pad;
    tail = *t;
  }
  // Our head, impossible: ahead of everything the daemon ever wrote.
  s.downHeader()->head.store(tail + 2 * cap, std::memory_order_release);
  say("down-ring-corrupted");
  // One fast-lane post (one fresh pair, nothing queued, a Value) the service worker ignores: the
  // daemon drops its port when the post is done, which closes it, so it writes portClosed for
  // our end (not silentPeer) into the down ring, finds the ring broken and disconnects us.
  capnp::MallocMessageBuilder mb;
  buildPostWithNewPair(mb, "NOOP", randomPortId(), randomPortId(), /*silentPeer=*/false);
  sendEnvelope(s, mb, watch);
}

// ---- Pointers the receipt walk (totalSize()) passes but a later generated-reader access throws
// for: lists of zero-sized elements (capnp charges their "amplified read", one word an element,
// only when they are read) and pointers of the wrong kind. The handlers that read them must not
// take the daemon down: the offender is a protocol violation like any other malformed message.

/// The words of a one-segment message under construction. Patched in place, they are what
/// sendEnvelope() sends: Connection::send copies the segment verbatim behind its table word.
uint64_t* segmentWords(capnp::MallocMessageBuilder& mb, size_t& count) {
  auto segments = mb.getSegmentsForOutput();
  if (segments.size() != 1) fail("expected a one-segment message");
  count = segments[0].size();
  return reinterpret_cast<uint64_t*>(const_cast<capnp::word*>(segments[0].begin()));
}

/// The index, in the message's only segment, of pointer `index` of struct `b` (its pointer
/// section follows its data section, whose size a builder always has in whole words).
template <typename B>
size_t pointerIndex(capnp::MallocMessageBuilder& mb, B b, unsigned index) {
  size_t count = 0;
  const auto* seg = reinterpret_cast<const uint8_t*>(segmentWords(mb, count));
  auto data = capnp::AnyStruct::Builder(kj::mv(b)).getDataSection();
  const ptrdiff_t at = reinterpret_cast<const uint8_t*>(data.end()) - seg;
  if (at < 0 || at % 8 != 0) fail("struct outside the segment");
  const size_t i = static_cast<size_t>(at / 8) + index;
  if (i >= count) fail("pointer outside the segment");
  return i;
}

constexpr uint64_t KIND_STRUCT = 0, KIND_LIST = 1;
constexpr uint64_t ELEMENT_VOID = 0, ELEMENT_INLINE_COMPOSITE = 7;

/// A list pointer word (offset in words from the word after it, element size, count).
uint64_t listPointer(int32_t offset, uint64_t elementSize, uint64_t count) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(offset) << 2) | KIND_LIST) | ((count << 3 | elementSize) << 32);
}

/// A struct pointer word.
uint64_t structPointer(int32_t offset, uint16_t dataWords, uint16_t ptrs) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(offset) << 2) | KIND_STRUCT) |
         (static_cast<uint64_t>(dataWords) | static_cast<uint64_t>(ptrs) << 16) << 32;
}

/// Makes the (empty, as initXxx(0) writes it) struct list that pointer word `at` points to claim
/// `elements` elements of zero data words and zero pointers: only its tag word changes (element
/// count in the offset field), the list pointer keeps its word count of 0, which is all such a
/// list needs. A few bytes that claim up to 2^30-1 elements.
void makeZeroSizedStructList(uint64_t* w, size_t n, size_t at, uint64_t elements) {
  const uint64_t p = w[at];
  if ((p & 3) != KIND_LIST || ((p >> 32) & 7) != ELEMENT_INLINE_COMPOSITE || (p >> 35) != 0)
    fail("expected an empty struct list pointer");
  const int64_t tag = static_cast<int64_t>(at) + 1 + (static_cast<int32_t>(static_cast<uint32_t>(p)) >> 2);
  if (tag < 0 || static_cast<size_t>(tag) >= n || (w[tag] & 3) != KIND_STRUCT || (w[tag] & 0xFFFFFFFFull) != 0)
    fail("expected the tag word of an empty struct list");
  w[tag] = static_cast<uint64_t>(static_cast<uint32_t>(elements << 2) | KIND_STRUCT);  // data 0, ptrs 0
}

constexpr uint64_t MAX_LIST_ELEMENTS = (uint64_t{1} << 29) - 1;
constexpr uint64_t AMPLIFIED_ELEMENTS = uint64_t{1} << 28;

void amplifiedPortList(Session& s, SocketWatch& watch, const Options&) {
  // A portPost whose `ports` is a List(Void) of 2^29-1 elements: no bytes behind it, but reading
  // it as the List(PortDescriptor) it should be charges 2^29-1 words. `from` is a port the daemon
  // does not know (dropped, not a violation, were the list sound): the ports are its first read.
  capnp::MallocMessageBuilder mb;
  auto env = initEnvelope(mb);
  auto post = env.initPortPost();
  post.setFrom(randomPortId());
  post.setSeq(1);
  post.initPayload().initValue().setText("amplified ports");
  post.initPorts(1);
  size_t n = 0;
  uint64_t* w = segmentWords(mb, n);
  w[pointerIndex(mb, post, 1)] = listPointer(0, ELEMENT_VOID, MAX_LIST_ELEMENTS);
  sendEnvelope(s, mb, watch);
}

/// A controllerPost NOOP registering two fresh pairs whose second descriptor's `queued` claims
/// 2^28 zero-sized messages; the first one's queue is empty, or (`firstQueued`) holds one message
/// (so that the envelope is not plain, wire::isPlain, and only the walk looks at it at receipt).
void postWithAmplifiedQueue(Session& s, SocketWatch& watch, bool firstQueued) {
  capnp::MallocMessageBuilder mb;
  auto ports = buildPost(mb, "NOOP").initPorts(2);
  setDescriptor(ports[0], randomPortId(), randomPortId(), /*reg=*/true);
  setDescriptor(ports[1], randomPortId(), randomPortId(), /*reg=*/true);
  if (firstQueued) {
    auto q = ports[0].initQueued(1)[0];
    q.setSeq(1);
    q.initPayload().initValue().setText("queued");
  } else {
    ports[0].initQueued(0);
  }
  ports[1].initQueued(0);
  size_t n = 0;
  uint64_t* w = segmentWords(mb, n);
  makeZeroSizedStructList(w, n, pointerIndex(mb, ports[1], 0), AMPLIFIED_ELEMENTS);
  sendEnvelope(s, mb, watch);
}

void amplifiedQueuedList(Session& s, SocketWatch& watch, const Options&) { postWithAmplifiedQueue(s, watch, false); }
void amplifiedQueuedListAfterQueue(Session& s, SocketWatch& watch, const Options&) {
  postWithAmplifiedQueue(s, watch, true);
}

void bcJoinNameIsStruct(Session& s, SocketWatch& watch, const Options&) {
  // The channel name (Text) pointer made a struct pointer (one data word: the text's own bytes).
  capnp::MallocMessageBuilder mb;
  auto env = initEnvelope(mb);
  auto join = env.initBcJoin();
  join.setObjectId(1);
  join.setName("hostile-name");
  size_t n = 0;
  uint64_t* w = segmentWords(mb, n);
  const size_t at = pointerIndex(mb, join, 0);
  const uint64_t p = w[at];
  if ((p & 3) != KIND_LIST || ((p >> 32) & 7) != 2) fail("expected the name's text pointer");
  w[at] = structPointer(static_cast<int32_t>(static_cast<uint32_t>(p)) >> 2, 1, 0);
  sendEnvelope(s, mb, watch);
}

/// Waits for the bcJoined of object `objectId` in the down ring; false when the daemon hung up,
/// answered with an error first, or the deadline passed.
bool waitBcJoined(Session& s, SocketWatch& watch, uint32_t objectId, Deadline deadline) {
  while (!watch.closed()) {
    swipc::wire::Inbound in;
    swipc::Error err;
    auto st = s.conn->receive(in, err);
    if (st == swipc::core::Connection::RecvStatus::VIOLATION) fail("daemon wrote a bad record: " + err.message);
    if (st == swipc::core::Connection::RecvStatus::OK) {
      s.conn->publishConsumed();
      auto env = in.envelope();
      if (env.isBcJoined() && env.getBcJoined().getObjectId() == objectId) return true;
      if (env.isError()) fail(std::string("bcJoin answered with ") + env.getError().getName().cStr());
      continue;
    }
    if (s.conn->armAndCheck()) continue;
    if (watch.pump()) return false;
    if (Clock::now() >= deadline) return false;
    pollfd p[2] = {{s.socketFd(), POLLIN, 0}, {s.conn->wakeReadFd(), POLLIN, 0}};
    ::poll(p, 2, 100);
    s.conn->drainWakes();
  }
  return false;
}

void amplifiedBcValue(Session& s, SocketWatch& watch, const Options&) {
  // Joins a channel properly, then posts on it a list Value whose List(Value) claims 2^28
  // zero-sized elements (the daemon copies the payload into the channel ring).
  constexpr uint32_t OBJECT = 7;
  {
    capnp::MallocMessageBuilder mb;
    auto env = initEnvelope(mb);
    auto join = env.initBcJoin();
    join.setObjectId(OBJECT);
    join.setName("hostile-amplified");
    sendEnvelope(s, mb, watch);
  }
  if (!waitBcJoined(s, watch, OBJECT, Clock::now() + 5s)) {
    if (!watch.closed()) fail("no bcJoined");
    return;
  }
  say("bc-joined");
  capnp::MallocMessageBuilder mb;
  auto env = initEnvelope(mb);
  auto post = env.initBcPost();
  post.setObjectId(OBJECT);
  auto value = post.initPayload().initValue();
  value.initList(0);
  size_t n = 0;
  uint64_t* w = segmentWords(mb, n);
  makeZeroSizedStructList(w, n, pointerIndex(mb, value, 0), AMPLIFIED_ELEMENTS);
  sendEnvelope(s, mb, watch);
}

// ---- Relays (issue 14, findings 1 and 2): bytes another page will read. The daemon copies a
// payload verbatim (a Cap'n Proto copy keeps a pointer of any kind as it is), so a payload whose
// Value pointer is a text reaches its receiver as written unless the daemon checks it.

/// Makes `payload` a Value payload (union tag VALUE) whose Value pointer is a text pointer.
void setWrongKindPayload(swipc::schema::Payload::Builder payload) {
  payload.initValue();  // tag VALUE, then its pointer slot overwritten with a text
  capnp::AnyStruct::Builder(kj::mv(payload)).getPointerSection()[0].setAs<capnp::Text>("I am not a Value");
}

/// A controllerPost {"type":"RELAY_PORT","to":<to>} shipping the fresh pair (port, peer): `port`
/// to the service worker (who passes it on to `to`), `peer` staying here. With `queuedWrongKind`
/// the shipped port carries one queued message whose payload is a wrong-kind pointer.
void sendRelayPort(Session& s, SocketWatch& watch, const std::string& to, uint64_t port, uint64_t peer,
                   bool queuedWrongKind) {
  capnp::MallocMessageBuilder mb;
  auto env = initEnvelope(mb);
  auto post = env.initControllerPost();
  auto map = post.initPayload().initValue().initMap(2);
  map[0].setKey("type");
  map[0].initValue().setText("RELAY_PORT");
  map[1].setKey("to");
  map[1].initValue().setText(to);
  auto d = post.initPorts(1)[0];
  setDescriptor(d, port, peer, /*reg=*/true);
  if (queuedWrongKind) {
    auto q = d.initQueued(1)[0];
    q.setTo(port);
    q.setSeq(1);
    setWrongKindPayload(q.initPayload());
    d.setRecvNext(2);
  } else {
    d.initQueued(0);
  }
  sendEnvelope(s, mb, watch);
}

void relayWrongKindQueued(Session& s, SocketWatch& watch, const Options& o) {
  if (o.to.empty()) fail("--to is required");
  sendRelayPort(s, watch, o.to, randomPortId(), randomPortId(), /*queuedWrongKind=*/true);
}

void relayWrongKindPost(Session& s, SocketWatch& watch, const Options& o) {
  if (o.to.empty()) fail("--to is required");
  const uint64_t port = randomPortId(), peer = randomPortId();
  sendRelayPort(s, watch, o.to, port, peer, /*queuedWrongKind=*/false);
  // The daemon reads our envelopes in order: by the time it reads this post, `port` is `to`'s.
  capnp::MallocMessageBuilder mb;
  auto env = initEnvelope(mb);
  auto post = env.initPortPost();
  post.setFrom(peer);
  post.setSeq(1);
  setWrongKindPayload(post.initPayload());
  post.initPorts(0);
  sendEnvelope(s, mb, watch);
}

/// Reads what the daemon wrote to us; the name of the first ErrorReport, if any came.
std::optional<std::string> drainForError(Session& s) {
  for (;;) {
    swipc::wire::Inbound in;
    swipc::Error err;
    auto st = s.conn->receive(in, err);
    if (st == swipc::core::Connection::RecvStatus::VIOLATION) fail("daemon wrote a bad record: " + err.message);
    if (st != swipc::core::Connection::RecvStatus::OK) {
      s.conn->publishConsumed();
      return std::nullopt;
    }
    auto env = in.envelope();
    if (env.isError()) {
      s.conn->publishConsumed();
      return std::string(env.getError().getName().cStr());
    }
  }
}

void portQuota(Session& s, SocketWatch& watch, const Options& o) {
  // NOOP posts, each registering `batch` fresh pairs: the service worker drops the ports it got,
  // so each end kept here becomes a tombstone waiting for a portClose we never send.
  constexpr uint64_t BATCH = 512;
  uint64_t registered = 0;
  while (registered < o.ports) {
    const uint64_t n = std::min(BATCH, o.ports - registered);
    capnp::MallocMessageBuilder mb;
    auto ports = buildPost(mb, "NOOP").initPorts(static_cast<unsigned>(n));
    for (unsigned i = 0; i < n; ++i) setDescriptor(ports[i], randomPortId(), randomPortId(), /*reg=*/true);
    sendEnvelope(s, mb, watch);
    if (watch.closed()) return;
    registered += n;
    if (auto name = drainForError(s)) {
      say("refused " + *name + " after " + std::to_string(registered));
      return;
    }
  }
  // The last posts may still be in flight: wait for their answer.
  const auto deadline = Clock::now() + 5s;
  while (Clock::now() < deadline && !watch.pump()) {
    if (auto name = drainForError(s)) {
      say("refused " + *name + " after " + std::to_string(registered));
      return;
    }
    pollfd p[2] = {{s.socketFd(), POLLIN, 0}, {s.conn->wakeReadFd(), POLLIN, 0}};
    ::poll(p, 2, 50);
    s.conn->drainWakes();
  }
  say("registered " + std::to_string(registered));
}

/// Posts `o.count` envelopes (ECHO with `o.pad` bytes, or NOOP asking for an ack) and never reads
/// its down ring: everything the daemon owes it (replies, acks) has to wait in the daemon.
void floodNeverReading(Session& s, SocketWatch& watch, const Options& o, bool echo) {
  say("flooding " + std::to_string(o.count));
  uint64_t sent = 0;
  for (; sent < o.count; ++sent) {
    capnp::MallocMessageBuilder mb;
    auto post = buildPost(mb, echo ? "ECHO" : "NOOP", echo ? o.pad : 0);
    if (!echo) post.setWantAck(true);
    sendEnvelope(s, mb, watch);
    if (watch.closed()) break;
  }
  say("flooded " + std::to_string(sent));
}

void ackFlood(Session& s, SocketWatch& watch, const Options& o) { floodNeverReading(s, watch, o, false); }
void echoFlood(Session& s, SocketWatch& watch, const Options& o) { floodNeverReading(s, watch, o, true); }

void floodWakes(Session& s, SocketWatch& watch, const Options& o) {
  say("flooding " + std::to_string(o.wakes));
  for (uint64_t i = 0; i < o.wakes; ++i) s.ringDoorbell();
  say("flooded " + std::to_string(o.wakes));
  roundTrip(s, watch);
}

const std::map<std::string, Misbehaviour>& ringModes() {
  static const std::map<std::string, Misbehaviour> modes = {
      {"scribble-random", scribbleRandom},
      {"tail-past", tailPast},
      {"tail-unaligned", tailUnaligned},
      {"bad-length", badLength},
      {"empty-envelope", emptyEnvelope},
      {"crossing-end", crossingEnd},
      {"bad-pad", badPad},
      {"bad-type", badType},
      {"torn-record", tornRecord},
      {"bad-schema-version", badSchemaVersion},
      {"huge-nesting", hugeNesting},
      {"malformed-value", malformedValue},
      {"malformed-value-with-port", malformedValueWithPort},
      {"wrong-kind", wrongKindClientPost},
      {"wrong-kind-reply", wrongKindReply},
      {"ool-unsealed", oolUnsealed},
      {"ool-missing-fd", oolMissingFd},
      {"ool-fd-hoard", oolFdHoard},
      {"flood-wakes", floodWakes},
      {"ack-flood", ackFlood},
      {"echo-flood", echoFlood},
      {"port-honest", portHonest},
      {"port-foreign-descriptor", portForeignDescriptor},
      {"port-post-unknown", portPostUnknown},
      {"port-post-not-owned", portPostNotOwned},
      {"port-register-self-peer", portRegisterSelfPeer},
      {"port-register-existing-port", portRegisterExistingPort},
      {"port-register-existing-peer", portRegisterExistingPeer},
      {"port-post-transfers-itself", portPostTransfersItself},
      {"port-transfer-twice", portTransferTwice},
      {"port-ship-silent", portShipSilent},
      {"port-drop-corrupt-down", portDropCorruptDown},
      {"amplified-port-list", amplifiedPortList},
      {"amplified-queued-list", amplifiedQueuedList},
      {"amplified-queued-list-after-queue", amplifiedQueuedListAfterQueue},
      {"bc-join-name-is-struct", bcJoinNameIsStruct},
      {"amplified-bc-value", amplifiedBcValue},
      {"relay-wrong-kind-queued", relayWrongKindQueued},
      {"relay-wrong-kind-post", relayWrongKindPost},
      {"port-quota", portQuota},
  };
  return modes;
}

// ------------------------------------------------------------------------------------------ main

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "hostile_client: %s\nusage: hostile_client --runtime-dir DIR --scope S --mode MODE "
               "[--linger-ms N] [--seed N] [--depth N] [--wakes N] [--fds N] [--to ID] [--ports N] [--count N] [--pad B]\nmodes: version-mismatch no-hello "
               "garbage-hello",
               why.c_str());
  for (const auto& [name, fn] : ringModes()) std::fprintf(stderr, " %s", name.c_str());
  std::fprintf(stderr, "\n");
  std::exit(2);
}

Options parseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage("missing value for " + a);
    std::string v = argv[++i];
    try {
      if (a == "--runtime-dir") o.runtimeDir = v;
      else if (a == "--scope") o.scope = v;
      else if (a == "--mode") o.mode = v;
      else if (a == "--linger-ms") o.linger = std::chrono::milliseconds(std::stoll(v));
      else if (a == "--seed") o.seed = std::stoull(v, nullptr, 0);
      else if (a == "--depth") o.depth = std::stoi(v);
      else if (a == "--wakes") o.wakes = std::stoull(v);
      else if (a == "--fds") o.fds = std::stoull(v);
      else if (a == "--to") o.to = v;
      else if (a == "--ports") o.ports = std::stoull(v);
      else if (a == "--count") o.count = std::stoull(v);
      else if (a == "--pad") o.pad = std::stoull(v);
      else usage("unknown option " + a);
    } catch (const std::exception&) {
      usage("bad value for " + a + ": " + v);
    }
  }
  if (o.mode.empty()) usage("--mode is required");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parseArgs(argc, argv);
  const auto attachDeadline = Clock::now() + 5s;

  if (o.mode == "no-hello") {
    UniqueFd sock = connectOrFail(o);
    SocketWatch watch(sock.get());
    reportEnd(watch, Clock::now() + o.linger);
    return 0;
  }
  if (o.mode == "garbage-hello") {
    UniqueFd sock = connectOrFail(o);
    std::mt19937_64 rng(o.seed);
    std::vector<uint64_t> garbage(8);
    for (auto& w : garbage) w = rng();
    if (swipc::core::sendDatagram(sock.get(), garbage.data(), garbage.size() * sizeof(uint64_t)) != IoStatus::OK)
      fail("could not send the garbage");
    SocketWatch watch(sock.get());
    reportEnd(watch, Clock::now() + o.linger);
    return 0;
  }
  if (o.mode == "version-mismatch") {
    UniqueFd sock = connectOrFail(o);
    SocketWatch watch(sock.get());
    sendHello(sock.get(), 99, o.scope);
    auto session = finishAttach(sock, watch, attachDeadline);
    if (session) {  // welcomed although it should not have been
      SocketWatch attached(session->socketFd());
      reportEnd(attached, Clock::now() + o.linger);
      return 0;
    }
    reportEnd(watch, Clock::now() + o.linger);
    return 0;
  }

  auto it = ringModes().find(o.mode);
  if (it == ringModes().end()) usage("unknown mode " + o.mode);
  UniqueFd sock = connectOrFail(o);
  SocketWatch handshakeWatch(sock.get());
  sendHello(sock.get(), swipc::schema::PROTOCOL_VERSION, o.scope);
  auto session = finishAttach(sock, handshakeWatch, attachDeadline);
  if (!session) {
    reportEnd(handshakeWatch, Clock::now() + o.linger);
    return 1;
  }
  SocketWatch watch(session->socketFd());
  it->second(*session, watch, o);
  reportEnd(watch, Clock::now() + o.linger);
  return 0;
}
