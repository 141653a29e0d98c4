#include "daemon/client_table.h"

#include <algorithm>

#include "core/attach.h"
#include "core/log.h"
#include "core/user_code.h"

namespace swipc::daemon {

ClientRecord& ClientTable::insert(std::unique_ptr<ClientRecord> record) {
  record->order = nextOrder_++;
  const ClientId id = record->id;
  records_.erase(id);  // a dead record with the same id (re-attach) goes now
  ++generation_;
  return *records_.emplace(id, std::move(record)).first->second;
}

size_t ClientTable::aliveCount() const {
  size_t n = 0;
  for (const auto& [id, c] : records_) n += c->alive ? 1 : 0;
  return n;
}

ClientTable::HookId ClientTable::onDetach(DetachHook hook) {
  const HookId id = nextHook_++;
  hooks_.emplace_back(id, std::move(hook));
  return id;
}

void ClientTable::removeDetachHook(HookId id) {
  hooks_.erase(std::remove_if(hooks_.begin(), hooks_.end(), [id](const auto& h) { return h.first == id; }),
               hooks_.end());
}

void ClientTable::detach(ClientRecord& c, const std::string& reason, bool goodbye) {
  if (!c.alive) return;
  c.alive = false;
  ++counters_.detached;
  if (goodbye && c.conn) {
    capnp::MallocMessageBuilder mb(64);
    mb.initRoot<schema::Control>().initGoodbye().setReason(reason);
    c.conn->sendControl(mb);
  }
  loop_.unwatch(c.socketWatch);
  loop_.unwatch(c.doorbellWatch);
  for (auto& [id, hook] : hooks_) hook(c);
  c.conn.reset();  // closes the socket and unmaps the segment
  core::log().info("detached client={} pid={}: {}", c.id.toString(), c.pid, reason);
  const ClientId id = c.id;
  if (detached_) core::callUser("onClientDetached", [&] { detached_(id, reason); });
  // Erase later: callers up the stack may still hold a reference.
  loop_.post([this, id] {
    auto it = records_.find(id);
    if (it != records_.end() && !it->second->alive) {
      records_.erase(it);
      ++generation_;
    }
  });
}

void ClientTable::violation(ClientRecord& c, const Error& err) {
  ++counters_.protocolViolations;
  core::log().warn("protocol violation by client={} pid={}: {}; disconnecting", c.id.toString(), c.pid, err.message);
  if (c.conn) core::sendControlError(c.conn->socketFd(), Errc::PROTOCOL_VIOLATION, err.message);
  detach(c, "ProtocolViolation: " + err.message);
}

}  // namespace swipc::daemon
