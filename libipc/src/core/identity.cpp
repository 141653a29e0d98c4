#include "core/identity.h"

#include <openssl/sha.h>
#include <sys/random.h>

#include <cstring>

#include "swipc/error.h"

namespace swipc::core {

namespace {
void fillRandom(void* p, size_t n) {
  auto* b = static_cast<uint8_t*>(p);
  while (n) {
    ssize_t r = ::getrandom(b, n, 0);
    SWIPC_ASSERT(r > 0 || errno == EINTR, "getrandom failed");
    if (r > 0) {
      b += r;
      n -= static_cast<size_t>(r);
    }
  }
}
}  // namespace

ResumeToken newResumeToken() {
  ResumeToken t;
  fillRandom(t.data(), t.size());
  return t;
}

ClientId clientIdForToken(const ResumeToken& token) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  ::SHA256(token.data(), token.size(), digest);
  std::array<uint8_t, 16> id;
  std::memcpy(id.data(), digest, id.size());
  return ClientId(id);
}

uint64_t randomU64() {
  uint64_t v;
  fillRandom(&v, sizeof v);
  return v;
}

uint64_t randomIdU64() {
  thread_local std::array<uint64_t, 64> batch;
  thread_local size_t next = batch.size();
  for (;;) {
    if (next == batch.size()) {
      fillRandom(batch.data(), sizeof batch);
      next = 0;
    }
    uint64_t v = batch[next];
    batch[next++] = 0;  // used ids do not linger in memory
    if (v != 0) return v;
  }
}

}  // namespace swipc::core
