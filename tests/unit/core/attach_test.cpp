// The attach handshake (DESIGN §3): a page's attachToDaemon() against a scripted daemon on a
// listening socket in a temp dir (Hello out, Welcome or an error back, every failure named), and
// the daemon's parseHello() on well-formed and hostile Hellos.
#include "core/attach.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "wire/limits.h"

namespace swipc::core {
namespace {

using namespace std::chrono_literals;

/// Waits (bounded) until `fd` is readable.
bool waitReadable(int fd, std::chrono::milliseconds bound = 10s) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(bound.count())) == 1;
}

Result<wire::Inbound> decode(const std::vector<uint8_t>& bytes) {
  auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), words.size() * sizeof(capnp::word));
  return wire::Inbound::adoptControl(std::move(words), wire::readerOptions(wire::MAX_CONTROL_BYTES));
}

Result<HelloInfo> parse(capnp::MallocMessageBuilder& mb) {
  auto flat = capnp::messageToFlatArray(mb);
  std::vector<uint8_t> bytes(flat.asBytes().begin(), flat.asBytes().end());
  auto in = decode(bytes);
  if (!in) return in.error();
  return parseHello(in->control());
}

bool sendControl(int fd, capnp::MessageBuilder& mb, const std::vector<int>& fds = {}) {
  auto words = capnp::messageToFlatArray(mb);
  return sendDatagram(fd, words.begin(), words.size() * sizeof(capnp::word), fds) == IoStatus::OK;
}

HelloInfo pageHello() {
  HelloInfo h;
  h.protocolVersion = schema::PROTOCOL_VERSION;
  h.type = ClientType::WINDOW;
  h.url = "app://attach-test/";
  return h;
}

WelcomeInfo daemonWelcome() {
  WelcomeInfo w;
  w.resumeToken = newResumeToken();
  w.clientId = clientIdForToken(w.resumeToken);
  w.daemonEpoch = 77;
  w.maxMessageBytes = 1 << 20;
  w.controlled = true;
  w.swVersion = "1.2.3";
  w.rings = RingSizes{8192, 16384};
  return w;
}

void expectError(const Result<Attached>& sut, Errc code, const std::string& says) {
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, code) << sut.error().describe();
  EXPECT_NE(sut.error().message.find(says), std::string::npos) << sut.error().describe();
}

/// A daemon's listening socket in a fresh temp dir, and a thread that plays the daemon's part of
/// one attach as the test scripts it.
class AttachTest : public ::testing::Test {
 protected:
  AttachTest() {
    char dir[] = "/tmp/swipc-attach-test-XXXXXX";
    EXPECT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/daemon.sock";
    auto l = listenSeqpacket(path_, 0600);
    EXPECT_TRUE(l.ok()) << l.error().describe();
    listen_ = std::move(*l);
  }
  ~AttachTest() override {
    if (daemon_.joinable()) daemon_.join();
    listen_.reset();
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }

  /// Runs the daemon side: accept one page, read its Hello, then `respond(socket, hello)`.
  void serve(std::function<void(UniqueFd, const HelloInfo&)> respond) {
    daemon_ = std::thread([this, respond = std::move(respond)] {
      ASSERT_TRUE(waitReadable(listen_.get())) << "no page connected";
      UniqueFd conn;
      ASSERT_EQ(acceptConnection(listen_.get(), conn), IoStatus::OK);
      ASSERT_TRUE(waitReadable(conn.get())) << "no Hello";
      Datagram d;
      ASSERT_EQ(recvDatagram(conn.get(), d, wire::MAX_CONTROL_BYTES), IoStatus::OK);
      auto in = decode(d.bytes);
      ASSERT_TRUE(in.ok()) << in.error().describe();
      auto hello = parseHello(in->control());
      ASSERT_TRUE(hello.ok()) << hello.error().describe();
      received_ = *hello;
      respond(std::move(conn), *hello);
    });
  }

  Result<Attached> attach(const HelloInfo& hello = pageHello(), Deadline deadline = deadlineIn(10s)) {
    auto r = attachToDaemon(path_, hello, deadline);
    if (daemon_.joinable()) daemon_.join();
    return r;
  }

  /// A Welcome as sendWelcome() writes it, with `edit` applied, sent with `fds`.
  static void sendEditedWelcome(int fd, const std::function<void(schema::Welcome::Builder)>& edit,
                                const std::vector<int>& fds) {
    const WelcomeInfo info = daemonWelcome();
    capnp::MallocMessageBuilder mb;
    auto w = mb.initRoot<schema::Control>().initWelcome();
    w.setClientId(capnp::Data::Reader(info.clientId.bytes().data(), 16));
    w.setResumeToken(capnp::Data::Reader(info.resumeToken.data(), 32));
    w.setLayoutVersion(shm::LAYOUT_VERSION);
    w.setUpRingBytes(static_cast<uint32_t>(info.rings.up));
    w.setDownRingBytes(static_cast<uint32_t>(info.rings.down));
    w.setMaxMessageBytes(info.maxMessageBytes);
    edit(w);
    EXPECT_TRUE(sendControl(fd, mb, fds));
  }

  std::string dir_;
  std::string path_;
  UniqueFd listen_;
  std::thread daemon_;
  HelloInfo received_;
  std::unique_ptr<Connection> daemonSide_;
};

// ---------------------------------------------------------------- the whole handshake

TEST_F(AttachTest, AttachReturnsTheWelcomeTheDaemonSent) {
  const WelcomeInfo sent = daemonWelcome();
  serve([&](UniqueFd conn, const HelloInfo&) {
    auto c = sendWelcome(std::move(conn), sent);
    ASSERT_TRUE(c.ok()) << c.error().describe();
    daemonSide_ = std::move(*c);
  });
  auto sut = attach();
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  EXPECT_EQ(sut->welcome.clientId, sent.clientId);
  EXPECT_EQ(sut->welcome.resumeToken, sent.resumeToken);
  EXPECT_EQ(sut->welcome.daemonEpoch, 77u);
  EXPECT_EQ(sut->welcome.maxMessageBytes, sent.maxMessageBytes);
  EXPECT_TRUE(sut->welcome.controlled);
  EXPECT_EQ(sut->welcome.swVersion, "1.2.3");
  EXPECT_EQ(sut->welcome.rings.up, 8192u);
  EXPECT_EQ(sut->welcome.rings.down, 16384u);
  ASSERT_NE(sut->connection, nullptr);
  EXPECT_EQ(sut->connection->role(), Connection::Role::CLIENT);
}

TEST_F(AttachTest, AttachedConnectionReachesTheDaemonsSide) {
  serve([&](UniqueFd conn, const HelloInfo&) {
    auto c = sendWelcome(std::move(conn), daemonWelcome());
    ASSERT_TRUE(c.ok()) << c.error().describe();
    daemonSide_ = std::move(*c);
  });
  auto sut = attach();
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  ASSERT_NE(daemonSide_, nullptr);
  wire::PlainMessage m;
  m.seq = 1;
  ASSERT_EQ(sut->connection->sendValue(m, Value("over the segment")), Connection::ValueStatus::SENT);
  wire::Inbound in;
  wire::PlainMessage header;
  Value data;
  Error err;
  ASSERT_EQ(daemonSide_->receive(in, header, data, wire::kindBit(schema::Envelope::CONTROLLER_POST), err),
            Connection::RecvStatus::PLAIN)
      << err.describe();
  EXPECT_EQ(data, Value("over the segment"));
}

TEST_F(AttachTest, HelloCarriesEverythingThePageSet) {
  serve([](UniqueFd, const HelloInfo&) {});  // hangs up after reading it
  HelloInfo hello = pageHello();
  hello.type = ClientType::WORKER;
  hello.url = "app://attach-test/worker.js";
  hello.resumeToken = newResumeToken();
  hello.controlled = false;
  hello.openToken = std::string("\x01\x02open", 6);
  (void)attach(hello);
  EXPECT_EQ(received_.protocolVersion, schema::PROTOCOL_VERSION);
  EXPECT_EQ(received_.type, ClientType::WORKER);
  EXPECT_EQ(received_.url, "app://attach-test/worker.js");
  ASSERT_TRUE(received_.resumeToken.has_value());
  EXPECT_EQ(*received_.resumeToken, *hello.resumeToken);
  EXPECT_FALSE(received_.controlled);
  EXPECT_EQ(received_.openToken, hello.openToken);
}

TEST_F(AttachTest, FirstHelloCarriesNoResumeToken) {
  serve([](UniqueFd, const HelloInfo&) {});
  (void)attach();
  EXPECT_FALSE(received_.resumeToken.has_value());
  EXPECT_TRUE(received_.controlled);
  EXPECT_TRUE(received_.openToken.empty());
}

// ---------------------------------------------------------------- named failures

TEST_F(AttachTest, NobodyListeningIsNoDaemon) {
  listen_.reset();
  ::unlink(path_.c_str());
  expectError(attach(), Errc::NO_DAEMON, "no sw_daemon is listening");
}

TEST_F(AttachTest, NoWelcomeBeforeTheDeadlineIsAnAttachTimeout) {
  // The socket listens (the kernel completes the connect) but no daemon ever answers.
  const auto start = Clock::now();
  expectError(attach(pageHello(), deadlineIn(50ms)), Errc::ATTACH_TIMEOUT, "before the deadline");
  EXPECT_GE(Clock::now() - start, 50ms);
}

TEST_F(AttachTest, DaemonHangingUpDuringAttachIsNoDaemon) {
  serve([](UniqueFd, const HelloInfo&) {});
  expectError(attach(), Errc::NO_DAEMON, "closed the connection during attach");
}

TEST_F(AttachTest, DaemonsErrorReachesThePageByName) {
  serve([](UniqueFd conn, const HelloInfo&) {
    sendControlError(conn.get(), Errc::VERSION_MISMATCH, "daemon speaks protocol 99");
  });
  expectError(attach(), Errc::VERSION_MISMATCH, "daemon speaks protocol 99");
}

TEST_F(AttachTest, RefusalSentWithTheHelloUnreadReachesThePageByName) {
  // A daemon that refuses and closes without reading what the page sent resets the connection:
  // the page's first read fails with ECONNRESET, but the refusal is queued behind it (issue 14:
  // this was reported as NoDaemon).
  daemon_ = std::thread([this] {
    ASSERT_TRUE(waitReadable(listen_.get())) << "no page connected";
    UniqueFd conn;
    ASSERT_EQ(acceptConnection(listen_.get(), conn), IoStatus::OK);
    ASSERT_TRUE(waitReadable(conn.get())) << "no Hello";  // it is there, and stays unread
    sendControlError(conn.get(), Errc::QUOTA_EXCEEDED, "uid 0 has 64 connections without a Hello");
  });
  expectError(attach(), Errc::QUOTA_EXCEEDED, "64 connections without a Hello");
}

TEST_F(AttachTest, DaemonsErrorWithAnUnknownNameIsAProtocolViolation) {
  serve([](UniqueFd conn, const HelloInfo&) {
    capnp::MallocMessageBuilder mb;
    auto e = mb.initRoot<schema::Control>().initError();
    e.setName("NoSuchError");
    e.setMessage("what");
    sendControl(conn.get(), mb);
  });
  expectError(attach(), Errc::PROTOCOL_VIOLATION, "what");
}

TEST_F(AttachTest, WelcomeWithAnotherSegmentLayoutIsAVersionMismatch) {
  serve([](UniqueFd conn, const HelloInfo&) {
    auto c = Connection::createForDaemon(UniqueFd(), daemonWelcome().rings, 1 << 20);  // real fds to pass
    ASSERT_TRUE(c.ok()) << c.error().describe();
    sendEditedWelcome(
        conn.get(), [](schema::Welcome::Builder w) { w.setLayoutVersion(shm::LAYOUT_VERSION + 1); },
        {(*c)->segmentFd(), (*c)->doorbellFd(), (*c)->wakeReadFd()});
  });
  expectError(attach(), Errc::VERSION_MISMATCH, "segment layout " + std::to_string(shm::LAYOUT_VERSION + 1));
}

TEST_F(AttachTest, WelcomeWithoutItsFdsIsAProtocolViolation) {
  serve([](UniqueFd conn, const HelloInfo&) { sendEditedWelcome(conn.get(), [](schema::Welcome::Builder) {}, {}); });
  expectError(attach(), Errc::PROTOCOL_VIOLATION, "a segment, a doorbell and a wake pipe");
}

TEST_F(AttachTest, WelcomeWithAShortClientIdIsAProtocolViolation) {
  serve([](UniqueFd conn, const HelloInfo&) {
    auto c = Connection::createForDaemon(UniqueFd(), daemonWelcome().rings, 1 << 20);
    ASSERT_TRUE(c.ok()) << c.error().describe();
    const uint8_t shortId[8] = {};
    sendEditedWelcome(
        conn.get(), [&](schema::Welcome::Builder w) { w.setClientId(capnp::Data::Reader(shortId, 8)); },
        {(*c)->segmentFd(), (*c)->doorbellFd(), (*c)->wakeReadFd()});
  });
  expectError(attach(), Errc::PROTOCOL_VIOLATION, "malformed id or token");
}

TEST_F(AttachTest, ReplyThatIsNotWholeWordsIsAProtocolViolation) {
  serve([](UniqueFd conn, const HelloInfo&) {
    const char junk[3] = {1, 2, 3};
    sendDatagram(conn.get(), junk, sizeof junk);
  });
  expectError(attach(), Errc::PROTOCOL_VIOLATION, "malformed control datagram");
}

// ---------------------------------------------------------------- parseHello on hostile input

TEST(ParseHelloTest, AcceptsAMinimalHello) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Control>().initHello().setProtocolVersion(schema::PROTOCOL_VERSION);
  auto sut = parse(mb);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  EXPECT_EQ(sut->protocolVersion, schema::PROTOCOL_VERSION);
  EXPECT_EQ(sut->type, ClientType::WINDOW);
}

TEST(ParseHelloTest, PassesAnotherProtocolVersionThroughForTheDaemonToRefuse) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Control>().initHello().setProtocolVersion(schema::PROTOCOL_VERSION + 1);
  auto sut = parse(mb);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  EXPECT_EQ(sut->protocolVersion, schema::PROTOCOL_VERSION + 1);
}

TEST(ParseHelloTest, RejectsAControlThatIsNotAHello) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Control>().initGoodbye().setReason("hi");
  auto sut = parse(mb);
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::PROTOCOL_VIOLATION);
  EXPECT_NE(sut.error().message.find("first message was not Hello"), std::string::npos) << sut.error().describe();
}

TEST(ParseHelloTest, RejectsAResumeTokenOfTheWrongSize) {
  capnp::MallocMessageBuilder mb;
  const uint8_t token[16] = {};
  mb.initRoot<schema::Control>().initHello().setResumeToken(capnp::Data::Reader(token, 16));
  auto sut = parse(mb);
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::PROTOCOL_VIOLATION);
  EXPECT_NE(sut.error().message.find("resume token must be 32 bytes"), std::string::npos);
}

TEST(ParseHelloTest, RejectsAUrlOverTheLimit) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Control>().initHello().setUrl(std::string(2049, 'u'));
  auto sut = parse(mb);
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::TYPE);
}

TEST(ParseHelloTest, AcceptsAUrlAtTheLimit) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Control>().initHello().setUrl(std::string(2048, 'u'));
  EXPECT_TRUE(parse(mb).ok());
}

TEST(ParseHelloTest, RejectsAnOpenTokenOverTheLimit) {
  capnp::MallocMessageBuilder mb;
  const std::vector<uint8_t> token(65, 1);
  mb.initRoot<schema::Control>().initHello().setOpenToken(capnp::Data::Reader(token.data(), token.size()));
  auto sut = parse(mb);
  ASSERT_FALSE(sut.ok());
  EXPECT_NE(sut.error().message.find("open token longer than 64 bytes"), std::string::npos);
}

TEST(ParseHelloTest, ReportsAUrlOfTheWrongKindAsAMalformedHello) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Control>().initHello().setUrl("MARKER-0123456789");
  auto flat = capnp::messageToFlatArray(mb);
  std::vector<uint8_t> bytes(flat.asBytes().begin(), flat.asBytes().end());
  // Turn the list pointer to the url's text into a struct pointer (1 data word) at the same place:
  // in bounds, so the walk at receipt passes, but not text.
  auto* w = reinterpret_cast<uint64_t*>(bytes.data());
  const size_t words = bytes.size() / 8;
  size_t target = 0;
  for (size_t i = 1; i < words && !target; ++i)
    if (std::memcmp(&w[i], "MARKER-0", 8) == 0) target = i;
  ASSERT_NE(target, 0u);
  bool patched = false;
  for (size_t i = 1; i < words && !patched; ++i) {
    const uint64_t p = w[i];
    const int64_t offset = static_cast<int32_t>(static_cast<uint32_t>(p)) >> 2;
    if ((p & 3) == 1 && static_cast<int64_t>(i) + 1 + offset == static_cast<int64_t>(target)) {
      w[i] = (p & 0xFFFFFFFCull) | (uint64_t{1} << 32);
      patched = true;
    }
  }
  ASSERT_TRUE(patched);
  auto in = decode(bytes);
  ASSERT_TRUE(in.ok()) << in.error().describe();
  auto sut = parseHello(in->control());
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::PROTOCOL_VIOLATION);
  EXPECT_NE(sut.error().message.find("malformed Hello"), std::string::npos) << sut.error().describe();
}

}  // namespace
}  // namespace swipc::core
