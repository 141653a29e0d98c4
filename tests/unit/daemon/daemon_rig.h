// What the daemon unit tests share: the modules every other one stands on (a real loop, the
// client table, the outbound sender, dispatch), and clients wired to a real page-side
// core::Connection over a socketpair and the real segment, so a test reads what the daemon sent
// and writes what a page would (no process, no attach).
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "core/connection.h"
#include "core/event_loop.h"
#include "core/identity.h"
#include "daemon/client_table.h"
#include "daemon/dispatch.h"
#include "daemon/outbound.h"
#include "envelope.capnp.h"
#include "swipc/service_worker.h"
#include "wire/codec.h"
#include "wire/limits.h"
#include "wire/value_codec.h"

namespace swipc::daemon::testing {

using namespace std::chrono_literals;

/// The page's end of a wired client.
struct Page {
  ClientId id;
  std::unique_ptr<core::Connection> conn;
  MessageSeq nextSeq = 1;

  /// Writes an envelope into the up ring: schema version and seq set, the rest by `fill`.
  MessageSeq send(const std::function<void(schema::Envelope::Builder)>& fill) {
    capnp::MallocMessageBuilder mb;
    auto env = mb.initRoot<schema::Envelope>();
    env.setSchemaVersion(schema::SCHEMA_VERSION);
    const MessageSeq seq = nextSeq++;
    env.setSeq(seq);
    fill(env);
    EXPECT_EQ(conn->send(mb, seq), core::Connection::SendStatus::OK);
    return seq;
  }
  /// A controller post of `data` on the fast lane.
  MessageSeq sendPlainPost(const Value& data, bool wantAck = false) {
    wire::PlainMessage m;
    m.kind = schema::Envelope::CONTROLLER_POST;
    m.seq = nextSeq++;
    m.wantAck = wantAck;
    EXPECT_EQ(conn->sendValue(m, data), core::Connection::ValueStatus::SENT);
    return m.seq;
  }
  /// The next envelope the daemon wrote (general path), or nullopt when there is none.
  std::optional<wire::Inbound> next() {
    wire::Inbound in;
    Error err;
    auto s = conn->receive(in, err);
    EXPECT_NE(s, core::Connection::RecvStatus::VIOLATION) << err.describe();
    if (s != core::Connection::RecvStatus::OK) return std::nullopt;
    conn->publishConsumed();
    return in;
  }
  /// Every envelope waiting.
  std::vector<wire::Inbound> drain() {
    std::vector<wire::Inbound> all;
    while (auto in = next()) all.push_back(std::move(*in));
    return all;
  }
  /// Control datagrams waiting on the socket (errors, goodbyes, rings), in order.
  std::vector<wire::Inbound> controls() {
    std::vector<wire::Inbound> all;
    Error err;
    conn->pumpSocket([&](wire::Inbound&& in) { all.push_back(std::move(in)); }, err);
    return all;
  }
};

inline UniqueFd dupFd(int fd) { return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

inline ClientId randomClientId() { return core::clientIdForToken(core::newResumeToken()); }

/// A value a post carries.
inline Value postValue(const wire::Inbound& in) {
  auto env = in.envelope();
  auto post = env.isControllerPost() ? env.getControllerPost() : env.getClientPost();
  auto v = wire::readValue(post.getPayload().getValue());
  EXPECT_TRUE(v.ok());
  return v.ok() ? *v : Value();
}

class DaemonRig {
 public:
  explicit DaemonRig(ServiceWorkerOptions o = small())
      : opts(std::move(o)),
        loop(makeLoop()),
        clients(*loop, counters),
        outbound(clients, counters, *loop, opts),
        dispatch(clients, outbound, *loop, false) {}

  /// Small rings (a record holds up to 1 KiB inline) and a small backlog, so limits are reached fast.
  static ServiceWorkerOptions small() {
    ServiceWorkerOptions o;
    o.ringBytes = 4096;
    o.maxBacklog = 8;
    o.maxMessageBytes = 1 << 20;
    o.bcRingBytes = 4096;
    return o;
  }

  /// A record with a live connection, not in the table (for tests of admission).
  std::pair<std::unique_ptr<ClientRecord>, Page> wired(ClientType type = ClientType::WINDOW) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    auto d = core::Connection::createForDaemon(UniqueFd(sv[0]), core::RingSizes{opts.ringBytes, opts.ringBytes},
                                               opts.maxMessageBytes);
    EXPECT_TRUE(d.ok()) << d.error().describe();
    auto c = core::Connection::openForClient(UniqueFd(sv[1]), dupFd((*d)->segmentFd()), dupFd((*d)->doorbellFd()),
                                             dupFd((*d)->wakeReadFd()), opts.maxMessageBytes);
    EXPECT_TRUE(c.ok()) << c.error().describe();
    (*d)->forgetPassedFds();
    auto rec = std::make_unique<ClientRecord>();
    rec->id = randomClientId();
    rec->type = type;
    rec->frameType = type == ClientType::WORKER ? FrameType::NONE : FrameType::TOP_LEVEL;
    rec->url = "app://test/" + rec->id.toString().substr(0, 6);
    rec->pid = ::getpid();
    rec->conn = std::move(*d);
    Page page{rec->id, std::move(*c)};
    return {std::move(rec), std::move(page)};
  }

  /// A wired client in the table.
  Page attach(ClientType type = ClientType::WINDOW, bool controlled = true) {
    auto [rec, page] = wired(type);
    rec->controlled = controlled;
    clients.insert(std::move(rec));
    return std::move(page);
  }

  ClientRecord& record(const Page& p) {
    ClientRecord* c = clients.find(p.id);
    EXPECT_NE(c, nullptr);
    return *c;
  }

  /// Runs the loop until `done()` or 5 s pass.
  bool runUntil(const std::function<bool()>& done, std::chrono::milliseconds guard = 5000ms) {
    const Deadline until = Clock::now() + guard;
    while (!done()) {
      if (Clock::now() >= until) return false;
      loop->runOnce(std::min(until, Clock::now() + 10ms));
    }
    return true;
  }
  /// Runs what the loop has ready now (posted tasks: erase-later, scheduled drains).
  void settle() {
    for (int i = 0; i < 4; ++i) loop->runOnce(Clock::now());
  }

  ServiceWorkerOptions opts;
  Counters counters;
  std::unique_ptr<core::EventLoop> loop;
  ClientTable clients;
  Outbound outbound;
  Dispatch dispatch;

 private:
  static std::unique_ptr<core::EventLoop> makeLoop() {
    auto l = core::EventLoop::create();
    EXPECT_TRUE(l.ok());
    return std::move(*l);
  }
};

/// An envelope built here, as the daemon's general path would hand it over.
inline std::shared_ptr<const wire::Inbound> inbound(const std::function<void(schema::Envelope::Builder)>& fill,
                                                    MessageSeq seq = 1) {
  capnp::MallocMessageBuilder mb;
  auto env = mb.initRoot<schema::Envelope>();
  env.setSchemaVersion(schema::SCHEMA_VERSION);
  env.setSeq(seq);
  fill(env);
  const size_t bytes = wire::encodedBytes(mb);
  std::vector<uint64_t> buf(bytes / 8);
  wire::encodeInto(mb, reinterpret_cast<uint8_t*>(buf.data()), bytes);
  auto in = wire::Inbound::copyEnvelope(reinterpret_cast<const uint8_t*>(buf.data()), bytes,
                                        wire::readerOptions(1 << 20));
  EXPECT_TRUE(in.ok());
  return std::make_shared<const wire::Inbound>(std::move(*in));
}

}  // namespace swipc::daemon::testing
