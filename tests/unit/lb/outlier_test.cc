#include "lb/outlier.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace ballast::lb {
namespace {

using namespace std::chrono_literals;

// A pool of n servers with its own configuration (the detector reads pool.config).
struct TestPool {
  explicit TestPool(size_t n) {
    config.name = "p";
    config.outlier_detection.consecutive_5xx = 3;
    config.outlier_detection.consecutive_gateway_failure = 2;
    config.outlier_detection.base_ejection_time = 1000ms;
    config.outlier_detection.max_ejection_time = 3500ms;
    config.outlier_detection.max_ejection_percent = 100;
    config.outlier_detection.panic_threshold = 0;
    pool.name = "p";
    pool.config = &config;
    for (size_t i = 0; i < n; ++i) {
      Server s;
      s.index = static_cast<uint32_t>(i);
      s.id = "p/s" + std::to_string(i);
      s.address_text = "s" + std::to_string(i);
      s.state = std::make_shared<ServerState>(s.id, 1, s.index);
      pool.servers.push_back(s);
    }
    preparePool(pool);
  }
  config::OutlierDetection& od() { return config.outlier_detection; }
  const Server& server(size_t i) const { return pool.servers[i]; }
  ServerState& state(size_t i) { return *pool.servers[i].state; }

  // Feeds `n` outcomes; returns the ejection reported, if any (by the last one to report).
  std::optional<Ejection> feed(size_t i, Outcome o, int n, uint64_t now) {
    std::optional<Ejection> result;
    for (int k = 0; k < n; ++k)
      if (auto e = recordOutcome(pool, server(i), o, now)) result = e;
    return result;
  }

  config::Pool config;
  Pool pool;
};

TEST(Outlier, GatewayFailuresEjectAtTheThreshold) {
  TestPool t(4);
  EXPECT_FALSE(recordOutcome(t.pool, t.server(0), Outcome::GatewayFailure, 100));
  auto e = recordOutcome(t.pool, t.server(0), Outcome::GatewayFailure, 100);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->until_ms, 1100u);
  EXPECT_EQ(e->count, 1u);
  EXPECT_EQ(e->reason, "2 consecutive gateway failures");
  EXPECT_TRUE(t.state(0).ejected(100));
  EXPECT_TRUE(t.state(0).ejected(1099));
  EXPECT_FALSE(t.state(0).ejected(1100));  // expired: usable again
  EXPECT_EQ(t.state(0).ejections.load(), 1u);
  // The counts start again after an ejection.
  EXPECT_EQ(t.state(0).consecutive_gateway_failures.load(), 0u);
  EXPECT_EQ(t.state(0).consecutive_5xx.load(), 0u);
}

TEST(Outlier, ServerErrorsEjectAtTheirThreshold) {
  TestPool t(4);
  EXPECT_FALSE(t.feed(1, Outcome::ServerError, 2, 0));
  auto e = recordOutcome(t.pool, t.server(1), Outcome::ServerError, 0);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->reason, "3 consecutive 5xx");
  EXPECT_EQ(t.state(1).consecutive_gateway_failures.load(), 0u);
}

TEST(Outlier, GatewayFailuresAlsoCountAs5xxButNotTheOtherWayRound) {
  TestPool t(4);
  t.od().consecutive_gateway_failure = 0;  // only the 5xx detector
  EXPECT_FALSE(t.feed(0, Outcome::ServerError, 1, 0));
  EXPECT_FALSE(t.feed(0, Outcome::GatewayFailure, 1, 0));
  auto e = recordOutcome(t.pool, t.server(0), Outcome::GatewayFailure, 0);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->reason, "3 consecutive 5xx");

  TestPool u(4);
  EXPECT_FALSE(u.feed(0, Outcome::GatewayFailure, 1, 0));
  EXPECT_FALSE(u.feed(0, Outcome::ServerError, 1, 0));  // a 500 ends the run of gateway failures
  EXPECT_EQ(u.state(0).consecutive_gateway_failures.load(), 0u);
  EXPECT_EQ(u.state(0).consecutive_5xx.load(), 2u);
  // Gateway run of 1 (< 2), but the third failure in a row for the 5xx detector.
  auto e2 = u.feed(0, Outcome::GatewayFailure, 1, 0);
  ASSERT_TRUE(e2);
  EXPECT_EQ(e2->reason, "3 consecutive 5xx");
}

TEST(Outlier, SuccessResetsTheCounts) {
  TestPool t(4);
  EXPECT_FALSE(t.feed(0, Outcome::GatewayFailure, 1, 0));
  EXPECT_FALSE(t.feed(0, Outcome::Success, 1, 0));
  EXPECT_FALSE(t.feed(0, Outcome::GatewayFailure, 1, 0));
  EXPECT_FALSE(t.feed(0, Outcome::Success, 1, 0));
  EXPECT_FALSE(t.feed(0, Outcome::ServerError, 2, 0));
  EXPECT_FALSE(t.feed(0, Outcome::Success, 1, 0));
  EXPECT_FALSE(t.feed(0, Outcome::ServerError, 2, 0));
  EXPECT_FALSE(t.state(0).ejected(0));
  EXPECT_FALSE(t.feed(0, Outcome::Success, 5, 0));
  EXPECT_EQ(t.state(0).consecutive_5xx.load(), 0u);
  EXPECT_EQ(t.state(0).consecutive_gateway_failures.load(), 0u);
}

TEST(Outlier, EjectionTimeGrowsWithEachEjectionUpToTheCap) {
  TestPool t(4);
  uint64_t now = 10'000;
  std::vector<uint64_t> durations;
  for (int i = 0; i < 5; ++i) {
    auto e = t.feed(0, Outcome::GatewayFailure, 2, now);
    ASSERT_TRUE(e) << i;
    EXPECT_EQ(e->count, static_cast<uint32_t>(i + 1));
    durations.push_back(e->until_ms - now);
    now = e->until_ms + 10;  // fails again soon after it comes back
  }
  EXPECT_EQ(durations, (std::vector<uint64_t>{1000, 2000, 3000, 3500, 3500}));
}

TEST(Outlier, MaxEjectionTimeBelowBaseMeansBase) {
  TestPool t(4);
  t.od().max_ejection_time = 100ms;
  auto e1 = t.feed(0, Outcome::GatewayFailure, 2, 0);
  ASSERT_TRUE(e1);
  EXPECT_EQ(e1->until_ms, 1000u);
  auto e2 = t.feed(0, Outcome::GatewayFailure, 2, 1001);
  ASSERT_TRUE(e2);
  EXPECT_EQ(e2->until_ms - 1001, 1000u);
}

TEST(Outlier, MultiplierStartsAgainAfterALongGoodSpell) {
  TestPool t(4);
  auto e1 = t.feed(0, Outcome::GatewayFailure, 2, 0);
  auto e2 = t.feed(0, Outcome::GatewayFailure, 2, e1->until_ms + 1);
  ASSERT_TRUE(e2);
  EXPECT_EQ(e2->count, 2u);
  // Back at e2->until_ms; next failure run long after (> max_ejection_time later).
  const uint64_t later = e2->until_ms + 3501;
  auto e3 = t.feed(0, Outcome::GatewayFailure, 2, later);
  ASSERT_TRUE(e3);
  EXPECT_EQ(e3->count, 1u);
  EXPECT_EQ(e3->until_ms, later + 1000);
  // Exactly max_ejection_time later is not long enough.
  auto e4 = t.feed(0, Outcome::GatewayFailure, 2, e3->until_ms + 3500);
  ASSERT_TRUE(e4);
  EXPECT_EQ(e4->count, 2u);
}

TEST(Outlier, AlreadyEjectedIsNotEjectedAgain) {
  TestPool t(4);
  ASSERT_TRUE(t.feed(0, Outcome::GatewayFailure, 2, 0));
  // Traffic that still reaches it (e.g. in panic mode) does not extend the ejection.
  EXPECT_FALSE(t.feed(0, Outcome::GatewayFailure, 10, 500));
  EXPECT_EQ(t.state(0).ejected_until_ms.load(), 1000u);
  EXPECT_EQ(t.state(0).ejections.load(), 1u);
}

TEST(Outlier, MaxEjectionPercentAllowsAtLeastOne) {
  TestPool t(3);
  t.od().max_ejection_percent = 10;  // 10% of 3 servers is 0.3: still one may be ejected
  ASSERT_TRUE(t.feed(0, Outcome::GatewayFailure, 2, 0));
  EXPECT_FALSE(t.feed(1, Outcome::GatewayFailure, 5, 0));
  EXPECT_FALSE(t.state(1).ejected(0));
  // The count goes on, so once the first is back the second is ejected on its next failure.
  EXPECT_FALSE(t.feed(1, Outcome::GatewayFailure, 1, 999));
  auto e = t.feed(1, Outcome::GatewayFailure, 1, 1000);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->reason, "7 consecutive gateway failures");
}

TEST(Outlier, MaxEjectionPercentOfALargerPool) {
  TestPool t(10);
  t.od().max_ejection_percent = 30;
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(t.feed(i, Outcome::GatewayFailure, 2, 0)) << i;
  EXPECT_FALSE(t.feed(3, Outcome::GatewayFailure, 2, 0));
}

TEST(Outlier, PanicThresholdNeverEjectsTheLastServer) {
  TestPool t(1);
  t.od().panic_threshold = 50;
  EXPECT_FALSE(t.feed(0, Outcome::GatewayFailure, 20, 0));
  EXPECT_FALSE(t.state(0).ejected(0));
  t.od().panic_threshold = 1;
  EXPECT_FALSE(t.feed(0, Outcome::GatewayFailure, 2, 0));
}

TEST(Outlier, PanicThresholdTwoOfFour) {
  TestPool t(4);
  t.od().panic_threshold = 50;
  EXPECT_TRUE(t.feed(0, Outcome::GatewayFailure, 2, 0));
  EXPECT_TRUE(t.feed(1, Outcome::GatewayFailure, 2, 0));
  EXPECT_FALSE(t.feed(2, Outcome::GatewayFailure, 2, 0));  // 1 of 4 left < 50%
  EXPECT_FALSE(t.state(2).ejected(0));
}

TEST(Outlier, PanicThresholdCountsOnlyEnabledHealthyServers) {
  TestPool t(4);
  t.od().panic_threshold = 50;
  t.pool.servers[3].enabled = false;
  t.state(2).healthy = false;  // down by the active monitor
  // In use: s0, s1. Ejecting s0 leaves 1 of 2 = 50%: allowed; then s1 would leave 0.
  EXPECT_TRUE(t.feed(0, Outcome::GatewayFailure, 2, 0));
  EXPECT_FALSE(t.feed(1, Outcome::GatewayFailure, 2, 0));
}

TEST(Outlier, DisabledDetection) {
  TestPool t(4);
  t.od().enabled = false;
  EXPECT_FALSE(t.feed(0, Outcome::GatewayFailure, 100, 0));
  EXPECT_FALSE(t.feed(0, Outcome::ServerError, 100, 0));
  EXPECT_FALSE(t.state(0).ejected(0));

  TestPool u(4);
  u.od().consecutive_gateway_failure = 0;
  u.od().consecutive_5xx = 0;
  EXPECT_FALSE(u.feed(0, Outcome::GatewayFailure, 100, 0));
  EXPECT_FALSE(u.feed(0, Outcome::ServerError, 100, 0));
  EXPECT_FALSE(u.state(0).ejected(0));

  TestPool v(4);
  v.od().consecutive_5xx = 0;  // gateway failures still eject
  EXPECT_FALSE(v.feed(0, Outcome::ServerError, 100, 0));
  EXPECT_TRUE(v.feed(0, Outcome::GatewayFailure, 2, 0));
}

TEST(Outlier, ConcurrentFailuresReportExactlyOneEjection) {
  for (int round = 0; round < 20; ++round) {
    TestPool t(4);
    t.od().consecutive_gateway_failure = 5;
    std::atomic<int> ejections{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int i = 0; i < 8; ++i) {
      threads.emplace_back([&] {
        while (!go.load()) {
        }
        for (int k = 0; k < 200; ++k)
          if (recordOutcome(t.pool, t.server(0), Outcome::GatewayFailure, 50)) ++ejections;
      });
    }
    go = true;
    for (auto& th : threads) th.join();
    EXPECT_EQ(ejections.load(), 1) << "round " << round;
    EXPECT_EQ(t.state(0).ejections.load(), 1u);
    EXPECT_EQ(t.state(0).ejected_until_ms.load(), 1050u);
  }
}

TEST(Outlier, PoolWithoutConfigurationNeverEjects) {
  TestPool t(2);
  t.pool.config = nullptr;
  EXPECT_FALSE(t.feed(0, Outcome::GatewayFailure, 100, 0));
}

}  // namespace
}  // namespace ballast::lb
