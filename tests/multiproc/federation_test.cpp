// Federation over NATS (DESIGN §16, issue 19): a real 3-server NATS cluster with JetStream on
// 127.0.0.1 (tests/support/nats_cluster.h) and three sw_daemon processes of one scope on this
// machine as three hosts (each its own runtime and state dir, --nats at a different server,
// --node n1/n2/n3), with page_client pages on each. Skipped only when nats-server is not
// installed (scripts/install-deps.sh installs it).
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "federation/remote_post.h"
#include "wire/plain_post.h"
#include "federation_fixture.h"
#include "swipc/testing.h"

namespace swipc::testing {
namespace {

using nlohmann::json;

class FederationTest : public FederationFixture {};

TEST_F(FederationTest, CrossNodePostsReachEveryNodeSenderExcludedInOrderPerSender) {
  for (size_t i = 0; i < 3; ++i) startNode(i);
  ASSERT_TRUE(meshFormed()) << node(0).daemon().log();
  auto& a1 = node(0).page();  // n1: a sender and a silent reader
  auto& b1 = node(0).page();
  auto& a2 = node(1).page();  // n2: a sender
  auto& c3 = node(2).page();  // n3: a reader
  for (auto* p : {&a1, &b1, &a2, &c3}) open(*p, "chat", "chat");
  ASSERT_TRUE(interestKnown("chat"));  // a remote object is a destination once announced

  constexpr int N = 300;
  for (int i = 0; i < N; ++i) {
    post(a1, "chat", "a1", i);
    post(a2, "chat", "a2", i);
  }
  Received ra1, rb1, ra2, rc3;
  auto has = [](size_t n) { return [n](const Received& r) { return r.messages.size() >= n; }; };
  ASSERT_TRUE(collect(b1, "chat", rb1, has(2 * N))) << rb1.messages.size() << " of " << 2 * N << ", missed " << rb1.missed;
  ASSERT_TRUE(collect(c3, "chat", rc3, has(2 * N))) << rc3.messages.size() << " of " << 2 * N << ", missed " << rc3.missed;
  ASSERT_TRUE(collect(a1, "chat", ra1, has(N))) << ra1.messages.size() << " of " << N << ", missed " << ra1.missed;
  ASSERT_TRUE(collect(a2, "chat", ra2, has(N))) << ra2.messages.size() << " of " << N << ", missed " << ra2.missed;
  // Each sender's posts in its order, everywhere; nobody gets its own; nothing missed.
  EXPECT_EQ(seqFrom(rb1, "a1"), range(0, N));
  EXPECT_EQ(seqFrom(rb1, "a2"), range(0, N));
  EXPECT_EQ(seqFrom(rc3, "a1"), range(0, N));
  EXPECT_EQ(seqFrom(rc3, "a2"), range(0, N));
  EXPECT_EQ(seqFrom(ra1, "a2"), range(0, N));
  EXPECT_TRUE(seqFrom(ra1, "a1").empty());
  EXPECT_EQ(seqFrom(ra2, "a1"), range(0, N));
  EXPECT_TRUE(seqFrom(ra2, "a2").empty());
  for (auto* r : {&ra1, &rb1, &ra2, &rc3}) EXPECT_EQ(r->missed, 0u);
  // Nothing more comes (no duplicates), and another channel's objects got nothing.
  auto& other = node(2).page();
  open(other, "o", "other");
  post(a1, "chat", "a1", N);
  ASSERT_TRUE(collect(c3, "chat", rc3, has(2 * N + 1)));
  EXPECT_EQ(rc3.messages.back()["i"], N);
  EXPECT_FALSE(other.waitEvent("bc.message", 300ms));
}

// Heartbeats carry each sender's last sequence number per channel. They once came on their own
// NATS subscription, i.e. on another libnats thread than the posts; under load one overtook the
// posts it counted, which were then reported as lapped and dropped (CI: 583 of 600 on a node).
// nats_link_test shows the ordering itself; here, end to end, streams long enough to span
// several heartbeats arrive whole and in order.
TEST_F(FederationTest, StreamsSpanningHeartbeatsArriveWholeNothingCountedAsMissed) {
  for (size_t i = 0; i < 3; ++i) startNode(i);
  ASSERT_TRUE(meshFormed());
  // One sender per channel (so no sender receives anything it would have to print), both read
  // on a third node, which then hears two nodes' posts and heartbeats at once.
  auto& s1 = node(0).page();
  auto& s2 = node(1).page();
  auto& reader = node(2).page();
  open(s1, "a", "one");
  open(s2, "b", "two");
  open(reader, "a", "one");
  open(reader, "b", "two");
  ASSERT_TRUE(interestKnown("one"));  // a remote object is a destination once announced
  ASSERT_TRUE(interestKnown("two"));  // a remote object is a destination once announced
  constexpr int N = 3000;
  for (int i = 0; i < N; ++i) {
    post(s1, "a", "s1", i);
    post(s2, "b", "s2", i);
  }
  Received ra, rb;
  auto whole = [](const Received& x) { return x.messages.size() + x.missed >= N; };
  ASSERT_TRUE(collect(reader, "a", ra, whole, 60000ms)) << ra.messages.size() << " of " << N << ", missed " << ra.missed;
  ASSERT_TRUE(collect(reader, "b", rb, whole, 60000ms)) << rb.messages.size() << " of " << N << ", missed " << rb.missed;
  EXPECT_EQ(ra.missed, 0u);
  EXPECT_EQ(rb.missed, 0u);
  EXPECT_EQ(seqFrom(ra, "s1"), range(0, N));
  EXPECT_EQ(seqFrom(rb, "s2"), range(0, N));
  // Nothing went wrong on the senders' side either (an op without an id reports only errors).
  EXPECT_FALSE(s1.waitEvent("error", 10ms));
  EXPECT_FALSE(s2.waitEvent("error", 10ms));
}

// A burst on one channel: what queues up for NATS while the sender thread writes goes out packed
// in bundles (libipc/src/federation/bundle.h), and the receiving node unpacks them: every post
// arrives, in order, none missed, and the sending node's counters show that bundles were used.
TEST_F(FederationTest, BurstOnOneChannelTravelsInBundlesAndArrivesWholeInOrder) {
  startNode(0);
  startNode(1);
  ASSERT_TRUE(meshFormed());
  auto& sender = node(0).page();
  auto& reader = node(1).page();
  open(sender, "b", "burst");
  open(reader, "b", "burst");
  ASSERT_TRUE(interestKnown("burst"));  // a remote object is a destination once announced
  constexpr int N = 5000;
  for (int i = 0; i < N; ++i) post(sender, "b", "s", i);
  Received r;
  auto whole = [](const Received& x) { return x.messages.size() + x.missed >= N; };
  ASSERT_TRUE(collect(reader, "b", r, whole, 60000ms)) << r.messages.size() << " of " << N << ", missed " << r.missed;
  EXPECT_EQ(r.missed, 0u);
  EXPECT_EQ(seqFrom(r, "s"), range(0, N));
  std::optional<json> counters;
  // The counter follows each post and each announcement (1 s).
  ASSERT_TRUE(eventually([&] {
    counters = readCounters(node(0).daemon());
    return counters && (*counters)["federationPostsOut"].get<int64_t>() >= N &&
           (*counters)["federationBundled"].get<int64_t>() > 0;
  })) << (counters ? counters->dump() : "no counters");
  EXPECT_LE((*counters)["federationBundled"].get<int64_t>(), (*counters)["federationPostsOut"].get<int64_t>());
  EXPECT_EQ((*counters)["federationRejected"].get<int64_t>(), 0);
  auto in = readCounters(node(1).daemon());
  ASSERT_TRUE(in.has_value());
  EXPECT_EQ((*in)["federationRejected"].get<int64_t>(), 0) << in->dump();
  EXPECT_GE((*in)["federationPostsIn"].get<int64_t>(), N) << in->dump();
}

// Interest (DESIGN §16: a remote object is a destination once its node announced it): a channel
// with objects on one node only is not published at all, and that is no gap for anyone; once
// another node opens an object of it, posts go there; once it closes it, they stay local again.
TEST_F(FederationTest, AChannelUsedOnOneNodeOnlyStaysOffNatsUntilAnotherNodeOpensIt) {
  startNode(0);
  startNode(1);
  ASSERT_TRUE(meshFormed());
  auto& p1 = node(0).page();
  auto& local = node(0).page();
  auto& p2 = node(1).page();
  // Right after connecting, a node publishes every channel until the others' announcements came.
  ASSERT_TRUE(publishingByInterest(0));
  open(p1, "s", "solo");
  open(local, "s", "solo");
  constexpr int N = 100;
  for (int i = 0; i < N; ++i) post(p1, "s", "p1", i);
  Received r;
  ASSERT_TRUE(collect(local, "s", r, [](const Received& x) { return x.messages.size() >= N; }));
  auto counters = readCounters(node(0).daemon());
  ASSERT_TRUE(counters.has_value());
  EXPECT_GE((*counters)["federationLocalOnly"].get<int64_t>(), N) << counters->dump();
  const int64_t outBefore = (*counters)["federationPostsOut"].get<int64_t>();

  // n2 opens one: from the announcement on, n1 publishes the channel's posts, numbered from the
  // first published one, so the hundred local-only posts are no gap on n2.
  open(p2, "s", "solo");
  const auto openedAt = std::chrono::steady_clock::now();
  ASSERT_TRUE(interestKnown("solo"));
  // DESIGN §16: a remote object is a destination at most 1 s after its bc.open ok (here 2.5 s:
  // the sanitizer pass runs this beside another multi-process test on two cores; without the
  // prompt announcement it would take the next heartbeat or the 10 s fallback).
  EXPECT_LE(std::chrono::steady_clock::now() - openedAt, 2500ms);
  post(p1, "s", "p1", N);
  Received r2;
  ASSERT_TRUE(collect(p2, "s", r2, [](const Received& x) { return !x.messages.empty(); }));
  EXPECT_EQ(seqFrom(r2, "p1"), std::vector<int>{N});
  EXPECT_FALSE(p2.waitEvent("bc.lapped", 2500ms));  // two announcements later, nothing missed
  counters = readCounters(node(0).daemon());
  ASSERT_TRUE(counters.has_value());
  EXPECT_GE((*counters)["federationPostsOut"].get<int64_t>(), outBefore + 1) << counters->dump();

  // n2 closes it: n1 stops publishing it once it hears so.
  auto closed = p2.call({{"op", "bc.close"}, {"bc", "s"}});
  ASSERT_TRUE(closed && (*closed)["event"] == "ok") << (closed ? closed->dump() : "no answer");
  ASSERT_TRUE(eventually([&] {
    return node(0).daemon().log().find("node n2 no longer wants 'solo'") != std::string::npos;
  }, 10000ms)) << node(0).daemon().log();
  counters = readCounters(node(0).daemon());
  ASSERT_TRUE(counters.has_value());
  const int64_t localOnly = (*counters)["federationLocalOnly"].get<int64_t>();
  post(p1, "s", "p1", N + 1);
  ASSERT_TRUE(collect(local, "s", r, [](const Received& x) { return x.messages.size() >= N + 2; }));
  ASSERT_TRUE(eventually([&] {
    counters = readCounters(node(0).daemon());
    return counters && (*counters)["federationLocalOnly"].get<int64_t>() == localOnly + 1;
  })) << (counters ? counters->dump() : "no counters");
}

TEST_F(FederationTest, NodeJoiningLateGetsNothingPostedBefore) {
  startNode(0);
  startNode(1);
  ASSERT_TRUE(meshFormed());
  auto& p1 = node(0).page();
  auto& p2 = node(1).page();
  open(p1, "n", "news");
  open(p2, "n", "news");
  ASSERT_TRUE(interestKnown("news"));  // a remote object is a destination once announced
  for (int i = 0; i < 50; ++i) post(p1, "n", "p1", i);
  Received r2;
  ASSERT_TRUE(collect(p2, "n", r2, [](const Received& r) { return r.messages.size() >= 50; }));

  startNode(2);
  ASSERT_TRUE(meshFormed());
  auto& p3 = node(2).page();
  open(p3, "n", "news");
  ASSERT_TRUE(interestKnown("news"));  // a remote object is a destination once announced
  post(p1, "n", "p1", 50);
  Received r3;
  ASSERT_TRUE(collect(p3, "n", r3, [](const Received& r) { return !r.messages.empty(); }));
  EXPECT_EQ(seqFrom(r3, "p1"), std::vector<int>{50});
  EXPECT_EQ(r3.missed, 0u);
  // Two heartbeats later still nothing reported as missed.
  EXPECT_FALSE(p3.waitEvent("bc.lapped", 2500ms));
}

TEST_F(FederationTest, KillingOneNatsServerMidStreamDeliveryGoesOnAndGapsAreReportedAsLapped) {
  for (size_t i = 0; i < 3; ++i) startNode(i);
  ASSERT_TRUE(meshFormed());
  auto& p1 = node(0).page();
  auto& p2 = node(1).page();
  auto& p3 = node(2).page();
  for (auto* p : {&p1, &p2, &p3}) open(*p, "s", "stream");
  ASSERT_TRUE(interestKnown("stream"));  // a remote object is a destination once announced

  constexpr int HALF = 150;
  for (int i = 0; i < HALF; ++i) post(p1, "s", "p1", i);
  Received r2, r3;
  ASSERT_TRUE(collect(p2, "s", r2, [](const Received& r) { return r.messages.size() >= HALF; }));
  ASSERT_TRUE(cluster_->kill(2));  // n3's server
  for (int i = HALF; i < 2 * HALF; ++i) post(p1, "s", "p1", i);
  // Between the survivors (n1 on s1, n2 on s2) everything arrives, in order.
  ASSERT_TRUE(collect(p2, "s", r2, [](const Received& r) { return r.messages.size() + r.missed >= 2 * HALF; }));
  EXPECT_EQ(seqFrom(r2, "p1"), range(0, 2 * HALF));
  EXPECT_EQ(r2.missed, 0u);
  // n3 reconnects to a surviving server by itself; what it missed meanwhile is reported as
  // lapped, never silently lost: every post is either received or counted.
  ASSERT_TRUE(eventually([&] { return node(2).daemon().log().find("reconnected to NATS") != std::string::npos; },
                         20000ms))
      << node(2).daemon().log();
  int next = 2 * HALF;
  ASSERT_TRUE(eventually(
      [&] {
        post(p1, "s", "p1", next++);
        collect(p3, "s", r3, [&](const Received& r) { return !r.messages.empty() && r.messages.back()["i"] == next - 1; },
                300ms);
        return !r3.messages.empty() && r3.messages.back()["i"] == next - 1;
      },
      20000ms));
  ASSERT_TRUE(collect(p3, "s", r3, [&](const Received& r) { return r.messages.size() + r.missed >= size_t(next); }, 5000ms))
      << r3.messages.size() << " received + " << r3.missed << " missed of " << next;
  auto got = seqFrom(r3, "p1");
  EXPECT_TRUE(std::is_sorted(got.begin(), got.end()));
  EXPECT_EQ(got.size() + r3.missed, size_t(next));
}

TEST_F(FederationTest, NatsDownEntirelyEachNodeKeepsWorkingLocallyAndRecovers) {
  startNode(0);
  startNode(1);
  ASSERT_TRUE(meshFormed());
  auto& a = node(0).page();
  auto& b = node(0).page();
  auto& remote = node(1).page();
  for (auto* p : {&a, &b, &remote}) open(*p, "x", "x");
  ASSERT_TRUE(interestKnown("x"));  // a remote object is a destination once announced
  const std::string remoteId = remote.clientId();
  post(a, "x", "a", 0);
  Received rb, rr;
  ASSERT_TRUE(collect(remote, "x", rr, [](const Received& r) { return r.messages.size() >= 1; }));

  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(cluster_->kill(i));
  ASSERT_TRUE(eventually([&] { return node(0).daemon().log().find("disconnected from NATS") != std::string::npos; }));
  // Locally everything works at once.
  constexpr int N = 20;
  for (int i = 1; i <= N; ++i) post(a, "x", "a", i);
  ASSERT_TRUE(collect(b, "x", rb, [](const Received& r) { return r.messages.size() >= N + 1; }, 5000ms));
  EXPECT_EQ(seqFrom(rb, "a"), range(0, N + 1));
  // The sending node says why its posts did not go out (once for the lot: at most every 10 s).
  EXPECT_NE(node(0).daemon().log().find("not published since the last such line"), std::string::npos);
  EXPECT_NE(node(0).daemon().log().find("NATS is unreachable; the other nodes learn them as missed"), std::string::npos)
      << node(0).daemon().log();
  auto echo = a.call({{"op", "messageSW"}, {"data", {{"type", "GET_VERSION"}}}, {"timeoutMs", 2000}});
  ASSERT_TRUE(echo && (*echo)["event"] == "ok");
  // A client on another node is out of reach: Disconnected, at once.
  auto cut = ask(a, {{"type", "POST_TO"}, {"id", remoteId}, {"data", 1}});
  EXPECT_EQ(cut["delivered"], false) << cut.dump();
  EXPECT_EQ(cut["error"]["name"], "Disconnected") << cut.dump();
  // A channel the other node opens while NATS is down: this node cannot hear of it, so while it
  // is cut off it numbers the posts of every channel, and the other node learns these as lapped
  // too (were they left unnumbered as "no other node wants it", their loss would be silent).
  open(remote, "late", "late");
  open(a, "late", "late");
  constexpr int M = 7;
  for (int i = 0; i < M; ++i) post(a, "late", "a", i);

  // NATS returns: the daemons reconnect by themselves; the posts made while it was down reach
  // the other node as lapped with their count, and later posts arrive again.
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(cluster_->restart(i)) << cluster_->logs();
  ASSERT_TRUE(eventually(
      [&] {
        return node(0).daemon().log().find("reconnected to NATS") != std::string::npos &&
               node(1).daemon().log().find("reconnected to NATS") != std::string::npos;
      },
      30000ms));
  ASSERT_TRUE(collect(remote, "x", rr, [](const Received& r) { return r.missed >= N; }, 10000ms))
      << "missed " << rr.missed;
  EXPECT_EQ(rr.missed, uint64_t(N));
  Received rl;
  ASSERT_TRUE(collect(remote, "late", rl, [](const Received& r) { return r.missed >= M; }, 10000ms))
      << "missed " << rl.missed;
  EXPECT_EQ(rl.missed, uint64_t(M));
  post(a, "x", "a", N + 1);
  ASSERT_TRUE(collect(remote, "x", rr, [](const Received& r) { return r.messages.size() >= 2; }));
  EXPECT_EQ(seqFrom(rr, "a"), (std::vector<int>{0, N + 1}));
}

// The other node is the one cut off (its NATS server frozen) and opens a channel meanwhile: this
// node cannot hear of it, so while that node is silent it publishes and numbers every channel,
// and the other node gets those posts or learns them as lapped once it is back, never neither.
TEST_F(FederationTest, PostsOnAChannelOpenedByANodeWhileItWasCutOffReachItOrAreLapped) {
  startNode(0);
  startNode(1);
  ASSERT_TRUE(meshFormed());
  auto& a = node(0).page();
  auto& remote = node(1).page();
  open(a, "y", "y");
  ASSERT_TRUE(publishingByInterest(0));  // past the grace after connecting
  const size_t logBefore = node(0).daemon().log().size();
  ASSERT_TRUE(cluster_->pause(1));  // n2's server
  ASSERT_TRUE(eventually([&] {
    return node(0).daemon().log().find("1 other node(s) silent: every channel is published", logBefore) !=
           std::string::npos;
  }, 10000ms)) << node(0).daemon().log();
  open(remote, "y", "y");
  constexpr int M = 9;
  for (int i = 0; i < M; ++i) post(a, "y", "a", i);
  ASSERT_TRUE(cluster_->resume(1));
  Received r;
  ASSERT_TRUE(collect(remote, "y", r, [](const Received& x) { return x.messages.size() + x.missed >= M; }, 30000ms))
      << r.messages.size() << " + " << r.missed << " lapped of " << M << "\n" << node(1).daemon().log();
  EXPECT_EQ(r.messages.size() + r.missed, static_cast<uint64_t>(M));
}

// ------------------------------------------------------------------------------------------ clients

TEST_F(FederationTest, MatchAllIncludeRemoteListsEveryLiveNodesClientsWithTheirNode) {
  for (size_t i = 0; i < 3; ++i) startNode(i);
  ASSERT_TRUE(meshFormed());
  auto& asker = node(0).page();
  auto& b1 = node(1).page();
  auto& b2 = node(1).page();
  auto& c1 = node(2).page();
  std::vector<std::string> ids;
  for (auto* p : {&asker, &b1, &b2, &c1}) ids.push_back(p->clientId());
  for (const auto& id : ids) ASSERT_FALSE(id.empty());

  // Local only without includeRemote, and no "node" then.
  auto local = ask(asker, {{"type", "MATCH_ALL"}});
  ASSERT_TRUE(local.is_object()) << local.dump();
  ASSERT_EQ(local["clients"].size(), 1u);
  EXPECT_EQ(local["clients"][0]["id"], ids[0]);
  EXPECT_FALSE(local["clients"][0].contains("node"));

  // This node's first, then n2's in n2's order (by creation: never focused), then n3's.
  auto all = ask(asker, {{"type", "MATCH_ALL"}, {"options", {{"includeRemote", true}}}});
  ASSERT_TRUE(all.is_object()) << all.dump();
  std::vector<std::pair<std::string, std::string>> got;
  for (const auto& c : all["clients"]) got.emplace_back(c.value("node", ""), c.value("id", ""));
  EXPECT_EQ(got, (std::vector<std::pair<std::string, std::string>>{
                     {"n1", ids[0]}, {"n2", ids[1]}, {"n2", ids[2]}, {"n3", ids[3]}}));
  for (const auto& c : all["clients"]) {
    EXPECT_EQ(c["type"], "window");
    EXPECT_TRUE(c.contains("url") && c.contains("frameType") && c.contains("visibilityState"));
  }
  // The filters apply on every node.
  auto workers = ask(asker, {{"type", "MATCH_ALL"}, {"options", {{"includeRemote", true}, {"type", "worker"}}}});
  ASSERT_TRUE(workers.is_object());
  EXPECT_TRUE(workers["clients"].empty()) << workers.dump();

  // Liveness (DESIGN §16: a node silent for 3 s is gone; within 6 s of its death its clients
  // leave remote results and posts to them are not delivered). kill -9 n3's daemon: both others
  // log it gone within 6 s of the kill (+1 s margin: the suite also runs under AddressSanitizer,
  // where the 1 s heartbeat ticks run late; the product's own bound is ~3-4 s). From then on
  // matchAll leaves its clients out, and a post to one is NotFoundError (a node still taken
  // for live would be asked, and the post would end as a TimeoutError).
  const auto killedAt = TestClock::now();
  ASSERT_TRUE(node(2).daemon().kill9());
  const auto goneBy = killedAt + 7000ms;
  for (size_t i : {0u, 1u}) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(goneBy - TestClock::now());
    ASSERT_TRUE(eventually(
        [&] { return node(i).daemon().log().find("federation: node n3 gone") != std::string::npos; },
        std::max(left, 0ms)))
        << nodeName(i) << " did not log n3 gone within 7 s of the kill (" << msSince(killedAt) << " ms)\n"
        << node(i).daemon().log();
  }
  // n1's and n2's view, each with its own clients first.
  for (auto [p, expected] : {std::pair{&asker, std::vector<std::string>{ids[0], ids[1], ids[2]}},
                             std::pair{&b1, std::vector<std::string>{ids[1], ids[2], ids[0]}}}) {
    auto now = ask(*p, {{"type", "MATCH_ALL"}, {"options", {{"includeRemote", true}}}});
    ASSERT_TRUE(now.is_object()) << now.dump();
    std::vector<std::string> left;
    for (const auto& c : now["clients"]) left.push_back(c.value("id", ""));
    EXPECT_EQ(left, expected) << now.dump();
  }
  auto gone = ask(asker, {{"type", "POST_TO"}, {"id", ids[3]}, {"data", 1}});
  EXPECT_EQ(gone["delivered"], false) << gone.dump();
  EXPECT_EQ(gone["error"]["name"], "NotFoundError") << gone.dump();
}

// includeUncontrolled filters remote clients too (DESIGN §16): an uncontrolled page on n2 is in
// n1's matchAll({includeRemote, includeUncontrolled}) and not in matchAll({includeRemote}).
TEST_F(FederationTest, MatchAllIncludeRemoteListsAnUncontrolledRemoteClientOnlyWithIncludeUncontrolled) {
  startNode(0);
  startNode(1);
  ASSERT_TRUE(meshFormed());
  auto& asker = node(0).page();
  auto& controlled = node(1).page();
  auto& uncontrolled = node(1).page({"--uncontrolled"});
  const std::string cid = controlled.clientId(), uid = uncontrolled.clientId();
  ASSERT_FALSE(cid.empty());
  ASSERT_FALSE(uid.empty());
  auto remoteIds = [&](const json& options) {
    auto r = ask(asker, {{"type", "MATCH_ALL"}, {"options", options}});
    if (!r.is_object()) return std::vector<std::string>{"no answer"};
    std::vector<std::string> out;
    for (const auto& c : r.value("clients", json::array()))
      if (c.value("node", "") == "n2") out.push_back(c.value("id", ""));
    return out;
  };
  EXPECT_EQ(remoteIds({{"includeRemote", true}}), std::vector<std::string>{cid});
  auto all = remoteIds({{"includeRemote", true}, {"includeUncontrolled", true}});
  std::sort(all.begin(), all.end());
  auto expected = std::vector<std::string>{cid, uid};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(all, expected);
}

TEST_F(FederationTest, GetAndPostMessageReachAClientOnAnotherNodeWithTheRealOutcome) {
  startNode(0);
  startNode(1);
  ASSERT_TRUE(meshFormed());
  auto& asker = node(0).page();
  auto& target = node(1).page();
  const std::string id = target.clientId();
  target.send({{"op", "startMessages"}});

  auto got = ask(asker, {{"type", "GET_CLIENT"}, {"id", id}});
  ASSERT_TRUE(got.is_object()) << got.dump();
  EXPECT_EQ(got["id"], id);
  EXPECT_EQ(got["node"], "n2");

  auto posted = ask(asker, {{"type", "POST_TO"}, {"id", id}, {"data", {{"hello", "from n1"}, {"n", 7}}}});
  EXPECT_EQ(posted, json({{"delivered", true}})) << posted.dump();
  auto m = target.waitFor([](const json& e) { return e["event"] == "message" && e["data"].contains("hello"); }, 10000ms);
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)["data"], json({{"hello", "from n1"}, {"n", 7}}));

  // An id nobody has: null from get, NotFoundError from postMessage.
  const std::string nobody(32, 'a');
  EXPECT_TRUE(ask(asker, {{"type", "GET_CLIENT"}, {"id", nobody}}).is_null());
  auto lost = ask(asker, {{"type", "POST_TO"}, {"id", nobody}, {"data", 1}});
  EXPECT_EQ(lost["delivered"], false) << lost.dump();
  EXPECT_EQ(lost["error"]["name"], "NotFoundError") << lost.dump();

  // The client leaves: the node it was on says NotFoundError.
  ASSERT_TRUE(target.process().kill9());
  ASSERT_TRUE(eventually(
      [&] {
        auto gone = ask(asker, {{"type", "POST_TO"}, {"id", id}, {"data", 2}});
        return gone.is_object() && gone["delivered"] == false && gone["error"]["name"] == "NotFoundError";
      },
      10000ms));
}

TEST_F(FederationTest, PostMessageToANodeThatDoesNotAnswerIsATimeoutError) {
  startNode(0);
  startNode(1);
  ASSERT_TRUE(meshFormed());
  auto& asker = node(0).page();
  auto& target = node(1).page();
  const std::string id = target.clientId();
  // The node is still live (it was heard within 3 s) but answers nothing.
  ASSERT_TRUE(node(1).daemon().process().stop());
  auto r = ask(asker, {{"type", "POST_TO"}, {"id", id}, {"data", 1}});
  ASSERT_TRUE(node(1).daemon().process().resume());
  EXPECT_EQ(r["delivered"], false) << r.dump();
  EXPECT_EQ(r["error"]["name"], "TimeoutError") << r.dump();
  EXPECT_NE(node(0).daemon().log().find("no answer from node(s) n2"), std::string::npos);
}

TEST_F(FederationTest, CountChannelIsAnsweredOnlyByTheNodeThePostWasMadeOn) {
  startNode(0);
  startNode(1);
  ASSERT_TRUE(meshFormed());
  auto& p1 = node(0).page();
  auto& p2 = node(1).page();
  open(p1, "c", "count-channel");
  open(p2, "c", "count-channel");
  ASSERT_TRUE(interestKnown("count-channel"));
  p1.send({{"op", "bc.post"}, {"bc", "c"}, {"data", {{"type", "INCREASE_COUNT"}}}});
  // p2 sees the post itself and n1's answer; n2's service worker does not answer a post of n1.
  Received r2;
  ASSERT_TRUE(collect(p2, "c", r2, [](const Received& r) { return r.messages.size() >= 2; }));
  EXPECT_EQ(r2.messages[0]["type"], "INCREASE_COUNT");
  EXPECT_EQ(r2.messages[1], (json{{"type", "COUNT"}, {"count", 1}}));
  EXPECT_FALSE(collect(p2, "c", r2, [](const Received& r) { return r.messages.size() >= 3; }, 2000ms))
      << r2.messages.back().dump();
  Received r1;
  ASSERT_TRUE(collect(p1, "c", r1, [](const Received& r) { return !r.messages.empty(); }));
  EXPECT_EQ(r1.messages[0], (json{{"type", "COUNT"}, {"count", 1}}));
  EXPECT_FALSE(collect(p1, "c", r1, [](const Received& r) { return r.messages.size() >= 2; }, 500ms));
}

// Another host is a peer like a page: bytes on the scope's subjects that are not what a node
// sends (a hostile or broken NATS client) are refused by name and counted, one by one, and the
// node goes on serving the real nodes.
TEST_F(FederationTest, HostileFramesOnTheScopesSubjectsAreRefusedCountedAndServiceGoesOn) {
  auto [sender, reader] = twoNodesSharing("h", "hostile");
  ASSERT_FALSE(HasFailure());

  // The hostile client publishes on server 1 (n1's): once n1 and n2 heard each other, it is known
  // there that both subscribe. Server 3 may not know n2's subscription yet (NATS drops a publish
  // no known subscription wants), which is how this test once saw nothing arrive at n2.
  natsConnection* nc = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&nc, cluster_->url(0).c_str()), NATS_OK);
  const std::string prefix = "swipc." + scope_;
  const std::string channelSubject = prefix + ".bc.c686f7374696c65";  // hex of "hostile"
  const std::vector<std::pair<std::string, std::string>> hostile = {
      {prefix + ".node", "not json at all"},
      {prefix + ".node", R"({"node":"x"})"},  // no epoch, interval or marks
      {channelSubject, "short"},
      {channelSubject, std::string(64, 'Z')},  // a frame's length, not its magic
  };
  for (const auto& [subject, data] : hostile)
    ASSERT_EQ(natsConnection_Publish(nc, subject.c_str(), data.data(), static_cast<int>(data.size())), NATS_OK);
  ASSERT_EQ(natsConnection_FlushTimeout(nc, 5000), NATS_OK);
  natsConnection_Destroy(nc);

  for (size_t i : {0u, 1u}) {
    std::optional<json> c;
    EXPECT_TRUE(eventually([&] {
      c = readCounters(node(i).daemon());
      return c && (*c)["federationRejected"].get<int64_t>() >= static_cast<int64_t>(hostile.size());
    })) << "node " << i << ": " << (c ? c->dump() : "no counters");
    if (c) {
      EXPECT_EQ((*c)["federationRejected"].get<int64_t>(), static_cast<int64_t>(hostile.size())) << c->dump();
    }
  }
  EXPECT_NE(node(1).daemon().log().find("heartbeat: not a JSON object"), std::string::npos);
  EXPECT_NE(node(1).daemon().log().find("cross-node post: bad magic"), std::string::npos);

  expectServiceGoesOn(*sender, *reader, "h");
}

// DESIGN §16: a gap reaches the affected objects as bc.lapped with the missed count within 2 s,
// mid-stream (a post's number skips) and at the tail of a stream (only the sender's announced
// high-water mark tells of it). A raw libnats client plays node "tail": it announces itself,
// posts 1 and 3 on channel "gaps" (2 never comes), then announces its mark 6 (4 to 6 never come).
TEST_F(FederationTest, GapsMidStreamAndAtTheTailReachTheObjectsAsLappedWithinTwoSeconds) {
  startNode(0);
  auto& page = node(0).page();
  open(page, "g", "gaps");
  natsConnection* nc = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&nc, cluster_->url(0).c_str()), NATS_OK);
  const federation::Subjects subjects = federation::subjectsFor(scope_);
  auto publish = [&](const std::string& subject, const void* data, size_t bytes) {
    ASSERT_EQ(natsConnection_Publish(nc, subject.c_str(), data, static_cast<int>(bytes)), NATS_OK);
    ASSERT_EQ(natsConnection_FlushTimeout(nc, 5000), NATS_OK);
  };
  federation::Heartbeat hb;
  hb.node = "tail";
  hb.epoch = 7;
  hb.intervalMs = 1000;
  hb.interest = std::vector<ChannelName>{ChannelName("gaps")};
  const std::string first = federation::encodeHeartbeat(hb);
  publish(subjects.nodes, first.data(), first.size());
  ASSERT_TRUE(eventually([&] { return node(0).daemon().log().find("node tail joined") != std::string::npos; }));

  auto postNumbered = [&](uint64_t seq) {
    const Value v = Value::map({{"from", "tail"}, {"i", static_cast<int64_t>(seq)}});
    wire::PlainMessage m;
    m.kind = schema::Envelope::BC_MESSAGE;
    std::vector<uint64_t> envelope(wire::plainBytes(m, v) / 8);
    wire::writePlain(m, v, reinterpret_cast<uint8_t*>(envelope.data()), envelope.size() * 8);
    auto frame = federation::encodeRemotePost("tail", hb.epoch, ChannelName("gaps"), seq,
                                              reinterpret_cast<const uint8_t*>(envelope.data()), envelope.size() * 8, 1);
    publish(subjects.bcFor(ChannelName("gaps")), frame.data(), frame.size());
  };
  postNumbered(1);
  postNumbered(3);
  Received r;
  ASSERT_TRUE(collect(page, "g", r, [](const Received& x) { return x.messages.size() >= 2; }, 5000ms))
      << node(0).daemon().log();
  EXPECT_EQ(seqFrom(r, "tail"), (std::vector<int>{1, 3}));
  EXPECT_EQ(r.missed, 1u);  // post 2, reported when post 3 came

  hb.marks = {{ChannelName("gaps"), 6, 1}};
  const std::string tail = federation::encodeHeartbeat(hb);
  const auto announced = TestClock::now();
  publish(subjects.nodes, tail.data(), tail.size());
  ASSERT_TRUE(collect(page, "g", r, [](const Received& x) { return x.missed >= 4; }, 5000ms)) << node(0).daemon().log();
  EXPECT_LE(TestClock::now() - announced, 2000ms);
  EXPECT_EQ(r.missed, 4u);
  EXPECT_EQ(r.messages.size(), 2u);
  natsConnection_Destroy(nc);
}

// Any NATS client can pose as nodes: what a node keeps of others is bounded. Past MAX_PEERS (256)
// nodes known, all alive, a new node's announcement is refused; past MAX_UNANNOUNCED (64) senders
// of posts without an announcement, their posts are; each counted in federationRejected, and the
// real nodes go on as before.
TEST_F(FederationTest, NodesPosedByAHostileClientAreBoundedCountedAndServiceGoesOn) {
  auto [sender, reader] = twoNodesSharing("b", "bounded");
  ASSERT_FALSE(HasFailure());

  natsConnection* nc = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&nc, cluster_->url(0).c_str()), NATS_OK);
  const std::string prefix = "swipc." + scope_;
  constexpr int FAKE_NODES = 1100, GHOSTS = 100;
  for (int i = 0; i < FAKE_NODES; ++i) {
    const std::string hb = json{{"node", "evil-" + std::to_string(i)}, {"epoch", 1}, {"intervalMs", 1000},
                                {"marks", json::array()}, {"interest", json::array()}}
                               .dump();
    ASSERT_EQ(natsConnection_Publish(nc, (prefix + ".node").c_str(), hb.data(), static_cast<int>(hb.size())), NATS_OK);
  }
  const uint64_t envelope = 0;  // never read: no object of "nobody" anywhere
  const std::string nobody = prefix + ".bc.c6e6f626f6479";  // hex of "nobody"
  for (int i = 0; i < GHOSTS; ++i) {
    auto frame = federation::encodeRemotePost("ghost-" + std::to_string(i), 1, ChannelName("nobody"), 1,
                                              reinterpret_cast<const uint8_t*>(&envelope), sizeof envelope);
    ASSERT_EQ(natsConnection_Publish(nc, nobody.c_str(), frame.data(), static_cast<int>(frame.size())), NATS_OK);
  }
  ASSERT_EQ(natsConnection_FlushTimeout(nc, 5000), NATS_OK);
  natsConnection_Destroy(nc);

  // Each node knew one real node: 255 fake ones fit, 845 do not; 64 ghosts fit, 36 do not. This
  // assumes every announcement is taken within NODE_TIMEOUT (3 s) of the first (they all go out
  // at once): a fake node gone silent by then would make room for one more.
  constexpr int64_t REFUSED = (FAKE_NODES - 255) + (GHOSTS - 64);
  for (size_t i : {0u, 1u}) {
    std::optional<json> c;
    EXPECT_TRUE(eventually([&] {
      c = readCounters(node(i).daemon());
      return c && (*c)["federationRejected"].get<int64_t>() >= REFUSED;
    }, 20s)) << "node " << i << ": " << (c ? c->dump() : "no counters");
    if (c) EXPECT_EQ((*c)["federationRejected"].get<int64_t>(), REFUSED) << c->dump();
    EXPECT_NE(node(i).daemon().log().find("nodes known, all alive"), std::string::npos);
    EXPECT_NE(node(i).daemon().log().find("senders not announced here already"), std::string::npos);
  }

  // Once the fake nodes are gone (silent 3 s), a new node's announcement takes the place of one.
  ASSERT_TRUE(eventually([&] { return node(1).daemon().log().find("node evil-254 gone") != std::string::npos; }, 20s));
  ASSERT_EQ(natsConnection_ConnectTo(&nc, cluster_->url(0).c_str()), NATS_OK);
  const std::string late = json{{"node", "late"}, {"epoch", 1}, {"intervalMs", 1000}, {"marks", json::array()}}.dump();
  ASSERT_EQ(natsConnection_Publish(nc, (prefix + ".node").c_str(), late.data(), static_cast<int>(late.size())), NATS_OK);
  ASSERT_EQ(natsConnection_FlushTimeout(nc, 5000), NATS_OK);
  natsConnection_Destroy(nc);
  EXPECT_TRUE(eventually([&] { return node(1).daemon().log().find("node late joined") != std::string::npos; }, 10s));
  EXPECT_NE(node(1).daemon().log().find("(gone) forgotten"), std::string::npos);
  auto after = readCounters(node(1).daemon());
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ((*after)["federationRejected"].get<int64_t>(), REFUSED) << after->dump();

  // What was kept of the unannounced senders goes 10 s after their first post: another one's
  // post is taken then, not refused.
  ASSERT_TRUE(eventually(
      [&] { return node(1).daemon().log().find("posts of node ghost-0 came, never an announcement") != std::string::npos; },
      20s));
  ASSERT_EQ(natsConnection_ConnectTo(&nc, cluster_->url(0).c_str()), NATS_OK);
  auto frame = federation::encodeRemotePost("ghost-late", 1, ChannelName("nobody"), 1,
                                            reinterpret_cast<const uint8_t*>(&envelope), sizeof envelope);
  ASSERT_EQ(natsConnection_Publish(nc, nobody.c_str(), frame.data(), static_cast<int>(frame.size())), NATS_OK);
  // A frame the nodes refuse by name comes right behind it on the same connection: once it is
  // logged, the post before it was handled (taken, or refused and counted).
  const std::string bad = "not json";
  ASSERT_EQ(natsConnection_Publish(nc, (prefix + ".node").c_str(), bad.data(), static_cast<int>(bad.size())), NATS_OK);
  ASSERT_EQ(natsConnection_FlushTimeout(nc, 5000), NATS_OK);
  natsConnection_Destroy(nc);
  ASSERT_TRUE(eventually(
      [&] { return node(1).daemon().log().find("heartbeat: not a JSON object") != std::string::npos; }, 10s));
  after = readCounters(node(1).daemon());
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ((*after)["federationRejected"].get<int64_t>(), REFUSED + 1) << "the late ghost was refused: " << after->dump();

  expectServiceGoesOn(*sender, *reader, "b");
}

// Runs (remote_post.h): a channel its sender has not posted on for --nats-channel-idle-ms leaves
// that node's announcements (they stay as small as the channels in use, not every channel ever
// posted on), and the others forget it. Its next posts start a new numbering from 1: they
// arrive, in order, and nothing is counted as missed (nor taken for posts seen already).
TEST_F(FederationTest, AChannelIdleOnItsSenderLeavesTheAnnouncementsAndItsNextPostsArriveWithNothingMissed) {
  startNode(0, {"--nats-channel-idle-ms", "1500"});
  startNode(1);
  ASSERT_TRUE(meshFormed());
  auto& sender = node(0).page();
  auto& reader = node(1).page();
  open(sender, "i", "idle");
  open(reader, "i", "idle");
  ASSERT_TRUE(interestKnown("idle"));
  ASSERT_TRUE(publishingByInterest(0));
  for (int i = 0; i < 3; ++i) post(sender, "i", "s", i);
  Received r;
  ASSERT_TRUE(collect(reader, "i", r, [](const Received& x) { return x.messages.size() + x.missed >= 3; }));
  ASSERT_TRUE(eventually([&] { return node(0).daemon().log().find("'idle' not posted on for") != std::string::npos; },
                         15000ms))
      << node(0).daemon().log();
  ASSERT_TRUE(eventually(
      [&] { return node(1).daemon().log().find("node n1 ended its run of 'idle'") != std::string::npos; }, 15000ms))
      << node(1).daemon().log();
  for (int i = 3; i < 6; ++i) post(sender, "i", "s", i);
  ASSERT_TRUE(collect(reader, "i", r, [](const Received& x) { return x.messages.size() + x.missed >= 6; }))
      << r.messages.size() << " of 6, missed " << r.missed;
  EXPECT_EQ(seqFrom(r, "s"), range(0, 6));
  EXPECT_EQ(r.missed, 0u);
  auto c = readCounters(node(1).daemon());
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ((*c)["federationMissed"].get<int64_t>(), 0) << c->dump();
  EXPECT_EQ((*c)["federationPostsIn"].get<int64_t>(), 6) << c->dump();
}

// The outcome of a remote post to a page that does not drain (DESIGN §16: as for a local
// client): n2 holds at most 4 messages for a page (--max-backlog 4, a 4 KiB ring) and its page is
// stopped (SIGSTOP), so n1's POST_TOs fill the ring and the backlog, and the next is refused with
// QueueFull by name.
TEST_F(FederationTest, PostMessageToARemoteClientThatDoesNotDrainIsQueueFull) {
  startNode(0);
  startNode(1, {"--ring-bytes", "4096", "--max-backlog", "4", "--unresponsive-ms", "60000"});
  ASSERT_TRUE(meshFormed());
  auto& asker = node(0).page();
  auto& target = node(1).page();
  const std::string id = target.clientId();
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(target.stop());
  const std::string pad(1024, 'x');
  json r;
  int delivered = 0;
  for (int i = 0; i < 100; ++i) {
    r = ask(asker, {{"type", "POST_TO"}, {"id", id}, {"data", {{"i", i}, {"pad", pad}}}});
    if (!r.is_object() || r.value("delivered", false) != true) break;
    ++delivered;
  }
  ASSERT_TRUE(r.is_object()) << "no answer after " << delivered << " delivered";
  EXPECT_EQ(r["delivered"], false) << r.dump();
  EXPECT_EQ(r["error"]["name"], "QueueFull") << r.dump();
  EXPECT_GE(delivered, 4);  // the backlog's bound at least, before the refusal
}

TEST_F(FederationTest, NodeAnswersTheNodeName) {
  startNode(1);
  auto& p = node(1).page();
  auto r = p.call({{"op", "messageSW"}, {"data", {{"type", "NODE"}}}, {"timeoutMs", 5000}});
  ASSERT_TRUE(r && (*r)["event"] == "ok") << (r ? r->dump() : "no answer");
  EXPECT_EQ((*r)["data"], "n2");
}

// Without --node (DESIGN §16) the node's name is the short host name (gethostname up to the
// first '.'). One daemon is enough here.
TEST_F(FederationTest, WithoutNodeTheNodeIsNamedAfterTheShortHostName) {
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  std::string expected(host);
  if (auto dot = expected.find('.'); dot != std::string::npos) expected.resize(dot);
  // Not a usable name (remote_post.h, validNodeName): the documented fallback is "node".
  if (expected.empty() || expected.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
                              std::string::npos)
    expected = "node";
  ScopeOptions o;
  o.scope = scope_;
  o.daemonArgs = {"--nats", cluster_->url(0)};  // and no --node
  nodes_[0] = std::make_unique<Scope>(o);
  auto r = node(0).page().call({{"op", "messageSW"}, {"data", {{"type", "NODE"}}}, {"timeoutMs", 5000}});
  ASSERT_TRUE(r && (*r)["event"] == "ok") << (r ? r->dump() : "no answer");
  EXPECT_EQ((*r)["data"], expected) << node(0).daemon().log();
  // Its threads carry names (README "Inspect"): the loop keeps the program's, the publisher is
  // nats-sender.
  std::set<std::string> threads;
  std::error_code ec;
  for (const auto& t : std::filesystem::directory_iterator(
           "/proc/" + std::to_string(node(0).daemon().pid()) + "/task", ec)) {
    std::ifstream comm(t.path() / "comm");
    std::string name;
    if (std::getline(comm, name)) threads.insert(name);
  }
  EXPECT_TRUE(threads.count("sw_daemon")) << ::testing::PrintToString(threads);
  EXPECT_TRUE(threads.count("nats-sender")) << ::testing::PrintToString(threads);
}

}  // namespace
}  // namespace swipc::testing
