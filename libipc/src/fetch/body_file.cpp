// swipc::BodyFile (swipc/background_fetch.h): a fetched body as a read-only fd. Here, in the
// fetch layer, because the daemon's completion events make them as well as the page's records.
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "swipc/background_fetch.h"

namespace swipc {

namespace {

/// Read size of BodyFile::sha256 (memory stays this small for any body).
constexpr size_t HASH_CHUNK_BYTES = 64 * 1024;

Error systemError(const char* what) { return makeError(Errc::SYSTEM, std::string(what) + ": " + std::strerror(errno)); }

}  // namespace

BodyFile::~BodyFile() {
  if (fd_ >= 0) ::close(fd_);
}

uint64_t BodyFile::size() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

Result<std::vector<uint8_t>> BodyFile::readAll() const {
  std::vector<uint8_t> out(size());
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return systemError("reading a fetched body");
    if (n == 0) break;  // shorter than fstat said (it cannot shrink under us: take what is there)
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

Result<std::string> BodyFile::sha256() const {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    return makeError(Errc::SYSTEM, "SHA-256 is not available");
  std::vector<uint8_t> chunk(HASH_CHUNK_BYTES);
  off_t at = 0;
  for (;;) {
    ssize_t n = ::pread(fd_, chunk.data(), chunk.size(), at);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return systemError("reading a fetched body");
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), chunk.data(), static_cast<size_t>(n));
    at += n;
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &len);
  static constexpr char HEX[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * len);
  for (unsigned i = 0; i < len; ++i) {
    hex.push_back(HEX[digest[i] >> 4]);
    hex.push_back(HEX[digest[i] & 0xf]);
  }
  return hex;
}

}  // namespace swipc
