// Fuzz target daemon_receive: the daemon's receive path, end to end and in process. The fuzz
// input is what a hostile page writes into its up ring; the daemon's own modules, wired as
// ServiceWorker::Impl wires them (client table, outbound, dispatch, clients API, ports, messages,
// BroadcastChannel), read it: ring record -> copy + validate (wire::Inbound) or the fast lane
// (wire/plain_post) -> envelope decode -> dispatch -> the module's handler. Two pages are
// attached: the fuzzed one and a peer its relays can reach.
//
// Input: records, as fuzz_support.h describes. Everything is made afresh per input, so a crash
// replays from its file alone. Properties: no crash, no sanitizer report, no exception escapes
// (a malformed record disconnects its sender as a ProtocolViolation, nothing else).
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "core/connection.h"
#include "core/event_loop.h"
#include "core/identity.h"
#include "daemon/broadcast_feature.h"
#include "daemon/client_table.h"
#include "daemon/clients_api.h"
#include "daemon/dispatch.h"
#include "daemon/feature.h"
#include "daemon/messages.h"
#include "daemon/outbound.h"
#include "daemon/port_service.h"
#include "fuzz_support.h"
#include "swipc/service_worker.h"

namespace {

using namespace swipc;
using namespace swipc::daemon;

UniqueFd dupFd(int fd) { return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

ServiceWorkerOptions fuzzOptions() {
  ServiceWorkerOptions o;
  o.ringBytes = 64 * 1024;  // a record holds up to 16 KiB inline
  o.maxMessageBytes = 1 << 20;
  o.bcRingBytes = 4096;
  return o;
}

/// The daemon's modules, as ServiceWorker::Impl has them (no socket, no attach, no sync).
struct Daemon final : FeatureHost {
  ServiceWorkerOptions opts = fuzzOptions();
  Counters stats;
  TypeRegistry typeRegistry;
  std::unique_ptr<core::EventLoop> ownLoop = core::EventLoop::create().value();
  ClientTable table{*ownLoop, stats};
  Outbound out{table, stats, *ownLoop, opts};
  Dispatch dispatch{table, out, *ownLoop, false};
  ClientsApi api{nullptr, table, out, stats};
  PortService ports{table, out, *ownLoop, typeRegistry, opts};
  Messages messages{table, out, api, ports, stats, typeRegistry};
  BroadcastFeature broadcast{BroadcastHub::Config{opts.bcRingBytes, opts.maxMessageBytes}, typeRegistry, stats};

  Daemon() {
    api.registerWith(dispatch);
    ports.registerWith(dispatch);
    messages.registerWith(dispatch);
    // Service-worker code that uses what it gets: the data read whole, every port it was given
    // posted to once (a relay back to the page) and closed.
    messages.onMessage([](ExtendableMessageEvent& e) {
      (void)e.data.kind();
      for (auto& p : e.ports) {
        (void)p.postMessage(Value("echo"));
        p.close();
      }
    });
    (void)broadcast.start(*this);
  }
  ~Daemon() override {
    table.forEachAlive([&](ClientRecord& c) { table.detach(c, "fuzz input done"); });
    broadcast.stop();
    ports.endLocalPorts();
    settle();
  }

  /// A page wired over a socketpair and a real segment (no Hello), in the table; returns the
  /// page's copy of the segment fd, for writing its up ring.
  std::pair<ClientId, UniqueFd> attach() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    auto d = core::Connection::createForDaemon(UniqueFd(sv[0]), core::RingSizes{opts.ringBytes, opts.ringBytes},
                                               opts.maxMessageBytes);
    if (!d) std::abort();
    pageSockets.emplace_back(sv[1]);  // the page's end stays open: a closed one is a hang-up
    UniqueFd segment = dupFd((*d)->segmentFd());
    (*d)->forgetPassedFds();
    auto rec = std::make_unique<ClientRecord>();
    rec->id = core::clientIdForToken(core::newResumeToken());
    rec->url = "app://fuzz/" + std::to_string(pageSockets.size());
    rec->pid = ::getpid();
    rec->uid = ::getuid();
    rec->conn = std::move(*d);
    const ClientId id = rec->id;
    table.insert(std::move(rec));
    return {id, std::move(segment)};
  }

  void settle() {
    for (int i = 0; i < 4; ++i) ownLoop->runOnce(Clock::now());
  }

  // ---- FeatureHost
  core::EventLoop& loop() override { return *ownLoop; }
  ClientTable& clients() override { return table; }
  Outbound& outbound() override { return out; }
  void handle(schema::Envelope::Which kind, Dispatch::Handler handler, Dispatch::PlainHandler plain) override {
    dispatch.handle(kind, std::move(handler));
    if (plain) dispatch.handlePlain(kind, plain);
  }
  void onDetach(ClientTable::DetachHook hook) override { table.onDetach(std::move(hook)); }
  Result<std::string> stateDir() override { return makeError(Errc::INVALID_STATE, "no state in the fuzz target"); }
  const ServiceWorkerOptions& options() const override { return opts; }
  Counters& counters() override { return stats; }
  const TypeRegistry& types() const override { return typeRegistry; }
  void markActive() override { dispatch.markActive(); }

  std::vector<UniqueFd> pageSockets;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  swipc::fuzz::quietLogs();
  auto records = swipc::fuzz::splitRecords(data, size);
  if (records.empty()) return 0;
  Daemon d;
  auto [id, segment] = d.attach();
  auto peer = d.attach();  // another page, so relays have somewhere to go
  (void)peer;
  swipc::fuzz::RawRing up;
  if (!up.open(segment.get(), d.table.find(id)->conn->segmentBytes(), swipc::fuzz::Ring::UP)) std::abort();
  for (const auto& r : records) {
    ClientRecord* c = d.table.findAlive(id);
    if (!c) break;  // disconnected (a violation): the rest of the input is never read
    if (up.write(r) != swipc::queue::RingStatus::OK) {
      d.dispatch.drain(*c, /*toTheEnd=*/true);  // make room
      d.settle();
      if (!(c = d.table.findAlive(id)) || up.write(r) != swipc::queue::RingStatus::OK) break;
    }
  }
  if (ClientRecord* c = d.table.findAlive(id)) d.dispatch.drain(*c, /*toTheEnd=*/true);
  d.settle();
  return 0;
}
