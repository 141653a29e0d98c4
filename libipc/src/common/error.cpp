#include "swipc/error.h"

#include <array>

namespace swipc {
namespace {
constexpr std::array<std::string_view, 16> NAMES = {
#define SWIPC_ERRC_NAME(e, s) s,
    SWIPC_ERRORS(SWIPC_ERRC_NAME)
#undef SWIPC_ERRC_NAME
};
}  // namespace

std::string_view errorName(Errc e) noexcept {
  auto i = static_cast<size_t>(e);
  return i < NAMES.size() ? NAMES[i] : std::string_view("UnknownError");
}

bool errorFromName(std::string_view name, Errc& out) noexcept {
  for (size_t i = 0; i < NAMES.size(); ++i) {
    if (NAMES[i] == name) {
      out = static_cast<Errc>(i);
      return true;
    }
  }
  return false;
}

std::string Error::describe() const {
  std::string s(name());
  if (!message.empty()) {
    s += ": ";
    s += message;
  }
  return s;
}

namespace detail {
void failCheck(const char* kind, const char* expr, const char* file, int line, const std::string& detail) {
  std::fprintf(stderr, "swipc %s failed at %s:%d: %s (%s)\n", kind, file, line, expr, detail.c_str());
  std::abort();
}
}  // namespace detail

}  // namespace swipc
