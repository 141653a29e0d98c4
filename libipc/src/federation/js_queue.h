// JsQueue: Background Sync's one-shot registrations in JetStream (DESIGN §16), as blocking
// operations for one worker thread (js_sync.h runs them off the daemon's loop).
//
// Per scope (hex = lowercase hex of the scope name, so any scope is a valid NATS name):
//   KV bucket   SWIPC_SYNC_<hex>     t.<h>       the registration of the tag whose key is h
//                                                (h: 32 hex digits of the tag's SHA-256), JSON
//                                    e.<h>.<id>  one queued entry of that tag (value.capnp bytes);
//                                                its revision is the entry's seq (registration
//                                                order); deleted when done, by its stream
//                                                sequence (no marker is left: reading a tag's
//                                                entries costs what is queued, not all it ever had)
//   stream      SWIPC_SYNCQ_<hex>    subject swipc-syncq.<hex>, work-queue retention: the tokens.
//                                    A token {"v":1,"h":h,"gen":g} says "tag h (generation g)
//                                    wants an event"; one durable pull consumer, "workers", is
//                                    shared by every node, so each token goes to one node at a time.
//
// The registration (KV, compare-and-set on its revision) is the truth; a token only wakes a
// node. Rules that make every race harmless:
//   - a token is published before the registration that needs it is written (a crash in
//     between leaves a token for a registration that does not exist: dropped when it comes);
//   - a token for another generation, or for a removed tag, is dropped (Term);
//   - a token for a generation the registration has not reached yet (or for none) is nak'ed
//     for a while: its publisher writes the registration right after publishing it;
//   - firing = CAS the registration to {firing, node, token: the token's stream sequence,
//     delivery: its delivery count}; a token that loses that race is a duplicate and is
//     dropped; the node running it tells JetStream it is in progress every ack wait / 3. The
//     token of a `firing` registration that comes again with a later delivery (the ack wait
//     passed without word: the node died or lost NATS) is taken over, with the attempt count
//     unchanged (the interrupted attempt does not count, as in §14); a settle from the node
//     that lost it is ignored (its delivery is not the registration's any more);
//   - retry: the registration goes `waiting` and the token is nak'ed with the back-off delay;
//     registering a waiting tag makes a new generation (a new token, at once) and the delayed
//     token is dropped when it comes.
// Tokens carry a Nats-Msg-Id unique to each publish ("<h>.<gen>.<publisher>.<n>"): a publish
// retried after a timeout is stored once.
// A removed registration stays as a tombstone ({"state":"removed"}) so that a later register
// can compare-and-set it (the KV of libnats 3.4 has no revision-checked delete).
//
// @concurrent: one thread uses a JsQueue (the worker); fetch() may run on another.
#pragma once

#include <nats/nats.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "swipc/error.h"
#include "swipc/value.h"
#include "sync/store.h"

namespace swipc::federation {

/// One registration as kept in KV (t.<h>).
struct JsRecord {
  std::string tag;
  int64_t order = 0;              // wall-clock ns when registered (registration order)
  std::string state = "pending";  // pending | waiting | firing | removed
  int attempts = 0;               // failed attempts so far
  uint64_t gen = 1;               // generation: the tokens that may fire it carry it
  bool refire = false;            // registered again while firing
  int64_t nextMs = 0;             // waiting: wall-clock ms of the next attempt
  std::string node;               // firing: the node running it
  uint64_t token = 0;             // firing: the stream sequence of the token it runs under
  uint64_t delivery = 0;          // firing: that token's delivery count when it was claimed
  uint64_t floor = 0;             // entries with seq <= floor were dropped with an earlier life

  bool live() const { return state != "removed"; }
  std::string toJson() const;
  /// INVALID_STATE when `bytes` is not a record (a hostile or foreign writer).
  static Result<JsRecord> parse(const void* bytes, int len);
};

/// One queued entry read back.
struct JsEntry {
  uint64_t seq = 0;  // the KV revision: registration order
  std::string key;   // e.<h>.<id>
  Value data;
};

/// 32 lowercase hex digits of SHA-256(tag): a KV key token whatever bytes the tag holds.
std::string tagKey(std::string_view tag);

class JsQueue {
 public:
  struct Config {
    std::vector<std::string> servers;
    std::string scope;
    std::string node;
    std::chrono::milliseconds ackWait{360000};  // 2 x --sync-timeout-ms
  };

  explicit JsQueue(Config config);
  ~JsQueue();
  JsQueue(const JsQueue&) = delete;
  JsQueue& operator=(const JsQueue&) = delete;

  /// Connects (once; libnats reconnects by itself afterwards) and creates or binds the bucket,
  /// the stream and the consumer (replicas 3 where the cluster has them, else 1). Disconnected
  /// while NATS cannot be reached, INVALID_STATE while JetStream is not ready; call again later.
  Result<void> open();
  bool opened() const { return sub_ != nullptr; }
  bool connected() const;
  const std::string& bucket() const { return bucket_; }
  const std::string& stream() const { return stream_; }
  int replicas() const { return replicas_; }

  /// The registration of `h` and its revision; nullopt when there is none (never registered).
  Result<std::optional<std::pair<JsRecord, uint64_t>>> get(const std::string& h);
  /// Writes `rec` if the registration is still at `revision` (0: must not exist) and returns the
  /// new revision; nullopt when it changed meanwhile (read it again).
  Result<std::optional<uint64_t>> put(const std::string& h, const JsRecord& rec, uint64_t revision);
  /// Publishes a token of (h, gen); retried once, under the same Nats-Msg-Id, after a timeout.
  Result<void> publishToken(const std::string& h, uint64_t gen);
  /// Appends an entry to `h`'s queue; returns its seq and key (data left null).
  Result<JsEntry> addEntry(const std::string& h, const Value& data);
  /// The entries of `h` in registration order (metaOnly: data left null).
  Result<std::vector<JsEntry>> entries(const std::string& h, bool metaOnly = false);
  /// Deletes one entry (done, or dropped with its tag) by its sequence in the bucket's stream, so
  /// that no purge marker stays behind. An entry already gone is not an error.
  Result<void> removeEntry(const JsEntry& entry);
  /// Messages the bucket holds: registrations, entries and any markers (for tests).
  Result<uint64_t> storedMessages();

  /// Waits up to `timeout` for at most `batch` tokens (on the fetch thread). An empty list when
  /// none came.
  Result<std::vector<natsMsg*>> fetch(int batch, std::chrono::milliseconds timeout);

  /// Every registration and entry, then every change: for the mirror (watch thread).
  kvStore* kv() const { return kv_; }

 private:
  Result<void> setup();
  Error natsError(std::string_view what, natsStatus s, jsErrCode code = static_cast<jsErrCode>(0)) const;

  Config config_;
  std::string hex_, bucket_, stream_, subject_;
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
  kvStore* kv_ = nullptr;
  natsSubscription* sub_ = nullptr;
  int replicas_ = 0;
  int replicaRefusals_ = 0;  // times the cluster refused 3 replicas
  bool denyDeletes_ = false;  // the bucket was made denying deletes: entries are purged instead
  uint64_t entryCounter_ = 0;
  uint64_t tokenCounter_ = 0;
  uint64_t entryPrefix_ = 0;  // random per process: entry ids never collide across nodes
};

/// The payload of a token, parsed; nullopt when it is not one.
struct JsToken {
  std::string h;
  uint64_t gen = 0;
};
std::optional<JsToken> parseToken(const char* data, int len);

}  // namespace swipc::federation
