// The Client API in this process against a real sw_daemon child (and, for typed replies, against
// a swipc::ServiceWorker running on a thread of this process).
#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <future>
#include <thread>

#include "in_process_service_worker.h"
#include "process.h"
#include "test_scope.h"
#include "swipc/client.h"
#include "swipc/service_worker.h"
#include "test_payload.capnp.h"

namespace swipc::testing {
namespace {

Bytes patternBytes(size_t n, uint32_t seed) {
  Bytes b;
  b.data.resize(n);
  uint32_t x = seed;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;  // LCG: every byte depends on its position
    b.data[i] = static_cast<uint8_t>(x >> 24);
  }
  return b;
}

class LibraryTest : public ::testing::Test {
 protected:
  void startDaemon(std::vector<std::string> extraArgs = {}) {
    daemon = std::make_unique<Daemon>(dir.path(), scope, std::move(extraArgs));
    ASSERT_TRUE(daemon->waitReady()) << daemon->log();
  }
  Result<Client> connect(const std::string& s) {
    ClientOptions opts;
    opts.scope = s;
    opts.runtimeDir = dir.path();
    return Client::connect(opts);
  }

  TempDir dir;
  std::string scope = testScope();
  std::unique_ptr<Daemon> daemon;
};

const Value GET_VERSION = Value::map({{"type", "GET_VERSION"}});

// ------------------------------------------------------------------------------------------------ basics

TEST_F(LibraryTest, MessageSwReturnsDaemonVersion) {
  startDaemon({"--sw-version", "lib-1.2.3"});
  auto sut = connect(scope);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  EXPECT_EQ(sut->swVersion(), "lib-1.2.3");
  EXPECT_TRUE(sut->controlled());
  auto r = sut->messageSW(GET_VERSION, 5s);
  ASSERT_TRUE(r.ok()) << r.error().describe();
  EXPECT_EQ(*r, Value("lib-1.2.3"));
}

TEST_F(LibraryTest, MessageSwFailsWithTimeoutErrorWhenTypeIsIgnored) {
  startDaemon();
  auto sut = connect(scope);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  auto start = TestClock::now();
  auto r = sut->messageSW(Value::map({{"type", "IGNORED_BY_THE_SW"}}), 200ms);
  auto elapsed = TestClock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::TIMEOUT) << r.error().describe();
  EXPECT_GE(elapsed, 200ms);
  EXPECT_LT(elapsed, 3s);
  // A late reply to the timed-out request can never satisfy the next one.
  auto v = sut->messageSW(GET_VERSION, 5s);
  ASSERT_TRUE(v.ok()) << v.error().describe();
  EXPECT_TRUE(v->isText());
}

TEST_F(LibraryTest, ConnectFailsWithNoDaemonWhenNoneRuns) {
  auto sut = connect(scope);
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::NO_DAEMON) << sut.error().describe();
}

// ------------------------------------------------------------------------------------------------ large messages

TEST_F(LibraryTest, EchoOfOneMebibyteRoundTripsIntact) {
  startDaemon();
  auto sut = connect(scope);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  Bytes blob = patternBytes(1 << 20, 1);
  auto r = sut->messageSW(Value::map({{"type", "ECHO"}, {"blob", blob}}), 10s);
  ASSERT_TRUE(r.ok()) << r.error().describe();
  ASSERT_TRUE((*r)["blob"].isBytes());
  EXPECT_TRUE((*r)["blob"].asBytes() == blob);
}

TEST_F(LibraryTest, EchoOfTwentyMebibytesRoundTripsIntact) {
  startDaemon();
  auto sut = connect(scope);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  Bytes blob = patternBytes(20 << 20, 2);
  auto r = sut->messageSW(Value::map({{"type", "ECHO"}, {"blob", blob}, {"tail", "end"}}), 20s);
  ASSERT_TRUE(r.ok()) << r.error().describe();
  ASSERT_TRUE((*r)["blob"].isBytes());
  EXPECT_EQ((*r)["blob"].asBytes().data.size(), blob.data.size());
  EXPECT_TRUE((*r)["blob"].asBytes() == blob);
  EXPECT_EQ((*r)["tail"], Value("end"));
  // Small messages still take the ring afterwards.
  auto v = sut->messageSW(GET_VERSION, 5s);
  EXPECT_TRUE(v.ok());
}

TEST_F(LibraryTest, PostOverMaxMessageBytesFailsWithQuotaExceededAndConnectionStillWorks) {
  startDaemon({"--max-message-bytes", "1048576", "--sw-version", "small"});
  // Declared before the client: its destructor may still run callbacks.
  std::vector<MessageSeq> undelivered;
  auto sut = connect(scope);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  sut->onUndelivered([&](MessageSeq s, const Error&) { undelivered.push_back(s); });
  Value big = Value::map({{"type", "ECHO"}, {"blob", patternBytes(2 << 20, 3)}});

  ASSERT_NE(sut->controller(), nullptr);
  auto post = sut->controller()->postMessage(big);
  ASSERT_FALSE(post.ok());
  EXPECT_EQ(post.error().code, Errc::QUOTA_EXCEEDED) << post.error().describe();
  auto ask = sut->messageSW(big, 5s);
  ASSERT_FALSE(ask.ok());
  EXPECT_EQ(ask.error().code, Errc::QUOTA_EXCEEDED) << ask.error().describe();

  // Under the limit still round-trips (out of line), and the connection is intact.
  Bytes half = patternBytes(512 << 10, 4);
  auto echo = sut->messageSW(Value::map({{"type", "ECHO"}, {"blob", half}}), 10s);
  ASSERT_TRUE(echo.ok()) << echo.error().describe();
  EXPECT_TRUE((*echo)["blob"].asBytes() == half);
  auto v = sut->messageSW(GET_VERSION, 5s);
  ASSERT_TRUE(v.ok()) << v.error().describe();
  EXPECT_EQ(*v, Value("small"));
  EXPECT_TRUE(sut->attached());
  EXPECT_TRUE(undelivered.empty());
  EXPECT_TRUE(daemon->process().running());
}

// ------------------------------------------------------------------------------------------------ typed payloads

TEST_F(LibraryTest, TypedPostToReferenceDaemonRaisesMessageErrorThereAndDaemonKeepsServing) {
  startDaemon({"--sw-version", "typed-ref"});
  std::optional<MessageSeq> delivered;
  auto sut = connect(scope);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  sut->onDelivered([&](MessageSeq s) { delivered = s; });
  auto seq = sut->controller()->postMessage<test::Point>(
      [](test::Point::Builder p) {
        p.setX(1);
        p.setY(2);
        p.setLabel("unknown to the daemon");
      },
      {.requestAck = true});
  ASSERT_TRUE(seq.ok()) << seq.error().describe();
  ASSERT_TRUE(sut->runUntil([&] { return delivered.has_value(); }, deadlineIn(5s)));
  EXPECT_EQ(*delivered, *seq);
  EXPECT_TRUE(eventually([&] { return daemon->log().find("messageerror") != std::string::npos; })) << daemon->log();

  auto v = sut->messageSW(GET_VERSION, 5s);
  ASSERT_TRUE(v.ok()) << v.error().describe();
  EXPECT_EQ(*v, Value("typed-ref"));
  EXPECT_TRUE(sut->attached());
}

/// The in-process service worker for the typed tests: answers GET_VERSION, TYPED_REPLY (a Point
/// on the reply port) and TYPED_POST (a Point to event.source, then "posted" on the port).
std::unique_ptr<InProcessServiceWorker> startTypedServiceWorker(const std::string& dir, const std::string& scope) {
  return std::make_unique<InProcessServiceWorker>(
      ServiceWorkerOptions{.scope = scope, .runtimeDir = dir, .version = "inproc", .handleSignals = false},
      [](ServiceWorker& sw) {
        sw.onMessage([](ExtendableMessageEvent& e) {
          const std::string type = e.data["type"].textOr("");
          auto fill = [](test::Point::Builder p) {
            p.setX(3);
            p.setY(-4);
            p.setLabel("from the sw");
          };
          if (type == "GET_VERSION") {
            (void)e.ports[0].postMessage(Value("inproc"));
          } else if (type == "TYPED_REPLY") {
            (void)e.ports[0].postMessage<test::Point>(fill);
          } else if (type == "TYPED_POST") {
            auto [id, build] = typedBuilder<test::Point>(fill);
            auto r = e.source->postTyped(id, build);
            (void)e.ports[0].postMessage(Value(r.ok() ? "posted" : "failed"));
          }
        });
      });
}

TEST_F(LibraryTest, TypedMessageIsReadableWhenClientAcceptsSchema) {
  auto sw = startTypedServiceWorker(dir.path(), scope);
  std::vector<MessageEvent> messages;
  int messageErrors = 0;
  auto sut = connect(scope);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  sut->types().accept<test::Point>();
  sut->onMessage([&](const MessageEvent& e) { messages.push_back(e); });
  sut->onMessageError([&](const MessageErrorEvent&) { ++messageErrors; });
  sut->startMessages();

  auto r = sut->messageSW(Value::map({{"type", "TYPED_POST"}}), 5s);
  ASSERT_TRUE(r.ok()) << r.error().describe();
  ASSERT_EQ(*r, Value("posted"));
  ASSERT_TRUE(sut->runUntil([&] { return !messages.empty() || messageErrors > 0; }, deadlineIn(5s)));
  ASSERT_EQ(messageErrors, 0);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_TRUE(messages[0].isTyped());
  EXPECT_EQ(messages[0].typeId(), capnp::typeId<test::Point>());
  auto p = messages[0].as<test::Point>();
  ASSERT_TRUE(p.ok()) << p.error().describe();
  EXPECT_EQ(p->getX(), 3);
  EXPECT_EQ(p->getY(), -4);
  EXPECT_EQ(std::string(p->getLabel().cStr()), "from the sw");
  // The wrong schema is refused by as<T>(), not misread.
  auto other = messages[0].as<test::Other>();
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code, Errc::DATA_CLONE);
}

TEST_F(LibraryTest, TypedMessageRaisesMessageErrorWhenClientDoesNotAcceptSchema) {
  auto sw = startTypedServiceWorker(dir.path(), scope);
  int messages = 0;
  std::vector<MessageErrorEvent> errors;
  auto sut = connect(scope);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  sut->types().accept<test::Other>();  // accepts something, just not Point
  sut->onMessage([&](const MessageEvent&) { ++messages; });
  sut->onMessageError([&](const MessageErrorEvent& e) { errors.push_back(e); });
  sut->startMessages();

  auto r = sut->messageSW(Value::map({{"type", "TYPED_POST"}}), 5s);
  ASSERT_TRUE(r.ok()) << r.error().describe();
  ASSERT_TRUE(sut->runUntil([&] { return messages > 0 || !errors.empty(); }, deadlineIn(5s)));
  EXPECT_EQ(messages, 0);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].error.code, Errc::DATA_CLONE) << errors[0].error.describe();
  // The connection carries on.
  auto v = sut->messageSW(GET_VERSION, 5s);
  ASSERT_TRUE(v.ok()) << v.error().describe();
  EXPECT_EQ(*v, Value("inproc"));
}

TEST_F(LibraryTest, TypedReplyFailsMessageSwWithDataCloneErrorWhenSchemaNotAccepted) {
  auto sw = startTypedServiceWorker(dir.path(), scope);
  auto sut = connect(scope);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  auto r = sut->messageSW(Value::map({{"type", "TYPED_REPLY"}}), 5s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::DATA_CLONE) << r.error().describe();
  auto v = sut->messageSW(GET_VERSION, 5s);
  ASSERT_TRUE(v.ok()) << v.error().describe();
  EXPECT_EQ(*v, Value("inproc"));
}

TEST_F(LibraryTest, TypedReplyResolvesMessageSwWhenSchemaAccepted) {
  auto sw = startTypedServiceWorker(dir.path(), scope);
  auto sut = connect(scope);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  sut->types().accept<test::Point>();
  auto r = sut->messageSW(Value::map({{"type", "TYPED_REPLY"}}), 5s);
  EXPECT_TRUE(r.ok()) << r.error().describe();
  // TODO(test): messageSW returns a Value, so the typed reply's content cannot be read here;
  // assert on it once the API exposes typed replies.
}

// ------------------------------------------------------------------------------------------------ close

// After close() the daemon still drains everything committed before the Goodbye, so none of it
// may be reported undelivered (a caller that re-sent it would duplicate it).
TEST_F(LibraryTest, CloseReportsNoPostUndeliveredThatServiceWorkerStillConsumes) {
  std::atomic<int> received{0};
  InProcessServiceWorker sw(ServiceWorkerOptions{.scope = scope, .runtimeDir = dir.path(), .handleSignals = false},
                            [&received](ServiceWorker& s) {
                              s.onMessage([&received](ExtendableMessageEvent& e) {
                                if (e.data["type"].textOr("") == "NOTE") ++received;
                              });
                            });
  std::vector<MessageSeq> undelivered;
  auto sut = connect(scope);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  sut->onUndelivered([&](MessageSeq s, const Error&) { undelivered.push_back(s); });

  // Hold the service worker's loop so the posts are still in the ring when the client closes.
  std::promise<void> held, release;
  auto releaseFuture = release.get_future();
  sw.sw().post([&] {
    held.set_value();
    releaseFuture.wait();
  });
  held.get_future().wait();
  constexpr int N = 5;
  for (int i = 0; i < N; ++i) ASSERT_TRUE(sut->controller()->postMessage(Value::map({{"type", "NOTE"}, {"i", i}})).ok());
  sut->close();
  release.set_value();

  ASSERT_TRUE(eventually([&] { return received.load() == N; })) << received.load() << " of " << N;
  EXPECT_TRUE(undelivered.empty()) << undelivered.size() << " post(s) the service worker consumed were reported "
                                   << "undelivered";
}

// ------------------------------------------------------------------------------------------------ embedding

TEST_F(LibraryTest, PollOnFdThenDispatchDeliversAsyncReply) {
  startDaemon({"--sw-version", "polled"});
  std::optional<Result<Value>> reply;
  auto sut = connect(scope);
  ASSERT_TRUE(sut.ok()) << sut.error().describe();
  sut->messageSWAsync(GET_VERSION, [&](Result<Value> r) { reply.emplace(std::move(r)); }, deadlineIn(5s));
  EXPECT_FALSE(reply.has_value()) << "the reply callback must run from dispatch(), not inside the call";

  int readable = 0;
  auto deadline = TestClock::now() + 5s;
  while (!reply && TestClock::now() < deadline) {
    pollfd p{sut->fd(), POLLIN, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - TestClock::now()).count();
    int n = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left, 0)) + 1);
    if (n > 0) {
      ++readable;
      sut->dispatch();
    }
  }
  ASSERT_TRUE(reply.has_value());
  EXPECT_GE(readable, 1);
  ASSERT_TRUE(reply->ok()) << reply->error().describe();
  EXPECT_EQ(**reply, Value("polled"));
}

}  // namespace
}  // namespace swipc::testing
