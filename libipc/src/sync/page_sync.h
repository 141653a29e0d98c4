// PageSync: Background Sync on the page (a PageFeature, page/feature.h). It sends the page's
// syncCall envelopes (schemas/sync.capnp) and hands each syncResult to the call that waits for
// it, through the page's delivery queue. Calls the daemon cannot answer any more (it went away
// first) end with Disconnected: the registration may or may not have been committed.
//
// @concurrent: single-threaded (the page's loop thread).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "page/feature.h"
#include "swipc/error.h"
#include "swipc/value.h"
#include "sync.capnp.h"

namespace swipc::sync {

class PageSync final : public page::PageFeature {
 public:
  using Tags = std::vector<std::string>;
  using VoidDone = std::function<void(Result<void>)>;
  using TagsDone = std::function<void(Result<Tags>)>;

  explicit PageSync(page::PageContext& ctx);

  void registerTag(const std::string& tag, const std::optional<Value>& data, VoidDone done);
  void getTags(TagsDone done);
  void registerPeriodic(const std::string& tag, std::chrono::milliseconds minInterval, VoidDone done);
  void unregisterPeriodic(const std::string& tag, VoidDone done);
  void getPeriodicTags(TagsDone done);

  void detaching() override;
  void closing() override;

 private:
  /// What the answer of one call is handed to (error, or the result's reader).
  using Answer = std::function<void(Result<schema::SyncResult::Reader>)>;
  void call(const std::function<void(schema::SyncCall::Builder)>& fill, Answer answer);
  static Answer voidAnswer(VoidDone done);
  static Answer tagsAnswer(TagsDone done);
  void onResult(schema::SyncResult::Reader result);

  page::PageContext& ctx_;
  uint64_t nextCall_ = 1;
  std::map<uint64_t, Answer> pending_;
};

}  // namespace swipc::sync
