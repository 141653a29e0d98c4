#include "federation/nats_link.h"

#include <nats/nats.h>

#include <algorithm>
#include <cstring>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <span>
#include <random>
#include <string_view>
#include <thread>

#include "common/thread_name.h"
#include "core/log.h"
#include "federation/bundle.h"

namespace swipc::federation {

const char* stateName(NatsLink::State s) {
  switch (s) {
    case NatsLink::State::CONNECTED: return "connected";
    case NatsLink::State::DISCONNECTED: return "disconnected";
    case NatsLink::State::RECONNECTED: return "reconnected";
    case NatsLink::State::CLOSED: return "closed";
  }
  return "?";
}

namespace {

/// Messages (subject and data) one after the other in one byte buffer, so that adding one
/// allocates nothing once the buffer has grown to a batch's size (it keeps its capacity from one
/// batch to the next) and nothing is freed on another thread than the one that allocated it.
/// Each subject is NUL-terminated (libnats takes C strings); each message's data starts 8-byte
/// aligned (a post's envelope is read in place, and Cap'n Proto reads words).
struct MessageBuffer {
  struct Item {
    size_t subject;  // offsets in `bytes`
    size_t subjectLen;
    size_t data;
    size_t dataLen;
  };
  std::vector<uint8_t> bytes;  // operator new's alignment (16) is kept by 8-aligned offsets
  std::vector<Item> items;

  /// Adds a message; its `dataLen` bytes are to be written at the pointer returned (valid until
  /// the next append).
  uint8_t* append(std::string_view subject, size_t dataLen) {
    const size_t at = bytes.size();
    const size_t data = (at + subject.size() + 1 + 7) & ~size_t{7};
    bytes.resize(data + dataLen);
    std::memcpy(bytes.data() + at, subject.data(), subject.size());
    std::memset(bytes.data() + at + subject.size(), 0, data - at - subject.size());
    items.push_back({at, subject.size(), data, dataLen});
    return bytes.data() + data;
  }
  std::string_view subjectOf(const Item& i) const {
    return {reinterpret_cast<const char*>(bytes.data() + i.subject), i.subjectLen};
  }
  const char* subjectZ(const Item& i) const { return reinterpret_cast<const char*>(bytes.data() + i.subject); }
  std::span<const uint8_t> dataOf(const Item& i) const { return {bytes.data() + i.data, i.dataLen}; }
  bool empty() const { return items.empty(); }
  void clear() {
    bytes.clear();
    items.clear();
  }
};

}  // namespace

/// What the link's threads and the loop share. Owned by the link, and kept alive while libnats
/// may still call back (see keepAlive()).
struct NatsLink::Shared {
  core::EventLoop* loop = nullptr;
  Options options;
  Events events;

  // ---- loop <-> sender thread
  std::mutex mu;
  std::condition_variable wake;
  MessageBuffer queue;  // what the loop queued for the sender
  bool stopping = false;
  std::string lastSubject, last;  // published alone when stopping (setLast)
  std::thread sender;

  // ---- libnats threads -> loop
  std::mutex inboxMu;
  MessageBuffer inbox;     // what libnats delivered, for the loop (bundles already unpacked)
  MessageBuffer draining;  // the loop's: the inbox it took, handed to events.message
  bool open = true;  // false once the link is being destroyed: nothing more goes to the loop

  std::atomic<bool> connected{false};
  std::atomic<uint64_t> sendFailures{0};
  std::mutex closedMu;
  std::condition_variable closedCv;
  bool closed = false;

  natsConnection* nc = nullptr;  // the sender thread's
  std::vector<natsSubscription*> subs;

  /// Runs `task` on the loop unless the link is going away.
  void toLoop(std::function<void(Shared&)> task) {
    std::lock_guard lock(inboxMu);
    if (!open) return;
    loop->post([self = this, task = std::move(task)] {
      // The loop thread is the one that clears `open` (the destructor): no race here.
      if (self->open) task(*self);
    });
  }
  void reportState(State s) {
    std::string url;
    if (nc && (s == State::CONNECTED || s == State::RECONNECTED)) {
      char buf[256] = {};
      if (natsConnection_GetConnectedUrl(nc, buf, sizeof buf) == NATS_OK) url = buf;
    }
    toLoop([s, url](Shared& sh) {
      if (sh.events.state) sh.events.state(s, url);
    });
  }
  void runSender();
  /// Publishes what the loop queued, in order; a run of one subject as one bundle (bundle.h).
  void publishBatch(const MessageBuffer& batch);
  std::atomic<uint64_t> bundled{0};  // messages that went inside a bundle
  std::atomic<uint64_t> receiveBreaks{0};  // slow-consumer drops and disconnections
};

namespace {

/// libnats may call back after natsConnection_Destroy returns (its delivery threads wind down on
/// their own): the Shared it was given stays reachable until the process ends. One per started
/// link, i.e. per time the daemon starts serving with --nats.
void keepAlive(std::shared_ptr<NatsLink::Shared> s) {
  static std::mutex mu;
  static std::vector<std::shared_ptr<NatsLink::Shared>> kept;
  std::lock_guard lock(mu);
  kept.push_back(std::move(s));
}

void onMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* sh = static_cast<NatsLink::Shared*>(closure);
  const std::string_view subject = natsMsg_GetSubject(msg);
  const auto* data = reinterpret_cast<const uint8_t*>(natsMsg_GetData(msg));
  const size_t length = static_cast<size_t>(std::max(0, natsMsg_GetDataLength(msg)));
  // A bundle becomes its messages again here, so nothing past the link knows about bundles. One
  // that does not unpack goes on whole, and the handler refuses it by name.
  std::optional<std::vector<std::string_view>> items;
  if (looksLikeBundle(data, length)) items = decodeBundle(data, length);
  std::lock_guard lock(sh->inboxMu);
  if (!sh->open) {
    natsMsg_Destroy(msg);
    return;
  }
  const bool first = sh->inbox.empty();
  auto add = [&](const void* bytes, size_t n) {
    uint8_t* at = sh->inbox.append(subject, n);
    if (n) std::memcpy(at, bytes, n);
  };
  if (items) {
    for (auto item : *items) add(item.data(), item.size());
  } else {
    add(data, length);
  }
  natsMsg_Destroy(msg);
  if (!first) return;  // a drain is already posted: one per burst
  sh->loop->post([sh] {
    MessageBuffer& batch = sh->draining;
    batch.clear();  // (also when a handler threw last time: the inbox must come back empty)
    {
      std::lock_guard l(sh->inboxMu);
      if (!sh->open) return;
      std::swap(batch, sh->inbox);  // the inbox takes the capacity of the batch before
    }
    for (const auto& item : batch.items) {
      if (!sh->open) break;  // a handler may stop the feature
      if (sh->events.message) sh->events.message(batch.subjectOf(item), batch.dataOf(item));
    }
    batch.clear();
  });
}

void onConnected(natsConnection*, void* closure) {
  auto* sh = static_cast<NatsLink::Shared*>(closure);
  sh->connected = true;
  sh->reportState(NatsLink::State::CONNECTED);
}

void onReconnected(natsConnection*, void* closure) {
  auto* sh = static_cast<NatsLink::Shared*>(closure);
  sh->connected = true;
  sh->reportState(NatsLink::State::RECONNECTED);
}

void onDisconnected(natsConnection*, void* closure) {
  auto* sh = static_cast<NatsLink::Shared*>(closure);
  sh->connected = false;
  ++sh->receiveBreaks;
  sh->reportState(NatsLink::State::DISCONNECTED);
}

void onClosed(natsConnection*, void* closure) {
  auto* sh = static_cast<NatsLink::Shared*>(closure);
  sh->connected = false;
  {
    std::lock_guard lock(sh->closedMu);
    sh->closed = true;
  }
  sh->closedCv.notify_all();
}

void onError(natsConnection*, natsSubscription*, natsStatus err, void* closure) {
  auto* sh = static_cast<NatsLink::Shared*>(closure);
  if (err == NATS_SLOW_CONSUMER) ++sh->receiveBreaks;
  std::string what = natsStatus_GetText(err);
  sh->toLoop([what](NatsLink::Shared& s) {
    if (s.events.error) s.events.error(what);
  });
}

/// Back-off after each full round of the server list: 100 ms doubling to 5 s, plus up to 100 ms.
int64_t reconnectDelay(natsConnection*, int attempts, void*) {
  thread_local std::minstd_rand rng(std::random_device{}());
  const int64_t base = std::min<int64_t>(5000, int64_t{100} << std::min(attempts, 6));
  return base + static_cast<int64_t>(rng() % 100);
}

}  // namespace

void NatsLink::Shared::publishBatch(const MessageBuffer& batch) {
  std::vector<std::string_view> items;
  const auto& all = batch.items;
  // A bundle never exceeds what the server takes in one message.
  const int64_t serverMax = nc ? natsConnection_GetMaxPayload(nc) : 0;
  const size_t maxBundle = serverMax > 0 ? std::min(MAX_BUNDLE_BYTES, static_cast<size_t>(serverMax)) : MAX_BUNDLE_BYTES;
  for (size_t i = 0; i < all.size();) {
    // What queued for one subject in a row goes as one bundle, up to MAX_BUNDLE_BYTES.
    const std::string_view subject = batch.subjectOf(all[i]);
    const char* subjectZ = batch.subjectZ(all[i]);
    size_t end = i + 1;
    size_t bytes = BUNDLE_HEADER_BYTES + bundleItemBytes(all[i].dataLen);
    // (An empty message travels alone: a bundle never holds one, see decodeBundle.)
    while (all[i].dataLen > 0 && end < all.size() && all[end].dataLen > 0 && batch.subjectOf(all[end]) == subject &&
           bytes + bundleItemBytes(all[end].dataLen) <= maxBundle)
      bytes += bundleItemBytes(all[end++].dataLen);
    const size_t count = end - i;
    natsStatus s = NATS_NOT_YET_CONNECTED;
    if (nc && connected && natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED) {
      if (count == 1) {
        s = natsConnection_Publish(nc, subjectZ, batch.dataOf(all[i]).data(), static_cast<int>(all[i].dataLen));
      } else {
        items.clear();
        for (size_t k = i; k < end; ++k)
          items.emplace_back(reinterpret_cast<const char*>(batch.dataOf(all[k]).data()), all[k].dataLen);
        const std::vector<uint8_t> bundle = encodeBundle(items);
        s = natsConnection_Publish(nc, subjectZ, bundle.data(), static_cast<int>(bundle.size()));
        if (s == NATS_OK) bundled += count;
      }
    }
    if (s != NATS_OK) sendFailures += count;
    i = end;
  }
}

void NatsLink::Shared::runSender() {
  natsOptions* opts = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  std::vector<const char*> urls;
  for (const auto& u : options.servers) urls.push_back(u.c_str());
  if (s == NATS_OK) s = natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size()));
  if (s == NATS_OK) s = natsOptions_SetName(opts, options.clientName.c_str());
  if (s == NATS_OK) s = natsOptions_SetNoEcho(opts, true);  // our own posts are delivered locally
  // Write each publish at once: the default holds it for the flusher thread (up to ~1 ms).
  if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, true);
  // A stalled server (full TCP window) fails a write after this instead of holding the sender,
  // and with it the daemon's stop, for ever.
  if (s == NATS_OK) s = natsOptions_SetWriteDeadline(opts, WRITE_DEADLINE_MS);
  // Nothing is held back while reconnecting (0 would mean libnats' 8 MB default). libnats tells
  // us of a disconnection on another thread, a little later: a post published in between waited
  // in that buffer and arrived long after the reconnect, although the daemon had already logged
  // NATS as down (FederationTest.NatsDown…: 19 lapped and 1 late instead of 20 lapped). libnats
  // still takes one message into an empty buffer, so publishBatch() also asks the connection's
  // own status before each publish: such a post fails at once and is counted as lapped.
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(opts, 1);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natsOptions_SetCustomReconnectDelay(opts, reconnectDelay, nullptr);
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, 2000);
  if (s == NATS_OK) s = natsOptions_SetPingInterval(opts, 2000);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(opts, 2);
  if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(opts, true, onConnected, this);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(opts, onReconnected, this);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(opts, onDisconnected, this);
  if (s == NATS_OK) s = natsOptions_SetClosedCB(opts, onClosed, this);
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(opts, onError, this);
  if (s == NATS_OK) {
    s = natsConnection_Connect(&nc, opts);
    if (s == NATS_OK) {
      connected = true;
      reportState(State::CONNECTED);
    } else if (s == NATS_NOT_YET_CONNECTED) {
      s = NATS_OK;  // connects in the background; onConnected reports it
    }
  }
  for (size_t i = 0; s == NATS_OK && i < options.subjects.size(); ++i) {
    natsSubscription* sub = nullptr;
    s = natsConnection_Subscribe(&sub, nc, options.subjects[i].c_str(), onMessage, this);
    if (s == NATS_OK) {
      // Generous client-side buffers; past them libnats drops (a gap, reported as lapped).
      natsSubscription_SetPendingLimits(sub, 1 << 20, 256 << 20);
      subs.push_back(sub);
    }
  }
  if (opts) natsOptions_Destroy(opts);
  if (s != NATS_OK) {
    std::string what = std::string("NATS client: ") + natsStatus_GetText(s) + " " + nats_GetLastError(nullptr);
    toLoop([what](Shared& sh) {
      if (sh.events.error) sh.events.error(what);
    });
  }

  MessageBuffer batch;
  std::unique_lock lock(mu);
  while (true) {
    wake.wait(lock, [&] { return stopping || !queue.items.empty(); });
    if (stopping) break;
    std::swap(batch, queue);  // `queue` takes the capacity of the batch before
    lock.unlock();
    publishBatch(batch);
    batch.clear();
    lock.lock();
  }
  // Stopping: what is still queued is dropped (it may be large, and the server slow); only the
  // last message goes.
  const std::string lastSubjectCopy = lastSubject, lastCopy = last;
  lock.unlock();
  if (nc && !lastSubjectCopy.empty() && natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED) {
    natsConnection_Publish(nc, lastSubjectCopy.c_str(), lastCopy.data(), static_cast<int>(lastCopy.size()));
    natsConnection_FlushTimeout(nc, 500);
  }
  if (nc) {
    natsConnection_Close(nc);
    std::unique_lock cl(closedMu);
    closedCv.wait_for(cl, std::chrono::seconds(2), [&] { return closed; });
    cl.unlock();
    for (auto* sub : subs) natsSubscription_Destroy(sub);
    subs.clear();
    natsConnection_Destroy(nc);
    nc = nullptr;
  }
}

std::unique_ptr<NatsLink> NatsLink::start(core::EventLoop& loop, Options options, Events events) {
  auto sh = std::make_shared<Shared>();
  sh->loop = &loop;
  sh->options = std::move(options);
  sh->events = std::move(events);
  keepAlive(sh);
  sh->sender = std::thread([raw = sh.get()] {
    nameThisThread("nats-sender");
    raw->runSender();
  });
  return std::unique_ptr<NatsLink>(new NatsLink(sh));
}

NatsLink::~NatsLink() {
  {
    std::lock_guard lock(shared_->inboxMu);
    shared_->open = false;  // tasks already posted see it and do nothing
    shared_->inbox.clear();
  }
  {
    std::lock_guard lock(shared_->mu);
    shared_->stopping = true;
  }
  shared_->wake.notify_all();
  if (shared_->sender.joinable()) shared_->sender.join();
}

void NatsLink::setLast(std::string_view subject, std::string_view data) {
  std::lock_guard lock(shared_->mu);
  shared_->lastSubject.assign(subject);
  shared_->last.assign(data);
}

bool NatsLink::tryPublish(std::string_view subject, const uint8_t* data, size_t bytes) {
  return tryPublishWith(subject, bytes, [&](uint8_t* out) {
    if (bytes) std::memcpy(out, data, bytes);
  });
}

uint8_t* NatsLink::reserve(std::string_view subject, size_t bytes) {
  if (!shared_->connected) return nullptr;
  shared_->mu.lock();
  auto& q = shared_->queue;
  if (q.bytes.size() + subject.size() + 8 + bytes > shared_->options.maxQueuedBytes) {
    shared_->mu.unlock();
    return nullptr;
  }
  wasEmpty_ = q.empty();
  return q.append(subject, bytes);
}

void NatsLink::commit() {
  shared_->mu.unlock();
  // The sender sleeps only when it found the queue empty; while it holds a batch it comes back
  // for the rest by itself. So only the first message of a batch needs to wake it (a wake-up is
  // a system call; a burst saves one per message).
  if (wasEmpty_) shared_->wake.notify_one();
}

bool NatsLink::connectedGuess() const { return shared_->connected; }
uint64_t NatsLink::sendFailures() const { return shared_->sendFailures; }
uint64_t NatsLink::bundled() const { return shared_->bundled; }
uint64_t NatsLink::receiveBreaks() const { return shared_->receiveBreaks; }

}  // namespace swipc::federation
