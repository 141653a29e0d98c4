#include "sync/page_sync.h"

#include "envelope.capnp.h"
#include "wire/value_codec.h"

namespace swipc::sync {

namespace {
/// The daemon's named error (an unknown name: ProtocolViolation, with the name in the message).
Error reported(schema::SyncError::Reader e) {
  Errc code = Errc::PROTOCOL_VIOLATION;
  std::string message = e.getMessage().cStr();
  if (!errorFromName(e.getName().cStr(), code)) message = std::string(e.getName().cStr()) + ": " + message;
  return makeError(code, std::move(message));
}
}  // namespace

PageSync::PageSync(page::PageContext& ctx) : ctx_(ctx) {
  ctx_.ops.on(schema::Envelope::SYNC_RESULT,
              [this](schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>&) {
                onResult(env.getSyncResult());
              });
}

void PageSync::call(const std::function<void(schema::SyncCall::Builder)>& fill, Answer answer) {
  const uint64_t id = nextCall_++;
  auto sent = ctx_.sender.sendEnvelope(
      [&](schema::Envelope::Builder e) {
        auto c = e.initSyncCall();
        c.setCallId(id);
        fill(c);
      },
      PostOptions{}, /*track=*/false);
  if (!sent) {
    Error err = sent.error();
    ctx_.queue.deliver([answer = std::move(answer), err] { answer(err); });
    return;
  }
  pending_.emplace(id, std::move(answer));
}

void PageSync::onResult(schema::SyncResult::Reader result) {
  auto it = pending_.find(result.getCallId());
  if (it == pending_.end()) return;  // not ours (any more): ignored
  Answer answer = std::move(it->second);
  pending_.erase(it);
  answer(result);  // reads what it needs now: the reader lives only during this call
}

PageSync::Answer PageSync::voidAnswer(VoidDone done) {
  return [done = std::move(done)](Result<schema::SyncResult::Reader> r) {
    Result<void> out;
    if (!r) {
      out = r.error();
    } else if (r->isError()) {
      out = reported(r->getError());
    }
    done(std::move(out));
  };
}

PageSync::Answer PageSync::tagsAnswer(TagsDone done) {
  return [done = std::move(done)](Result<schema::SyncResult::Reader> r) {
    if (!r) return done(r.error());
    if (r->isError()) {
      return done(reported(r->getError()));
    }
    if (!r->isTags()) return done(makeError(Errc::PROTOCOL_VIOLATION, "the daemon answered getTags without tags"));
    Tags tags;
    for (auto t : r->getTags()) tags.emplace_back(t.cStr(), t.size());
    done(std::move(tags));
  };
}

void PageSync::registerTag(const std::string& tag, const std::optional<Value>& data, VoidDone done) {
  call(
      [&](schema::SyncCall::Builder c) {
        auto r = c.initRegister();
        r.setTag(tag);
        if (data) {
          r.setHasData(true);
          wire::writeValue(*data, r.initData());
        }
      },
      voidAnswer(std::move(done)));
}

void PageSync::getTags(TagsDone done) {
  call([](schema::SyncCall::Builder c) { c.setGetTags(); }, tagsAnswer(std::move(done)));
}

void PageSync::registerPeriodic(const std::string& tag, std::chrono::milliseconds minInterval, VoidDone done) {
  call(
      [&](schema::SyncCall::Builder c) {
        auto r = c.initPeriodicRegister();
        r.setTag(tag);
        r.setMinIntervalMs(static_cast<uint64_t>(std::max<int64_t>(0, minInterval.count())));
      },
      voidAnswer(std::move(done)));
}

void PageSync::unregisterPeriodic(const std::string& tag, VoidDone done) {
  call([&](schema::SyncCall::Builder c) { c.setPeriodicUnregister(tag); }, voidAnswer(std::move(done)));
}

void PageSync::getPeriodicTags(TagsDone done) {
  call([](schema::SyncCall::Builder c) { c.setPeriodicGetTags(); }, tagsAnswer(std::move(done)));
}

void PageSync::detaching() {
  // The daemon went before answering: each waiting call learns it (through the queue: not
  // inside whatever noticed the loss).
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, answer] : pending) {
    ctx_.queue.deliver([answer = std::move(answer)] {
      answer(makeError(Errc::DISCONNECTED, "the daemon went away before it answered (it may or may not have committed)"));
    });
  }
}

void PageSync::closing() { pending_.clear(); }

}  // namespace swipc::sync
