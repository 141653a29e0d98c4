#include "federation/remote_clients.h"

#include <gtest/gtest.h>

namespace swipc::federation {
namespace {

ClientId idOf(char c) {
  ClientId id;
  EXPECT_TRUE(ClientId::parse(std::string(32, c), id));
  return id;
}

RemoteClient client(char c, const std::string& node = "n2") {
  RemoteClient r;
  r.node = node;
  r.id = idOf(c);
  r.url = "app://page/" + std::string(1, c);
  r.type = ClientType::WORKER;
  r.frameType = FrameType::NONE;
  r.focused = true;
  r.visible = false;
  r.controlled = false;
  return r;
}

TEST(RemoteClientsTest, RequestsRoundTripEveryKind) {
  ClientsRequest m;
  m.kind = ClientsRequest::Kind::MATCH_ALL;
  m.req = 41;
  m.from = "n1";
  m.options.includeUncontrolled = true;
  m.options.type = ClientType::ALL;
  auto back = decodeRequest(encodeRequest(m));
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_EQ(back->kind, ClientsRequest::Kind::MATCH_ALL);
  EXPECT_EQ(back->req, 41u);
  EXPECT_EQ(back->from, "n1");
  EXPECT_TRUE(back->options.includeUncontrolled);
  EXPECT_EQ(back->options.type, ClientType::ALL);
  EXPECT_EQ(*peekKind(encodeRequest(m)), FrameKind::REQUEST);

  ClientsRequest p;
  p.kind = ClientsRequest::Kind::POST;
  p.req = 42;
  p.from = "n1";
  p.id = idOf('b');
  p.data = Value::map({{"bytes", Value(Bytes{{0, 255, 7}})}, {"n", int64_t{-3}}, {"f", 0.5}});
  auto post = decodeRequest(encodeRequest(p));
  ASSERT_TRUE(post) << post.error().describe();
  EXPECT_EQ(post->kind, ClientsRequest::Kind::POST);
  EXPECT_EQ(post->id, p.id);
  EXPECT_EQ(post->data, p.data);  // lossless, bytes included
}

TEST(RemoteClientsTest, AnswersRoundTripWithTheAnsweringNode) {
  auto list = decodeAnswer(encodeMatchAllAnswer(7, "n2", {client('a'), client('c')}));
  ASSERT_TRUE(list) << list.error().describe();
  EXPECT_EQ(list->req, 7u);
  ASSERT_EQ(list->clients.size(), 2u);
  const RemoteClient& c = list->clients[1];
  EXPECT_EQ(c.node, "n2");
  EXPECT_EQ(c.id, idOf('c'));
  EXPECT_EQ(c.url, "app://page/c");
  EXPECT_EQ(c.type, ClientType::WORKER);
  EXPECT_EQ(c.frameType, FrameType::NONE);
  EXPECT_TRUE(c.focused);
  EXPECT_FALSE(c.visible);
  EXPECT_FALSE(c.controlled);

  auto none = decodeAnswer(encodeGetAnswer(8, "n2", std::nullopt));
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->client);
  auto one = decodeAnswer(encodeGetAnswer(8, "n3", client('d', "ignored")));
  ASSERT_TRUE(one && one->client);
  EXPECT_EQ(one->client->node, "n3");  // who answered, not what the frame claims inside

  auto ok = decodeAnswer(encodeOutcomeAnswer(9, "n2", Result<void>{}));
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok->outcome);
  auto full = decodeAnswer(encodeOutcomeAnswer(9, "n2", makeError(Errc::QUEUE_FULL, "backlog at its bound")));
  ASSERT_TRUE(full);
  ASSERT_FALSE(full->outcome);
  EXPECT_EQ(full->outcome.error().code, Errc::QUEUE_FULL);
  EXPECT_EQ(full->outcome.error().message, "backlog at its bound");
}

TEST(RemoteClientsTest, HostileFramesAreRefusedWithANamedError) {
  const std::string id(32, 'a');
  const std::vector<std::string> requests = {
      "",
      "not json",
      "[1,2]",
      R"({"v":2,"kind":"get","req":1,"from":"n1","id":")" + id + "\"}",
      R"({"v":1,"kind":"get","req":-1,"from":"n1","id":")" + id + "\"}",
      R"({"v":1,"kind":"get","req":1,"id":")" + id + "\"}",
      R"({"v":1,"kind":"get","req":1,"from":"n1","id":"xyz"})",
      R"({"v":1,"kind":"get","req":1,"from":"n1"})",
      R"({"v":1,"kind":"shout","req":1,"from":"n1","id":")" + id + "\"}",
      R"({"v":1,"kind":"matchAll","req":1,"from":"n1"})",
      R"({"v":1,"kind":"matchAll","req":1,"from":"n1","options":{"includeUncontrolled":1,"type":"window"}})",
      R"({"v":1,"kind":"matchAll","req":1,"from":"n1","options":{"includeUncontrolled":true,"type":"fridge"}})",
      R"({"v":1,"kind":"post","req":1,"from":"n1","id":")" + id + "\"}",
      R"({"v":1,"kind":"post","req":1,"from":"n1","id":")" + id + R"(","data":{"$bytes":"!!"}})",
  };
  for (const auto& f : requests) {
    auto r = decodeRequest(f);
    ASSERT_FALSE(r) << f;
    const Errc code = r.error().code;
    EXPECT_TRUE(code == Errc::PROTOCOL_VIOLATION || code == Errc::VERSION_MISMATCH || code == Errc::TYPE)
        << r.error().describe();
  }
  const std::string head = R"({"v":1,"kind":"answer","req":1,"from":"n2",)";
  const std::vector<std::string> answers = {
      head + R"("clients":{}})",
      head + R"("clients":[{"id":"nope"}]})",
      head + R"("clients":[{"id":")" + id +
          R"(","url":"u","type":"all","frameType":"none","focused":true,"visibilityState":"visible","controlled":true}]})",
      head + R"("clients":[{"id":")" + id +
          R"(","url":"u","type":"window","frameType":"none","focused":true,"visibilityState":"dim","controlled":true}]})",
      head + R"("client":5})",
      head + R"("error":{"name":"QueueFull"}})",
      head + R"("delivered":false})",
      head + R"("something":1})",
  };
  for (const auto& f : answers) EXPECT_FALSE(decodeAnswer(f)) << f;
  // More clients than a node may have.
  std::vector<RemoteClient> many(3, client('a'));
  EXPECT_FALSE(decodeAnswer(encodeMatchAllAnswer(1, "n2", many), 2));
  EXPECT_TRUE(decodeAnswer(encodeMatchAllAnswer(1, "n2", many), 3));
}

}  // namespace
}  // namespace swipc::federation
