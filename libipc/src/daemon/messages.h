// Messages: the posts between clients and service-worker code. A client's controller post (on
// either lane) is gated (counted; an error to a client this service worker does not control),
// its ports adopted by service-worker code, its payload decoded, and handed to onMessage with
// event.source set; a wantAck post is acknowledged after the handler ran. A post of
// service-worker code to a client (ClientHandle::postMessage) takes the fast lane when it can.
//
// @concurrent: single-threaded; the daemon's loop thread.
#pragma once

#include <functional>

#include "core/payload.h"
#include "daemon/client_table.h"
#include "daemon/clients_api.h"
#include "daemon/dispatch.h"
#include "daemon/outbound.h"
#include "daemon/port_service.h"
#include "swipc/service_worker.h"

namespace swipc::daemon {

class Messages {
 public:
  using MessageFn = std::function<void(ExtendableMessageEvent&)>;
  using MessageErrorFn = std::function<void(const MessageErrorEvent&, const ClientHandle&)>;

  Messages(ClientTable& clients, Outbound& outbound, ClientsApi& api, PortService& ports, Counters& counters,
           const TypeRegistry& types)
      : clients_(clients), outbound_(outbound), api_(api), ports_(ports), counters_(counters), types_(types) {}
  Messages(const Messages&) = delete;
  Messages& operator=(const Messages&) = delete;

  /// Takes controllerPost on both lanes.
  void registerWith(Dispatch& dispatch);
  void onMessage(MessageFn fn) { onMessage_ = std::move(fn); }
  void onMessageError(MessageErrorFn fn) { onMessageError_ = std::move(fn); }

  /// client.postMessage from service-worker code. NotFoundError when the client is gone,
  /// QueueFull when its backlog is at the bound, QuotaExceededError over the size limit,
  /// DataCloneError for a bad transfer list.
  Result<MessageSeq> postToClient(const ClientId& id, const core::OutgoingPayload& payload, TransferList& transfer);

 private:
  /// What every controller post passes before it is decoded: counted; an error to the sender
  /// when the client is not controlled (REFUSED); a violation for a one-shot reply id.
  enum class Gate { DELIVER, REFUSED, VIOLATION };
  Gate admitPost(ClientRecord& c, MessageSeq seq, uint64_t replyId);
  /// A controller post read by the general path.
  bool onPost(ClientRecord& c, schema::Envelope::Reader env, const std::shared_ptr<const wire::Inbound>& owner);
  /// A controller post read by the fast lane (a Value, at most one fresh port), its data in `ev`.
  bool onPlainPost(ClientRecord& c, const wire::PlainMessage& m, ExtendableMessageEvent& ev);
  /// Runs the message handler with `ev` (its source set here), then acks when asked.
  void deliverPost(ClientRecord& c, MessageSeq seq, bool wantAck, ExtendableMessageEvent& ev);
  void ackIfWanted(const ClientId& id, MessageSeq seq, bool wantAck);

  ClientTable& clients_;
  Outbound& outbound_;
  ClientsApi& api_;
  PortService& ports_;
  Counters& counters_;
  const TypeRegistry& types_;
  MessageFn onMessage_;
  MessageErrorFn onMessageError_;
};

}  // namespace swipc::daemon
