#include "lb/balancer.h"

#include <gtest/gtest.h>

#include <map>

namespace ballast::lb {
namespace {

Pool makePool(std::vector<uint32_t> weights) {
  Pool pool;
  pool.name = "p";
  for (uint32_t w : weights) {
    Server s;
    s.weight = w;
    s.index = static_cast<uint32_t>(pool.servers.size());
    s.id = "p/s" + std::to_string(s.index);
    s.state = std::make_shared<ServerState>(s.id, 1, s.index);
    pool.servers.push_back(s);
  }
  preparePool(pool);
  return pool;
}

std::map<uint32_t, int> countPicks(LoadBalancer& lb, int n, std::vector<uint32_t> excluded = {}) {
  std::map<uint32_t, int> counts;
  for (int i = 0; i < n; ++i) {
    const Server* s = lb.pick(PickContext{excluded});
    if (s) counts[s->index]++;
  }
  return counts;
}

TEST(WeightedOrder, EachServerAsOftenAsItsReducedWeight) {
  Pool pool = makePool({2, 4, 6});  // gcd 2 -> 1, 2, 3
  std::map<uint32_t, int> counts;
  for (uint32_t i : pool.rr_order) counts[i]++;
  EXPECT_EQ(pool.rr_order.size(), 6u);
  EXPECT_EQ(counts, (std::map<uint32_t, int>{{0, 1}, {1, 2}, {2, 3}}));
}

TEST(WeightedOrder, InterleavesRatherThanBursts) {
  Pool pool = makePool({1, 1, 1});
  EXPECT_EQ(pool.rr_order, (std::vector<uint32_t>{0, 1, 2}));
  Pool heavy = makePool({5, 1});
  // The light server's one turn is not at either end of a burst of five.
  int runs = 0;
  for (size_t i = 0; i < heavy.rr_order.size(); ++i)
    if (i == 0 || heavy.rr_order[i] != heavy.rr_order[i - 1]) ++runs;
  EXPECT_GE(runs, 2);
  EXPECT_EQ(heavy.rr_order.size(), 6u);
}

TEST(RoundRobin, AlternatesAndHonoursWeights) {
  Pool pool = makePool({1, 3});
  RoundRobin rr(pool);
  auto counts = countPicks(rr, 400);
  EXPECT_EQ(counts[0], 100);
  EXPECT_EQ(counts[1], 300);
}

TEST(RoundRobin, SharedPositionAcrossInstances) {
  // Two workers' balancers over one pool continue one sequence between them.
  Pool pool = makePool({1, 1});
  RoundRobin w1(pool), w2(pool);
  uint32_t a = w1.pick({})->index, b = w2.pick({})->index, c = w1.pick({})->index;
  EXPECT_NE(a, b);
  EXPECT_EQ(a, c);
}

TEST(RoundRobin, SkipsDisabledAndExcludedServers) {
  Pool pool = makePool({1, 1, 1});
  pool.servers[1].enabled = false;
  RoundRobin rr(pool);
  auto counts = countPicks(rr, 300);
  EXPECT_EQ(counts.count(1), 0u);
  EXPECT_EQ(counts[0] + counts[2], 300);
  auto without0 = countPicks(rr, 50, {0});
  EXPECT_EQ(without0[2], 50);
  EXPECT_EQ(rr.pick(PickContext{std::vector<uint32_t>{0, 2}}), nullptr);
}

TEST(RoundRobin, DisabledServerLeavesOthersTheirProportions) {
  Pool pool = makePool({2, 1, 1});
  pool.servers[2].enabled = false;
  RoundRobin rr(pool);
  auto counts = countPicks(rr, 300);
  EXPECT_EQ(counts[0], 200);
  EXPECT_EQ(counts[1], 100);
}

TEST(RoundRobin, EmptyPoolPicksNothing) {
  Pool pool = makePool({});
  RoundRobin rr(pool);
  EXPECT_EQ(rr.pick({}), nullptr);
}

}  // namespace
}  // namespace ballast::lb
