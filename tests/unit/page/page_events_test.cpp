// page: PageEvents. Messages from the service worker go through the held queue; the other events
// are delivered at once; a callback is looked up when its event runs.
#include "page/page_events.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace swipc::page {
namespace {

struct PageEventsTest : ::testing::Test {
  HeldQueue queue;
  PageEvents sut{queue};
};

TEST_F(PageEventsTest, MessageWaitsForStartMessages) {
  std::vector<std::string> got;
  sut.onMessage([&](const MessageEvent& e) { got.push_back(e.data.asText()); });
  auto ev = std::make_shared<MessageEvent>();
  ev->data = Value("hello");
  sut.message(ev);
  EXPECT_TRUE(got.empty());
  queue.start();
  EXPECT_EQ(got, (std::vector<std::string>{"hello"}));
}

TEST_F(PageEventsTest, MessageErrorWaitsForStartMessagesAndNamesTheClient) {
  std::string target;
  sut.onMessageError([&](const MessageErrorEvent& e) { target = e.target; });
  sut.messageError(makeError(Errc::DATA_CLONE, "unknown schema"));
  EXPECT_TRUE(target.empty());
  queue.start();
  EXPECT_EQ(target, "client");
}

TEST_F(PageEventsTest, CallbackSetAfterTheEventWasQueuedIsTheOneCalled) {
  int first = 0, second = 0;
  sut.onDelivered([&](MessageSeq) { ++first; });
  queue.enterBlocking();
  sut.delivered(7);
  sut.onDelivered([&](MessageSeq seq) { second += static_cast<int>(seq); });
  queue.leaveBlocking();
  queue.flushDeferred();
  EXPECT_EQ(first, 0);
  EXPECT_EQ(second, 7);
}

TEST_F(PageEventsTest, EventsOtherThanMessagesAreNotHeld) {
  std::vector<std::string> got;
  sut.onControllerChange([&](bool c) { got.push_back(c ? "controlled" : "uncontrolled"); });
  sut.onUndelivered([&](MessageSeq seq, const Error& e) { got.push_back("undelivered " + std::to_string(seq)); });
  sut.onNavigate([&](const std::string& url) { got.push_back("navigate " + url); });
  sut.onFocus([&] { got.push_back("focus"); });
  sut.controllerChange(true);
  sut.undelivered(3, makeError(Errc::DISCONNECTED, "gone"));
  sut.navigate("app://x/2");
  sut.focus();
  EXPECT_EQ(got, (std::vector<std::string>{"controlled", "undelivered 3", "navigate app://x/2", "focus"}));
}

TEST_F(PageEventsTest, EventWithoutACallbackIsDropped) {
  queue.start();
  sut.message(std::make_shared<MessageEvent>());
  sut.delivered(1);
  sut.focus();
  SUCCEED();
}

}  // namespace
}  // namespace swipc::page
