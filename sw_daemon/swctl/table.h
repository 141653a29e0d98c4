// swctl's human output: aligned text tables (columns padded to their widest cell).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace swctl {

class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  /// One row; it must have as many cells as the header.
  void add(std::vector<std::string> row);
  /// Header, then the rows; two spaces between columns, the last one not padded.
  void print(std::FILE* out) const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace swctl
