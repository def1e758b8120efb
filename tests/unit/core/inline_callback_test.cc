// InlineCallback: small callables live inside it, larger ones on the heap; both kinds are called,
// moved and destroyed exactly once.
#include "core/inline_callback.h"

#include <gtest/gtest.h>

#include <array>
#include <memory>

namespace ballast {
namespace {

// Counts the live copies of the callable it is captured by.
struct Tracker {
  explicit Tracker(int* live) : live(live) { ++*live; }
  Tracker(Tracker&& o) noexcept : live(o.live) { ++*live; }
  Tracker(const Tracker& o) : live(o.live) { ++*live; }
  ~Tracker() { --*live; }
  int* live;
};

TEST(InlineCallback, SmallCallableIsCalledMovedAndDestroyedOnce) {
  int live = 0, sum = 0;
  {
    InlineCallback<int> a = [t = Tracker(&live), &sum](int v) { sum += v; };
    EXPECT_EQ(live, 1);
    InlineCallback<int> b = std::move(a);
    EXPECT_FALSE(a);
    EXPECT_TRUE(b);
    EXPECT_EQ(live, 1);  // moved, not copied
    b(3);
    b(4);
    EXPECT_EQ(sum, 7);
  }
  EXPECT_EQ(live, 0);
}

TEST(InlineCallback, LargeCallableGoesToTheHeapAndBehavesAlike) {
  int live = 0, sum = 0;
  std::array<char, 2 * InlineCallback<int>::kInline> big{};
  big[0] = 5;
  {
    InlineCallback<int> a = [t = Tracker(&live), big, &sum](int v) { sum += v + big[0]; };
    InlineCallback<int> b;
    b = std::move(a);
    EXPECT_FALSE(a);
    EXPECT_EQ(live, 1);
    b(1);
    EXPECT_EQ(sum, 6);
    b.reset();
    EXPECT_FALSE(b);
    EXPECT_EQ(live, 0);
  }
  EXPECT_EQ(live, 0);
}

TEST(InlineCallback, AssigningOverAHeldCallableDestroysIt) {
  int first = 0, second = 0;
  InlineCallback<> a = [t = Tracker(&first)] {};
  a = InlineCallback<>([t = Tracker(&second)] {});
  EXPECT_EQ(first, 0);
  EXPECT_EQ(second, 1);
  a = nullptr;
  EXPECT_EQ(second, 0);
}

TEST(InlineCallback, ArgumentsArePassedAsDeclared) {
  auto owned = std::make_unique<int>(42);
  int got = 0;
  InlineCallback<std::unique_ptr<int>> take = [&got](std::unique_ptr<int> p) { got = *p; };
  take(std::move(owned));
  EXPECT_EQ(got, 42);
  EXPECT_EQ(owned, nullptr);
}

}  // namespace
}  // namespace ballast
