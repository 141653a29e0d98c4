// NatsLink: the daemon's one connection to the NATS cluster (libnats, the nats.c client), held so
// that the daemon's loop never waits for NATS. libnats runs its own threads (reading, flushing,
// reconnecting, delivering); this module adds one more, the sender, which connects (a connect
// may wait for a TCP timeout) and publishes what the loop queued. Everything NATS reports comes
// back to the loop thread through EventLoop::post(): messages (batched: one post per burst),
// connection transitions, asynchronous errors.
//
// Nothing is queued for NATS while the link is not connected: tryPublish() says so and the caller
// counts the post as not sent (its receivers learn it as a gap). Reconnects go on forever, with
// a back-off from 100 ms doubling to 5 s (plus jitter) after each round of the server list.
//
// Lifetime: start() begins connecting in the background and returns at once; destroying the
// link closes the connection (a bounded wait) and joins its thread. After that no callback runs.
//
// Bursts: what the loop queues for one subject while the sender thread is writing goes out as
// one NATS message, a bundle (bundle.h, at most MAX_BUNDLE_BYTES), and the receiving link
// unpacks it. Callers see every message, in order, as if each had travelled alone.
//
// @concurrent: start(), tryPublish(), connected(), the destructor: the loop thread; the rest is
// internal to the link's threads.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/event_loop.h"

namespace swipc::federation {

/// The most one bundle holds (its headers and padding included); a larger message goes alone.
inline constexpr size_t MAX_BUNDLE_BYTES = 64u << 10;
/// How long one write to a NATS server may block the sender thread before it fails (ms).
inline constexpr int64_t WRITE_DEADLINE_MS = 2000;

class NatsLink {
 public:
  enum class State { CONNECTED, DISCONNECTED, RECONNECTED, CLOSED };
  struct Options {
    std::vector<std::string> servers;   // nats://host:port, tried in order
    std::string clientName;             // shown by the server (connz)
    std::vector<std::string> subjects;  // subscribed to (kept across reconnects)
    size_t maxQueuedBytes = 64u << 20;  // what may wait for the sender thread
  };
  /// What the link reports; every call on the loop thread.
  struct Events {
    /// `data` starts 8-byte aligned and lives until the call returns.
    std::function<void(std::string_view subject, std::span<const uint8_t> data)> message;
    /// `url`: the server now connected to ("" when none).
    std::function<void(State state, const std::string& url)> state;
    std::function<void(const std::string& what)> error;
  };

  static std::unique_ptr<NatsLink> start(core::EventLoop& loop, Options options, Events events);
  /// Closes the link: what is still queued is dropped, then `lastSubject`/`last` (if any) is
  /// published alone, then the connection closes. Writes wait at most WRITE_DEADLINE.
  ~NatsLink();
  /// The message that goes out when the link closes, instead of what is still queued (a
  /// leaving announcement: posts dropped there are numbered, so its marks count them as gaps).
  void setLast(std::string_view subject, std::string_view data);
  NatsLink(const NatsLink&) = delete;
  NatsLink& operator=(const NatsLink&) = delete;

  /// Queues `bytes` of `data` for `subject`; never blocks. False (nothing queued) when the link
  /// is not connected or the queue is at maxQueuedBytes.
  bool tryPublish(std::string_view subject, const uint8_t* data, size_t bytes);
  bool tryPublish(std::string_view subject, std::string_view data) {
    return tryPublish(subject, reinterpret_cast<const uint8_t*>(data.data()), data.size());
  }
  /// The same, for a message the caller writes in place: `write(uint8_t* out)` fills `bytes`
  /// bytes (it runs under the queue's lock: keep it to copying).
  template <class Write>
  bool tryPublishWith(std::string_view subject, size_t bytes, Write&& write) {
    uint8_t* at = reserve(subject, bytes);
    if (!at) return false;
    write(at);
    commit();
    return true;
  }
  /// Connected now (racy: a disconnect may be on its way).
  bool connectedGuess() const;
  /// Messages queued but not sent (the connection refused them, or it went away meanwhile).
  uint64_t sendFailures() const;
  /// Messages that travelled inside a bundle (bundle.h) rather than alone.
  uint64_t bundled() const;
  /// Times the link may have missed messages for us: libnats dropped some (slow consumer) or the
  /// connection broke.
  uint64_t receiveBreaks() const;

  struct Shared;

 private:
  explicit NatsLink(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  /// Takes the queue's lock and room for one message; nullptr (lock released) when it may not be
  /// queued. commit() releases the lock and wakes the sender.
  uint8_t* reserve(std::string_view subject, size_t bytes);
  void commit();
  std::shared_ptr<Shared> shared_;
  bool wasEmpty_ = false;  // between reserve() and commit(): the loop thread's
};

const char* stateName(NatsLink::State s);

}  // namespace swipc::federation
