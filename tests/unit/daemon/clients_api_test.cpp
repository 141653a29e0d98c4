// daemon: ClientsApi. matchAll filters and orders as DESIGN §9 says (focused-ever windows most
// recent first, then never-focused windows by creation, then workers by creation); get() knows
// only alive clients; claim, focus and navigate change the record and tell the page; a page's
// clientState report moves the focus (only a setFocus does) and sets its visibility.
#include "daemon/clients_api.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "daemon_rig.h"

namespace swipc::daemon {
namespace {

using testing::DaemonRig;
using testing::Page;

class ClientsApiTest : public ::testing::Test {
 protected:
  ClientsApiTest() { sut.registerWith(rig.dispatch); }

  std::vector<ClientId> ids(const std::vector<ClientHandle>& hs) {
    std::vector<ClientId> out;
    for (const auto& h : hs) out.push_back(h.id());
    return out;
  }
  /// The page reports a state change (as setFocus / setVisibility do).
  void report(Page& p, bool focused, bool visible, bool focusChanged) {
    p.send([&](schema::Envelope::Builder e) {
      auto st = e.initClientState();
      st.setFocused(focused);
      st.setVisible(visible);
      st.setFocusChanged(focusChanged);
    });
    rig.dispatch.drain(rig.record(p));
  }

  DaemonRig rig;
  ClientsApi sut{nullptr, rig.clients, rig.outbound, rig.counters};
};

TEST_F(ClientsApiTest, MatchAllPutsFocusedWindowsFirstMostRecentFirstThenWindowsThenWorkers) {
  Page worker = rig.attach(ClientType::WORKER);
  Page w1 = rig.attach();
  Page w2 = rig.attach();
  Page w3 = rig.attach();
  report(w3, true, true, true);
  report(w1, true, true, true);
  auto all = sut.matchAll({.includeUncontrolled = false, .type = ClientType::ALL});
  EXPECT_EQ(ids(all), (std::vector<ClientId>{w1.id, w3.id, w2.id, worker.id}));
}

TEST_F(ClientsApiTest, MatchAllDefaultsToControlledWindows) {
  Page worker = rig.attach(ClientType::WORKER);
  Page controlled = rig.attach();
  Page uncontrolled = rig.attach(ClientType::WINDOW, /*controlled=*/false);
  EXPECT_EQ(ids(sut.matchAll({})), std::vector<ClientId>{controlled.id});
  EXPECT_EQ(ids(sut.matchAll({.includeUncontrolled = true})), (std::vector<ClientId>{controlled.id, uncontrolled.id}));
  EXPECT_EQ(ids(sut.matchAll({.type = ClientType::WORKER})), std::vector<ClientId>{worker.id});
}

TEST_F(ClientsApiTest, GoneClientDropsOutAtOnce) {
  Page a = rig.attach();
  Page b = rig.attach();
  rig.clients.detach(rig.record(a), "test");
  EXPECT_EQ(ids(sut.matchAll({})), std::vector<ClientId>{b.id});
  EXPECT_FALSE(sut.get(a.id).has_value());
  ASSERT_TRUE(sut.get(b.id).has_value());
  EXPECT_EQ(sut.get(b.id)->url(), rig.record(b).url);
}

TEST_F(ClientsApiTest, ClaimControlsEveryUncontrolledClientAndTellsIt) {
  Page controlled = rig.attach();
  Page u1 = rig.attach(ClientType::WINDOW, false);
  Page u2 = rig.attach(ClientType::WORKER, false);
  EXPECT_EQ(sut.claim(), 2u);
  EXPECT_EQ(rig.counters.claimed, 2u);
  for (Page* p : {&u1, &u2}) {
    EXPECT_TRUE(rig.record(*p).controlled);
    auto in = p->next();
    ASSERT_TRUE(in.has_value());
    ASSERT_TRUE(in->envelope().isControllerChange());
    EXPECT_TRUE(in->envelope().getControllerChange().getControlled());
  }
  EXPECT_FALSE(controlled.next().has_value());
}

TEST_F(ClientsApiTest, FocusMovesTheFocusAndTellsTheWindow) {
  Page a = rig.attach();
  Page b = rig.attach();
  report(a, true, true, true);
  auto h = sut.focus(b.id);
  ASSERT_TRUE(h.ok()) << h.error().describe();
  EXPECT_TRUE(h->focused());
  EXPECT_FALSE(rig.record(a).focused);
  EXPECT_EQ(ids(sut.matchAll({})), (std::vector<ClientId>{b.id, a.id}));
  auto in = b.next();
  ASSERT_TRUE(in.has_value());
  EXPECT_TRUE(in->envelope().isFocus());
}

TEST_F(ClientsApiTest, FocusRefusesAWorkerAnUncontrolledWindowAndAGoneClient) {
  Page worker = rig.attach(ClientType::WORKER);
  Page uncontrolled = rig.attach(ClientType::WINDOW, false);
  Page gone = rig.attach();
  rig.clients.detach(rig.record(gone), "test");
  EXPECT_EQ(sut.focus(worker.id).error().code, Errc::TYPE);
  EXPECT_EQ(sut.focus(uncontrolled.id).error().code, Errc::INVALID_STATE);
  EXPECT_EQ(sut.focus(gone.id).error().code, Errc::NOT_FOUND);
}

TEST_F(ClientsApiTest, NavigateChangesTheUrlAndTellsTheWindow) {
  Page a = rig.attach();
  auto h = sut.navigate(a.id, "app://elsewhere/");
  ASSERT_TRUE(h.ok()) << h.error().describe();
  EXPECT_EQ(h->url(), "app://elsewhere/");
  EXPECT_EQ(rig.record(a).url, "app://elsewhere/");
  auto in = a.next();
  ASSERT_TRUE(in.has_value());
  ASSERT_TRUE(in->envelope().isNavigate());
  EXPECT_EQ(std::string(in->envelope().getNavigate().getUrl().cStr()), "app://elsewhere/");
}

TEST_F(ClientsApiTest, NavigateRefusesAnEmptyUrl) {
  Page a = rig.attach();
  EXPECT_EQ(sut.navigate(a.id, "").error().code, Errc::TYPE);
  EXPECT_FALSE(a.next().has_value());
}

TEST_F(ClientsApiTest, VisibilityReportLeavesTheFocusWhereItIs) {
  Page a = rig.attach();
  report(a, true, true, true);
  report(a, false, false, /*focusChanged=*/false);
  EXPECT_TRUE(rig.record(a).focused);
  EXPECT_FALSE(rig.record(a).visible);
  EXPECT_EQ(sut.get(a.id)->visibilityState(), "hidden");
}

TEST_F(ClientsApiTest, RefreshedHandleIsUpToDate) {
  Page a = rig.attach();
  std::optional<ClientHandle> h = sut.handleFor(rig.record(a));
  rig.record(a).url = "app://moved/";
  sut.refreshHandle(h, rig.record(a));
  EXPECT_EQ(h->url(), "app://moved/");
  EXPECT_EQ(h->id(), a.id);
}

}  // namespace
}  // namespace swipc::daemon
