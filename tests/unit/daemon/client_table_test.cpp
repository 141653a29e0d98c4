// daemon: ClientTable. Records keep their creation order; a re-attaching id replaces its detached
// record; detach runs every hook once, in order, while the connection is still open, then tells
// onDetached, and the record goes when the loop runs; a violation is counted and told to the page.
#include "daemon/client_table.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "daemon_rig.h"

namespace swipc::daemon {
namespace {

using testing::DaemonRig;
using testing::Page;

class ClientTableTest : public ::testing::Test {
 protected:
  DaemonRig rig;
  ClientTable& sut = rig.clients;
};

TEST_F(ClientTableTest, InsertGivesEachRecordTheNextCreationOrder) {
  Page a = rig.attach();
  Page b = rig.attach();
  EXPECT_LT(rig.record(a).order, rig.record(b).order);
  EXPECT_EQ(sut.size(), 2u);
  EXPECT_EQ(sut.aliveCount(), 2u);
}

TEST_F(ClientTableTest, InsertReplacesADetachedRecordWithTheSameId) {
  Page a = rig.attach();
  sut.detach(rig.record(a), "test");
  auto [again, page] = rig.wired();
  again->id = a.id;
  ClientRecord& fresh = sut.insert(std::move(again));
  EXPECT_TRUE(fresh.alive);
  EXPECT_EQ(sut.find(a.id), &fresh);
  EXPECT_EQ(sut.size(), 1u);
  rig.settle();  // the erase-later of the old record must not take the new one
  EXPECT_EQ(sut.findAlive(a.id), &fresh);
}

TEST_F(ClientTableTest, FindAliveSkipsADetachedRecordThatFindStillReturns) {
  Page a = rig.attach();
  sut.detach(rig.record(a), "test");
  EXPECT_NE(sut.find(a.id), nullptr);
  EXPECT_EQ(sut.findAlive(a.id), nullptr);
  EXPECT_EQ(sut.aliveCount(), 0u);
}

TEST_F(ClientTableTest, DetachRunsHooksInOrderWhileTheConnectionIsOpen) {
  Page a = rig.attach();
  std::vector<std::string> calls;
  sut.onDetach([&](ClientRecord& c) { calls.push_back(c.conn ? "first:open" : "first:closed"); });
  sut.onDetach([&](ClientRecord& c) { calls.push_back(c.alive ? "second:alive" : "second:dead"); });
  sut.detach(rig.record(a), "test");
  EXPECT_EQ(calls, (std::vector<std::string>{"first:open", "second:dead"}));
  EXPECT_EQ(rig.record(a).conn, nullptr);
}

TEST_F(ClientTableTest, DetachTwiceRunsHooksOnceAndCountsOnce) {
  Page a = rig.attach();
  int hooks = 0;
  sut.onDetach([&](ClientRecord&) { ++hooks; });
  sut.detach(rig.record(a), "test");
  sut.detach(rig.record(a), "again");
  EXPECT_EQ(hooks, 1);
  EXPECT_EQ(rig.counters.detached, 1u);
}

TEST_F(ClientTableTest, RemovedHookIsNotRun) {
  Page a = rig.attach();
  int hooks = 0;
  auto id = sut.onDetach([&](ClientRecord&) { ++hooks; });
  sut.removeDetachHook(id);
  sut.detach(rig.record(a), "test");
  EXPECT_EQ(hooks, 0);
}

TEST_F(ClientTableTest, OnDetachedHearsTheReasonAfterEveryHook) {
  Page a = rig.attach();
  std::vector<std::string> calls;
  sut.onDetach([&](ClientRecord&) { calls.push_back("hook"); });
  sut.onDetached([&](const ClientId& id, const std::string& reason) {
    EXPECT_EQ(id, a.id);
    calls.push_back(reason);
  });
  sut.detach(rig.record(a), "hung up");
  EXPECT_EQ(calls, (std::vector<std::string>{"hook", "hung up"}));
}

TEST_F(ClientTableTest, DetachedRecordIsErasedWhenTheLoopRuns) {
  Page a = rig.attach();
  sut.detach(rig.record(a), "test");
  EXPECT_EQ(sut.size(), 1u);  // callers up the stack may still hold it
  rig.settle();
  EXPECT_EQ(sut.find(a.id), nullptr);
  EXPECT_EQ(sut.size(), 0u);
}

TEST_F(ClientTableTest, GracefulDetachSaysGoodbyeToThePage) {
  Page a = rig.attach();
  sut.detach(rig.record(a), "daemon stopping", /*goodbye=*/true);
  auto controls = a.controls();
  ASSERT_EQ(controls.size(), 1u);
  ASSERT_TRUE(controls[0].control().isGoodbye());
  EXPECT_EQ(std::string(controls[0].control().getGoodbye().getReason().cStr()), "daemon stopping");
}

TEST_F(ClientTableTest, ViolationIsCountedToldToThePageAndDetachesWithTheReason) {
  Page a = rig.attach();
  std::string why;
  sut.onDetached([&](const ClientId&, const std::string& reason) { why = reason; });
  sut.violation(rig.record(a), makeError(Errc::PROTOCOL_VIOLATION, "lied"));
  EXPECT_EQ(rig.counters.protocolViolations, 1u);
  EXPECT_EQ(why, "ProtocolViolation: lied");
  auto controls = a.controls();
  ASSERT_EQ(controls.size(), 1u);
  ASSERT_TRUE(controls[0].control().isError());
  EXPECT_EQ(std::string(controls[0].control().getError().getName().cStr()), "ProtocolViolation");
}

TEST_F(ClientTableTest, ForEachAliveSkipsDetachedRecords) {
  Page a = rig.attach();
  Page b = rig.attach();
  sut.detach(rig.record(a), "test");
  std::vector<ClientId> seen;
  sut.forEachAlive([&](ClientRecord& c) { seen.push_back(c.id); });
  EXPECT_EQ(seen, std::vector<ClientId>{b.id});
}

}  // namespace
}  // namespace swipc::daemon
