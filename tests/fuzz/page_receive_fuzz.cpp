// Fuzz target page_receive: the page's receive path. The fuzz input is what a daemon writes into
// a page's down ring; a page::Page with every module (and the BroadcastChannel feature, as
// swipc::Client has it) reads it: ring record -> copy + validate or the fast lane -> envelope
// decode -> the OpTable handler of its kind (sender acks, ports, controller ops, broadcast) ->
// the page's callbacks. The page attaches in process (no socket path, no daemon process).
//
// The daemon is trusted for framing (DESIGN §3), but it relays payloads and port lists that
// came from other pages: those bytes are as hostile as any page. Properties: no crash, no
// sanitizer report, no exception escapes dispatchOnce() (a malformed relayed payload is a
// messageerror, a malformed envelope a dropped connection and a re-attach).
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "core/attach.h"
#include "core/connection.h"
#include "core/identity.h"
#include "fuzz_support.h"
#include "page/broadcast.h"
#include "page/page.h"
#include "wire/limits.h"

namespace {

using namespace swipc;

UniqueFd dupFd(int fd) { return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

/// The daemon's end of the page's attaches: a socketpair and a real segment per attach.
struct FakeDaemon {
  std::vector<std::unique_ptr<core::Connection>> links;
  UniqueFd segment;  // of the latest attach, for writing its down ring

  page::ConnectionState::AttachFn attachFn() {
    return [this](const core::HelloInfo& hello, Deadline) -> Result<core::Attached> {
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return makeError(Errc::SYSTEM, "socketpair");
      // 64 KiB messages: the traversal limit (2 x the words) caps a port list at ~16K ports.
      const uint64_t maxBytes = 64 << 10;
      // Nothing drains the up ring while the page runs (it is single-threaded, and a full ring
      // makes the page wait for space, up to its deadline): 64 MiB (sparse) holds what one input
      // makes the page send, port closes for every port of every list included (see
      // tests/fuzz/crashes/README.md on how far that goes). The down ring is the fuzzed one.
      auto d = core::Connection::createForDaemon(UniqueFd(sv[0]), core::RingSizes{64 << 20, 64 * 1024}, maxBytes);
      if (!d) return d.error();
      auto c = core::Connection::openForClient(UniqueFd(sv[1]), dupFd((*d)->segmentFd()), dupFd((*d)->doorbellFd()),
                                               dupFd((*d)->wakeReadFd()), maxBytes);
      if (!c) return c.error();
      segment = dupFd((*d)->segmentFd());
      (*d)->forgetPassedFds();
      core::Attached a;
      a.connection = std::move(*c);
      const core::ResumeToken token = hello.resumeToken ? *hello.resumeToken : core::newResumeToken();
      a.welcome.resumeToken = token;
      a.welcome.clientId = core::clientIdForToken(token);
      a.welcome.maxMessageBytes = maxBytes;
      a.welcome.controlled = true;
      a.welcome.swVersion = "fuzz-1";
      links.push_back(std::move(*d));
      return a;
    };
  }
};

ClientOptions options() {
  ClientOptions o;
  o.scope = "page-fuzz";
  o.runtimeDir = "/nonexistent-swipc-page-fuzz";
  o.attachTimeout = std::chrono::milliseconds(100);
  return o;
}

/// Steps the page's loop without waiting: what is ready runs, nothing sleeps.
void step(page::Page& p) {
  for (int i = 0; i < 3; ++i) p.dispatchOnce(Clock::now());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  swipc::fuzz::quietLogs();
  auto records = swipc::fuzz::splitRecords(data, size);
  if (records.empty()) return 0;
  FakeDaemon daemon;  // before the page: it outlives it
  auto created = page::Page::create(options(), daemon.attachFn());
  if (!created) std::abort();
  std::unique_ptr<page::Page> p = std::move(*created);
  auto bc = page::PageBroadcast::create(p->features().context());
  if (!bc) std::abort();
  p->features().add(std::move(*bc));
  // A page that uses what it gets, as page_client listen does: the data read, every port it was
  // given started at once (its queued messages decoded then) and kept.
  std::vector<MessagePort> kept;
  p->events().onMessage([&kept](const MessageEvent& e) {
    (void)e.data.kind();
    for (const auto& port : e.ports) {
      MessagePort q(port.state());
      q.onMessage([](const MessageEvent& m) { (void)m.data.kind(); });
      q.onMessageError([](const MessageErrorEvent&) {});
      kept.push_back(std::move(q));
    }
  });
  p->events().onMessageError([](const MessageErrorEvent&) {});
  if (!p->start()) std::abort();
  p->queue().start();
  swipc::fuzz::RawRing down;
  if (!down.open(daemon.segment.get(), daemon.links.back()->segmentBytes(), swipc::fuzz::Ring::DOWN)) std::abort();
  const size_t attachCount = daemon.links.size();
  for (const auto& r : records) {
    if (daemon.links.size() != attachCount) break;  // the page dropped that connection
    if (down.write(r) != swipc::queue::RingStatus::OK) {
      daemon.links.back()->wakePeer();
      step(*p);
      if (daemon.links.size() != attachCount || down.write(r) != swipc::queue::RingStatus::OK) break;
    }
  }
  if (daemon.links.size() == attachCount) daemon.links.back()->wakePeer();
  step(*p);
  p->close();
  kept.clear();
  return 0;
}
