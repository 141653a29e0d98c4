#include "core/user_code.h"
#include "federation/js_sync_internal.h"

namespace swipc::federation {

void JetStreamSync::Shared::runWorker() {
  bool warned = false;
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu);
      if (stopping) break;
      if (!opened.load()) {
        lock.unlock();
        auto r = q.open();
        lock.lock();
        if (r) {
          opened = true;
          core::log().info("background sync: JetStream ready: stream {} and bucket {} (replicas {}), node {}", q.stream(),
                           q.bucket(), q.replicas(), node);
          cv.notify_all();
        } else {
          if (!warned) core::log().warn("background sync: JetStream not ready yet ({}): retrying", r.error().describe());
          warned = true;
        }
      }
      if (!jobs.empty() && jobs.begin()->first <= SteadyClock::now()) {
        job = std::move(jobs.begin()->second);
        jobs.erase(jobs.begin());
      } else {
        auto until = SteadyClock::now() + (opened.load() ? milliseconds(1000) : milliseconds(500));
        if (!jobs.empty()) until = std::min(until, jobs.begin()->first);
        cv.wait_until(lock, until);
        continue;
      }
    }
    job.run();
  }
  // Stopping. Settles and entries done still go to JetStream (for up to 3 s), so that nothing
  // finished runs again; tokens taken but not started go back; then the events still running
  // here go back at once (another node takes them over; the interrupted attempt does not count).
  // Other jobs are dropped: their callers hear nothing more (the loop's half is gone).
  const auto deadline = SteadyClock::now() + milliseconds(3000);
  for (;;) {
    Job job;
    {
      std::lock_guard lock(mu);
      if (jobs.empty()) break;
      job = std::move(jobs.begin()->second);
      jobs.erase(jobs.begin());
    }
    if (job.drain && opened.load() && SteadyClock::now() < deadline) {
      job.run();
    } else if (job.drop) {
      job.drop();
    }
  }
  for (auto& [id, f] : firing) {
    if (opened.load()) natsMsg_Nak(f.msg, nullptr);
    natsMsg_Destroy(f.msg);
  }
  firing.clear();
}

void JetStreamSync::Shared::runFetcher() {
  std::unique_lock lock(mu);
  while (!stopping) {
    const int room = MAX_IN_FLIGHT - inFlight.load();
    if (!opened.load() || !online.load() || room <= 0) {
      cv.wait_for(lock, milliseconds(250));
      continue;
    }
    lock.unlock();
    auto msgs = q.fetch(std::min(room, 8), milliseconds(500));
    lock.lock();
    if (!msgs) {
      core::log().debug("background sync: fetch: {}", msgs.error().describe());
      cv.wait_for(lock, milliseconds(500));
      continue;
    }
    const auto fetched = SteadyClock::now();
    for (natsMsg* m : *msgs) {
      inFlight.fetch_add(1);
      jobs.emplace(fetched, Job{[this, m, fetched] { takeToken(m, fetched); }, false, [this, m] {
                                  if (opened.load()) natsMsg_Nak(m, nullptr);
                                  natsMsg_Destroy(m);
                                  tokenFinished();
                                }});
    }
    if (!msgs->empty()) cv.notify_all();
  }
}

void JetStreamSync::Shared::runWatcher() {
  std::unique_lock lock(mu);
  while (!stopping) {
    if (!opened.load()) {
      cv.wait_for(lock, milliseconds(250));
      continue;
    }
    lock.unlock();
    kvWatchOptions wo;
    kvWatchOptions_Init(&wo);
    kvWatcher* w = nullptr;
    natsStatus s = kvStore_WatchAll(&w, q.kv(), &wo);
    if (s == NATS_OK) {
      // A watch begins with the last value of every key (tombstones and purge markers included),
      // so applying it again by revision is harmless: the watch is made anew every RESYNC, which
      // repairs the mirror even if the watch's consumer missed something under load.
      const auto until = SteadyClock::now() + RESYNC;
      std::vector<KvChange> batch;
      // The entries present when the watch began. A deleted entry leaves no marker to watch (see
      // JsQueue::removeEntry), so the entries this watch did not bring are gone: the mirror's
      // entry keys are replaced by these once the initial values are in.
      std::map<std::string, std::set<std::string>> present;
      bool initial = true;
      auto flush = [&] {
        if (batch.empty()) return;
        toLoop([b = std::move(batch)](Side& side) {
          for (const auto& c : b) side.change(c);
        });
        batch.clear();
      };
      for (;;) {
        {
          std::lock_guard g(mu);
          if (stopping) break;
        }
        if (SteadyClock::now() >= until) break;
        kvEntry* e = nullptr;
        s = kvWatcher_Next(&e, w, 250);
        if (s == NATS_TIMEOUT) {
          flush();
          continue;
        }
        if (s != NATS_OK) break;
        if (!e) {  // the initial values are in
          flush();
          if (initial)
            toLoop([p = std::move(present)](Side& side) { side.entryKeys = p; });
          initial = false;
          continue;
        }
        KvChange c;
        c.key = kvEntry_Key(e);
        c.put = kvEntry_Operation(e) == kvOp_Put;
        c.rev = kvEntry_Revision(e);
        if (c.put) c.value.assign(static_cast<const char*>(kvEntry_Value(e)), kvEntry_ValueLen(e));
        kvEntry_Destroy(e);
        if (initial && c.put && c.key.rfind("e.", 0) == 0 && c.key.size() > 35) present[c.key.substr(2, 32)].insert(c.key);
        batch.push_back(std::move(c));
        if (batch.size() >= 256) flush();
      }
      flush();
      kvWatcher_Destroy(w);
    }
    lock.lock();
    if (!stopping && s != NATS_OK && s != NATS_TIMEOUT) {
      core::log().debug("background sync: watch of {} ended ({}): again", q.bucket(), natsStatus_GetText(s));
      cv.wait_for(lock, milliseconds(500));
    }
  }
}

void JetStreamSync::Side::change(const KvChange& c) {
  if (c.key.rfind("t.", 0) == 0) {
    const std::string h = c.key.substr(2);
    if (!c.put) {
      records.erase(h);
      return;
    }
    auto rec = JsRecord::parse(c.value.data(), static_cast<int>(c.value.size()));
    if (!rec) {
      core::log().warn("background sync: {}: {} (ignored)", c.key, rec.error().describe());
      return;
    }
    apply(h, *rec, c.rev);
  } else if (c.key.rfind("e.", 0) == 0 && c.key.size() > 35) {
    const std::string h = c.key.substr(2, 32);
    if (c.put) {
      entryKeys[h].insert(c.key);
    } else {
      forgetEntry(h, c.key);
    }
  }
}

// ------------------------------------------------------------------------------------------------ the worker's operations

void JetStreamSync::Shared::registerTag(const std::string& tag, const std::optional<Value>& data, Done done) {
  auto answer = [this, &done](Result<void> r, std::string h = {}, std::optional<JsRecord> rec = {}, uint64_t rev = 0,
                              std::string entryKey = {}) {
    toLoop([done = std::move(done), r = std::move(r), h, rec, rev, entryKey](Side& side) {
      if (rec) side.apply(h, *rec, rev);
      if (!entryKey.empty()) side.entryKeys[h].insert(entryKey);
      done(r);
    });
  };
  if (!opened.load())
    return answer(makeError(Errc::DISCONNECTED, "JetStream is not reachable (with --nats, Background Sync "
                                                "registrations are kept there): not registered"));
  const std::string h = tagKey(tag);
  std::optional<JsEntry> entry;
  if (data) {
    auto added = q.addEntry(h, *data);
    if (!added) return answer(added.error());
    entry = std::move(*added);
  }
  // Refused before its registration was written: the entry goes too, so that a page that is told
  // "not registered" and tries again does not leave its data behind for a later event. (A write
  // of the registration that timed out may have been stored: then the entry stays.)
  auto refused = [&](const Error& e) {
    if (entry) {
      if (auto r = q.removeEntry(*entry); !r)
        core::log().warn("background sync: register '{}' failed and its entry stays queued: {}", tag, r.error().describe());
    }
    answer(e);
  };
  const std::string entryKey = entry ? entry->key : std::string();
  for (int tries = 0; tries < 20; ++tries) {
    auto got = q.get(h);
    if (!got) return refused(got.error());
    JsRecord rec;
    uint64_t rev = 0;
    if (*got) std::tie(rec, rev) = **got;
    JsRecord next = rec;
    bool token = true;
    if (!*got || !rec.live()) {
      next = JsRecord{};
      next.tag = tag;
      next.order = nowNs();
      next.gen = *got ? rec.gen + 1 : 1;
      next.floor = *got ? rec.floor : 0;  // entries of earlier lives stay dropped
    } else if (rec.state == "pending") {
      return answer(Result<void>{}, h, rec, rev, entryKey);  // coalesced: its token is on its way
    } else if (rec.state == "waiting") {
      next.state = "pending";  // at once: a new generation, the delayed token is void
      next.nextMs = 0;
      next.gen = rec.gen + 1;
    } else {  // firing: fires again once that event settles
      if (rec.refire) return answer(Result<void>{}, h, rec, rev, entryKey);
      next.refire = true;
      token = false;
    }
    if (token) {
      if (auto p = q.publishToken(h, next.gen); !p) return refused(p.error());
    }
    auto put = q.put(h, next, *got ? rev : 0);
    // A write that timed out may have been stored (JsQueue::put says TIMEOUT then, connected or not).
    if (!put) return put.error().code == Errc::TIMEOUT ? answer(put.error()) : refused(put.error());
    if (*put) return answer(Result<void>{}, h, next, **put, entryKey);
  }
  refused(makeError(Errc::SYSTEM, "the registration of '" + tag + "' kept changing under us (20 tries)"));
}

void JetStreamSync::Shared::takeToken(natsMsg* msg, SteadyClock::time_point fetched) {
  auto drop = [&](bool term) {
    if (term) natsMsg_Term(msg, nullptr);
    natsMsg_Destroy(msg);
    tokenFinished();
  };
  auto later = [&](int64_t delayMs) {
    natsMsg_NakWithDelay(msg, std::max<int64_t>(delayMs, 0), nullptr);
    natsMsg_Destroy(msg);
    tokenFinished();
  };
  // A token that waited here for half its ack wait may be another node's by now: not ours to
  // claim (it comes back, to us or to another node).
  if (SteadyClock::now() - fetched > ackWait() / 2) return drop(false);
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, msg) != NATS_OK) return drop(true);
  const uint64_t streamSeq = meta->Sequence.Stream;
  const uint64_t delivery = meta->NumDelivered;
  jsMsgMetaData_Destroy(meta);
  auto tok = parseToken(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
  if (!tok) {
    core::log().warn("background sync: message {} in {} is not a token (dropped)", streamSeq, q.stream());
    return drop(true);
  }
  for (int tries = 0; tries < 20; ++tries) {
    auto got = q.get(tok->h);
    if (!got && got.error().code == Errc::INVALID_STATE) {  // not a registration we can read
      core::log().error("background sync: token {}: {} (token dropped)", streamSeq, got.error().describe());
      return drop(true);
    }
    if (!got) {
      core::log().warn("background sync: token {}: {} (again in 1 s)", streamSeq, got.error().describe());
      return later(1000);
    }
    if (!*got || (*got)->first.gen < tok->gen) {
      // Its publisher writes the registration right after publishing: wait for it a while
      // (40 deliveries, about 10 s), then the token is void (the write lost a race, or its
      // node died in between).
      return delivery < 40 ? later(250) : drop(true);
    }
    auto [rec, rev] = **got;
    if (!rec.live() || rec.gen != tok->gen) return drop(true);  // an earlier generation's token
    JsRecord next = rec;
    if (rec.state == "firing") {
      if (rec.token != streamSeq) return drop(true);  // a duplicate of the token it runs under
      for (auto& [id, f] : firing) {
        if (f.token == streamSeq) {  // ours, still running: keep the newest delivery to settle
          natsMsg_Destroy(f.msg);
          f.msg = msg;
          tokenFinished();
          return;
        }
      }
      if (delivery <= rec.delivery) return drop(false);  // a delivery older than the claim
      core::log().warn("background sync: tag '{}' was firing on node {} and did not settle within the ack wait: "
                       "taking it over (attempt {} again)",
                       rec.tag, rec.node, rec.refire ? 1 : rec.attempts + 1);
      if (rec.refire) {  // registered again meanwhile: a fresh start, as a local restart does
        next.attempts = 0;
        next.refire = false;
      }
    } else if (rec.state == "waiting" && rec.nextMs > nowMs() + 20) {
      return later(rec.nextMs - nowMs());
    }
    next.state = "firing";
    next.node = node;
    next.token = streamSeq;
    next.delivery = delivery;
    auto put = q.put(tok->h, next, rev);
    if (!put) {
      core::log().warn("background sync: tag '{}': {} (again in 1 s)", rec.tag, put.error().describe());
      return later(1000);
    }
    if (!*put) continue;  // changed meanwhile: look again
    auto entries = q.entries(tok->h);
    if (!entries) {
      // It is ours (firing under this token): its redelivery takes it over.
      core::log().warn("background sync: tag '{}': {} (again in 1 s)", rec.tag, entries.error().describe());
      return later(1000);
    }
    // Entries of an earlier life of the tag, dropped with it (a purge that did not happen).
    std::erase_if(*entries, [&](const JsEntry& e) {
      if (e.seq > next.floor) return false;
      (void)q.removeEntry(e);
      return true;
    });
    const uint64_t id = nextEvent++;
    Firing f{msg, tok->h, next.gen, streamSeq, delivery, 0, 0, {}};
    for (const auto& e : *entries) f.givenMax = std::max(f.givenMax, e.seq);
    firing[id] = std::move(f);
    core::log().info("background sync: firing '{}' here (attempt {}, {} entries, token {})", rec.tag,
                     next.attempts + 1, entries->size(), streamSeq);
    enqueue([this, id] { keepAlive(id); }, ackWait() / 3);
    toLoop([id, tag = rec.tag, attempt = next.attempts + 1, h = tok->h, next, rev2 = **put,
            e = std::move(*entries)](Side& side) mutable {
      side.apply(h, next, rev2);
      side.fire(id, std::move(tag), attempt, std::move(e));
    });
    return;
  }
  later(0);
}

void JetStreamSync::Shared::entryDone(uint64_t id, const JsEntry& entry) {
  auto r = q.removeEntry(entry);
  if (r) return;
  auto it = firing.find(id);
  core::log().warn("background sync: entry done: {}{}", r.error().describe(),
                   it != firing.end() ? " (the event's settle tries again)" : "");
  if (it != firing.end()) it->second.undeleted.push_back(entry);
}

void JetStreamSync::Shared::keepAlive(uint64_t id) {
  auto it = firing.find(id);
  if (it == firing.end()) return;  // settled
  if (natsStatus s = natsMsg_InProgress(it->second.msg, nullptr); s != NATS_OK)
    core::log().warn("background sync: event {}: telling JetStream it is in progress: {}", id, natsStatus_GetText(s));
  enqueue([this, id] { keepAlive(id); }, ackWait() / 3);
}

void JetStreamSync::Shared::settle(uint64_t id, sync::SyncOutcome outcome, uint64_t progress,
                                   std::vector<JsEntry> left) {
  auto it = firing.find(id);
  if (it == firing.end()) return;
  Firing& f = it->second;
  auto finish = [&] {
    natsMsg_Destroy(f.msg);
    firing.erase(it);
    tokenFinished();
  };
  auto again = [&](const Error& e) {
    // JetStream did not answer: try again shortly, for about the ack wait; after that the token
    // has gone to another node anyway.
    const int maxTries = static_cast<int>(std::max<int64_t>(2 * options.timeout.count() / 1000, 5));
    if (++f.settleTries > maxTries) {
      core::log().error("background sync: event {} could not be settled ({}): left to the ack wait", id, e.describe());
      return finish();
    }
    core::log().warn("background sync: settling event {}: {} (again in 1 s)", id, e.describe());
    enqueue([this, id, outcome, progress, left] { settle(id, outcome, progress, left); }, milliseconds(1000), true);
  };
  // Entries done whose delete failed (a leader election): deleted before anything is settled, so
  // that a settle never leaves a done entry behind to be handed out again.
  while (!f.undeleted.empty()) {
    if (auto r = q.removeEntry(f.undeleted.back()); !r) return again(r.error());
    f.undeleted.pop_back();
  }
  for (int tries = 0; tries < 20; ++tries) {
    auto got = q.get(f.h);
    if (!got) return again(got.error());
    if (!*got || !(*got)->first.live() || (*got)->first.gen != f.gen || (*got)->first.token != f.token ||
        (*got)->first.delivery != f.delivery) {
      core::log().warn("background sync: event {} settled after another node took its tag over (ignored)", id);
      return finish();
    }
    auto [rec, rev] = **got;
    JsRecord next = rec;
    next.node.clear();
    next.token = 0;
    next.delivery = 0;
    enum class Then { ACK, NAK_NOW, NAK_LATER } then = Then::ACK;
    int64_t delayMs = 0;
    std::vector<JsEntry> drop;
    if (rec.refire) {
      next.state = "pending";
      next.attempts = 0;
      next.refire = false;
      next.nextMs = 0;
      next.gen = rec.gen + 1;
      if (auto p = q.publishToken(f.h, next.gen); !p) return again(p.error());
    } else if (outcome == sync::SyncOutcome::SUCCESS) {
      if (left.empty()) {
        next.state = "removed";
        next.attempts = 0;
        next.floor = std::max(next.floor, f.givenMax);  // whatever it was given is over
      } else if (progress > 0) {
        next.state = "pending";
        next.attempts = 0;
        then = Then::NAK_NOW;
      } else {  // it ignored its entries: no hot loop
        next.state = "waiting";
        delayMs = options.retry.retry.count();
        next.nextMs = nowMs() + delayMs;
        then = Then::NAK_LATER;
      }
    } else {
      const int n = rec.attempts + 1;
      if (n < options.retry.maxAttempts) {
        next.state = "waiting";
        next.attempts = n;
        delayMs = sync::retryDelay(options.retry, n).count();
        next.nextMs = nowMs() + delayMs;
        then = Then::NAK_LATER;
      } else {
        drop = left;
        next.state = "removed";
        next.attempts = n;
        next.floor = std::max(next.floor, f.givenMax);
        for (const auto& e : drop) next.floor = std::max(next.floor, e.seq);
      }
    }
    auto put = q.put(f.h, next, rev);
    if (!put) return again(put.error());
    if (!*put) continue;  // registered again meanwhile: look again
    for (const auto& e : drop) {
      if (auto p = q.removeEntry(e); !p) core::log().warn("background sync: {}", p.error().describe());
    }
    natsStatus s = then == Then::ACK       ? natsMsg_AckSync(f.msg, nullptr, nullptr)
                   : then == Then::NAK_NOW ? natsMsg_Nak(f.msg, nullptr)
                                           : natsMsg_NakWithDelay(f.msg, delayMs, nullptr);
    if (s != NATS_OK)
      core::log().warn("background sync: tag '{}': acknowledging its token: {} (the ack wait brings it back)", rec.tag,
                       natsStatus_GetText(s));
    const bool gaveUp = !rec.refire && outcome != sync::SyncOutcome::SUCCESS && next.state == "removed";
    if (gaveUp)
      core::log().warn("background sync: tag '{}' failed its last chance (attempt {}): removed with {} entries", rec.tag,
                       next.attempts, drop.size());
    toLoop([h = f.h, next, rev2 = **put, gaveUp, drop](Side& side) {
      side.apply(h, next, rev2);
      for (const auto& e : drop) side.forgetEntry(h, e.key);
      if (gaveUp) {
        ++side.counters.gaveUp;
        side.counters.droppedEntries += drop.size();
      }
    });
    return finish();
  }
  again(makeError(Errc::SYSTEM, "the registration kept changing (20 tries)"));
}

}  // namespace swipc::federation
