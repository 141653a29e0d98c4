// swipc::Client: the public front door of the page side. The machinery is page::Page's (its
// modules live in libipc/src/page/); this file only forwards to them.
#include "swipc/client.h"

#include <atomic>
#include <memory>

#include "page/broadcast.h"
#include "page/page.h"

namespace swipc {

class Client::Impl {
 public:
  explicit Impl(std::unique_ptr<page::Page> page) : page_(std::move(page)) {}

  page::Page& page() { return *page_; }
  Controller controller_{nullptr};
  std::atomic<bool> stopRequested_{false};  // stop() may come from any thread

 private:
  std::unique_ptr<page::Page> page_;
};

// ------------------------------------------------------------------------------------------------ public

Result<Client> Client::connect(const ClientOptions& opts) {
  auto page = page::Page::create(opts);
  if (!page) return page.error();
  auto& features = (*page)->features();
  auto bc = page::PageBroadcast::create(features.context());  // BroadcastChannel, on the page seam
  if (!bc) return bc.error();
  features.add(std::move(*bc));
  if (auto r = (*page)->start(); !r) return r.error();
  return Client(std::make_unique<Impl>(std::move(*page)));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) { impl_->controller_ = Controller(this); }
Client::Client(Client&& o) noexcept : impl_(std::move(o.impl_)) {
  if (impl_) impl_->controller_ = Controller(this);
}
Client& Client::operator=(Client&& o) noexcept {
  impl_ = std::move(o.impl_);
  if (impl_) impl_->controller_ = Controller(this);
  return *this;
}
Client::~Client() = default;

const ClientId& Client::id() const { return impl_->page().link().id(); }
bool Client::controlled() const { return impl_->page().link().controlled(); }
bool Client::attached() const { return impl_->page().link().attached(); }
Controller* Client::controller() {
  auto& link = impl_->page().link();
  return link.controlled() && link.attached() ? &impl_->controller_ : nullptr;
}
const std::string& Client::swVersion() const { return impl_->page().link().swVersion(); }
void Client::onMessage(std::function<void(const MessageEvent&)> fn) { impl_->page().events().onMessage(std::move(fn)); }
void Client::onMessageError(std::function<void(const MessageErrorEvent&)> fn) {
  impl_->page().events().onMessageError(std::move(fn));
}
void Client::onControllerChange(std::function<void(bool)> fn) {
  impl_->page().events().onControllerChange(std::move(fn));
}
void Client::onUndelivered(std::function<void(MessageSeq, const Error&)> fn) {
  impl_->page().events().onUndelivered(std::move(fn));
}
void Client::onDelivered(std::function<void(MessageSeq)> fn) { impl_->page().events().onDelivered(std::move(fn)); }
void Client::onNavigate(std::function<void(const std::string&)> fn) {
  impl_->page().events().onNavigate(std::move(fn));
}
void Client::onFocus(std::function<void()> fn) { impl_->page().events().onFocus(std::move(fn)); }
const std::string& Client::url() const { return impl_->page().link().url(); }
Result<void> Client::setFocus(bool focused) {
  impl_->page().link().setFocused(focused);
  return impl_->page().sender().sendState(true);
}
Result<void> Client::setVisibility(bool visible) {
  impl_->page().link().setVisible(visible);
  return impl_->page().sender().sendState(false);
}
TypeRegistry& Client::types() { return impl_->page().types(); }
void Client::startMessages() { impl_->page().queue().start(); }
Result<Value> Client::messageSW(const Value& data, Deadline deadline) {
  return impl_->page().controllerOps().messageSW(data, deadline);
}
void Client::messageSWAsync(const Value& data, std::function<void(Result<Value>)> done,
                            std::optional<Deadline> deadline) {
  impl_->page().controllerOps().messageSWAsync(data, std::move(done), deadline);
}
int Client::fd() const { return impl_->page().loop().fd(); }
void Client::dispatch() { impl_->page().dispatchOnce(Clock::now()); }
void Client::run() {
  // A stop() that came before run() still counts; the request is consumed when run() returns.
  while (!impl_->stopRequested_) impl_->page().dispatchOnce(NO_DEADLINE);
  impl_->stopRequested_ = false;
}
bool Client::runUntil(Deadline deadline) {
  while (!impl_->stopRequested_) {
    if (Clock::now() >= deadline) return false;
    impl_->page().dispatchOnce(deadline);
  }
  impl_->stopRequested_ = false;
  return true;
}
bool Client::runUntil(const std::function<bool()>& pred, Deadline deadline) {
  while (!pred()) {
    if (impl_->stopRequested_.exchange(false) || Clock::now() >= deadline) return pred();
    impl_->page().dispatchOnce(deadline);
  }
  return true;
}
void Client::stop() {
  impl_->stopRequested_ = true;
  impl_->page().loop().wake();
}
void Client::post(std::function<void()> fn) { impl_->page().loop().post(std::move(fn)); }
void Client::wake() { impl_->page().loop().wake(); }
void Client::close() { impl_->page().close(); }
std::shared_ptr<detail::BroadcastHub> Client::broadcastHub() {
  auto* bc = impl_->page().features().find<page::PageBroadcast>();
  return bc ? bc->hub() : nullptr;
}
detail::PortHost& Client::portHost() { return impl_->page().ports(); }
page::FeatureSet& Client::pageFeatures() { return impl_->page().features(); }

Result<MessageSeq> Controller::postMessage(const Value& data, const PostOptions& opts) {
  TransferList none;
  return postMessage(data, std::move(none), opts);
}

Result<MessageSeq> Controller::postMessage(const Value& data, TransferList transfer, const PostOptions& opts) {
  core::OutgoingPayload p;
  p.value = &data;
  return client_->impl_->page().controllerOps().post(p, opts, transfer);
}

Result<MessageSeq> Controller::postTyped(uint64_t typeId, const TypedBuilder& build, const PostOptions& opts) {
  TransferList none;
  return postTyped(typeId, build, std::move(none), opts);
}

Result<MessageSeq> Controller::postTyped(uint64_t typeId, const TypedBuilder& build, TransferList transfer,
                                         const PostOptions& opts) {
  core::OutgoingPayload p;
  p.typeId = typeId;
  p.build = &build;
  return client_->impl_->page().controllerOps().post(p, opts, transfer);
}

}  // namespace swipc
