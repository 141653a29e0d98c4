// Test support for the page modules: a fake daemon that attaches pages in-process (a real
// socketpair and a real segment, no socket path, no thread), and a rig: a page::Page (every
// module, wired) attached to it. Tests step the page's loop themselves.
#pragma once

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <capnp/message.h>

#include "core/attach.h"
#include "core/connection.h"
#include "core/event_loop.h"
#include "core/identity.h"
#include "page/connection_state.h"
#include "page/page.h"
#include "wire/limits.h"

namespace swipc::page::testing {

using namespace std::chrono_literals;

inline UniqueFd dupFd(int fd) { return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

/// The daemon's end of the pages it attached. attachFn() is what ConnectionState runs instead of
/// core::attachToDaemon.
class FakeDaemon {
 public:
  /// Attaches to refuse (NoDaemon) before one succeeds.
  int refuse = 0;
  bool controlled = true;
  uint64_t maxMessageBytes = wire::DEFAULT_MAX_MESSAGE_BYTES;
  core::RingSizes rings;
  std::vector<core::HelloInfo> hellos;             // every Hello, refused ones included
  std::vector<Clock::time_point> attachTimes;      // when each arrived
  std::vector<std::unique_ptr<core::Connection>> links;  // daemon side of each attach

  ConnectionState::AttachFn attachFn() {
    return [this](const core::HelloInfo& hello, Deadline) -> Result<core::Attached> {
      hellos.push_back(hello);
      attachTimes.push_back(Clock::now());
      if (refuse > 0) {
        --refuse;
        return makeError(Errc::NO_DAEMON, "fake daemon refuses");
      }
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return makeError(Errc::SYSTEM, "socketpair");
      UniqueFd daemonSocket(sv[0]);
      auto d = core::Connection::createForDaemon(std::move(daemonSocket), rings, maxMessageBytes);
      if (!d) return d.error();
      auto c = core::Connection::openForClient(UniqueFd(sv[1]), dupFd((*d)->segmentFd()), dupFd((*d)->doorbellFd()),
                                               dupFd((*d)->wakeReadFd()), maxMessageBytes);
      if (!c) return c.error();
      (*d)->forgetPassedFds();
      core::Attached a;
      a.connection = std::move(*c);
      const core::ResumeToken token = hello.resumeToken ? *hello.resumeToken : core::newResumeToken();
      a.welcome.resumeToken = token;
      a.welcome.clientId = core::clientIdForToken(token);
      a.welcome.maxMessageBytes = maxMessageBytes;
      a.welcome.controlled = controlled;
      a.welcome.swVersion = "fake-1";
      links.push_back(std::move(*d));
      return a;
    };
  }

  /// The daemon side of the latest attach.
  core::Connection& conn() { return *links.back(); }

  /// The next envelope the page sent, nullopt when there is none now. Consumes it.
  std::optional<wire::Inbound> next() {
    wire::Inbound in;
    Error err;
    auto s = conn().receive(in, err);
    EXPECT_NE(s, core::Connection::RecvStatus::VIOLATION) << err.describe();
    if (s != core::Connection::RecvStatus::OK) return std::nullopt;
    conn().publishConsumed();
    return in;
  }

  /// Sends the envelope `fill` writes to the page and wakes it.
  void send(const std::function<void(schema::Envelope::Builder)>& fill) {
    capnp::MallocMessageBuilder mb;
    auto env = mb.initRoot<schema::Envelope>();
    env.setSchemaVersion(schema::SCHEMA_VERSION);
    env.setSeq(++seq_);
    fill(env);
    ASSERT_EQ(conn().send(mb, seq_), core::Connection::SendStatus::OK);
    conn().wakePeer();
  }

  /// The daemon dies: its end of the latest connection closes.
  void hangUp() { links.back().reset(); }

 private:
  uint64_t seq_ = 0;
};

/// Test options: a scope whose paths are never used (the fake daemon attaches in-process).
inline ClientOptions testOptions() {
  ClientOptions o;
  o.scope = "page-unit";
  o.runtimeDir = "/nonexistent-swipc-page-unit";
  o.attachTimeout = 500ms;
  return o;
}

/// Steps `loop` (as Page::dispatchOnce does when `page` is set) until `done()` or the guard
/// passes; false on the guard.
template <typename Done>
bool runUntil(core::EventLoop& loop, Done done, std::chrono::milliseconds guard = 5s) {
  const Deadline until = Clock::now() + guard;
  while (!done()) {
    if (Clock::now() >= until) return false;
    loop.runOnce(std::min(until, Clock::now() + 20ms));
  }
  return true;
}

/// A page::Page attached to a FakeDaemon.
struct PageRig {
  explicit PageRig(ClientOptions opts = testOptions()) {
    auto p = Page::create(opts, daemon.attachFn());
    EXPECT_TRUE(p.ok());
    page = std::move(*p);
  }
  /// Adds the built-in features and attaches.
  void start() { ASSERT_TRUE(page->start().ok()); }

  /// Steps the page until `done()` or the guard passes; false on the guard.
  template <typename Done>
  bool runUntil(Done done, std::chrono::milliseconds guard = 5s) {
    const Deadline until = Clock::now() + guard;
    while (!done()) {
      if (Clock::now() >= until) return false;
      page->dispatchOnce(std::min(until, Clock::now() + 20ms));
    }
    return true;
  }
  /// Steps the page until the fake daemon has an envelope from it; nullopt on the guard.
  std::optional<wire::Inbound> nextSent(std::chrono::milliseconds guard = 2s) {
    std::optional<wire::Inbound> in;
    runUntil([&] { return (in = daemon.next()).has_value(); }, guard);
    return in;
  }

  FakeDaemon daemon;  // before the page: it outlives it
  std::unique_ptr<Page> page;
};

}  // namespace swipc::page::testing
