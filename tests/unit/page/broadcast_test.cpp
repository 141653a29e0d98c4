// page: PageBroadcast, BroadcastChannel on the page seam. Joining maps the channel's ring
// read-only after checking its region header; records fan out to the page's joined objects
// except the poster; a lapped reader learns how many it missed; memberships survive a daemon
// restart; closing leaves the channel.
#include "page/broadcast.h"

#include <gtest/gtest.h>
#include <fcntl.h>

#include <capnp/serialize.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/socket.h"
#include "page_rig.h"
#include "shm/mapping.h"
#include "shm/memfd.h"

namespace swipc::page {
namespace {

using namespace std::chrono_literals;
using testing::PageRig;

constexpr uint64_t SENDER_TAG = uint64_t{7} << 32;  // this page's tag prefix, as the daemon gives it

/// A channel ring as the daemon makes one: a formatted region in a sealed memfd.
struct Ring {
  explicit Ring(uint64_t capacity = 64 * 1024, bool format = true) : capacity(capacity) {
    const uint64_t bytes = queue::broadcastRegionBytes(capacity);
    auto memfd = shm::createMemfd("test-bc", bytes);
    EXPECT_TRUE(memfd.ok());
    fd = std::move(*memfd);
    auto mapping = shm::Mapping::map(fd.get(), bytes, shm::Access::READ_WRITE);
    EXPECT_TRUE(mapping.ok());
    map = std::move(*mapping);
    if (format) writer = queue::formatBroadcastRegion(map.data(), bytes, capacity);
    EXPECT_TRUE(shm::addSeals(fd.get(), shm::SEALS_FIXED_SIZE | F_SEAL_FUTURE_WRITE).ok());
  }
  /// Appends a channel message `text` with channel seq `seq`, posted by `tag`, and wakes readers.
  void post(uint64_t seq, const std::string& text, uint64_t tag = 1) {
    capnp::MallocMessageBuilder mb;
    auto env = mb.initRoot<schema::Envelope>();
    env.setSchemaVersion(schema::SCHEMA_VERSION);
    env.initBcMessage().initPayload().initValue().setText(text);
    auto words = capnp::messageToFlatArray(mb);
    writer.append(wire::RECORD_ENVELOPE, seq, tag, words.begin(), static_cast<uint32_t>(words.size() * sizeof(capnp::word)));
    writer.wakeAll();
  }
  uint64_t capacity;
  UniqueFd fd;
  shm::Mapping map;
  queue::BroadcastWriter writer;
};

struct PageBroadcastTest : ::testing::Test {
  PageBroadcastTest() {
    auto& features = rig.page->features();
    auto bc = PageBroadcast::create(features.context());
    EXPECT_TRUE(bc.ok());
    bc_ = &features.add(std::move(*bc));
    rig.start();
    rig.page->queue().start();
  }
  PageBroadcast& sut() { return *bc_; }

  /// A BroadcastChannel object named `name` on the page, recording what it gets.
  std::shared_ptr<detail::BcObject> open(const std::string& name) {
    auto obj = std::make_shared<detail::BcObject>();
    obj->name = name;
    obj->hub = sut().hub();
    const std::string who = name + "#" + std::to_string(objects.size() + 1);
    obj->onMessage = [this, who](const MessageEvent& e) { log.push_back(who + " " + e.data.asText()); };
    obj->onLapped = [this, who](uint64_t n) { log.push_back(who + " lapped " + std::to_string(n)); };
    obj->onJoined = [this, who] { log.push_back(who + " joined"); };
    sut().open(obj);
    objects.push_back(obj);
    return obj;
  }
  /// The daemon reads the page's bcJoin for `obj`.
  void expectJoin(const detail::BcObject& obj) {
    auto in = rig.nextSent();
    ASSERT_TRUE(in && in->envelope().isBcJoin());
    EXPECT_EQ(in->envelope().getBcJoin().getObjectId(), obj.id);
    EXPECT_EQ(std::string(in->envelope().getBcJoin().getName().cStr()), obj.name);
  }
  /// The daemon passes `ring` (once per ring) and answers the join of `obj`.
  void join(const detail::BcObject& obj, Ring& ring, uint64_t ringId, uint64_t startSeq, bool passRing = true) {
    if (passRing) {
      capnp::MallocMessageBuilder mb;
      auto r = mb.initRoot<schema::Control>().initBcRing();
      r.setRingId(ringId);
      r.setCapacity(ring.capacity);
      auto words = capnp::messageToFlatArray(mb);
      ASSERT_EQ(core::sendDatagram(rig.daemon.conn().socketFd(), words.begin(), words.size() * sizeof(capnp::word),
                                   {ring.fd.get()}),
                core::IoStatus::OK);
    }
    rig.daemon.send([&](schema::Envelope::Builder e) {
      auto j = e.initBcJoined();
      j.setObjectId(obj.id);
      j.setRingId(ringId);
      j.setStartPos(ring.writer.tail());
      j.setStartSeq(startSeq);
      j.setSenderTag(SENDER_TAG);
    });
  }

  PageRig rig;
  PageBroadcast* bc_ = nullptr;
  std::vector<std::shared_ptr<detail::BcObject>> objects;
  std::vector<std::string> log;
};

TEST_F(PageBroadcastTest, OpenSendsAJoinWithTheName) {
  auto obj = open("news");
  expectJoin(*obj);
  EXPECT_FALSE(obj->joined);
}

TEST_F(PageBroadcastTest, JoinedMapsTheRingAndDeliversWhatIsPostedAfterIt) {
  Ring ring;
  ring.post(1, "before the join");
  auto obj = open("news");
  expectJoin(*obj);
  join(*obj, ring, 1, 2);
  ASSERT_TRUE(rig.runUntil([&] { return obj->joined; }));
  ring.post(2, "one");
  ring.post(3, "two");
  ASSERT_TRUE(rig.runUntil([&] { return log.size() == 3; }));
  EXPECT_EQ(log, (std::vector<std::string>{"news#1 joined", "news#1 one", "news#1 two"}));
}

TEST_F(PageBroadcastTest, EveryObjectOfTheNameGetsARecordButThePoster) {
  Ring ring;
  auto a = open("news");
  auto b = open("news");
  expectJoin(*a);
  expectJoin(*b);
  join(*a, ring, 1, 1);
  join(*b, ring, 1, 1, false);  // one ring per channel: passed once
  ASSERT_TRUE(rig.runUntil([&] { return a->joined && b->joined; }));
  log.clear();
  ring.post(1, "from b", detail::bcTag(SENDER_TAG, b->id));
  ASSERT_TRUE(rig.runUntil([&] { return !log.empty(); }));
  rig.runUntil([] { return false; }, 30ms);
  EXPECT_EQ(log, (std::vector<std::string>{"news#1 from b"}));
}

TEST_F(PageBroadcastTest, ALappedReaderLearnsHowManyItMissed) {
  Ring ring(queue::MIN_BROADCAST_CAPACITY);
  auto obj = open("fast");
  expectJoin(*obj);
  join(*obj, ring, 1, 1);
  ASSERT_TRUE(rig.runUntil([&] { return obj->joined; }));
  log.clear();
  // Written while the page does not read: the ring (1 KiB) holds only the last few.
  for (uint64_t seq = 1; seq <= 40; ++seq) ring.post(seq, "m" + std::to_string(seq));
  ASSERT_TRUE(rig.runUntil([&] { return !log.empty() && log.back() == "fast#1 m40"; }));
  ASSERT_GE(log.size(), 2u);
  const std::string& lapped = log.front();
  ASSERT_EQ(lapped.rfind("fast#1 lapped ", 0), 0u) << lapped;
  const uint64_t missed = std::stoull(lapped.substr(std::strlen("fast#1 lapped ")));
  EXPECT_EQ(missed + (log.size() - 1), 40u);  // every record is either delivered or counted missed
}

TEST_F(PageBroadcastTest, ARingWithoutARegionHeaderIsRefused) {
  Ring ring(64 * 1024, /*format=*/false);
  auto obj = open("bad");
  expectJoin(*obj);
  join(*obj, ring, 1, 1);
  rig.runUntil([] { return false; }, 100ms);
  EXPECT_FALSE(obj->joined);
  EXPECT_TRUE(log.empty());
  EXPECT_TRUE(rig.page->link().attached());  // the page carries on
}

TEST_F(PageBroadcastTest, ARingSmallerThanAnnouncedIsRefused) {
  auto obj = open("short");
  expectJoin(*obj);
  Ring lie(4096);
  lie.capacity = 64 * 1024;  // announces more than the memfd holds
  join(*obj, lie, 1, 1);
  rig.runUntil([] { return false; }, 100ms);
  EXPECT_FALSE(obj->joined);
}

TEST_F(PageBroadcastTest, ClosingAnObjectLeavesTheChannel) {
  Ring ring;
  auto obj = open("news");
  expectJoin(*obj);
  join(*obj, ring, 1, 1);
  ASSERT_TRUE(rig.runUntil([&] { return obj->joined; }));
  obj->closed = true;
  sut().close(*obj);
  auto in = rig.nextSent();
  ASSERT_TRUE(in && in->envelope().isBcLeave());
  EXPECT_EQ(in->envelope().getBcLeave().getObjectId(), obj->id);
}

TEST_F(PageBroadcastTest, MembershipsSurviveADaemonRestart) {
  Ring ring;
  auto obj = open("news");
  expectJoin(*obj);
  join(*obj, ring, 1, 1);
  ASSERT_TRUE(rig.runUntil([&] { return obj->joined; }));
  ring.post(1, "before the restart");
  rig.daemon.hangUp();
  ASSERT_TRUE(rig.runUntil([&] { return rig.daemon.links.size() == 2 && rig.page->link().attached(); }));
  EXPECT_FALSE(obj->joined);
  EXPECT_NE(std::find(log.begin(), log.end(), "news#1 before the restart"), log.end());  // read out first
  expectJoin(*obj);  // joined again on the new daemon
  Ring fresh;
  join(*obj, fresh, 1, 1);
  ASSERT_TRUE(rig.runUntil([&] { return obj->joined; }));
  fresh.post(1, "after");
  ASSERT_TRUE(rig.runUntil([&] { return log.back() == "news#1 after"; }));
}

TEST_F(PageBroadcastTest, ClosingThePageEndsEveryObject) {
  auto obj = open("news");
  auto hub = sut().hub();
  rig.page->close();
  EXPECT_TRUE(obj->closed);
  EXPECT_EQ(sut().hub(), nullptr);
  hub.reset();
  EXPECT_TRUE(obj->hub.expired());  // a BroadcastChannel made from it now says the client is gone
}

}  // namespace
}  // namespace swipc::page
