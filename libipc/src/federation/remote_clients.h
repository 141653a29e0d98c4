// The Clients API across nodes (DESIGN §16), on the wire: what one node asks another about its
// clients, and the answers. Requests go to the asked node's own subject, answers to the asker's
// (directSubject()); both are one JSON object, parsed and checked here as any input from another
// host is (a frame that is not what it says is refused with a named error, never half used).
//
//   request  {"v":1,"kind":"matchAll"|"get"|"post","req":N,"from":NODE,
//             "options":{"includeUncontrolled":B,"type":"window"|"worker"|"all"},   (matchAll)
//             "id":CLIENT_ID, "data":V}                                             (get; post)
//   answer   {"v":1,"kind":"answer","req":N,"from":NODE,
//             "clients":[CLIENT…]} | {"client":CLIENT|null} | {"delivered":true}
//             | {"error":{"name":E,"message":M}}
//   CLIENT   {"id","url","type","frameType","focused","visibilityState","controlled"}
//
// `data` is a message in swipc's JSON form (swipc/json.h: lossless, bytes as {"$bytes":…}).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "swipc/clients.h"
#include "swipc/error.h"
#include "swipc/types.h"
#include "swipc/value.h"

namespace swipc::federation {

/// A client of another node, as that node described it.
struct RemoteClient {
  std::string node;
  ClientId id;
  std::string url;
  ClientType type = ClientType::WINDOW;
  FrameType frameType = FrameType::TOP_LEVEL;
  bool focused = false;
  bool visible = true;
  bool controlled = true;
};

struct ClientsRequest {
  enum class Kind { MATCH_ALL, GET, POST };
  Kind kind = Kind::MATCH_ALL;
  uint64_t req = 0;
  std::string from;
  MatchAllOptions options;  // MATCH_ALL
  ClientId id;              // GET, POST
  Value data;               // POST
};

struct ClientsAnswer {
  uint64_t req = 0;
  std::string from;
  std::vector<RemoteClient> clients;   // a MATCH_ALL's
  std::optional<RemoteClient> client;  // a GET's (nullopt: not here)
  Result<void> outcome = Result<void>{};  // a POST's (or any request the node refused)
};

/// Both kinds of frame share the subject; which one a frame is.
enum class FrameKind { REQUEST, ANSWER };
Result<FrameKind> peekKind(std::string_view frame);

std::string encodeRequest(const ClientsRequest& r);
Result<ClientsRequest> decodeRequest(std::string_view frame);

/// `clients` of a MATCH_ALL answer / `client` of a GET answer / `outcome` of a POST (or of a
/// request refused): exactly one of them is set by the helpers below.
std::string encodeMatchAllAnswer(uint64_t req, const std::string& from, const std::vector<RemoteClient>& clients);
std::string encodeGetAnswer(uint64_t req, const std::string& from, const std::optional<RemoteClient>& client);
std::string encodeOutcomeAnswer(uint64_t req, const std::string& from, const Result<void>& outcome);
/// `node`: who answered (the clients get it). Frames over `maxClients` entries are refused.
Result<ClientsAnswer> decodeAnswer(std::string_view frame, size_t maxClients = 1u << 20);

/// A ClientHandle's description as a RemoteClient of `node` (what a node sends about its own).
RemoteClient describeForRemote(const ClientHandle& c, const std::string& node);

std::optional<ClientType> clientTypeFromName(std::string_view name);
std::optional<FrameType> frameTypeFromName(std::string_view name);

}  // namespace swipc::federation
