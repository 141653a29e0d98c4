// swipc::Clients and swipc::ClientHandle (DESIGN §9): the daemon's Clients API, and its reach to
// the clients of other nodes in a federated scope (DESIGN §16).
#include "swipc/clients.h"

#include "api/service_worker_impl.h"

namespace swipc {

std::vector<ClientHandle> Clients::matchAll(const MatchAllOptions& opts) const { return sw_->impl_->api_.matchAll(opts); }
std::optional<ClientHandle> Clients::get(const ClientId& id) const { return sw_->impl_->api_.get(id); }
size_t Clients::claim() { return sw_->impl_->api_.claim(); }

namespace detail {
/// Sets what only federation knows of a handle.
struct ClientHandleAccess {
  static void placeOn(ClientHandle& c, const std::string& node) { c.node_ = node; }
#ifdef SWIPC_HAVE_FEDERATION
  static ClientHandle remote(ServiceWorker* sw, federation::RemoteClient&& r) {
    ClientHandle c;
    c.sw_ = sw;
    c.id_ = r.id;
    c.url_ = std::move(r.url);
    c.type_ = r.type;
    c.frameType_ = r.frameType;
    c.focused_ = r.focused;
    c.visible_ = r.visible;
    c.controlled_ = r.controlled;
    c.node_ = std::move(r.node);
    c.remote_ = true;
    return c;
  }
#endif
};
}  // namespace detail

void Clients::matchAll(const MatchAllOptions& opts, std::function<void(std::vector<ClientHandle>)> done) const {
  auto local = matchAll(opts);
#ifdef SWIPC_HAVE_FEDERATION
  if (auto* fed = sw_->impl_->fed_; fed && opts.includeRemote) {
    for (auto& c : local) detail::ClientHandleAccess::placeOn(c, fed->node());
    fed->matchAllRemote(opts, [sw = sw_, local = std::move(local), done = std::move(done)](
                                  std::vector<federation::RemoteClient> remote) mutable {
      local.reserve(local.size() + remote.size());
      for (auto& r : remote) local.push_back(detail::ClientHandleAccess::remote(sw, std::move(r)));
      core::callUser("a matchAll callback", [&] { done(std::move(local)); });
    });
    return;
  }
#endif
  core::callUser("a matchAll callback", [&] { done(std::move(local)); });
}

void Clients::get(const ClientId& id, std::function<void(std::optional<ClientHandle>)> done) const {
  auto local = get(id);
#ifdef SWIPC_HAVE_FEDERATION
  if (auto* fed = sw_->impl_->fed_) {
    if (local) {
      detail::ClientHandleAccess::placeOn(*local, fed->node());
    } else {
      fed->getRemote(id, [sw = sw_, done = std::move(done)](std::optional<federation::RemoteClient> r) mutable {
        std::optional<ClientHandle> c;
        if (r) c = detail::ClientHandleAccess::remote(sw, std::move(*r));
        core::callUser("a get callback", [&] { done(std::move(c)); });
      });
      return;
    }
  }
#endif
  core::callUser("a get callback", [&] { done(std::move(local)); });
}
void Clients::openWindow(const std::string& url, std::function<void(std::optional<ClientHandle>)> done) {
  sw_->impl_->opener_.open(url, std::move(done));
}
const ServiceWorkerOptions& ServiceWorker::options() const { return impl_->opts_; }
Counters ServiceWorker::counters() const { return impl_->snapshot(); }
detail::PortHost& ServiceWorker::portHost() { return impl_->ports_; }
size_t ServiceWorker::clientCount() const { return impl_->clients_.aliveCount(); }

namespace {
Error remoteRefused(const ClientHandle& c, const char* what) {
  return makeError(Errc::INVALID_STATE, std::string(what) + ": client " + c.id().toString() + " lives on node " + c.node() +
                                            " (use postMessage(data, done) to reach it)");
}
}  // namespace

void ClientHandle::postMessage(const Value& data, std::function<void(Result<void>)> done) {
  SWIPC_REQUIRE(sw_ != nullptr, "ClientHandle not from a ServiceWorker");
#ifdef SWIPC_HAVE_FEDERATION
  if (remote_) {
    if (auto* fed = sw_->impl_->fed_) {
      fed->postRemote(node_, id_, data, [done = std::move(done)](Result<void> r) mutable {
        core::callUser("a postMessage callback", [&] { done(std::move(r)); });
      });
      return;
    }
  }
#endif
  auto r = postMessage(data);
  Result<void> outcome = r ? Result<void>{} : Result<void>{r.error()};
  core::callUser("a postMessage callback", [&] { done(std::move(outcome)); });
}

void Clients::postMessage(const ClientId& id, const Value& data, std::function<void(Result<void>)> done) {
  if (auto local = get(id)) return local->postMessage(data, std::move(done));
#ifdef SWIPC_HAVE_FEDERATION
  if (auto* fed = sw_->impl_->fed_) {
    fed->postAnywhere(id, data, [done = std::move(done)](Result<void> r) mutable {
      core::callUser("a postMessage callback", [&] { done(std::move(r)); });
    });
    return;
  }
#endif
  Result<void> missing = makeError(Errc::NOT_FOUND, "no client " + id.toString());
  core::callUser("a postMessage callback", [&] { done(std::move(missing)); });
}

Result<MessageSeq> ClientHandle::postMessage(const Value& data, TransferList transfer) {
  SWIPC_REQUIRE(sw_ != nullptr, "ClientHandle not from a ServiceWorker");
  if (remote_) return remoteRefused(*this, "postMessage");
  core::OutgoingPayload p;
  p.value = &data;
  return sw_->impl_->messages_.postToClient(id_, p, transfer);
}

Result<MessageSeq> ClientHandle::postTyped(uint64_t typeId, const TypedBuilder& build, TransferList transfer) {
  SWIPC_REQUIRE(sw_ != nullptr, "ClientHandle not from a ServiceWorker");
  if (remote_) return remoteRefused(*this, "postMessage");
  core::OutgoingPayload p;
  p.typeId = typeId;
  p.build = &build;
  return sw_->impl_->messages_.postToClient(id_, p, transfer);
}

Result<ClientHandle> ClientHandle::focus() {
  SWIPC_REQUIRE(sw_ != nullptr, "ClientHandle not from a ServiceWorker");
  if (remote_) return remoteRefused(*this, "focus");
  return sw_->impl_->api_.focus(id_);
}

Result<ClientHandle> ClientHandle::navigate(const std::string& url) {
  SWIPC_REQUIRE(sw_ != nullptr, "ClientHandle not from a ServiceWorker");
  if (remote_) return remoteRefused(*this, "navigate");
  return sw_->impl_->api_.navigate(id_, url);
}

Value ClientHandle::describe() const {
  // Built in place (a matchAll of thousands describes each): no initializer-list copies.
  Value::Map m;
  m.reserve(7);
  m.emplace_back("id", id_.toString());
  m.emplace_back("url", url_);
  m.emplace_back("type", std::string(clientTypeName(type_)));
  m.emplace_back("frameType", std::string(frameTypeName(frameType_)));
  m.emplace_back("focused", focused_);
  m.emplace_back("visibilityState", std::string(visibilityState()));
  if (!node_.empty()) m.emplace_back("node", node_);
  return Value(std::move(m));
}

}  // namespace swipc
