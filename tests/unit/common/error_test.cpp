// Error names (DESIGN §8) and Result<T>.
#include "swipc/error.h"

#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

namespace swipc {
namespace {

std::vector<Errc> allErrcs() {
  return {
#define SWIPC_TEST_ERRC(e, s) Errc::e,
      SWIPC_ERRORS(SWIPC_TEST_ERRC)
#undef SWIPC_TEST_ERRC
  };
}

std::vector<std::string_view> allListedNames() {
  return {
#define SWIPC_TEST_NAME(e, s) s,
      SWIPC_ERRORS(SWIPC_TEST_NAME)
#undef SWIPC_TEST_NAME
  };
}

TEST(ErrorTest, EveryErrcHasItsListedName) {
  auto codes = allErrcs();
  auto names = allListedNames();
  ASSERT_EQ(codes.size(), names.size());
  for (size_t i = 0; i < codes.size(); ++i) EXPECT_EQ(errorName(codes[i]), names[i]);
}

TEST(ErrorTest, NamesAreDistinctAndNonEmpty) {
  std::set<std::string_view> seen;
  for (Errc e : allErrcs()) {
    auto name = errorName(e);
    EXPECT_FALSE(name.empty());
    EXPECT_NE(name, "UnknownError");
    EXPECT_TRUE(seen.insert(name).second) << "duplicate name " << name;
  }
}

TEST(ErrorTest, ErrorFromNameRoundTripsEveryErrc) {
  for (Errc e : allErrcs()) {
    Errc out = e == Errc::SYSTEM ? Errc::INVALID_STATE : Errc::SYSTEM;
    ASSERT_TRUE(errorFromName(errorName(e), out)) << errorName(e);
    EXPECT_EQ(out, e) << errorName(e);
  }
}

TEST(ErrorTest, DomExceptionNamesMatchTheWeb) {
  EXPECT_EQ(errorName(Errc::INVALID_STATE), "InvalidStateError");
  EXPECT_EQ(errorName(Errc::DATA_CLONE), "DataCloneError");
  EXPECT_EQ(errorName(Errc::TIMEOUT), "TimeoutError");
  EXPECT_EQ(errorName(Errc::QUOTA_EXCEEDED), "QuotaExceededError");
  EXPECT_EQ(errorName(Errc::QUEUE_FULL), "QueueFull");
  EXPECT_EQ(errorName(Errc::PROTOCOL_VIOLATION), "ProtocolViolation");
}

TEST(ErrorTest, ErrorFromNameRejectsUnknownName) {
  Errc out = Errc::TIMEOUT;
  EXPECT_FALSE(errorFromName("NoSuchError", out));
  EXPECT_FALSE(errorFromName("", out));
  EXPECT_FALSE(errorFromName("timeouterror", out));  // names are case-sensitive
  EXPECT_FALSE(errorFromName("TimeoutError ", out));
  EXPECT_EQ(out, Errc::TIMEOUT);  // untouched on failure
}

TEST(ErrorTest, DescribeJoinsNameAndMessage) {
  EXPECT_EQ(makeError(Errc::QUEUE_FULL, "up ring").describe(), "QueueFull: up ring");
  EXPECT_EQ(makeError(Errc::ABORT, "").describe(), "AbortError");
  EXPECT_EQ(makeError(Errc::NOT_FOUND, "x").name(), "NotFoundError");
}

TEST(ResultTest, HoldsValueWhenConstructedFromValue) {
  Result<int> sut = 42;
  ASSERT_TRUE(sut.ok());
  EXPECT_TRUE(static_cast<bool>(sut));
  EXPECT_EQ(sut.value(), 42);
  EXPECT_EQ(*sut, 42);
}

TEST(ResultTest, HoldsErrorWhenConstructedFromError) {
  Result<int> sut = makeError(Errc::TIMEOUT, "too slow");
  ASSERT_FALSE(sut.ok());
  EXPECT_FALSE(static_cast<bool>(sut));
  EXPECT_EQ(sut.error().code, Errc::TIMEOUT);
  EXPECT_EQ(sut.error().message, "too slow");
}

TEST(ResultTest, ArrowReachesMembersOfValue) {
  Result<std::string> sut = std::string("hello");
  EXPECT_EQ(sut->size(), 5u);
  sut->append("!");
  EXPECT_EQ(*sut, "hello!");
}

TEST(ResultTest, MovesOutMoveOnlyValue) {
  Result<std::unique_ptr<int>> sut = std::make_unique<int>(7);
  std::unique_ptr<int> p = std::move(sut).value();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(*p, 7);
}

TEST(ResultTest, VoidResultIsOkByDefault) {
  Result<void> sut;
  EXPECT_TRUE(sut.ok());
  EXPECT_TRUE(static_cast<bool>(sut));
}

TEST(ResultTest, VoidResultCarriesError) {
  Result<void> sut = makeError(Errc::DISCONNECTED, "peer gone");
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.error().code, Errc::DISCONNECTED);
  EXPECT_EQ(sut.error().describe(), "Disconnected: peer gone");
}

TEST(ResultDeathTest, AbortsWhenValueReadFromError) {
  Result<int> sut = makeError(Errc::TIMEOUT, "x");
  EXPECT_DEATH((void)sut.value(), "Result accessed as value");
}

TEST(ResultDeathTest, AbortsWhenErrorReadFromValue) {
  Result<int> sut = 1;
  EXPECT_DEATH((void)sut.error(), "Result accessed as error");
}

TEST(ResultDeathTest, AbortsWhenVoidErrorReadOnSuccess) {
  Result<void> sut;
  EXPECT_DEATH((void)sut.error(), "on success");
}

}  // namespace
}  // namespace swipc
