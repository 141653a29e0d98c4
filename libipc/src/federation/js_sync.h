// JetStreamSync: one-shot Background Sync shared by every node of a federated scope (DESIGN §16),
// the sync::OneShotBackend the service worker gives its SyncFeature when it has --nats.
//
// The registrations, their entries and the wake-up tokens are in JetStream (js_queue.h says
// how); this class runs the JetStream calls off the daemon's loop and hands the loop what it
// needs:
//   - the worker thread runs every JetStream operation in order (register, take a token, settle,
//     an entry done) and connects / creates the bucket, stream and consumer, retrying until NATS
//     and JetStream answer;
//   - the fetch thread pulls tokens from the shared consumer while this node is online and has
//     room (at most MAX_IN_FLIGHT events at once), and queues them for the worker;
//   - the watch thread follows the bucket (every registration and entry, then each change) into
//     a mirror on the loop, from which tags() and state() answer at once, cluster-wide.
// An event runs on the loop like a local one (swipc::SyncEvent), with the same timeout; its
// settle goes back to the worker, which applies §14's rules to the registration (retry with
// back-off = nak with delay, lastChance from the failed attempts kept in the registration).
//
// Exactly once: a token is handed to one node at a time (work-queue consumer, explicit ack);
// the node that takes it compare-and-sets the registration to firing under that token, so a
// duplicate token never fires. A node that dies mid-event never acks: after the ack wait
// (2 x --sync-timeout-ms) the token goes to another node, which takes the event over with the
// same attempt number.
//
// @concurrent: the OneShotBackend calls on the loop thread; three threads of its own inside.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "sync/backend.h"

namespace swipc::federation {

class JetStreamSync final : public sync::OneShotBackend {
 public:
  /// Events this node runs at once, at most.
  static constexpr int MAX_IN_FLIGHT = 64;
  /// Registrations waiting for JetStream, at most; past it registerTag answers QueueFull.
  static constexpr size_t MAX_PENDING_REGISTERS = 4096;

  struct Config {
    std::vector<std::string> servers;
    std::string scope;
    std::string node;
  };
  explicit JetStreamSync(Config config);
  ~JetStreamSync() override;

  Result<void> start(core::EventLoop& loop, const sync::SyncOptions& options, Handler handler) override;
  void stop() override;
  void registerTag(const std::string& tag, const std::optional<Value>& data, Done done) override;
  std::vector<std::string> tags() const override;
  std::vector<SyncTagState> state() const override;
  void setOnline(bool online) override;
  sync::SyncCounters counters() const override;
  std::string describe() const override;

  struct Shared;
  struct Side;

 private:
  Config config_;
  std::unique_ptr<Shared> shared_;  // the threads (while started)
  std::shared_ptr<Side> side_;      // the loop's half: handler, mirror, counters, events
  sync::SyncCounters stopped_;
};

}  // namespace swipc::federation
