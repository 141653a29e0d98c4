#include "process.h"

namespace swipc::testing {

std::string hostileClientPath() { return SWIPC_HOSTILE_CLIENT_PATH; }
std::string bcPeerPath() { return SWIPC_BC_PEER_PATH; }
std::string portPeerPath() { return SWIPC_PORT_PEER_PATH; }

}  // namespace swipc::testing
