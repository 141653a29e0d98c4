// fetch: the page half of Background Fetch (PageFetch) against a fake daemon that writes
// fetchResult / fetchProgress envelopes and passes body fds as the real one does.
#include "fetch/page_fetch.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include <capnp/serialize.h>

#include "../page/page_rig.h"
#include "core/socket.h"
#include "envelope.capnp.h"

namespace swipc::fetch {
namespace {

using page::testing::PageRig;
using SharedPtr = PageFetch::SharedPtr;

/// The FetchRegistration fields a test sets.
struct Reg {
  std::string id;
  uint64_t downloaded = 0;
  uint64_t downloadTotal = 0;
  std::string result;
  std::string failureReason;
};

void fill(schema::FetchRegistration::Builder b, const Reg& r) {
  b.setId(r.id);
  b.setDownloaded(r.downloaded);
  b.setDownloadTotal(r.downloadTotal);
  b.setResult(r.result);
  b.setFailureReason(r.failureReason);
  b.setRecordsAvailable(true);
}

class PageFetchTest : public ::testing::Test {
 protected:
  void SetUp() override { rig.start(); }

  PageFetch& sut() { return rig.page->features().get<PageFetch>(); }

  /// The next fetchCall the page sent (fails the test when none comes).
  std::optional<wire::Inbound> nextCall() {
    auto in = rig.nextSent();
    EXPECT_TRUE(in.has_value());
    if (in) EXPECT_EQ(in->envelope().which(), schema::Envelope::FETCH_CALL);
    return in;
  }

  void answer(uint64_t callId, const std::function<void(schema::FetchResult::Builder)>& body) {
    rig.daemon.send([&](schema::Envelope::Builder e) {
      auto r = e.initFetchResult();
      r.setCallId(callId);
      body(r);
    });
  }
  void answerRegistration(uint64_t callId, const Reg& reg) {
    answer(callId, [&](schema::FetchResult::Builder r) { fill(r.initRegistration(), reg); });
  }
  void progress(const Reg& reg) {
    rig.daemon.send([&](schema::Envelope::Builder e) { fill(e.initFetchProgress().initRegistration(), reg); });
  }
  /// Passes `fd` to the page as the daemon does a body: a Control.fileFd datagram named `token`.
  void passFile(uint64_t token, int fd) {
    capnp::MallocMessageBuilder mb;
    mb.initRoot<schema::Control>().initFileFd().setToken(token);
    auto words = capnp::messageToFlatArray(mb);
    ASSERT_EQ(core::sendDatagram(rig.daemon.conn().socketFd(), words.begin(), words.size() * sizeof(capnp::word), {fd}),
              core::IoStatus::OK);
  }

  /// fetch("f1") answered with `reg`; the registration it gave.
  SharedPtr fetched(const Reg& reg) {
    std::optional<Result<SharedPtr>> got;
    sut().fetch(reg.id, {"http://127.0.0.1/a"}, {}, [&](Result<SharedPtr> r) { got = std::move(r); });
    auto call = nextCall();
    if (!call) return nullptr;
    answerRegistration(call->envelope().getFetchCall().getCallId(), reg);
    EXPECT_TRUE(rig.runUntil([&] { return got.has_value(); }));
    if (!got || !*got) return nullptr;
    return **got;
  }

  PageRig rig;
};

TEST_F(PageFetchTest, FetchSendsTheRequestsAndTheAnswerIsFollowed) {
  std::optional<Result<SharedPtr>> got;
  BackgroundFetchRequest post("http://127.0.0.1/up");
  post.method = "POST";
  post.headers = {{"X-A", "1"}};
  post.body = {1, 2, 3};
  sut().fetch("f1", {"http://127.0.0.1/a", post}, {.downloadTotal = 99, .title = "t"},
              [&](Result<SharedPtr> r) { got = std::move(r); });
  auto call = nextCall();
  ASSERT_TRUE(call);
  auto c = call->envelope().getFetchCall();
  ASSERT_TRUE(c.isFetch());
  auto f = c.getFetch();
  EXPECT_EQ(std::string(f.getId().cStr()), "f1");
  EXPECT_EQ(f.getDownloadTotal(), 99u);
  EXPECT_EQ(std::string(f.getTitle().cStr()), "t");
  ASSERT_EQ(f.getRequests().size(), 2u);
  EXPECT_EQ(std::string(f.getRequests()[0].getUrl().cStr()), "http://127.0.0.1/a");
  EXPECT_EQ(std::string(f.getRequests()[1].getMethod().cStr()), "POST");
  EXPECT_EQ(std::string(f.getRequests()[1].getHeaders()[0].getName().cStr()), "X-A");
  EXPECT_EQ(f.getRequests()[1].getBody().size(), 3u);

  answerRegistration(c.getCallId(), {.id = "f1", .downloadTotal = 99});
  ASSERT_TRUE(rig.runUntil([&] { return got.has_value(); }));
  ASSERT_TRUE(got->ok()) << got->error().describe();
  ASSERT_TRUE(**got);
  EXPECT_EQ((**got)->state.id, "f1");
  EXPECT_EQ((**got)->state.downloadTotal, 99u);
  EXPECT_EQ(sut().followed("f1"), **got);
}

TEST_F(PageFetchTest, ProgressUpdatesTheStateAndRunsCallbacksUpToTheFinalEvent) {
  SharedPtr reg = fetched({.id = "f1"});
  ASSERT_TRUE(reg);
  std::vector<BackgroundFetchState> seen;
  reg->onProgress.push_back([&](const BackgroundFetchState& s) { seen.push_back(s); });
  progress({.id = "f1", .downloaded = 5});
  progress({.id = "f1", .downloaded = 10, .result = "success"});
  progress({.id = "f1", .downloaded = 11});  // after the final one: ignored
  ASSERT_TRUE(rig.runUntil([&] { return seen.size() == 2; }));
  rig.runUntil([] { return false; }, std::chrono::milliseconds(50));
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].downloaded, 5u);
  EXPECT_EQ(seen[1].result, "success");
  EXPECT_TRUE(reg->final);
  EXPECT_EQ(reg->state.downloaded, 10u);
  EXPECT_EQ(sut().followed("f1"), nullptr);
}

TEST_F(PageFetchTest, ACallbackAddedAfterAnUnseenFinalEventGetsItOnce) {
  SharedPtr reg = fetched({.id = "f1"});
  ASSERT_TRUE(reg);
  // The final event arrives (and is dispatched) before the page added any callback, as when it
  // comes inside the blocking fetch() that made the registration.
  progress({.id = "f1", .downloaded = 10, .result = "success"});
  ASSERT_TRUE(rig.runUntil([&] { return reg->final; }));
  rig.runUntil([] { return false; }, std::chrono::milliseconds(20));
  BackgroundFetchRegistration handle(reg);
  std::vector<BackgroundFetchState> seen;
  handle.onProgress([&](const BackgroundFetchState& s) { seen.push_back(s); });
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].result, "success");
  // Once, to the first callback only: it was handled.
  int later = 0;
  handle.onProgress([&](const BackgroundFetchState&) { ++later; });
  EXPECT_EQ(later, 0);
}

TEST_F(PageFetchTest, ProgressForAnIdNotFollowedIsIgnored) {
  SharedPtr reg = fetched({.id = "f1"});
  ASSERT_TRUE(reg);
  int calls = 0;
  reg->onProgress.push_back([&](const BackgroundFetchState&) { ++calls; });
  progress({.id = "other", .downloaded = 5});
  progress({.id = "f1", .downloaded = 1});
  ASSERT_TRUE(rig.runUntil([&] { return calls == 1; }));
  EXPECT_EQ(reg->state.downloaded, 1u);
  EXPECT_EQ(sut().followed("other"), nullptr);
}

TEST_F(PageFetchTest, GetOfAFollowedIdGivesTheSameState) {
  SharedPtr reg = fetched({.id = "f1"});
  ASSERT_TRUE(reg);
  std::optional<Result<SharedPtr>> got;
  sut().get("f1", [&](Result<SharedPtr> r) { got = std::move(r); });
  auto call = nextCall();
  ASSERT_TRUE(call);
  EXPECT_EQ(std::string(call->envelope().getFetchCall().getGet().cStr()), "f1");
  answerRegistration(call->envelope().getFetchCall().getCallId(), {.id = "f1", .downloaded = 3});
  ASSERT_TRUE(rig.runUntil([&] { return got.has_value(); }));
  ASSERT_TRUE(got->ok());
  EXPECT_EQ(**got, reg);
  EXPECT_EQ(reg->state.downloaded, 3u);
}

TEST_F(PageFetchTest, GetOfACompleteRegistrationIsNotFollowed) {
  std::optional<Result<SharedPtr>> got;
  sut().get("done", [&](Result<SharedPtr> r) { got = std::move(r); });
  auto call = nextCall();
  ASSERT_TRUE(call);
  answerRegistration(call->envelope().getFetchCall().getCallId(), {.id = "done", .result = "failure", .failureReason = "aborted"});
  ASSERT_TRUE(rig.runUntil([&] { return got.has_value(); }));
  ASSERT_TRUE(got->ok() && **got);
  EXPECT_TRUE((**got)->final);
  EXPECT_EQ(sut().followed("done"), nullptr);
}

TEST_F(PageFetchTest, GetOfNoneAnswersNull) {
  std::optional<Result<SharedPtr>> got;
  sut().get("nope", [&](Result<SharedPtr> r) { got = std::move(r); });
  auto call = nextCall();
  ASSERT_TRUE(call);
  answer(call->envelope().getFetchCall().getCallId(), [](schema::FetchResult::Builder r) { r.setNone(); });
  ASSERT_TRUE(rig.runUntil([&] { return got.has_value(); }));
  ASSERT_TRUE(got->ok());
  EXPECT_EQ(**got, nullptr);
}

TEST_F(PageFetchTest, TheDaemonsErrorKeepsItsName) {
  std::optional<Result<SharedPtr>> got;
  sut().fetch("", {}, {}, [&](Result<SharedPtr> r) { got = std::move(r); });
  auto call = nextCall();
  ASSERT_TRUE(call);
  answer(call->envelope().getFetchCall().getCallId(), [](schema::FetchResult::Builder r) {
    auto e = r.initError();
    e.setName("TypeError");
    e.setMessage("empty id");
  });
  ASSERT_TRUE(rig.runUntil([&] { return got.has_value(); }));
  ASSERT_FALSE(got->ok());
  EXPECT_EQ(got->error().code, Errc::TYPE);
  EXPECT_EQ(got->error().message, "empty id");
}

TEST_F(PageFetchTest, GetIdsAndAbortAnswer) {
  std::optional<Result<std::vector<std::string>>> ids;
  std::optional<Result<bool>> aborted;
  sut().getIds([&](Result<std::vector<std::string>> r) { ids = std::move(r); });
  sut().abort("f1", [&](Result<bool> r) { aborted = std::move(r); });
  auto first = nextCall();
  auto second = nextCall();
  ASSERT_TRUE(first && second);
  EXPECT_TRUE(first->envelope().getFetchCall().isGetIds());
  EXPECT_EQ(std::string(second->envelope().getFetchCall().getAbort().cStr()), "f1");
  answer(first->envelope().getFetchCall().getCallId(), [](schema::FetchResult::Builder r) {
    auto l = r.initIds(2);
    l.set(0, "a");
    l.set(1, "b");
  });
  answer(second->envelope().getFetchCall().getCallId(), [](schema::FetchResult::Builder r) { r.setAborted(true); });
  ASSERT_TRUE(rig.runUntil([&] { return ids.has_value() && aborted.has_value(); }));
  ASSERT_TRUE(ids->ok() && aborted->ok());
  EXPECT_EQ(**ids, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(**aborted);
}

TEST_F(PageFetchTest, PendingCallsFailDisconnectedWhenTheDaemonGoes) {
  std::optional<Result<std::vector<std::string>>> ids;
  sut().getIds([&](Result<std::vector<std::string>> r) { ids = std::move(r); });
  ASSERT_TRUE(nextCall());
  rig.daemon.hangUp();
  ASSERT_TRUE(rig.runUntil([&] { return ids.has_value(); }));
  ASSERT_FALSE(ids->ok());
  EXPECT_EQ(ids->error().code, Errc::DISCONNECTED);
}

TEST_F(PageFetchTest, AfterReattachFollowedIdsAreAskedForAgain) {
  SharedPtr reg = fetched({.id = "f1"});
  ASSERT_TRUE(reg);
  std::vector<BackgroundFetchState> seen;
  reg->onProgress.push_back([&](const BackgroundFetchState& s) { seen.push_back(s); });
  const size_t attachesBefore = rig.daemon.links.size();
  rig.daemon.hangUp();
  ASSERT_TRUE(rig.runUntil([&] { return rig.daemon.links.size() > attachesBefore && rig.page->link().attached(); }));
  auto call = nextCall();
  ASSERT_TRUE(call);
  ASSERT_TRUE(call->envelope().getFetchCall().isGet());
  EXPECT_EQ(std::string(call->envelope().getFetchCall().getGet().cStr()), "f1");
  // Finished while the page was away: the answer is its final event.
  answerRegistration(call->envelope().getFetchCall().getCallId(), {.id = "f1", .downloaded = 8, .result = "success"});
  ASSERT_TRUE(rig.runUntil([&] { return seen.size() == 1; }));
  EXPECT_EQ(seen[0].result, "success");
  EXPECT_EQ(seen[0].downloaded, 8u);
  progress({.id = "f1", .downloaded = 8, .result = "success"});  // the new daemon's own final event: once is enough
  rig.runUntil([] { return false; }, std::chrono::milliseconds(50));
  EXPECT_EQ(seen.size(), 1u);
}

TEST_F(PageFetchTest, MatchHandsEachFinishedBodyAsAFile) {
  int fd = ::memfd_create("body", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "abc", 3), 3);
  std::optional<Result<std::vector<BackgroundFetchRecord>>> got;
  sut().match("f1", std::nullopt, [&](Result<std::vector<BackgroundFetchRecord>> r) { got = std::move(r); });
  auto call = nextCall();
  ASSERT_TRUE(call);
  auto m = call->envelope().getFetchCall().getMatch();
  EXPECT_EQ(std::string(m.getId().cStr()), "f1");
  EXPECT_FALSE(m.getHasUrl());
  passFile(7, fd);
  ::close(fd);
  answer(call->envelope().getFetchCall().getCallId(), [](schema::FetchResult::Builder r) {
    auto l = r.initRecords(2);
    l[0].setUrl("http://127.0.0.1/a");
    l[0].setComplete(true);
    l[0].setStatus(200);
    l[0].setSize(3);
    l[0].setBodyToken(7);
    l[1].setUrl("http://127.0.0.1/b");
    l[1].setSize(1);
  });
  ASSERT_TRUE(rig.runUntil([&] { return got.has_value(); }));
  ASSERT_TRUE(got->ok()) << got->error().describe();
  ASSERT_EQ((*got)->size(), 2u);
  const auto& a = (**got)[0];
  EXPECT_TRUE(a.complete);
  EXPECT_EQ(a.status, 200);
  ASSERT_TRUE(a.body);
  EXPECT_EQ(a.body->size(), 3u);
  auto bytes = a.body->readAll();
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(std::string(bytes->begin(), bytes->end()), "abc");
  auto sha = a.body->sha256();
  ASSERT_TRUE(sha.ok());
  EXPECT_EQ(*sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_FALSE((**got)[1].complete);
  EXPECT_FALSE((**got)[1].body);
}

TEST_F(PageFetchTest, MatchNamingAFileNeverPassedIsAProtocolViolation) {
  std::optional<Result<std::vector<BackgroundFetchRecord>>> got;
  sut().match("f1", std::string("http://127.0.0.1/a"), [&](Result<std::vector<BackgroundFetchRecord>> r) { got = std::move(r); });
  auto call = nextCall();
  ASSERT_TRUE(call);
  EXPECT_TRUE(call->envelope().getFetchCall().getMatch().getHasUrl());
  answer(call->envelope().getFetchCall().getCallId(), [](schema::FetchResult::Builder r) {
    auto l = r.initRecords(1);
    l[0].setUrl("http://127.0.0.1/a");
    l[0].setComplete(true);
    l[0].setBodyToken(9);
  });
  ASSERT_TRUE(rig.runUntil([&] { return got.has_value(); }));
  ASSERT_FALSE(got->ok());
  EXPECT_EQ(got->error().code, Errc::PROTOCOL_VIOLATION);
}

TEST_F(PageFetchTest, RunUntilStepsThePageUntilAnswered) {
  std::optional<Result<bool>> aborted;
  sut().abort("f1", [&](Result<bool> r) { aborted = std::move(r); });
  auto call = nextCall();
  ASSERT_TRUE(call);
  answer(call->envelope().getFetchCall().getCallId(), [](schema::FetchResult::Builder r) { r.setAborted(false); });
  EXPECT_TRUE(sut().runUntil([&] { return aborted.has_value(); }, Clock::now() + std::chrono::seconds(5)));
  EXPECT_FALSE(sut().runUntil([] { return false; }, Clock::now() + std::chrono::milliseconds(10)));
}

TEST(BodyFileTest, EmptyBodyHashesToTheEmptyDigest) {
  BodyFile sut(::memfd_create("empty", MFD_CLOEXEC));
  EXPECT_EQ(sut.size(), 0u);
  auto sha = sut.sha256();
  ASSERT_TRUE(sha.ok());
  EXPECT_EQ(*sha, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(BackgroundFetchStateTest, ToValueHasRsFieldsInOrder) {
  BackgroundFetchState s;
  s.id = "f";
  s.downloaded = 3;
  s.result = "success";
  Value v = s.toValue();
  ASSERT_TRUE(v.isMap());
  std::vector<std::string> keys;
  for (const auto& [k, x] : v.asMap()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"id", "uploadTotal", "uploaded", "downloadTotal", "downloaded", "result",
                                            "failureReason", "recordsAvailable"}));
  EXPECT_EQ(v["downloaded"].asInt(), 3);
  EXPECT_EQ(v["recordsAvailable"].asBool(), true);
}

}  // namespace
}  // namespace swipc::fetch
