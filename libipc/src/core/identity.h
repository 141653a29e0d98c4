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
/// A random non-zero 64-bit id from the kernel's CSPRNG, fetched in batches (one syscall per 64
/// ids): port ids are made twice per messageSW. Thread-local, so safe from any thread.
uint64_t randomIdU64();

}  // namespace swipc::core
