// JsQueue (the JetStream half of Background Sync across nodes) against a real nats-server
// cluster with JetStream: what the bucket keeps over time.
#include "federation/js_queue.h"

#include <gtest/gtest.h>

#include "nats_cluster.h"
#include "swipc/testing.h"

namespace swipc::federation {
namespace {

using namespace std::chrono_literals;
using swipc::testing::NatsCluster;

std::vector<int64_t> entryValues(JsQueue& q, const std::string& h) {
  std::vector<int64_t> out;
  auto entries = q.entries(h);
  EXPECT_TRUE(entries) << entries.error().describe();
  if (entries)
    for (const auto& e : *entries) out.push_back(e.data.asInt());
  return out;
}

// An entry done goes without a trace: a purge would leave a marker per entry for ever, and
// every later read of the tag's entries (each event, each take-over) would wade through all the
// markers the tag ever had. CI once saw a tag with ~1200 entries whose reads then timed out
// again and again, so its event never settled.
TEST(JsQueueNatsTest, RemovedEntriesLeaveNothingInTheBucket) {
  if (!NatsCluster::available()) GTEST_SKIP() << "nats-server is not installed (apt-get install nats-server)";
  NatsCluster cluster(3);  // JetStream in cluster mode, as the daemons use it
  JsQueue q(JsQueue::Config{{cluster.url(0)}, "remove.test", "n1"});
  ASSERT_TRUE(swipc::testing::eventually([&] { return q.open().ok(); }, 30s)) << cluster.logs();
  const std::string h = tagKey("tag");
  // The entries first, so that deleting the first moves the stream's first sequence past it.
  std::vector<JsEntry> added;
  for (int64_t i = 0; i < 4; ++i) {
    auto e = q.addEntry(h, Value(i));
    ASSERT_TRUE(e) << e.error().describe();
    added.push_back(*e);
  }
  JsRecord rec;
  rec.tag = "tag";
  auto put = q.put(h, rec, 0);
  ASSERT_TRUE(put && put->has_value()) << (put ? "revision changed" : put.error().describe());
  EXPECT_EQ(entryValues(q, h), (std::vector<int64_t>{0, 1, 2, 3}));

  // One from the middle: the others keep their order.
  auto removed = q.removeEntry(added[1]);
  ASSERT_TRUE(removed) << removed.error().describe();
  EXPECT_EQ(entryValues(q, h), (std::vector<int64_t>{0, 2, 3}));
  for (size_t i : {0, 2, 3}) ASSERT_TRUE(q.removeEntry(added[i])) << i;
  EXPECT_TRUE(entryValues(q, h).empty());

  auto stored = q.storedMessages();
  ASSERT_TRUE(stored) << stored.error().describe();
  EXPECT_EQ(*stored, 1u);  // the registration alone: no marker per entry

  // Removing one already gone (a done() and a drop racing, a retry) is not an error, and leaves
  // nothing either: also one below the stream's first sequence now (the server says "not found"
  // with the code of any failed delete, not as a refusal).
  for (size_t i : {0, 1}) {
    auto again = q.removeEntry(added[i]);
    EXPECT_TRUE(again) << i << ": " << again.error().describe();
  }
  stored = q.storedMessages();
  ASSERT_TRUE(stored) << stored.error().describe();
  EXPECT_EQ(*stored, 1u);
  auto got = q.get(h);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->first.tag, "tag");
}

// What makes two nodes registering one tag at once harmless (docs/design/federation.md): a
// registration written "only if absent" (revision 0, a KV create) loses to one already there, and
// a write at a revision that moved on loses too; the loser reads again.
TEST(JsQueueNatsTest, ACreateOverAnExistingRegistrationAndAStaleWriteBothLose) {
  if (!NatsCluster::available()) GTEST_SKIP() << "nats-server is not installed (apt-get install nats-server)";
  NatsCluster cluster(3);
  JsQueue q(JsQueue::Config{{cluster.url(0)}, "cas.test", "n1"});
  ASSERT_TRUE(swipc::testing::eventually([&] { return q.open().ok(); }, 30s)) << cluster.logs();
  const std::string h = tagKey("tag");
  JsRecord rec;
  rec.tag = "tag";
  auto first = q.put(h, rec, 0);
  ASSERT_TRUE(first && first->has_value()) << (first ? "lost a race with nobody" : first.error().describe());
  rec.attempts = 1;
  auto second = q.put(h, rec, 0);
  ASSERT_TRUE(second) << second.error().describe();
  EXPECT_FALSE(second->has_value()) << "a create over an existing registration took effect";
  auto moved = q.put(h, rec, **first);  // at the current revision: wins
  ASSERT_TRUE(moved && moved->has_value());
  rec.attempts = 2;
  auto stale = q.put(h, rec, **first);  // at the revision before: loses
  ASSERT_TRUE(stale) << stale.error().describe();
  EXPECT_FALSE(stale->has_value()) << "a write at a stale revision took effect";
  auto got = q.get(h);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->first.attempts, 1);
  EXPECT_EQ((*got)->second, **moved);
}

}  // namespace
}  // namespace swipc::federation
