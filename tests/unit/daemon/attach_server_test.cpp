// daemon: AttachServer over a real socket in a private directory. A Hello from our user is
// admitted (the record carries what it said, and the page's end works); a silent peer is dropped
// at the deadline; a wrong protocol version, a garbage Hello, an id already attached and the
// client limit are each refused with their named error and counted; stop() removes the socket.
#include "daemon/attach_server.h"

#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "core/socket.h"
#include "daemon_rig.h"

namespace swipc::daemon {
namespace {

using testing::DaemonRig;

/// A private directory, removed afterwards.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/swipc-attach-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    ::unlink((path + "/daemon.sock").c_str());
    ::rmdir(path.c_str());
  }
};

class AttachServerTest : public ::testing::Test {
 protected:
  void start(ServiceWorkerOptions o = DaemonRig::small()) {
    o.attachTimeout = std::chrono::milliseconds(200);
    o.version = "attach-test";
    rig = std::make_unique<DaemonRig>(o);
    sut = std::make_unique<AttachServer>(rig->clients, *rig->loop, rig->counters, rig->opts);
    sut->onAdmit([this](std::unique_ptr<ClientRecord> r, const core::HelloInfo& h) {
      hellos.push_back(h);
      rig->clients.insert(std::move(r));
    });
    ASSERT_TRUE(sut->start(socket(), 42).ok());
  }
  std::string socket() const { return dir.path + "/daemon.sock"; }
  static core::HelloInfo hello() {
    core::HelloInfo h;
    h.protocolVersion = schema::PROTOCOL_VERSION;
    h.type = ClientType::WORKER;
    h.url = "app://attach/";
    return h;
  }
  /// Attaches with `h` from a helper thread while the loop runs here.
  Result<core::Attached> attach(const core::HelloInfo& h) {
    auto f = std::async(std::launch::async, [&] { return core::attachToDaemon(socket(), h, deadlineIn(std::chrono::milliseconds(3000))); });
    EXPECT_TRUE(rig->runUntil([&] { return f.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }));
    return f.get();
  }

  /// Asks `command` as an inspector (swctl) from a helper thread while the loop runs here.
  Result<std::string> inspect(const std::string& command) {
    auto f = std::async(std::launch::async, [&] {
      return core::inspectDaemon(socket(), command, deadlineIn(std::chrono::milliseconds(3000)));
    });
    EXPECT_TRUE(rig->runUntil([&] { return f.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }));
    return f.get();
  }

  TempDir dir;
  std::unique_ptr<DaemonRig> rig;
  std::unique_ptr<AttachServer> sut;
  std::vector<core::HelloInfo> hellos;
};

TEST_F(AttachServerTest, HelloFromOurUserIsAdmittedWithWhatItSaid) {
  start();
  auto r = attach(hello());
  ASSERT_TRUE(r.ok()) << r.error().describe();
  EXPECT_EQ(r->welcome.daemonEpoch, 42u);
  EXPECT_EQ(r->welcome.swVersion, "attach-test");
  ClientRecord* c = rig->clients.findAlive(r->welcome.clientId);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->url, "app://attach/");
  EXPECT_EQ(c->type, ClientType::WORKER);
  EXPECT_EQ(c->frameType, FrameType::NONE);
  EXPECT_EQ(c->pid, ::getpid());
  ASSERT_NE(c->conn, nullptr);
  EXPECT_EQ(sut->pendingCount(), 0u);
}

TEST_F(AttachServerTest, ResumeTokenGivesTheSameClientIdAgain) {
  start();
  auto h = hello();
  h.resumeToken = core::newResumeToken();
  auto r = attach(h);
  ASSERT_TRUE(r.ok()) << r.error().describe();
  EXPECT_EQ(r->welcome.clientId, core::clientIdForToken(*h.resumeToken));
}

TEST_F(AttachServerTest, SilentPeerIsDroppedAtTheAttachDeadline) {
  start();
  auto sock = core::connectSeqpacket(socket());
  ASSERT_TRUE(sock.ok());
  ASSERT_TRUE(rig->runUntil([&] { return sut->pendingCount() == 1; }));
  ASSERT_TRUE(rig->runUntil([&] { return rig->counters.attachTimeouts == 1; }));
  EXPECT_EQ(sut->pendingCount(), 0u);
}

TEST_F(AttachServerTest, OtherProtocolVersionIsRefusedWithVersionMismatch) {
  start();
  auto h = hello();
  h.protocolVersion = schema::PROTOCOL_VERSION + 1;
  auto r = attach(h);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::VERSION_MISMATCH);
  EXPECT_EQ(rig->counters.versionMismatches, 1u);
  EXPECT_TRUE(hellos.empty());
}

TEST_F(AttachServerTest, GarbageHelloIsAProtocolViolation) {
  start();
  auto sock = core::connectSeqpacket(socket());
  ASSERT_TRUE(sock.ok());
  const uint64_t garbage[4] = {~0ull, 1, 2, 3};
  ASSERT_EQ(core::sendDatagram(sock->get(), garbage, sizeof garbage), core::IoStatus::OK);
  ASSERT_TRUE(rig->runUntil([&] { return rig->counters.protocolViolations == 1; }));
  EXPECT_EQ(sut->pendingCount(), 0u);
  EXPECT_TRUE(hellos.empty());
}

TEST_F(AttachServerTest, IdThatIsAttachedAlreadyIsRefused) {
  start();
  auto h = hello();
  h.resumeToken = core::newResumeToken();
  ASSERT_TRUE(attach(h).ok());
  auto again = attach(h);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, Errc::INVALID_STATE);
  EXPECT_EQ(hellos.size(), 1u);
}

TEST_F(AttachServerTest, ClientBeyondMaxClientsIsRefusedWithQuotaExceeded) {
  auto o = DaemonRig::small();
  o.maxClients = 1;
  start(o);
  ASSERT_TRUE(attach(hello()).ok());
  // The second page's Hello is already waiting when the daemon gets to it: the refusal still
  // reaches it (the daemon reads what it sent before it closes).
  auto sock = core::connectSeqpacket(socket());
  ASSERT_TRUE(sock.ok());
  capnp::MallocMessageBuilder mb;
  auto h = mb.initRoot<schema::Control>().initHello();
  h.setProtocolVersion(schema::PROTOCOL_VERSION);
  h.setUrl("app://second/");
  auto words = capnp::messageToFlatArray(mb);
  ASSERT_EQ(core::sendDatagram(sock->get(), words.begin(), words.size() * sizeof(capnp::word)), core::IoStatus::OK);
  ASSERT_TRUE(rig->runUntil([&] { return rig->counters.rejectedClients == 1; }));
  core::Datagram d;
  ASSERT_EQ(core::recvDatagram(sock->get(), d, wire::MAX_CONTROL_BYTES), core::IoStatus::OK);
  capnp::FlatArrayMessageReader reader(
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(d.bytes.data()), d.bytes.size() / sizeof(capnp::word)));
  auto control = reader.getRoot<schema::Control>();
  ASSERT_TRUE(control.isError());
  EXPECT_EQ(std::string(control.getError().getName().cStr()), "QuotaExceededError");
  EXPECT_EQ(hellos.size(), 1u);
}

TEST_F(AttachServerTest, StopRemovesTheSocketAndRefusesNewConnections) {
  start();
  sut->stop();
  struct stat st;
  EXPECT_NE(::stat(socket().c_str(), &st), 0);
  EXPECT_FALSE(sut->listening());
  auto sock = core::connectSeqpacket(socket());
  ASSERT_FALSE(sock.ok());
  EXPECT_EQ(sock.error().code, Errc::NO_DAEMON);
}

// ------------------------------------------------------------------------------------------------ inspector

TEST_F(AttachServerTest, InspectRequestIsAnsweredAndNeverAdmitted) {
  start();
  std::vector<std::string> asked;
  sut->onInspect([&](std::string_view command) -> Result<std::string> {
    asked.emplace_back(command);
    return std::string(R"({"answer":1})");
  });
  auto r = inspect("status");
  ASSERT_TRUE(r.ok()) << r.error().describe();
  EXPECT_EQ(*r, R"({"answer":1})");
  EXPECT_EQ(asked, std::vector<std::string>{"status"});
  EXPECT_TRUE(hellos.empty());
  EXPECT_EQ(rig->clients.size(), 0u);
  EXPECT_EQ(sut->pendingCount(), 0u);
}

TEST_F(AttachServerTest, InspectorIsAnsweredAtMaxClientsWhileAHelloIsRefused) {
  auto o = DaemonRig::small();
  o.maxClients = 1;
  start(o);
  sut->onInspect([](std::string_view) -> Result<std::string> { return std::string("{}"); });
  ASSERT_TRUE(attach(hello()).ok());
  auto r = inspect("clients");
  ASSERT_TRUE(r.ok()) << r.error().describe();
  EXPECT_EQ(*r, "{}");
  auto refused = attach(hello());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::QUOTA_EXCEEDED);
  EXPECT_EQ(rig->counters.rejectedClients, 1u);
}

TEST_F(AttachServerTest, InspectReplyTooLargeForADatagramComesWholeInASealedMemfd) {
  start();
  std::string big(300000, 'x');
  sut->onInspect([&](std::string_view) -> Result<std::string> { return big; });
  auto r = inspect("clients");
  ASSERT_TRUE(r.ok()) << r.error().describe();
  EXPECT_EQ(*r, big);
}

TEST_F(AttachServerTest, InspectErrorReachesTheInspectorByName) {
  start();
  sut->onInspect([](std::string_view c) -> Result<std::string> {
    return makeError(Errc::TYPE, "unknown inspect command '" + std::string(c) + "'");
  });
  auto r = inspect("bogus");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::TYPE);
  EXPECT_NE(r.error().message.find("bogus"), std::string::npos);
}

}  // namespace
}  // namespace swipc::daemon
