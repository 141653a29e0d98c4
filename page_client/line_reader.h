// LineReader: splits what arrives on an fd into lines, without ever blocking the caller's loop.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace page_client {

class LineReader {
 public:
  /// Longest line accepted; a longer one is reported as too long and skipped.
  static constexpr size_t MAX_LINE = size_t{256} << 20;

  explicit LineReader(int fd) : fd_(fd) {}

  int fd() const { return fd_; }

  struct Batch {
    std::vector<std::string> lines;  // complete lines, without the '\n'
    size_t tooLong = 0;              // lines skipped for exceeding MAX_LINE
    bool end = false;                // EOF (or a read error): nothing more will come
  };

  /// Call when poll() reports the fd readable: does exactly one read(), so it never blocks.
  /// At EOF a final unterminated line is returned as a line.
  Batch readAvailable();

 private:
  void splitLines(Batch& batch);

  int fd_;
  std::string pending_;
  bool skipping_ = false;  // inside a too-long line: drop bytes up to its '\n'
};

}  // namespace page_client
