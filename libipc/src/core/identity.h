// Client identity: a random resume token; the client id is derived from it (SHA-256, first
// 16 bytes), so a restarted daemon can give a returning client the same id without storage.
#pragma once

#include <array>
#include <cstdint>

#include "swipc/types.h"

namespace swipc::core {

using ResumeToken = std::array<uint8_t, 32>;

ResumeToken newResumeToken();
ClientId clientIdForToken(const ResumeToken& token);
uint64_t randomU64();

}  // namespace swipc::core
