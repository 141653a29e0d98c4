// JsQueue (the JetStream half of Background Sync across nodes) against a real nats-server with
// JetStream: what the bucket keeps over time.
#include "federation/js_queue.h"

#include <gtest/gtest.h>

#include "nats_cluster.h"
#include "swipc/testing.h"

namespace swipc::federation {
namespace {

using namespace std::chrono_literals;
using swipc::testing::NatsCluster;

// Every entry done leaves a purge marker in the bucket; without a sweep a scope that uses sync
// for months keeps one per entry it ever had, and every watch of the bucket replays them all.
// The sweep removes the markers older than its age and nothing else: the registration stays.
TEST(JsQueueNatsTest, SweepRemovesOldPurgeMarkersAndKeepsRegistrations) {
  if (!NatsCluster::available()) GTEST_SKIP() << "nats-server is not installed (apt-get install nats-server)";
  NatsCluster cluster(3);  // JetStream in cluster mode, as the daemons use it
  JsQueue q(JsQueue::Config{{cluster.url(0)}, "sweep.test", "n1"});
  ASSERT_TRUE(swipc::testing::eventually([&] { return q.open().ok(); }, 30s)) << cluster.logs();
  const std::string h = tagKey("tag");
  JsRecord rec;
  rec.tag = "tag";
  auto put = q.put(h, rec, 0);
  ASSERT_TRUE(put && put->has_value()) << (put ? "revision changed" : put.error().describe());
  for (int i = 0; i < 3; ++i) {
    auto e = q.addEntry(h, Value(int64_t(i)));
    ASSERT_TRUE(e) << e.error().describe();
    ASSERT_TRUE(q.purgeEntry(e->key)) << e->key;
  }
  auto stored = q.storedMessages();
  ASSERT_TRUE(stored) << stored.error().describe();
  EXPECT_EQ(*stored, 4u);  // the registration and three purge markers

  // Markers younger than the age stay.
  ASSERT_TRUE(q.purgeOldMarkers(1h));
  stored = q.storedMessages();
  ASSERT_TRUE(stored);
  EXPECT_EQ(*stored, 4u);

  // Old enough (here: any age) they go; the registration and its entries' view stay as they were.
  ASSERT_TRUE(q.purgeOldMarkers(-1ms));
  stored = q.storedMessages();
  ASSERT_TRUE(stored);
  EXPECT_EQ(*stored, 1u);
  auto got = q.get(h);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->first.tag, "tag");
  auto entries = q.entries(h);
  ASSERT_TRUE(entries);
  EXPECT_TRUE(entries->empty());
}

}  // namespace
}  // namespace swipc::federation
