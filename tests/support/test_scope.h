// Small helpers every multi-process test file uses.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace swipc::testing {

/// A scope named after the running test, so no two tests share one.
inline std::string testScope() {
  std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  return name.substr(0, 48);
}

/// Milliseconds since `t0` on the steady clock.
inline long long msSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace swipc::testing
