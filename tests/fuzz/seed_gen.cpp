// fuzz_seed_gen <corpus dir>: writes the seed corpus of every fuzz target from real encoders.
// Ring targets: envelopes sent through the library's own core::Connection (the general path's
// Cap'n Proto framing and the fast lane's direct encoding) into a real segment, then read back
// raw from the ring with the real reader, so a seed holds exactly the record bytes a well-behaved
// peer writes. Broadcast: a region formatted and written by the daemon's BroadcastWriter.
// JSON/Value: texts and the Cap'n Proto encoding of Values (wire::writeValue).
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <capnp/serialize.h>

#include "core/connection.h"
#include "fuzz_support.h"
#include "queue/broadcast_ring.h"
#include "shm/memfd.h"
#include "wire/plain_post.h"
#include "wire/value_codec.h"

namespace {

using namespace swipc;
namespace fs = std::filesystem;
using Fill = std::function<void(schema::Envelope::Builder)>;

void writeFile(const fs::path& dir, const std::string& name, const std::vector<uint8_t>& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                    static_cast<std::streamsize>(bytes.size()));
}

/// Values real pages post: scalars, text, bytes, nesting, maps as page_client sends them.
std::vector<Value> sampleValues() {
  return {Value(),
          Value(true),
          Value(int64_t{-42}),
          Value(3.5),
          Value("hello"),
          Value(Bytes{{0, 1, 2, 0xff}}),
          Value(Value::List{Value(1), Value("two"), Value(Value::List{Value(3.0)})}),
          Value::map({{"type", Value("PORT_INITIALIZATION")}, {"n", Value(7)}}),
          Value::map({{"deep", Value(Value::List{Value::map({{"k", Value(Value::List{})}})})}})};
}

/// One segment, both ends: `send` writes with the library's Connection of `from`, `take` reads
/// the raw records of that direction.
struct Link {
  std::unique_ptr<core::Connection> daemon, page;
  swipc::shm::Mapping map;
  queue::RingReader upReader, downReader;
  uint64_t seq = 0;

  Link() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    daemon = core::Connection::createForDaemon(UniqueFd(sv[0]), core::RingSizes{64 * 1024, 64 * 1024}, 1 << 20).value();
    auto dup = [](int fd) { return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); };
    page = core::Connection::openForClient(UniqueFd(sv[1]), dup(daemon->segmentFd()), dup(daemon->doorbellFd()),
                                           dup(daemon->wakeReadFd()), 1 << 20)
               .value();
    map = swipc::shm::Mapping::map(daemon->segmentFd(), daemon->segmentBytes(), swipc::shm::Access::READ_WRITE).value();
    auto l = *swipc::shm::readHeader(map.data(), map.size(), queue::RING_HEADER_BYTES);
    auto ring = [&](uint64_t off, uint64_t cap) {
      return queue::RingReader(reinterpret_cast<queue::RingHeader*>(map.data() + off),
                               map.data() + off + queue::RING_HEADER_BYTES, cap);
    };
    upReader = ring(l.upOffset, l.upCapacity);
    downReader = ring(l.downOffset, l.downCapacity);
  }
  void send(core::Connection& from, const Fill& fill) {
    capnp::MallocMessageBuilder mb;
    auto env = mb.initRoot<schema::Envelope>();
    env.setSchemaVersion(schema::SCHEMA_VERSION);
    env.setSeq(++seq);
    fill(env);
    if (from.send(mb, seq) != core::Connection::SendStatus::OK) std::abort();
  }
  void sendPlain(core::Connection& from, wire::PlainMessage m, const Value& v) {
    m.seq = ++seq;
    if (from.sendValue(m, v) != core::Connection::ValueStatus::SENT) std::abort();
  }
  /// The raw records of one direction so far, in the fuzz input format.
  std::vector<uint8_t> take(bool up) {
    auto& r = up ? upReader : downReader;
    std::vector<uint8_t> out;
    queue::RecordView v;
    while (r.peek(v) == queue::RingStatus::OK) {
      fuzz::appendRecord(out, v.type == wire::RECORD_ENVELOPE ? 0 : static_cast<uint8_t>(v.type), v.payload, v.length);
      r.release();
    }
    return out;
  }
};

void setPort(schema::PortDescriptor::Builder d, uint64_t id, uint64_t peer, bool reg) {
  d.setPortId(id);
  d.setPeerId(peer);
  d.setSendSeq(1);
  d.setRecvNext(1);
  d.setRegister(reg);
}

/// Page -> daemon traffic (daemon_receive).
void daemonSeeds(const fs::path& dir) {
  int n = 0;
  auto emit = [&](const std::function<void(Link&)>& script) {
    Link l;
    script(l);
    writeFile(dir, "seed-" + std::to_string(n++), l.take(true));
  };
  for (const Value& v : sampleValues()) {
    emit([&](Link& l) {  // controller.postMessage, general path
      l.send(*l.page, [&](auto e) { wire::writeValue(v, e.initControllerPost().initPayload().initValue()); });
    });
    emit([&](Link& l) {  // the fast lane, with an ack wanted
      wire::PlainMessage m;
      m.wantAck = true;
      l.sendPlain(*l.page, m, v);
    });
  }
  emit([](Link& l) {  // messageSW: a post carrying a fresh pair's end, then a post and a close on it
    wire::PlainMessage m;
    m.hasPort = true;
    m.port = wire::PlainPort{0x1001, 0x1002, 1, 1, true};
    l.sendPlain(*l.page, m, Value("ask"));
    l.send(*l.page, [](auto e) {
      auto p = e.initControllerPost();
      wire::writeValue(Value("with ports"), p.initPayload().initValue());
      auto ports = p.initPorts(1);
      setPort(ports[0], 0x2001, 0x2002, true);
    });
    l.send(*l.page, [](auto e) {
      auto p = e.initPortPost();
      p.setFrom(0x2002);
      p.setSeq(1);
      wire::writeValue(Value("on the port"), p.initPayload().initValue());
    });
    l.send(*l.page, [](auto e) { e.initPortAck().setPort(0x2002); });
    wire::PlainMessage c;
    c.kind = schema::Envelope::PORT_CLOSE;
    c.to = 0x2002;
    c.portSeq = 1;
    l.sendPlain(*l.page, c, Value());
  });
  emit([](Link& l) {  // a port descriptor whose queue holds a message (the relay of finding 1)
    l.send(*l.page, [](auto e) {
      auto p = e.initControllerPost();
      wire::writeValue(Value("queued"), p.initPayload().initValue());
      auto d = p.initPorts(1)[0];
      setPort(d, 0x3001, 0x3002, true);
      auto q = d.initQueued(1)[0];
      q.setTo(0x3001);
      q.setSeq(1);
      wire::writeValue(Value::map({{"x", Value(1)}}), q.initPayload().initValue());
    });
  });
  emit([](Link& l) {  // BroadcastChannel: join, post, leave
    l.send(*l.page, [](auto e) {
      auto j = e.initBcJoin();
      j.setObjectId(1);
      j.setName("fuzz");
    });
    l.send(*l.page, [](auto e) {
      auto p = e.initBcPost();
      p.setObjectId(1);
      p.setWantAck(true);
      wire::writeValue(Value("to all"), p.initPayload().initValue());
    });
    l.send(*l.page, [](auto e) { e.initBcLeave().setObjectId(1); });
  });
  emit([](Link& l) {  // focus and visibility, an error report
    l.send(*l.page, [](auto e) {
      auto s = e.initClientState();
      s.setFocused(true);
      s.setVisible(true);
      s.setFocusChanged(true);
    });
    l.send(*l.page, [](auto e) {
      auto r = e.initError();
      r.setName("DataCloneError");
      r.setMessage("x");
      r.setRefSeq(1);
    });
  });
}

/// Daemon -> page traffic (page_receive).
void pageSeeds(const fs::path& dir) {
  int n = 0;
  auto emit = [&](const std::function<void(Link&)>& script) {
    Link l;
    script(l);
    writeFile(dir, "seed-" + std::to_string(n++), l.take(false));
  };
  for (const Value& v : sampleValues()) {
    emit([&](Link& l) {  // client.postMessage from the service worker, both lanes
      l.send(*l.daemon, [&](auto e) { wire::writeValue(v, e.initClientPost().initPayload().initValue()); });
      wire::PlainMessage m;
      m.kind = schema::Envelope::CLIENT_POST;
      l.sendPlain(*l.daemon, m, v);
    });
  }
  emit([](Link& l) {  // a post carrying a port with a queued message, then messages and a close on it
    l.send(*l.daemon, [](auto e) {
      auto p = e.initClientPost();
      wire::writeValue(Value("port"), p.initPayload().initValue());
      auto d = p.initPorts(1)[0];
      setPort(d, 0x4001, 0x4002, false);
      auto q = d.initQueued(1)[0];
      q.setTo(0x4001);
      q.setSeq(1);
      wire::writeValue(Value("queued"), q.initPayload().initValue());
    });
    l.send(*l.daemon, [](auto e) {
      auto m = e.initPortMessage();
      m.setTo(0x4001);
      m.setSeq(2);
      wire::writeValue(Value("second"), m.initPayload().initValue());
    });
    wire::PlainMessage m;
    m.kind = schema::Envelope::PORT_MESSAGE;
    m.to = 0x4001;
    m.portSeq = 3;
    l.sendPlain(*l.daemon, m, Value("third"));
    l.send(*l.daemon, [](auto e) { e.initPortClosed().setPort(0x4001); });
  });
  emit([](Link& l) {  // acks, errors, controller change, navigate, focus
    l.send(*l.daemon, [](auto e) { e.initAck().setSeq(1); });
    l.send(*l.daemon, [](auto e) {
      auto r = e.initError();
      r.setName("QueueFull");
      r.setMessage("backlog");
      r.setRefSeq(2);
    });
    l.send(*l.daemon, [](auto e) { e.initControllerChange().setControlled(false); });
    l.send(*l.daemon, [](auto e) { e.initNavigate().setUrl("app://fuzz/next"); });
    l.send(*l.daemon, [](auto e) { e.setFocus(); });
    l.send(*l.daemon, [](auto e) {
      auto r = e.initReply();
      r.setReplyId(1);
      wire::writeValue(Value("reply"), r.initPayload().initValue());
    });
  });
  emit([](Link& l) {  // a bcJoined for an object the page never opened
    l.send(*l.daemon, [](auto e) {
      auto j = e.initBcJoined();
      j.setObjectId(1);
      j.setRingId(7);
      j.setStartPos(0);
      j.setStartSeq(1);
      j.setSenderTag(1);
    });
  });
}

/// JSON texts (mode byte 0) and Cap'n Proto Values (mode byte 1).
void jsonSeeds(const fs::path& dir) {
  int n = 0;
  const char* texts[] = {"null", "true", "-42", "3.5", "1e308", "18446744073709551615", "\"h\\u00e9llo\"",
                         "[1,\"two\",[3.0]]", "{\"type\":\"PORT_INITIALIZATION\",\"n\":7}",
                         "{\"$bytes\":\"AAEC/w==\"}", "{\"a\":{\"b\":[{},[]]},\"a\":1}"};
  for (const char* t : texts) {
    std::vector<uint8_t> b{0};
    b.insert(b.end(), t, t + std::strlen(t));
    writeFile(dir, "json-" + std::to_string(n++), b);
  }
  for (const Value& v : sampleValues()) {
    capnp::MallocMessageBuilder mb;
    wire::writeValue(v, mb.initRoot<schema::Value>());
    auto flat = capnp::messageToFlatArray(mb);
    std::vector<uint8_t> b{1};
    b.insert(b.end(), flat.asBytes().begin(), flat.asBytes().end());
    writeFile(dir, "capnp-" + std::to_string(n++), b);
  }
}

/// Regions the daemon's writer formatted and filled (broadcast_reader).
void broadcastSeeds(const fs::path& dir) {
  const uint64_t capacity = 4096;  // the daemon's smallest practical ring: records up to 1000 bytes
  int n = 0;
  for (int posts : {0, 1, 5, 60}) {  // 60 posts lap a 4 KiB ring
    const size_t bytes = queue::broadcastRegionBytes(capacity);
    std::vector<uint8_t> storage(bytes + swipc::shm::CACHE_LINE);  // the writer wants cache-line alignment
    uint8_t* base = storage.data() + (swipc::shm::CACHE_LINE - reinterpret_cast<uintptr_t>(storage.data()) %
                                                                 swipc::shm::CACHE_LINE) % swipc::shm::CACHE_LINE;
    auto w = queue::formatBroadcastRegion(base, bytes, capacity);
    for (int i = 0; i < posts; ++i) {
      capnp::MallocMessageBuilder mb;
      auto env = mb.initRoot<schema::Envelope>();
      env.setSchemaVersion(schema::SCHEMA_VERSION);
      env.setSeq(uint64_t(i + 1));
      wire::writeValue(sampleValues()[size_t(i) % sampleValues().size()],
                       env.initBcMessage().initPayload().initValue());
      auto flat = capnp::messageToFlatArray(mb);
      w.append(1, uint64_t(i + 1), 0x100 + uint64_t(i % 3), flat.asBytes().begin(),
               static_cast<uint32_t>(flat.asBytes().size()));
    }
    const uint64_t startPos = 0;
    std::vector<uint8_t> b(8);
    std::memcpy(b.data(), &startPos, 8);
    b.insert(b.end(), base, base + bytes);
    writeFile(dir, "region-" + std::to_string(n++), b);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  const fs::path root(argv[1]);
  daemonSeeds(root / "daemon_receive");
  pageSeeds(root / "page_receive");
  jsonSeeds(root / "json_value");
  broadcastSeeds(root / "broadcast_reader");
  return 0;
}
