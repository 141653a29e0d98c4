#include "daemon/clients_api.h"

#include <algorithm>

#include "core/log.h"

namespace swipc::daemon {

void ClientsApi::registerWith(Dispatch& dispatch) {
  dispatch.handle(schema::Envelope::CLIENT_STATE,
                  [this](ClientRecord& c, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>&) {
                    auto st = env.getClientState();
                    c.visible = st.getVisible();
                    // Only a setFocus call is a focus event; a visibility report leaves the focus where it is.
                    if (st.getFocusChanged() && c.type == ClientType::WINDOW) {
                      if (st.getFocused())
                        takeFocus(c);
                      else
                        c.focused = false;
                    }
                    return true;
                  });
}

std::vector<ClientHandle> ClientsApi::matchAll(const MatchAllOptions& o) const {
  auto picked = matching(o);
  std::vector<ClientHandle> out;
  out.reserve(picked.size());
  for (const auto* c : picked) out.push_back(handleFor(*c));
  return out;
}

std::vector<const ClientRecord*> ClientsApi::matching(const MatchAllOptions& o) const {
  const auto& all = roster();
  std::vector<const ClientRecord*> picked;
  picked.reserve(all.size());
  for (const ClientRecord* c : all) {
    if (!c->alive) continue;
    if (!o.includeUncontrolled && !c->controlled) continue;
    if (o.type != ClientType::ALL && c->type != o.type) continue;
    picked.push_back(c);
  }
  return picked;
}

const std::vector<const ClientRecord*>& ClientsApi::roster() const {
  // The order depends only on type, focusOrder and creation order: it is sorted again when a
  // record came or went, or a window took the focus, and a matchAll in between is one scan.
  if (rosterGeneration_ == clients_.generation() && rosterFocus_ == focusCounter_) return roster_;
  roster_.clear();
  roster_.reserve(clients_.size());
  clients_.forEach([&](const ClientRecord& c) { roster_.push_back(&c); });
  // Windows focused at least once, most recent first; then never-focused windows by creation;
  // then workers by creation.
  auto rank = [](const ClientRecord* c) { return c->type == ClientType::WORKER ? 2 : (c->focusOrder ? 0 : 1); };
  std::sort(roster_.begin(), roster_.end(), [&](const ClientRecord* a, const ClientRecord* b) {
    if (rank(a) != rank(b)) return rank(a) < rank(b);
    if (rank(a) == 0) return a->focusOrder > b->focusOrder;
    return a->order < b->order;
  });
  rosterGeneration_ = clients_.generation();
  rosterFocus_ = focusCounter_;
  return roster_;
}

std::optional<ClientHandle> ClientsApi::get(const ClientId& id) const {
  const ClientRecord* c = clients_.findAlive(id);
  if (!c) return std::nullopt;
  return handleFor(*c);
}

size_t ClientsApi::claim() {
  size_t n = 0;
  clients_.forEachAlive([&](ClientRecord& c) {
    if (c.controlled) return;
    c.controlled = true;
    outbound_.sendSimple(c, [](schema::Envelope::Builder e) { e.initControllerChange().setControlled(true); });
    ++n;
  });
  counters_.claimed += n;
  core::log().info("claim: {} client(s) now controlled", n);
  return n;
}

Result<ClientRecord*> ClientsApi::windowToCommand(const ClientId& id) {
  ClientRecord* c = clients_.findAlive(id);
  if (!c) return makeError(Errc::NOT_FOUND, "client " + id.toString() + " is gone");
  if (c->type != ClientType::WINDOW) return makeError(Errc::TYPE, "not a window client");
  if (!c->controlled) return makeError(Errc::INVALID_STATE, "this service worker does not control the client");
  return c;
}

Result<ClientHandle> ClientsApi::focus(const ClientId& id) {
  auto c = windowToCommand(id);
  if (!c) return c.error();
  takeFocus(**c);
  if (!outbound_.sendSimple(**c, [](schema::Envelope::Builder e) { e.setFocus(); }))
    return makeError(Errc::QUEUE_FULL, "could not tell the client");
  return handleFor(**c);
}

Result<ClientHandle> ClientsApi::navigate(const ClientId& id, const std::string& url) {
  auto c = windowToCommand(id);
  if (!c) return c.error();
  if (url.empty() || url.size() > 2048) return makeError(Errc::TYPE, "invalid url");
  if (!outbound_.sendSimple(**c, [&](schema::Envelope::Builder e) { e.initNavigate().setUrl(url); }))
    return makeError(Errc::QUEUE_FULL, "could not tell the client");
  (*c)->url = url;
  return handleFor(**c);
}

void ClientsApi::takeFocus(ClientRecord& c) {
  clients_.forEach([](ClientRecord& other) { other.focused = false; });
  c.focused = true;
  c.focusOrder = ++focusCounter_;
}

}  // namespace swipc::daemon
