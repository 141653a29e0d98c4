// core::Connection: a daemon side and a client side over a real socketpair and the real segment
// memfd (the fds a Welcome would carry are handed over directly): inline and out-of-line
// envelopes, the fast lane, backpressure and every limit, corrupt rings, wake-ups, and hang-up.
#include "core/connection.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "queue/ring_layout.h"
#include "shm/memfd.h"
#include "wire/limits.h"
#include "wire/value_codec.h"

namespace swipc::core {
namespace {

constexpr RingSizes RINGS{4096, 4096};  // a ring record holds up to 1 KiB inline
constexpr uint64_t MAX_MESSAGE = 1 << 20;
const uint32_t PLAIN_POSTS = wire::kindBit(schema::Envelope::CONTROLLER_POST) | wire::kindBit(schema::Envelope::CLIENT_POST);

using SendStatus = Connection::SendStatus;
using RecvStatus = Connection::RecvStatus;
using ValueStatus = Connection::ValueStatus;

UniqueFd dupFd(int fd) { return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/// A post envelope whose payload is `data` (controllerPost page -> daemon, clientPost back).
void buildPost(capnp::MallocMessageBuilder& mb, const Value& data, bool fromClient, uint64_t seq = 1) {
  auto env = mb.initRoot<schema::Envelope>();
  env.setSchemaVersion(schema::SCHEMA_VERSION);
  env.setSeq(seq);
  auto post = fromClient ? env.initControllerPost() : env.initClientPost();
  wire::writeValue(data, post.initPayload().initValue());
}

Value postedValue(const wire::Inbound& in) {
  auto env = in.envelope();
  auto post = env.isControllerPost() ? env.getControllerPost() : env.getClientPost();
  auto v = wire::readValue(post.getPayload().getValue());
  EXPECT_TRUE(v.ok()) << v.error().describe();
  return v.ok() ? *v : Value();
}

Value bigValue(size_t bytes) { return Value(Bytes{std::vector<uint8_t>(bytes, 0x5A)}); }

wire::PlainMessage plainPost(uint64_t seq = 1) {
  wire::PlainMessage m;
  m.kind = schema::Envelope::CONTROLLER_POST;
  m.seq = seq;
  return m;
}

class ConnectionTest : public ::testing::Test {
 protected:
  explicit ConnectionTest(uint64_t maxMessage = MAX_MESSAGE) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd daemonSocket(sv[0]);
    auto d = Connection::createForDaemon(std::move(daemonSocket), RINGS, maxMessage);
    EXPECT_TRUE(d.ok()) << d.error().describe();
    daemon_ = std::move(*d);
    segment_ = dupFd(daemon_->segmentFd());
    auto c = Connection::openForClient(UniqueFd(sv[1]), dupFd(daemon_->segmentFd()), dupFd(daemon_->doorbellFd()),
                                       dupFd(daemon_->wakeReadFd()), maxMessage);
    EXPECT_TRUE(c.ok()) << c.error().describe();
    client_ = std::move(*c);
    daemon_->forgetPassedFds();
  }
  ~ConnectionTest() override {
    if (shared_) ::munmap(shared_, sharedBytes_);
  }

  /// The segment as a hostile peer sees it: our own writable mapping of the memfd.
  queue::RingHeader& ring(bool up) {
    if (!shared_) {
      sharedBytes_ = *shm::fileSize(segment_.get());
      void* p = ::mmap(nullptr, sharedBytes_, PROT_READ | PROT_WRITE, MAP_SHARED, segment_.get(), 0);
      EXPECT_NE(p, MAP_FAILED);
      shared_ = static_cast<uint8_t*>(p);
      layout_ = shm::readHeader(shared_, sharedBytes_, queue::RING_HEADER_BYTES).value();
    }
    return *reinterpret_cast<queue::RingHeader*>(shared_ + (up ? layout_.upOffset : layout_.downOffset));
  }
  uint8_t* upData() {
    (void)ring(true);
    return shared_ + layout_.upOffset + queue::RING_HEADER_BYTES;
  }

  /// Sends small inline posts from the client until the up ring is full; how many fitted.
  int fillUpRing() {
    for (int n = 0; n < 10'000; ++n) {
      capnp::MallocMessageBuilder mb;
      buildPost(mb, Value("fill"), true, n + 1);
      if (SendStatus s = client_->send(mb, n + 1); s != SendStatus::OK) {
        EXPECT_EQ(s, SendStatus::FULL);
        return n;
      }
    }
    ADD_FAILURE() << "the up ring never filled";
    return -1;
  }

  RecvStatus receiveAtDaemon(wire::Inbound& in) {
    Error err;
    RecvStatus s = daemon_->receive(in, err);
    if (s == RecvStatus::VIOLATION) lastError_ = err;
    return s;
  }

  std::unique_ptr<Connection> daemon_;
  std::unique_ptr<Connection> client_;
  UniqueFd segment_;
  uint8_t* shared_ = nullptr;
  size_t sharedBytes_ = 0;
  shm::SegmentLayout layout_;
  Error lastError_{Errc::SYSTEM, {}};
};

// ---------------------------------------------------------------- setup

TEST_F(ConnectionTest, CreateForDaemonSealsTheSegmentSize) {
  auto seals = shm::getSeals(segment_.get());
  ASSERT_TRUE(seals.ok()) << seals.error().describe();
  EXPECT_EQ(*seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), unsigned{F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL});
}

TEST_F(ConnectionTest, BothSidesSeeTheirRoles) {
  EXPECT_EQ(daemon_->role(), Connection::Role::DAEMON);
  EXPECT_EQ(client_->role(), Connection::Role::CLIENT);
  EXPECT_EQ(client_->segmentBytes(), daemon_->segmentBytes());
  EXPECT_EQ(daemon_->segmentFd(), -1) << "forgetPassedFds drops the daemon's copy";
}

TEST(ConnectionOpenTest, OpenForClientRejectsASegmentWithoutAHeader) {
  auto blank = shm::createMemfd("connection-test", 16384);
  ASSERT_TRUE(blank.ok());
  auto bell = queue::Doorbell::create();
  auto wake = queue::WakePipe::create();
  ASSERT_TRUE(bell.ok() && wake.ok());
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  ::close(sv[0]);
  auto sut = Connection::openForClient(UniqueFd(sv[1]), std::move(*blank), dupFd(bell->fd()), dupFd(wake->readFd()),
                                       MAX_MESSAGE);
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::VERSION_MISMATCH) << sut.error().describe();
}

// ---------------------------------------------------------------- inline and out of line

TEST_F(ConnectionTest, InlineEnvelopeFromTheClientArrivesAtTheDaemon) {
  capnp::MallocMessageBuilder mb;
  buildPost(mb, Value("hello"), true);
  ASSERT_EQ(client_->send(mb, 1), SendStatus::OK);
  EXPECT_TRUE(daemon_->hasIncoming());
  wire::Inbound in;
  ASSERT_EQ(receiveAtDaemon(in), RecvStatus::OK) << lastError_.describe();
  EXPECT_EQ(postedValue(in), Value("hello"));
  EXPECT_EQ(receiveAtDaemon(in), RecvStatus::EMPTY);
}

TEST_F(ConnectionTest, InlineEnvelopeFromTheDaemonArrivesAtTheClient) {
  capnp::MallocMessageBuilder mb;
  buildPost(mb, Value::map({{"type", "PING"}}), false);
  ASSERT_EQ(daemon_->send(mb, 1), SendStatus::OK);
  wire::Inbound in;
  Error err;
  ASSERT_EQ(client_->receive(in, err), RecvStatus::OK) << err.describe();
  EXPECT_EQ(postedValue(in), Value::map({{"type", "PING"}}));
}

TEST_F(ConnectionTest, PublishConsumedAdvancesTheWritersView) {
  capnp::MallocMessageBuilder mb;
  buildPost(mb, Value("x"), true);
  ASSERT_EQ(client_->send(mb, 1), SendStatus::OK);
  const uint64_t published = client_->outPublished();
  EXPECT_EQ(client_->outConsumed(), 0u);
  wire::Inbound in;
  ASSERT_EQ(receiveAtDaemon(in), RecvStatus::OK);
  daemon_->publishConsumed();
  EXPECT_EQ(client_->outConsumed(), published);
  EXPECT_EQ(daemon_->inConsumedPublished(), published);
}

TEST_F(ConnectionTest, MessageLargerThanARingRecordTravelsOutOfLine) {
  const Value big = bigValue(100'000);
  capnp::MallocMessageBuilder mb;
  buildPost(mb, big, true, 7);
  ASSERT_FALSE(client_->fitsInline(wire::encodedBytes(mb)));
  ASSERT_EQ(client_->send(mb, 7), SendStatus::OK);
  EXPECT_LT(client_->outPublished(), 64u) << "only the small OUT_OF_LINE record is in the ring";
  wire::Inbound in;
  ASSERT_EQ(receiveAtDaemon(in), RecvStatus::OK) << lastError_.describe();
  EXPECT_GT(in.bytes(), 100'000u);
  EXPECT_EQ(postedValue(in), big);
}

TEST_F(ConnectionTest, SendReturnsFullWhenTheRingIsFull) {
  const int sent = fillUpRing();
  EXPECT_GT(sent, 10);
  capnp::MallocMessageBuilder mb;
  buildPost(mb, Value("one more"), true);
  EXPECT_EQ(client_->send(mb, 99'999), SendStatus::FULL);
}

TEST_F(ConnectionTest, SendSucceedsAgainOnceTheDaemonConsumed) {
  ASSERT_GT(fillUpRing(), 0);
  wire::Inbound in;
  while (receiveAtDaemon(in) == RecvStatus::OK) {
  }
  daemon_->publishConsumed();
  capnp::MallocMessageBuilder mb;
  buildPost(mb, Value("again"), true);
  EXPECT_EQ(client_->send(mb, 99'999), SendStatus::OK);
}

TEST_F(ConnectionTest, FullRingWakesTheWaitingWriterOnceHalfIsFree) {
  ASSERT_GT(fillUpRing(), 0);  // the client marked itself waiting for space
  while (readable(client_->wakeReadFd())) client_->drainWakes();
  wire::Inbound in;
  while (receiveAtDaemon(in) == RecvStatus::OK) {
  }
  daemon_->publishConsumed();
  EXPECT_TRUE(readable(client_->wakeReadFd()));
}

TEST_F(ConnectionTest, OutOfLineSendReturnsFullAtTheInFlightBound) {
  const Value big = bigValue(2000);
  for (uint64_t seq = 1; seq <= OOL_IN_FLIGHT; ++seq) {
    capnp::MallocMessageBuilder mb;
    buildPost(mb, big, true, seq);
    ASSERT_EQ(client_->send(mb, seq), SendStatus::OK) << "message " << seq;
  }
  capnp::MallocMessageBuilder mb;
  buildPost(mb, big, true, OOL_IN_FLIGHT + 1);
  EXPECT_EQ(client_->send(mb, OOL_IN_FLIGHT + 1), SendStatus::FULL);
}

TEST_F(ConnectionTest, OutOfLineRecordWithoutItsMemfdIsAViolation) {
  queue::RingWriter hostile(&ring(true), upData(), RINGS.up);
  wire::OutOfLineRecord rec{1, 4096};
  ASSERT_EQ(hostile.tryWrite(wire::RECORD_OUT_OF_LINE, &rec, sizeof rec), queue::RingStatus::OK);
  wire::Inbound in;
  ASSERT_EQ(receiveAtDaemon(in), RecvStatus::VIOLATION);
  EXPECT_EQ(lastError_.code, Errc::PROTOCOL_VIOLATION);
  EXPECT_NE(lastError_.message.find("without its memfd"), std::string::npos) << lastError_.describe();
}

TEST_F(ConnectionTest, OutOfLineRecordOverTheSizeLimitIsAViolation) {
  queue::RingWriter hostile(&ring(true), upData(), RINGS.up);
  wire::OutOfLineRecord rec{1, MAX_MESSAGE + 8};
  ASSERT_EQ(hostile.tryWrite(wire::RECORD_OUT_OF_LINE, &rec, sizeof rec), queue::RingStatus::OK);
  wire::Inbound in;
  ASSERT_EQ(receiveAtDaemon(in), RecvStatus::VIOLATION);
  EXPECT_NE(lastError_.message.find("over the size limit"), std::string::npos) << lastError_.describe();
}

TEST_F(ConnectionTest, UnknownRecordTypeIsAViolation) {
  queue::RingWriter hostile(&ring(true), upData(), RINGS.up);
  const uint64_t junk = 0;
  ASSERT_EQ(hostile.tryWrite(77, &junk, sizeof junk), queue::RingStatus::OK);
  wire::Inbound in;
  ASSERT_EQ(receiveAtDaemon(in), RecvStatus::VIOLATION);
  EXPECT_NE(lastError_.message.find("unknown ring record type 77"), std::string::npos) << lastError_.describe();
}

class ConnectionSmallLimitTest : public ConnectionTest {
 protected:
  ConnectionSmallLimitTest() : ConnectionTest(256) {}
};

TEST_F(ConnectionSmallLimitTest, SendReturnsTooBigOverMaxMessageBytesAndSendsNothing) {
  capnp::MallocMessageBuilder mb;
  buildPost(mb, bigValue(400), true);  // inline-sized, but over the 256-byte limit
  ASSERT_TRUE(client_->fitsInline(wire::encodedBytes(mb)));
  EXPECT_EQ(client_->send(mb, 1), SendStatus::TOO_BIG);
  EXPECT_EQ(client_->outPublished(), 0u);
  EXPECT_FALSE(readable(daemon_->socketFd()));
}

TEST_F(ConnectionSmallLimitTest, SendValueReturnsTooBigOverMaxMessageBytes) {
  EXPECT_EQ(client_->sendValue(plainPost(), bigValue(400)), ValueStatus::TOO_BIG);
  EXPECT_EQ(client_->outPublished(), 0u);
}

// ---------------------------------------------------------------- the fast lane

TEST_F(ConnectionTest, SendValueWritesASmallPostStraightIntoTheRing) {
  ASSERT_EQ(client_->sendValue(plainPost(3), Value::map({{"type", "NOOP"}})), ValueStatus::SENT);
  wire::Inbound in;
  wire::PlainMessage header;
  Value data;
  Error err;
  ASSERT_EQ(daemon_->receive(in, header, data, PLAIN_POSTS, err), RecvStatus::PLAIN) << err.describe();
  EXPECT_EQ(header.kind, schema::Envelope::CONTROLLER_POST);
  EXPECT_EQ(header.seq, 3u);
  EXPECT_EQ(data, Value::map({{"type", "NOOP"}}));
}

TEST_F(ConnectionTest, SendValueLeavesAMessageOverARingRecordToTheCaller) {
  EXPECT_EQ(client_->sendValue(plainPost(), bigValue(5000)), ValueStatus::NOT_INLINE);
  EXPECT_EQ(client_->outPublished(), 0u);
}

TEST_F(ConnectionTest, SendValueOfAnySizeSendsALargeValueOutOfLineIntact) {
  const Value big = bigValue(300'000);
  ASSERT_EQ(client_->sendValue(plainPost(7), big, Connection::Fit::ANY), ValueStatus::SENT);
  EXPECT_LT(client_->outPublished(), 64u) << "only the small OUT_OF_LINE record is in the ring";
  wire::Inbound in;
  ASSERT_EQ(receiveAtDaemon(in), RecvStatus::OK) << lastError_.describe();
  EXPECT_EQ(in.envelope().getSeq(), 7u);
  EXPECT_EQ(postedValue(in), big);
}

TEST_F(ConnectionTest, SendValueOfAnySizeRefusesOneOverTheMessageLimit) {
  const Value huge = bigValue(static_cast<size_t>(client_->maxMessageBytes()) + 1);
  EXPECT_EQ(client_->sendValue(plainPost(), huge, Connection::Fit::ANY), ValueStatus::TOO_BIG);
  EXPECT_EQ(client_->outPublished(), 0u);
}

TEST_F(ConnectionTest, SendValueReturnsFullWhenTheRingIsFull) {
  ASSERT_GT(fillUpRing(), 0);
  EXPECT_EQ(client_->sendValue(plainPost(), Value("late")), ValueStatus::FULL);
}

TEST_F(ConnectionTest, PlainReceiveHandsOtherEnvelopesToTheGeneralPath) {
  capnp::MallocMessageBuilder mb;
  auto env = mb.initRoot<schema::Envelope>();
  env.setSchemaVersion(schema::SCHEMA_VERSION);
  env.setSeq(1);
  env.initError().setName("TypeError");
  ASSERT_EQ(client_->send(mb, 1), SendStatus::OK);
  wire::Inbound in;
  wire::PlainMessage header;
  Value data;
  Error err;
  ASSERT_EQ(daemon_->receive(in, header, data, PLAIN_POSTS, err), RecvStatus::OK) << err.describe();
  ASSERT_TRUE(in.envelope().isError());
  EXPECT_EQ(std::string(in.envelope().getError().getName().cStr()), "TypeError");
}

// ---------------------------------------------------------------- corrupt rings

TEST_F(ConnectionTest, ReceiveReportsACorruptTailAsAViolation) {
  ring(true).tail.store(RINGS.up * 2);  // more than a ring ahead of the head
  wire::Inbound in;
  ASSERT_EQ(receiveAtDaemon(in), RecvStatus::VIOLATION);
  EXPECT_EQ(lastError_.code, Errc::PROTOCOL_VIOLATION);
  EXPECT_NE(lastError_.message.find("corrupt ring"), std::string::npos) << lastError_.describe();
}

TEST_F(ConnectionTest, ReceiveReportsAnImpossibleRecordLengthAsAViolation) {
  queue::RecordHeader h{static_cast<uint32_t>(RINGS.up), wire::RECORD_ENVELOPE};  // over a quarter of the ring
  std::memcpy(upData(), &h, sizeof h);
  ring(true).tail.store(64);
  wire::Inbound in;
  ASSERT_EQ(receiveAtDaemon(in), RecvStatus::VIOLATION);
  EXPECT_NE(lastError_.message.find("corrupt ring"), std::string::npos) << lastError_.describe();
}

TEST_F(ConnectionTest, SendReportsAHeadMovedPastTheTailAsBroken) {
  ASSERT_GT(fillUpRing(), 0);  // the next send must re-read the daemon's head
  ring(true).head.store(client_->outPublished() + 64);
  capnp::MallocMessageBuilder mb;
  buildPost(mb, Value("x"), true);
  EXPECT_EQ(client_->send(mb, 99'999), SendStatus::BROKEN);
}

TEST_F(ConnectionTest, SendValueReportsAHeadMovedBackwardsAsBroken) {
  ASSERT_GT(fillUpRing(), 0);
  wire::Inbound in;
  ASSERT_EQ(receiveAtDaemon(in), RecvStatus::OK);
  daemon_->publishConsumed();
  ASSERT_GE(fillUpRing(), 0);  // full again, having re-read the head the daemon advanced
  ring(true).head.store(0);    // behind the head the client already saw
  EXPECT_EQ(client_->sendValue(plainPost(), Value("x")), ValueStatus::BROKEN);
}

// ---------------------------------------------------------------- wake-ups

TEST_F(ConnectionTest, WakePeerIfSleepingRingsTheClientOncePerSleep) {
  capnp::MallocMessageBuilder mb;
  buildPost(mb, Value("x"), false);
  ASSERT_EQ(daemon_->send(mb, 1), SendStatus::OK);
  daemon_->wakePeerIfSleeping();
  EXPECT_TRUE(readable(client_->wakeReadFd()));
  client_->drainWakes();
  EXPECT_FALSE(readable(client_->wakeReadFd()));
  daemon_->wakePeerIfSleeping();  // the client has not gone back to sleep
  EXPECT_FALSE(readable(client_->wakeReadFd()));
}

TEST_F(ConnectionTest, WakePeerIfSleepingLeavesAnAwakeClientAlone) {
  client_->disarm();
  capnp::MallocMessageBuilder mb;
  buildPost(mb, Value("x"), false);
  ASSERT_EQ(daemon_->send(mb, 1), SendStatus::OK);
  daemon_->wakePeerIfSleeping();
  EXPECT_FALSE(readable(client_->wakeReadFd()));
}

TEST_F(ConnectionTest, ClientRingsTheDaemonsDoorbellWhenItSleeps) {
  ASSERT_FALSE(daemon_->armAndCheck()) << "nothing to read yet";
  ASSERT_EQ(client_->sendValue(plainPost(), Value("x")), ValueStatus::SENT);
  client_->wakePeerIfSleeping();
  EXPECT_TRUE(readable(daemon_->doorbellFd()));
}

TEST_F(ConnectionTest, ArmAndCheckSeesDataPublishedBeforeSleeping) {
  ASSERT_EQ(client_->sendValue(plainPost(), Value("x")), ValueStatus::SENT);
  EXPECT_TRUE(daemon_->armAndCheck());
}

// ---------------------------------------------------------------- the socket

TEST_F(ConnectionTest, PumpSocketReportsClosedWhenThePeerHangsUp) {
  client_.reset();
  Error err;
  EXPECT_EQ(daemon_->pumpSocket([](wire::Inbound&&) { ADD_FAILURE() << "no control expected"; }, err),
            IoStatus::CLOSED);
}

TEST_F(ConnectionTest, PumpSocketHandsControlMessagesToTheHandler) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Control>().initGoodbye().setReason("bye");
  ASSERT_TRUE(client_->sendControl(mb));
  std::vector<std::string> reasons;
  Error err;
  ASSERT_EQ(daemon_->pumpSocket(
                [&](wire::Inbound&& in) { reasons.push_back(in.control().getGoodbye().getReason().cStr()); }, err),
            IoStatus::OK)
      << err.describe();
  EXPECT_EQ(reasons, std::vector<std::string>{"bye"});
}

TEST_F(ConnectionTest, PumpSocketRefusesFdsOnAnOrdinaryControlMessage) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::Control>().initGoodbye().setReason("with an fd");
  auto words = capnp::messageToFlatArray(mb);
  ASSERT_EQ(sendDatagram(client_->socketFd(), words.begin(), words.size() * sizeof(capnp::word), {segment_.get()}),
            IoStatus::OK);
  Error err;
  EXPECT_EQ(daemon_->pumpSocket([](wire::Inbound&&) {}, err), IoStatus::FAILED);
  EXPECT_EQ(err.code, Errc::PROTOCOL_VIOLATION);
  EXPECT_NE(err.message.find("unexpected fds"), std::string::npos) << err.describe();
}

TEST_F(ConnectionTest, PumpSocketRefusesADatagramThatIsNotWholeWords) {
  const char junk[5] = {1, 2, 3, 4, 5};
  ASSERT_EQ(sendDatagram(client_->socketFd(), junk, sizeof junk), IoStatus::OK);
  Error err;
  EXPECT_EQ(daemon_->pumpSocket([](wire::Inbound&&) {}, err), IoStatus::FAILED);
  EXPECT_NE(err.message.find("whole number of words"), std::string::npos) << err.describe();
}

TEST_F(ConnectionTest, TakeRingFdReturnsTheChannelMemfdTheDaemonAnnounced) {
  auto memfd = shm::createMemfd("channel", 4096);
  ASSERT_TRUE(memfd.ok());
  capnp::MallocMessageBuilder mb;
  auto ring = mb.initRoot<schema::Control>().initBcRing();
  ring.setRingId(42);
  ring.setCapacity(2048);
  auto words = capnp::messageToFlatArray(mb);
  ASSERT_EQ(sendDatagram(daemon_->socketFd(), words.begin(), words.size() * sizeof(capnp::word), {memfd->get()}),
            IoStatus::OK);
  uint64_t capacity = 0;
  UniqueFd sut = client_->takeRingFd(42, capacity);
  ASSERT_TRUE(sut.valid());
  EXPECT_EQ(capacity, 2048u);
  EXPECT_EQ(*shm::fileSize(sut.get()), 4096u);
  EXPECT_FALSE(client_->takeRingFd(42, capacity).valid()) << "taken once";
}

}  // namespace
}  // namespace swipc::core
