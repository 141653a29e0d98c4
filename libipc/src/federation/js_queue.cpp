#include "federation/js_queue.h"

#include <openssl/sha.h>

#include <nlohmann/json.hpp>
#include <random>

#include "core/log.h"
#include "federation/remote_post.h"

namespace swipc::federation {

namespace {

using json = nlohmann::json;

constexpr const char* CONSUMER = "workers";
constexpr int64_t JS_WAIT_MS = 3000;
constexpr int64_t NS_PER_MS = 1000000;

/// A compare-and-set that lost (the key changed, or exists): libnats reports these as NATS_ERR
/// with the server's text.
bool lostRace(natsStatus s) {
  if (s != NATS_ERR) return false;
  const char* text = nats_GetLastError(nullptr);
  if (!text) return false;
  const std::string t(text);
  // libnats 3.4: kvStore_Update and kvStore_Create pass on the server's JetStream error 10071
  // ("wrong last sequence: N"); Create on an existing key says "key exists".
  return t.find("wrong last sequence") != std::string::npos || t.find("key exists") != std::string::npos ||
         t.find("10071") != std::string::npos;
}

}  // namespace

std::string tagKey(std::string_view tag) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(tag.data()), tag.size(), digest);
  return toHex(std::string_view(reinterpret_cast<const char*>(digest), 16));
}

std::string JsRecord::toJson() const {
  json j = {{"v", 1},         {"tag", tag},         {"order", order}, {"state", state}, {"attempts", attempts},
            {"gen", gen},     {"refire", refire},   {"next", nextMs}, {"node", node},   {"token", token},
            {"delivery", delivery}, {"floor", floor}};
  return j.dump();
}

Result<JsRecord> JsRecord::parse(const void* bytes, int len) {
  const auto* p = static_cast<const char*>(bytes);
  json j = json::parse(p, p + std::max(len, 0), nullptr, false);
  auto bad = [](const std::string& why) { return makeError(Errc::INVALID_STATE, "sync registration in KV: " + why); };
  if (!j.is_object()) return bad("not a JSON object");
  if (j.value("v", 0) != 1) return bad("version " + j.value("v", json()).dump() + ", this build reads 1");
  try {
    JsRecord r;
    r.tag = j.at("tag").get<std::string>();
    r.order = j.at("order").get<int64_t>();
    r.state = j.at("state").get<std::string>();
    r.attempts = j.at("attempts").get<int>();
    r.gen = j.at("gen").get<uint64_t>();
    r.refire = j.at("refire").get<bool>();
    r.nextMs = j.at("next").get<int64_t>();
    r.node = j.at("node").get<std::string>();
    r.token = j.at("token").get<uint64_t>();
    r.delivery = j.value("delivery", uint64_t{0});
    r.floor = j.value("floor", uint64_t{0});
    if (r.state != "pending" && r.state != "waiting" && r.state != "firing" && r.state != "removed")
      return bad("unknown state '" + r.state + "'");
    if (r.attempts < 0) return bad("negative attempts");
    return r;
  } catch (const json::exception& e) {
    return bad(e.what());
  }
}

std::optional<JsToken> parseToken(const char* data, int len) {
  json j = json::parse(data, data + std::max(len, 0), nullptr, false);
  if (!j.is_object() || j.value("v", 0) != 1) return std::nullopt;
  auto h = j.find("h");
  auto gen = j.find("gen");
  if (h == j.end() || !h->is_string() || gen == j.end() || !gen->is_number_unsigned()) return std::nullopt;
  JsToken t{h->get<std::string>(), gen->get<uint64_t>()};
  if (t.h.size() != 32 || t.h.find_first_not_of("0123456789abcdef") != std::string::npos) return std::nullopt;
  return t;
}

JsQueue::JsQueue(Config config) : config_(std::move(config)) {
  hex_ = toHex(config_.scope);
  bucket_ = "SWIPC_SYNC_" + hex_;
  stream_ = "SWIPC_SYNCQ_" + hex_;
  subject_ = "swipc-syncq." + hex_;
  std::random_device rd;
  entryPrefix_ = (uint64_t{rd()} << 32) ^ rd();
}

JsQueue::~JsQueue() {
  if (sub_) natsSubscription_Destroy(sub_);
  if (kv_) kvStore_Destroy(kv_);
  if (js_) jsCtx_Destroy(js_);
  if (nc_) {
    natsConnection_Close(nc_);
    natsConnection_Destroy(nc_);
  }
}

bool JsQueue::connected() const { return nc_ && natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED; }

Error JsQueue::natsError(std::string_view what, natsStatus s, jsErrCode code) const {
  std::string text = std::string(what) + ": " + natsStatus_GetText(s);
  if (const char* last = nats_GetLastError(nullptr); last && *last) text += std::string(" (") + last + ")";
  if (code != 0) text += " [jetstream error " + std::to_string(static_cast<int>(code)) + "]";
  if (nc_ && !connected()) return makeError(Errc::DISCONNECTED, text + " (not connected to NATS)");
  switch (s) {
    case NATS_TIMEOUT: return makeError(Errc::TIMEOUT, text);
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_NOT_YET_CONNECTED:
    case NATS_NO_RESPONDERS:
    case NATS_STALE_CONNECTION: return makeError(Errc::DISCONNECTED, text);
    default: return makeError(Errc::SYSTEM, text);
  }
}

namespace {

// Both transitions of the sync connection are logged, as the broadcast link's are; here on
// libnats' callback thread (the logger is thread-safe). Nothing once the connection is closed:
// ~JsQueue closes it first, so no callback still queued logs while the daemon winds down. It
// comes back every 250 ms (SetReconnectWait), without a growing back-off, so that a sync event
// waits as little as possible for JetStream.
void onSyncDisconnected(natsConnection* nc, void*) {
  if (natsConnection_IsClosed(nc)) return;  // the daemon closed it: stopping, nothing lost
  core::log().warn("background sync: lost the NATS connection: reconnecting every 250 ms");
}
void onSyncReconnected(natsConnection* nc, void*) {
  if (natsConnection_IsClosed(nc)) return;
  char url[256] = {};
  if (natsConnection_GetConnectedUrl(nc, url, sizeof url) != NATS_OK) url[0] = 0;
  core::log().info("background sync: NATS connection back ({})", url);
}

}  // namespace

Result<void> JsQueue::open() {
  if (opened()) return {};
  if (!nc_) {
    natsOptions* opts = nullptr;
    natsStatus s = natsOptions_Create(&opts);
    std::vector<const char*> urls;
    for (const auto& u : config_.servers) urls.push_back(u.c_str());
    const std::string name = "swipc-sync " + config_.scope + " " + config_.node;
    if (s == NATS_OK) s = natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size()));
    if (s == NATS_OK) s = natsOptions_SetName(opts, name.c_str());
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 250);
    if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(opts, onSyncDisconnected, nullptr);
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(opts, onSyncReconnected, nullptr);
    if (s == NATS_OK) s = natsOptions_SetTimeout(opts, 2000);
    if (s == NATS_OK) s = natsOptions_SetPingInterval(opts, 2000);
    if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(opts, 2);
    if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, true);
    // Nothing is held back while reconnecting (0 would mean libnats' 8 MB default): a call that
    // failed with Disconnected must not take effect later.
    if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(opts, 1);
    if (s == NATS_OK) s = natsConnection_Connect(&nc_, opts);
    if (opts) natsOptions_Destroy(opts);
    if (s != NATS_OK) {
      nc_ = nullptr;
      return natsError("connect", s);
    }
  }
  if (!js_) {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = JS_WAIT_MS;
    if (natsStatus s = natsConnection_JetStream(&js_, nc_, &jo); s != NATS_OK) {
      js_ = nullptr;
      return natsError("jetstream context", s);
    }
  }
  return setup();
}

Result<void> JsQueue::setup() {
  // The token stream: replicas 3 where the cluster has three servers, else 1.
  if (replicas_ == 0) {
    const char* subjects[] = {subject_.c_str()};
    for (int r : {3, 1}) {
      jsStreamConfig cfg;
      jsStreamConfig_Init(&cfg);
      cfg.Name = stream_.c_str();
      cfg.Subjects = subjects;
      cfg.SubjectsLen = 1;
      cfg.Retention = js_WorkQueuePolicy;
      cfg.Storage = js_FileStorage;
      cfg.Replicas = r;
      cfg.Duplicates = 120000 * NS_PER_MS;
      jsStreamInfo* si = nullptr;
      jsErrCode code = static_cast<jsErrCode>(0);
      natsStatus s = js_AddStream(&si, js_, &cfg, nullptr, &code);
      if (s == NATS_OK || code == JSStreamNameExistErr) {
        if (si) jsStreamInfo_Destroy(si);
        si = nullptr;
        if (js_GetStreamInfo(&si, js_, stream_.c_str(), nullptr, &code) == NATS_OK && si) {
          replicas_ = static_cast<int>(si->Config->Replicas);
          jsStreamInfo_Destroy(si);
        } else {
          replicas_ = r;
        }
        break;
      }
      if (r == 3) {
        // A cluster that is still forming refuses 3 replicas for a while: ask again later, and
        // settle for 1 only when it cannot have 3 (one server, or fewer than 3 for ~15 s).
        const bool never = code == JSStreamReplicasNotSupportedErr;
        if (!never && ++replicaRefusals_ < 30) return natsError("create stream " + stream_ + " (replicas 3)", s, code);
        core::log().warn("background sync: {} cannot have 3 replicas ({}): using 1, so the sync queue is unavailable "
                         "while the server holding it is down",
                         stream_, natsError("", s, code).message);
        continue;
      }
      return natsError("create stream " + stream_, s, code);
    }
  }
  if (!kv_) {
    // The bucket's stream is made here, as libnats' js_CreateKeyValue makes it except that it
    // allows deleting a message: a done entry is deleted by its sequence and leaves no marker
    // (removeEntry). A bucket that exists already is used as it is.
    const std::string kvStream = "KV_" + bucket_;
    const std::string kvSubjects = "$KV." + bucket_ + ".>";
    const char* subjects[] = {kvSubjects.c_str()};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = kvStream.c_str();
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.MaxMsgsPerSubject = 1;  // history 1
    cfg.Storage = js_FileStorage;
    cfg.Replicas = replicas_;
    cfg.AllowRollup = true;  // kvStore_Purge
    cfg.DenyDelete = false;
    // Reads go to the stream's leader: a direct get may be answered by any replica, and
    // nats-server 2.9.10 can answer one stale after a restart (nats-server#4162). A coalescing
    // register trusts its read of the registration.
    cfg.AllowDirect = false;
    cfg.Discard = js_DiscardNew;
    jsStreamInfo* si = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    natsStatus s = js_AddStream(&si, js_, &cfg, nullptr, &code);
    if (si) jsStreamInfo_Destroy(si);
    if (s != NATS_OK && code != JSStreamNameExistErr) return natsError("key-value bucket " + bucket_, s, code);
    // A bucket made before (by an older build, or libnats' js_CreateKeyValue) denies deletes, and
    // the server never lets that be undone: its done entries are purged (a marker each).
    si = nullptr;
    s = js_GetStreamInfo(&si, js_, kvStream.c_str(), nullptr, &code);
    if (s != NATS_OK || !si) {
      if (si) jsStreamInfo_Destroy(si);
      return natsError("key-value bucket " + bucket_ + " (stream info)", s, code);
    }
    denyDeletes_ = si->Config->DenyDelete;
    if (si->Config->AllowDirect) {
      // Made with direct gets (an older build, js_CreateKeyValue): reads go to the leader from
      // now on, as in a bucket made here. The setting can be changed on a stream that exists.
      si->Config->AllowDirect = false;
      jsStreamInfo* updated = nullptr;
      s = js_UpdateStream(&updated, js_, si->Config, nullptr, &code);
      if (updated) jsStreamInfo_Destroy(updated);
      if (s != NATS_OK)
        core::log().warn("background sync: bucket {} answers reads from any replica and could not be changed ({}): a "
                         "register may coalesce on a stale read",
                         bucket_, natsError("", s, code).message);
    }
    jsStreamInfo_Destroy(si);
    if (denyDeletes_)
      core::log().warn("background sync: bucket {} denies deletes (made by an older build): done entries are purged, "
                       "which leaves a marker each",
                       bucket_);
    s = js_KeyValue(&kv_, js_, bucket_.c_str());
    if (s != NATS_OK) {
      kv_ = nullptr;
      return natsError("key-value bucket " + bucket_, s);
    }
  }
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream_.c_str();
  so.Config.Durable = CONSUMER;
  so.Config.AckPolicy = js_AckExplicit;
  so.Config.AckWait = config_.ackWait.count() * NS_PER_MS;
  so.Config.MaxDeliver = -1;
  so.Config.MaxAckPending = 10000;
  so.Config.FilterSubject = subject_.c_str();
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_PullSubscribe(&sub_, js_, subject_.c_str(), CONSUMER, nullptr, &so, &code);
  if (s != NATS_OK) {
    // The consumer exists with other settings (another node's --sync-timeout-ms): use it as it is.
    sub_ = nullptr;
    jsSubOptions bind;
    jsSubOptions_Init(&bind);
    bind.Stream = stream_.c_str();
    bind.Consumer = CONSUMER;
    s = js_PullSubscribe(&sub_, js_, subject_.c_str(), CONSUMER, nullptr, &bind, &code);
    if (s != NATS_OK) {
      sub_ = nullptr;
      return natsError("consumer " + std::string(CONSUMER) + " on " + stream_, s, code);
    }
    core::log().warn("background sync: JetStream consumer {} on {} has other settings than ours (ack wait {} ms): using it",
                     CONSUMER, stream_, config_.ackWait.count());
  }
  return {};
}

Result<std::optional<std::pair<JsRecord, uint64_t>>> JsQueue::get(const std::string& h) {
  kvEntry* e = nullptr;
  const std::string key = "t." + h;
  natsStatus s = kvStore_Get(&e, kv_, key.c_str());
  if (s == NATS_NOT_FOUND) return std::optional<std::pair<JsRecord, uint64_t>>{};
  if (s != NATS_OK) return natsError("read " + key, s);
  auto rec = JsRecord::parse(kvEntry_Value(e), kvEntry_ValueLen(e));
  const uint64_t rev = kvEntry_Revision(e);
  kvEntry_Destroy(e);
  if (!rec) return rec.error();
  return std::optional<std::pair<JsRecord, uint64_t>>{std::make_pair(std::move(*rec), rev)};
}

Result<std::optional<uint64_t>> JsQueue::put(const std::string& h, const JsRecord& rec, uint64_t revision) {
  const std::string key = "t." + h;
  const std::string value = rec.toJson();
  uint64_t rev = 0;
  natsStatus s = revision == 0 ? kvStore_Create(&rev, kv_, key.c_str(), value.data(), static_cast<int>(value.size()))
                               : kvStore_Update(&rev, kv_, key.c_str(), value.data(), static_cast<int>(value.size()), revision);
  if (s == NATS_OK) return std::optional<uint64_t>{rev};
  if (lostRace(s)) return std::optional<uint64_t>{};
  // Timed out: the write may have been stored. Said as TIMEOUT even while reconnecting, so that
  // callers keep what the write needs (natsError would say Disconnected then).
  if (s == NATS_TIMEOUT) return makeError(Errc::TIMEOUT, natsError("write " + key, s).message);
  return natsError("write " + key, s);
}

Result<void> JsQueue::publishToken(const std::string& h, uint64_t gen) {
  const std::string body = json{{"v", 1}, {"h", h}, {"gen", gen}}.dump();
  char publisher[40];
  std::snprintf(publisher, sizeof publisher, "%016llx.%llu", static_cast<unsigned long long>(entryPrefix_),
                static_cast<unsigned long long>(++tokenCounter_));
  const std::string id = h + "." + std::to_string(gen) + "." + publisher;
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = id.c_str();
  natsStatus s = NATS_OK;
  jsErrCode code = static_cast<jsErrCode>(0);
  for (int attempt = 0; attempt < 2; ++attempt) {
    jsPubAck* ack = nullptr;
    s = js_Publish(&ack, js_, subject_.c_str(), body.data(), static_cast<int>(body.size()), &po, &code);
    if (ack) jsPubAck_Destroy(ack);
    if (s != NATS_TIMEOUT) break;
  }
  if (s != NATS_OK) return natsError("publish token " + id, s, code);
  return {};
}

Result<JsEntry> JsQueue::addEntry(const std::string& h, const Value& data) {
  char id[40];
  std::snprintf(id, sizeof id, "%016llx%016llx", static_cast<unsigned long long>(entryPrefix_),
                static_cast<unsigned long long>(++entryCounter_));
  const std::string key = "e." + h + "." + id;
  const std::vector<uint8_t> bytes = sync::encodeValue(data);
  uint64_t rev = 0;
  natsStatus s = kvStore_Put(&rev, kv_, key.c_str(), bytes.data(), static_cast<int>(bytes.size()));
  if (s != NATS_OK) return natsError("write entry " + key, s);
  JsEntry entry;
  entry.seq = rev;
  entry.key = key;
  return entry;
}

Result<std::vector<JsEntry>> JsQueue::entries(const std::string& h, bool metaOnly) {
  const std::string filter = "e." + h + ".*";
  kvWatchOptions wo;
  kvWatchOptions_Init(&wo);
  wo.IgnoreDeletes = true;
  wo.MetaOnly = metaOnly;
  kvWatcher* w = nullptr;
  natsStatus s = kvStore_Watch(&w, kv_, filter.c_str(), &wo);
  if (s != NATS_OK) return natsError("read entries " + filter, s);
  std::vector<JsEntry> out;
  Result<std::vector<JsEntry>> result = out;
  for (;;) {
    kvEntry* e = nullptr;
    s = kvWatcher_Next(&e, w, JS_WAIT_MS);
    if (s != NATS_OK) {
      result = natsError("read entries " + filter, s);
      break;
    }
    if (!e) {  // every entry present when the watch began has come
      result = std::move(out);
      break;
    }
    if (kvEntry_Operation(e) == kvOp_Put) {
      JsEntry entry;
      entry.seq = kvEntry_Revision(e);
      entry.key = kvEntry_Key(e);
      if (!metaOnly) {
        const auto* p = static_cast<const uint8_t*>(kvEntry_Value(e));
        auto v = sync::decodeValue(std::vector<uint8_t>(p, p + kvEntry_ValueLen(e)));
        if (v) {
          entry.data = std::move(*v);
        } else {
          core::log().warn("background sync: entry {} does not decode ({}): handed out as null", entry.key,
                           v.error().describe());
        }
      }
      out.push_back(std::move(entry));
    }
    kvEntry_Destroy(e);
  }
  kvWatcher_Destroy(w);
  return result;
}

Result<void> JsQueue::removeEntry(const JsEntry& entry) {
  // A bucket is the stream KV_<bucket>; an entry's revision is its sequence there. kvStore_Purge
  // would leave a marker per entry for ever, and every later read of the tag would wade through them.
  const std::string kvStream = "KV_" + bucket_;
  if (denyDeletes_) {
    natsStatus s = kvStore_Purge(kv_, entry.key.c_str(), nullptr);
    if (s != NATS_OK) return natsError("purge entry " + entry.key, s);
    return {};
  }
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_DeleteMsg(js_, kvStream.c_str(), entry.seq, nullptr, &code);
  if (s == NATS_OK || code == JSSequenceNotFoundErr || code == JSNoMessageFoundErr) return {};
  // 10057 is any failure of the store's delete, "no message found" (already deleted, or below
  // the stream's first sequence; nats-server 2.9's words) among them: that one is done.
  if (code == JSStreamMsgDeleteFailed) {
    const char* text = nats_GetLastError(nullptr);
    const std::string_view t = text ? text : "";
    if (t.find("no message found") != t.npos) return {};
  }
  return natsError("delete entry " + entry.key + " (seq " + std::to_string(entry.seq) + ")", s, code);
}

Result<uint64_t> JsQueue::storedMessages() {
  kvStatus* st = nullptr;
  natsStatus s = kvStore_Status(&st, kv_);
  if (s != NATS_OK) return natsError("status of " + bucket_, s);
  const uint64_t n = kvStatus_Values(st);
  kvStatus_Destroy(st);
  return n;
}

Result<std::vector<natsMsg*>> JsQueue::fetch(int batch, std::chrono::milliseconds timeout) {
  natsMsgList list{nullptr, 0};
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = natsSubscription_Fetch(&list, sub_, batch, timeout.count(), &code);
  std::vector<natsMsg*> out;
  if (s == NATS_TIMEOUT) return out;
  if (s != NATS_OK) return natsError("fetch from " + stream_, s, code);
  for (int i = 0; i < list.Count; ++i) {
    out.push_back(list.Msgs[i]);
    list.Msgs[i] = nullptr;  // ours now
  }
  natsMsgList_Destroy(&list);
  return out;
}

}  // namespace swipc::federation
