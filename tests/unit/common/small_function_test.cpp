// SmallFunction: small functors stay in place, large ones go to the heap, and either way each
// runs as called, moves with its state and is destroyed exactly once.
#include "common/small_function.h"

#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

namespace swipc {
namespace {

using Fn = SmallFunction<48>;

TEST(SmallFunctionTest, ALambdaHoldingTwoSharedPointersStaysInPlace) {
  auto a = std::make_shared<int>(1);
  auto b = std::make_shared<std::string>("x");
  auto lambda = [a, b] { *a += static_cast<int>(b->size()); };
  static_assert(Fn::fitsInPlace<decltype(lambda)>());
  Fn f(lambda);
  EXPECT_EQ(a.use_count(), 3);  // here, `lambda`, and the copy in f
  f();
  EXPECT_EQ(*a, 2);
}

TEST(SmallFunctionTest, ALargeFunctorGoesToTheHeapAndStillRuns) {
  std::array<uint64_t, 16> big{};
  big[15] = 7;
  uint64_t seen = 0;
  auto lambda = [big, &seen] { seen = big[15]; };
  static_assert(!Fn::fitsInPlace<decltype(lambda)>());
  Fn f(lambda);
  Fn g(std::move(f));
  EXPECT_FALSE(f);  // NOLINT(bugprone-use-after-move): moved-from is empty, by contract
  ASSERT_TRUE(g);
  g();
  EXPECT_EQ(seen, 7u);
}

TEST(SmallFunctionTest, MovesCarryTheStateAndEachFunctorIsDestroyedOnce) {
  auto token = std::make_shared<int>(0);
  std::weak_ptr<int> watch = token;
  {
    std::vector<Fn> queue;
    for (int i = 0; i < 100; ++i) queue.emplace_back([t = token, i] { *t += i; });  // reallocations move them
    token.reset();
    EXPECT_FALSE(watch.expired());
    for (auto& f : queue) f();
    EXPECT_EQ(*watch.lock(), 4950);
    Fn last = std::move(queue.back());
    queue.pop_back();
    last = std::move(queue.front());  // assignment destroys what `last` held
    last();
    EXPECT_EQ(*watch.lock(), 4950);
  }
  EXPECT_TRUE(watch.expired());  // every copy of the token was destroyed
}

TEST(SmallFunctionTest, TakesAMoveOnlyFunctor) {
  auto owned = std::make_unique<int>(5);
  int seen = 0;
  Fn f([p = std::move(owned), &seen] { seen = *p; });
  Fn g;
  EXPECT_FALSE(g);
  g = std::move(f);
  g();
  EXPECT_EQ(seen, 5);
}

}  // namespace
}  // namespace swipc
