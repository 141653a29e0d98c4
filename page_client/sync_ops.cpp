#include "sync_ops.h"

#include "swipc/json.h"
#include "swipc/sync.h"

namespace page_client {

namespace {

using json = nlohmann::json;

swipc::Error typeError(std::string message) { return swipc::makeError(swipc::Errc::TYPE, std::move(message)); }

swipc::Result<std::string> tagOf(const json& op) {
  auto it = op.find("tag");
  if (it == op.end() || !it->is_string()) return typeError("op needs a string \"tag\"");
  return it->get<std::string>();
}

nlohmann::ordered_json tagList(const std::vector<std::string>& tags) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const auto& t : tags) list.push_back(t);
  return list;
}

}  // namespace

bool SyncOps::handle(const std::string& name, const json& op, const OpId& id) {
  if (name == "sync.register") return opRegister(op, id), true;
  if (name == "sync.getTags") return opGetTags(id, false), true;
  if (name == "periodicSync.register") return opPeriodicRegister(op, id), true;
  if (name == "periodicSync.getTags") return opGetTags(id, true), true;
  if (name == "periodicSync.unregister") return opPeriodicUnregister(op, id), true;
  return false;
}

std::function<void(swipc::Result<void>)> SyncOps::answerVoid(const OpId& id) {
  ++pending_;
  return [this, id](swipc::Result<void> r) {
    --pending_;
    if (!r) return out_.error(id, r.error());
    if (id) out_.ok(*id);
  };
}

void SyncOps::opRegister(const json& op, const OpId& id) {
  auto tag = tagOf(op);
  if (!tag) return out_.error(id, tag.error());
  std::optional<swipc::Value> data;
  if (auto it = op.find("data"); it != op.end()) {
    auto v = swipc::fromJson(nlohmann::ordered_json(*it));
    if (!v) return out_.error(id, v.error());
    data = std::move(*v);
  }
  client_.sync().registerTag(*tag, std::move(data), answerVoid(id));
}

void SyncOps::opGetTags(const OpId& id, bool periodic) {
  ++pending_;
  auto done = [this, id](swipc::Result<std::vector<std::string>> r) {
    --pending_;
    if (!r) return out_.error(id, r.error());
    if (id) out_.ok(*id, {{"tags", tagList(*r)}});
  };
  if (periodic)
    client_.periodicSync().getTags(std::move(done));
  else
    client_.sync().getTags(std::move(done));
}

void SyncOps::opPeriodicRegister(const json& op, const OpId& id) {
  auto tag = tagOf(op);
  if (!tag) return out_.error(id, tag.error());
  auto it = op.find("minInterval");
  if (it == op.end() || !it->is_number() || it->get<double>() < 0)
    return out_.error(id, typeError("op needs a non-negative number \"minInterval\" (ms)"));
  auto interval = std::chrono::milliseconds(static_cast<int64_t>(it->get<double>()));
  client_.periodicSync().registerTag(*tag, interval, answerVoid(id));
}

void SyncOps::opPeriodicUnregister(const json& op, const OpId& id) {
  auto tag = tagOf(op);
  if (!tag) return out_.error(id, tag.error());
  client_.periodicSync().unregister(*tag, answerVoid(id));
}

int runSync(const GlobalOptions& opts, const std::string& tag, const std::optional<std::string>& dataJson) {
  std::optional<swipc::Value> data;
  if (dataJson) {
    auto v = swipc::parseJsonValue(*dataJson);
    if (!v) {
      reportError(v.error());
      return EXIT_ERROR;
    }
    data = std::move(*v);
  }
  auto client = connectClient(opts);
  if (!client) {
    reportError(client.error());
    return connectExitCode(client.error());
  }
  auto deadline = swipc::deadlineIn(opts.timeoutOr(std::chrono::milliseconds(5000)));
  auto r = client->sync().registerTag(tag, std::move(data), deadline);
  if (!r) {
    reportError(r.error());
    return EXIT_ERROR;
  }
  return EXIT_OK;
}

}  // namespace page_client
