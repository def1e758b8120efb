#include "core/stats.h"

#include <gtest/gtest.h>

#include <cmath>

namespace ballast {
namespace {

TEST(PhaseBounds, AreFourPerDoublingFrom100Microseconds) {
  for (size_t i = 0; i < kPhaseBounds; ++i)
    EXPECT_EQ(kPhaseBoundsUs[i], static_cast<uint64_t>(std::llround(100.0 * std::pow(2.0, i / 4.0))))
        << "bound " << i;
  EXPECT_EQ(kPhaseBoundsUs[0], 100u);
  EXPECT_EQ(kPhaseBoundsUs[1], 119u);
  EXPECT_EQ(kPhaseBoundsUs[4], 200u);
  EXPECT_EQ(kPhaseBoundsUs[40], 102400u);
  EXPECT_EQ(kPhaseBoundsUs[79], 88174380u);
  for (size_t i = 1; i < kPhaseBounds; ++i) EXPECT_LT(kPhaseBoundsUs[i - 1], kPhaseBoundsUs[i]);
}

// The definition, the slow way.
size_t linearIndex(uint64_t us) {
  size_t i = 0;
  while (i < kPhaseBounds && us > kPhaseBoundsUs[i]) ++i;
  return i;
}

TEST(PhaseBucketIndex, BoundsAreInclusiveUpperBounds) {
  EXPECT_EQ(phaseBucketIndex(0), 0u);
  EXPECT_EQ(phaseBucketIndex(1), 0u);
  EXPECT_EQ(phaseBucketIndex(100), 0u);
  EXPECT_EQ(phaseBucketIndex(101), 1u);
  EXPECT_EQ(phaseBucketIndex(119), 1u);
  EXPECT_EQ(phaseBucketIndex(120), 2u);
  EXPECT_EQ(phaseBucketIndex(200), 4u);
  EXPECT_EQ(phaseBucketIndex(201), 5u);
  for (size_t i = 0; i < kPhaseBounds; ++i) {
    uint64_t b = kPhaseBoundsUs[i];
    EXPECT_EQ(phaseBucketIndex(b), i) << b;
    EXPECT_EQ(phaseBucketIndex(b + 1), i + 1) << b + 1;
    if (i > 0) {
      EXPECT_EQ(phaseBucketIndex(b - 1), b - 1 > kPhaseBoundsUs[i - 1] ? i : i - 1) << b - 1;
    }
  }
}

TEST(PhaseBucketIndex, PastTheLastBoundIsTheOverflowBucket) {
  EXPECT_EQ(phaseBucketIndex(kPhaseBoundsUs[79]), 79u);
  EXPECT_EQ(phaseBucketIndex(kPhaseBoundsUs[79] + 1), 80u);
  EXPECT_EQ(phaseBucketIndex(104857600), 80u);  // 100 * 2^20: where bound 80 would be
  EXPECT_EQ(phaseBucketIndex(104857601), 80u);
  EXPECT_EQ(phaseBucketIndex(uint64_t{1} << 40), 80u);
  EXPECT_EQ(phaseBucketIndex(UINT64_MAX), 80u);
}

TEST(PhaseBucketIndex, AgreesWithTheDefinitionEverywhere) {
  for (uint64_t us = 0; us < 20000; ++us) ASSERT_EQ(phaseBucketIndex(us), linearIndex(us)) << us;
  for (uint64_t us = 20000; us < (uint64_t{1} << 28); us = us + us / 997 + 1)
    ASSERT_EQ(phaseBucketIndex(us), linearIndex(us)) << us;
  static_assert(phaseBucketIndex(100) == 0 && phaseBucketIndex(101) == 1);  // usable in constexpr
}

TEST(PhaseHistogram, CountsAndSums) {
  PhaseHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.sumMicros(), 0u);
  h.observeMicros(50);
  h.observeMicros(100);
  h.observeMicros(150000);
  h.observeMicros(500000000);  // 500 s: overflow
  EXPECT_EQ(h.bucket(0), 2u);
  EXPECT_EQ(h.bucket(phaseBucketIndex(150000)), 1u);
  EXPECT_EQ(h.bucket(PhaseHistogram::kBuckets - 1), 1u);
  EXPECT_EQ(h.count(), 4u);
  EXPECT_EQ(h.sumMicros(), 50u + 100u + 150000u + 500000000u);
  EXPECT_EQ(PhaseHistogram::kBuckets, 81u);
  // 150 ms lands in the bucket whose bound is the first at or above it.
  size_t i = phaseBucketIndex(150000);
  EXPECT_GE(kPhaseBoundsUs[i], 150000u);
  EXPECT_LT(kPhaseBoundsUs[i - 1], 150000u);
}

}  // namespace
}  // namespace ballast
