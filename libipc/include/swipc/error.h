// One list of error names (DESIGN §8) and Result<T> for expected failures.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace swipc {

/// Every error swipc reports. The string name is the contract (JSON-lines, logs, tests).
#define SWIPC_ERRORS(X)                                                    \
  X(INVALID_STATE, "InvalidStateError")                                    \
  X(DATA_CLONE, "DataCloneError")                                          \
  X(NOT_FOUND, "NotFoundError")                                            \
  X(TIMEOUT, "TimeoutError")                                               \
  X(QUOTA_EXCEEDED, "QuotaExceededError")                                  \
  X(INVALID_ACCESS, "InvalidAccessError")                                  \
  X(TYPE, "TypeError")                                                     \
  X(ABORT, "AbortError")                                                   \
  X(NO_DAEMON, "NoDaemon")                                                 \
  X(VERSION_MISMATCH, "VersionMismatch")                                   \
  X(ATTACH_TIMEOUT, "AttachTimeout")                                       \
  X(QUEUE_FULL, "QueueFull")                                               \
  X(DISCONNECTED, "Disconnected")                                          \
  X(PROTOCOL_VIOLATION, "ProtocolViolation")                               \
  X(ALREADY_RUNNING, "AlreadyRunning")                                     \
  X(SYSTEM, "SystemError")

enum class Errc {
#define SWIPC_ERRC_ENUM(e, s) e,
  SWIPC_ERRORS(SWIPC_ERRC_ENUM)
#undef SWIPC_ERRC_ENUM
};

/// The contract name of an error ("TimeoutError", "QueueFull", ...).
std::string_view errorName(Errc e) noexcept;
/// Inverse of errorName; false when the name is unknown.
bool errorFromName(std::string_view name, Errc& out) noexcept;

/// An expected failure: what happened (code) and the details (message).
struct Error {
  Errc code;
  std::string message;

  std::string_view name() const noexcept { return errorName(code); }
  /// "Name: message", for logs and stderr.
  std::string describe() const;
};

inline Error makeError(Errc code, std::string message) { return Error{code, std::move(message)}; }

/// Either a T or an Error. Accessing the wrong alternative is a programming error (asserts).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(implicit)
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT(implicit)

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { check(true); return std::get<0>(v_); }
  const T& value() const& { check(true); return std::get<0>(v_); }
  T&& value() && { check(true); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { check(false); return std::get<1>(v_); }

 private:
  void check(bool wantValue) const {
    if (ok() != wantValue) {
      std::fprintf(stderr, "swipc: Result accessed as %s but holds %s\n",
                   wantValue ? "value" : "error", wantValue ? std::get<1>(v_).describe().c_str() : "a value");
      std::abort();
    }
  }
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT(implicit)

  bool ok() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  const Error& error() const {
    if (ok_) {
      std::fprintf(stderr, "swipc: Result<void>::error() on success\n");
      std::abort();
    }
    return error_;
  }

 private:
  Error error_{Errc::SYSTEM, {}};
  bool ok_ = true;
};

namespace detail {
[[noreturn]] void failCheck(const char* kind, const char* expr, const char* file, int line,
                            const std::string& detail);
}  // namespace detail

}  // namespace swipc

/// The caller broke a documented precondition.
#define SWIPC_REQUIRE(cond, msg)                                                         \
  do {                                                                                     \
    if (!(cond)) ::swipc::detail::failCheck("precondition", #cond, __FILE__, __LINE__, (msg)); \
  } while (0)
/// Our own invariant broke: a bug in swipc.
#define SWIPC_ASSERT(cond, msg)                                                          \
  do {                                                                                     \
    if (!(cond)) ::swipc::detail::failCheck("invariant", #cond, __FILE__, __LINE__, (msg)); \
  } while (0)
