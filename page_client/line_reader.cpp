#include "line_reader.h"

#include <unistd.h>

#include <cerrno>

namespace page_client {

LineReader::Batch LineReader::readAvailable() {
  Batch batch;
  char buf[64 * 1024];
  ssize_t n;
  do {
    n = ::read(fd_, buf, sizeof buf);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return batch;
  if (n <= 0) {
    batch.end = true;
    if (!pending_.empty() && !skipping_) batch.lines.push_back(std::move(pending_));
    pending_.clear();
    return batch;
  }
  pending_.append(buf, static_cast<size_t>(n));
  splitLines(batch);
  return batch;
}

void LineReader::splitLines(Batch& batch) {
  size_t start = 0;
  for (size_t nl = pending_.find('\n'); nl != std::string::npos; nl = pending_.find('\n', start)) {
    if (skipping_) {
      skipping_ = false;
    } else {
      batch.lines.emplace_back(pending_, start, nl - start);
    }
    start = nl + 1;
  }
  pending_.erase(0, start);
  if (pending_.size() > MAX_LINE) {
    if (!skipping_) ++batch.tooLong;
    skipping_ = true;
    pending_.clear();
  }
}

}  // namespace page_client
