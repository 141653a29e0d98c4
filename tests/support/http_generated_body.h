// The deterministic body behind http_test_server's `/gen/BYTES?seed=S`, shared by the server
// (which sends it) and the test fixture (which checks what a download stored against it).
//
// Byte i of the body is byte (i % 8) of the little-endian 64-bit word mix(seed, i / 8), so any
// range is computable without the bytes before it and a 1 GiB body needs no disk and no memory.
// HttpTestServer::writeRandomFile(name, size, seed) writes exactly these bytes to a file.
#pragma once

#include <cstddef>
#include <cstdint>

namespace swipc::testing {

/// Word `index` of the generated body for `seed` (splitmix64 of a seed-dependent counter).
constexpr uint64_t generatedWord(uint64_t seed, uint64_t index) {
  uint64_t z = seed * 0xD1B54A32D192ED03ULL + index + 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// Writes bytes [offset, offset + n) of the generated body for `seed` to `out`.
inline void fillGeneratedBody(uint64_t seed, uint64_t offset, char* out, size_t n) {
  size_t done = 0;
  while (done < n) {
    uint64_t pos = offset + done;
    uint64_t word = generatedWord(seed, pos / 8);
    for (unsigned b = static_cast<unsigned>(pos % 8); b < 8 && done < n; ++b, ++done) {
      out[done] = static_cast<char>((word >> (8 * b)) & 0xFF);
    }
  }
}

}  // namespace swipc::testing
