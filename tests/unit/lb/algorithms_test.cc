// least_connections, least_response_time, random_two_choices, and what every algorithm shares:
// which servers may be picked, the panic rule, makeLoadBalancer.
#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <queue>
#include <tuple>

#include "lb/balancer.h"
#include "test_pool.h"

namespace ballast::lb {
namespace {

using config::LbAlgorithm;
using testing::algorithmConfig;
using testing::counters;
using testing::makePool;
using testing::makeServer;
using testing::respond;
using testing::setInFlight;

std::map<uint32_t, int> countPicks(LoadBalancer& lb, int n, const PickContext& ctx = {}) {
  std::map<uint32_t, int> counts;
  for (int i = 0; i < n; ++i)
    if (const Server* s = lb.pick(ctx)) counts[s->index]++;
  return counts;
}

// Keeps `concurrency` requests open, all of the same length: each pick opens one on the picked
// server (in_flight + 1), and once `concurrency` are open the oldest closes. Returns the picks.
std::map<uint32_t, int> pickUnderLoad(LoadBalancer& lb, const Pool& pool, int picks, size_t concurrency) {
  std::map<uint32_t, int> counts;
  std::deque<const Server*> open;
  for (int i = 0; i < picks; ++i) {
    const Server* s = lb.pick({});
    if (s == nullptr) continue;
    counts[s->index]++;
    counters(*s).in_flight.add();
    open.push_back(s);
    if (open.size() > concurrency) {
      counters(*open.front()).in_flight.sub();
      open.pop_front();
    }
  }
  for (const Server* s : open) counters(*s).in_flight.sub();
  (void)pool;
  return counts;
}

void expectShares(const std::map<uint32_t, int>& counts, const std::vector<double>& shares,
                  double tolerance) {
  int total = 0;
  for (auto [index, n] : counts) total += n;
  ASSERT_GT(total, 0);
  for (uint32_t i = 0; i < shares.size(); ++i) {
    double got = counts.count(i) ? static_cast<double>(counts.at(i)) / total : 0.0;
    EXPECT_NEAR(got, shares[i], tolerance) << "server " << i;
  }
}

// ---- makeLoadBalancer -----------------------------------------------------------------------

TEST(MakeLoadBalancer, FollowsTheConfiguredAlgorithm) {
  auto is = [](LbAlgorithm a, auto* type) {
    Pool pool = makePool({1, 1}, 1, algorithmConfig(a));
    auto lb = makeLoadBalancer(pool);
    return dynamic_cast<decltype(type)>(lb.get()) != nullptr;
  };
  EXPECT_TRUE(is(LbAlgorithm::RoundRobin, static_cast<RoundRobin*>(nullptr)));
  EXPECT_TRUE(is(LbAlgorithm::LeastConnections, static_cast<LeastConnections*>(nullptr)));
  EXPECT_TRUE(is(LbAlgorithm::LeastResponseTime, static_cast<LeastResponseTime*>(nullptr)));
  EXPECT_TRUE(is(LbAlgorithm::RandomTwoChoices, static_cast<RandomTwoChoices*>(nullptr)));
  EXPECT_TRUE(is(LbAlgorithm::ConsistentHash, static_cast<ConsistentHash*>(nullptr)));
  Pool bare = makePool({1, 1});  // no configuration (tests, tools): round robin
  EXPECT_NE(dynamic_cast<RoundRobin*>(makeLoadBalancer(bare).get()), nullptr);
}

TEST(MakeLoadBalancer, OnlyHashingPoolsGetATable) {
  EXPECT_FALSE(makePool({1, 1}, 1, algorithmConfig(LbAlgorithm::ConsistentHash)).maglev.empty());
  EXPECT_TRUE(makePool({1, 1}, 1, algorithmConfig(LbAlgorithm::LeastConnections)).maglev.empty());
}

// ---- what every algorithm may pick ------------------------------------------------------------

class EveryAlgorithm : public ::testing::TestWithParam<LbAlgorithm> {
 protected:
  // Picks with many keys, so that consistent hashing visits the whole table too.
  std::map<uint32_t, int> picks(LoadBalancer& lb, std::vector<uint32_t> excluded, int n = 2000) {
    std::map<uint32_t, int> counts;
    for (int i = 0; i < n; ++i) {
      PickContext ctx{excluded, kNow, true, hashKey("client-" + std::to_string(i))};
      if (const Server* s = lb.pick(ctx)) counts[s->index]++;
    }
    return counts;
  }
  static constexpr uint64_t kNow = 1'000'000;
};

TEST_P(EveryAlgorithm, SkipsServersThatCannotTakeARequest) {
  std::vector<Server> servers;
  for (uint32_t i = 0; i < 7; ++i) servers.push_back(makeServer(i, 1));
  servers[0].drain = true;
  servers[1].enabled = false;
  servers[2].state->healthy = false;
  servers[3].state->ejected_until_ms = kNow + 1000;
  servers[4].max_connections = 3;
  servers[4].state->limited_in_use = 3;
  // 5 is excluded (already tried), 6 is fine.
  Pool pool = makePool(servers, algorithmConfig(GetParam()));
  auto lb = makeLoadBalancer(pool);
  EXPECT_EQ(picks(*lb, {5}), (std::map<uint32_t, int>{{6, 2000}}));
  // Under its limit again, 4 is used; once 6 is tried too, only 4 is left.
  pool.servers[4].state->limited_in_use = 2;
  auto both = picks(*lb, {5});
  EXPECT_GT(both[4], 0);
  EXPECT_GT(both[6], 0);
  EXPECT_EQ(both[4] + both[6], 2000);
  EXPECT_EQ(picks(*lb, {5, 6}), (std::map<uint32_t, int>{{4, 2000}}));
  // Only the ejected server is left: the panic rule uses it rather than failing.
  EXPECT_EQ(picks(*lb, {4, 5, 6}), (std::map<uint32_t, int>{{3, 2000}}));
  pool.servers[3].state->healthy = false;
  EXPECT_TRUE(picks(*lb, {4, 5, 6}).empty());
}

TEST_P(EveryAlgorithm, PanicUsesEjectedServersWhenAllAre) {
  Pool pool = makePool({1, 2, 1}, 1, algorithmConfig(GetParam()));
  for (const Server& s : pool.servers) s.state->ejected_until_ms = kNow + 1000;
  pool.servers[2].state->healthy = false;  // down stays down, panic or not
  auto lb = makeLoadBalancer(pool);
  auto counts = picks(*lb, {});
  EXPECT_EQ(counts.count(2), 0u);
  EXPECT_EQ(counts[0] + counts[1], 2000);
  // One ejection expired: that server takes everything again.
  pool.servers[1].state->ejected_until_ms = kNow;
  EXPECT_EQ(picks(*lb, {}), (std::map<uint32_t, int>{{1, 2000}}));
}

TEST_P(EveryAlgorithm, EmptyAndAllDisabledPoolsPickNothing) {
  Pool empty = makePool(std::vector<uint32_t>{}, 1, algorithmConfig(GetParam()));
  EXPECT_TRUE(picks(*makeLoadBalancer(empty), {}, 10).empty());
  std::vector<Server> servers{makeServer(0, 1), makeServer(1, 1)};
  servers[0].enabled = false;
  servers[1].drain = true;
  Pool off = makePool(servers, algorithmConfig(GetParam()));
  EXPECT_TRUE(picks(*makeLoadBalancer(off), {}, 10).empty());
}

INSTANTIATE_TEST_SUITE_P(Algorithms, EveryAlgorithm,
                         ::testing::Values(LbAlgorithm::RoundRobin, LbAlgorithm::LeastConnections,
                                           LbAlgorithm::LeastResponseTime,
                                           LbAlgorithm::RandomTwoChoices, LbAlgorithm::ConsistentHash),
                         [](const auto& info) { return std::string(config::toString(info.param)); });

// ---- least connections ----------------------------------------------------------------------

TEST(LeastConnections, PrefersTheLeastLoadedServer) {
  Pool pool = makePool({1, 1, 1});
  setInFlight(pool.servers[0], 5);
  setInFlight(pool.servers[1], 2);
  setInFlight(pool.servers[2], 7);
  LeastConnections lb(pool);
  EXPECT_EQ(countPicks(lb, 100), (std::map<uint32_t, int>{{1, 100}}));
  setInFlight(pool.servers[0], 1);
  EXPECT_EQ(lb.pick({})->index, 0u);
}

TEST(LeastConnections, LoadIsRelativeToWeight) {
  Pool pool = makePool({1, 3});
  LeastConnections lb(pool);
  setInFlight(pool.servers[0], 1);  // 1/1
  setInFlight(pool.servers[1], 2);  // 2/3 < 1
  EXPECT_EQ(lb.pick({})->index, 1u);
  setInFlight(pool.servers[1], 4);  // 4/3 > 1
  EXPECT_EQ(lb.pick({})->index, 0u);
  setInFlight(pool.servers[1], 3);  // 3/3 == 1: a tie, shared by weight
  auto counts = countPicks(lb, 100);
  EXPECT_EQ(counts[0], 25);
  EXPECT_EQ(counts[1], 75);
}

TEST(LeastConnections, IdleServersShareByWeight) {
  // Requests one after another never overlap: every pick sees idle servers, and the weights
  // still decide the shares (a "+1" rule would send them all to the heaviest server).
  Pool pool = makePool({1, 2});
  LeastConnections lb(pool);
  auto counts = countPicks(lb, 300);
  EXPECT_EQ(counts[0], 100);
  EXPECT_EQ(counts[1], 200);
}

TEST(LeastConnections, TiesAreTakenInTurns) {
  Pool pool = makePool({1, 1, 1, 1});
  LeastConnections lb(pool);
  EXPECT_EQ(countPicks(lb, 4000), (std::map<uint32_t, int>{{0, 1000}, {1, 1000}, {2, 1000}, {3, 1000}}));
  // A tie between some of the servers only is shared evenly too (a rotating start would give the
  // server after the busy one a double share).
  Pool three = makePool({1, 1, 1});
  setInFlight(three.servers[1], 10);
  LeastConnections lb3(three);
  EXPECT_EQ(countPicks(lb3, 1000), (std::map<uint32_t, int>{{0, 500}, {2, 500}}));
}

TEST(LeastConnections, InstancesStartAtDifferentServers) {
  Pool pool = makePool({1, 1, 1, 1, 1, 1, 1, 1});
  std::map<uint32_t, int> first;
  for (int i = 0; i < 64; ++i) first[LeastConnections(pool).pick({})->index]++;
  EXPECT_GT(first.size(), 1u);
}

TEST(LeastConnections, WeightsHonouredUnderLoad) {
  Pool pool = makePool({1, 2, 3});
  LeastConnections lb(pool);
  expectShares(pickUnderLoad(lb, pool, 60000, 300), {1 / 6.0, 2 / 6.0, 3 / 6.0}, 0.01);
}

TEST(LeastConnections, CountsAreTheSumOverWorkers) {
  Pool pool = makePool({1, 1}, 2);
  setInFlight(pool.servers[0], 5, 0);  // worker 0's requests
  setInFlight(pool.servers[1], 3, 1);  // worker 1's requests
  // 5 against 3 for both workers (each one's own counts would say the opposite to worker 1).
  LeastConnections worker0(pool), worker1(pool);
  EXPECT_EQ(worker0.pick({})->index, 1u);
  EXPECT_EQ(worker1.pick({})->index, 1u);
  EXPECT_EQ(inFlight(pool.servers[0]), 5u);
}

TEST(LeastConnections, FairAcrossTwoWorkersWithLongAndShortRequests) {
  // Two workers, each with its own balancer and its own counter slots; server 0 answers ten
  // times slower than the others. Every step one request arrives, alternately at each worker.
  Pool pool = makePool({1, 1, 1}, 2);
  LeastConnections worker0(pool), worker1(pool);
  LoadBalancer* workers[2] = {&worker0, &worker1};
  using Open = std::tuple<int, uint32_t, size_t>;  // ends at step, server, worker
  std::priority_queue<Open, std::vector<Open>, std::greater<Open>> open;
  std::map<uint32_t, int> picks;
  int worst_spread = 0;
  uint64_t per_worker_max[2] = {0, 0};
  for (int step = 0; step < 20000; ++step) {
    while (!open.empty() && std::get<0>(open.top()) <= step) {
      auto [end, index, worker] = open.top();
      open.pop();
      counters(pool.servers[index], worker).in_flight.sub();
    }
    size_t worker = static_cast<size_t>(step % 2);
    const Server* s = workers[worker]->pick({});
    ASSERT_NE(s, nullptr);
    picks[s->index]++;
    counters(*s, worker).in_flight.add();
    per_worker_max[worker] = std::max(per_worker_max[worker], counters(*s, worker).in_flight.get());
    open.emplace(step + (s->index == 0 ? 50 : 5), s->index, worker);
    uint64_t lo = UINT64_MAX, hi = 0;
    for (const Server& server : pool.servers) {
      lo = std::min(lo, inFlight(server));
      hi = std::max(hi, inFlight(server));
    }
    worst_spread = std::max(worst_spread, static_cast<int>(hi - lo));
  }
  // The engine-wide counts stay level although each worker sees its own requests only through
  // the sum (several requests ending at one server in the same step can open a gap of 2 for a
  // moment): the slow server is given fewer requests, as many as it can keep up with.
  EXPECT_LE(worst_spread, 2);
  EXPECT_LT(picks[0], 20000 * 0.08);
  EXPECT_NEAR(picks[1], picks[2], 20000 * 0.02);
  EXPECT_GT(per_worker_max[0], 0u);
  EXPECT_GT(per_worker_max[1], 0u);
}

// ---- least response time --------------------------------------------------------------------

TEST(LeastResponseTime, PrefersTheFasterServer) {
  Pool pool = makePool({1, 1});
  respond(pool.servers[0], 10'000);
  respond(pool.servers[1], 2'000);
  LeastResponseTime lb(pool);
  EXPECT_EQ(countPicks(lb, 100), (std::map<uint32_t, int>{{1, 100}}));
  // Response time x (in flight + 1): 2 ms x 6 > 10 ms x 1.
  setInFlight(pool.servers[1], 5);
  EXPECT_EQ(lb.pick({})->index, 0u);
}

TEST(LeastResponseTime, AveragesTheWorkersThatHaveSamples) {
  Pool pool = makePool({1, 1}, 2);
  respond(pool.servers[0], 4'000, 0);
  respond(pool.servers[0], 8'000, 1);  // 6 ms
  respond(pool.servers[1], 5'000, 1);  // 5 ms (worker 0 has none)
  LeastResponseTime lb(pool);
  EXPECT_EQ(lb.pick({})->index, 1u);
  EXPECT_EQ(lb.effectiveMicros(0), 6'000u);
  EXPECT_EQ(lb.effectiveMicros(1), 5'000u);
}

TEST(LeastResponseTime, ServerWithoutSamplesIsTried) {
  Pool pool = makePool({1, 1, 1});
  respond(pool.servers[0], 5'000);
  respond(pool.servers[1], 8'000);
  LeastResponseTime lb(pool);
  // The new server counts as fast as the fastest: it shares the idle picks with it.
  auto counts = countPicks(lb, 100);
  EXPECT_EQ(counts[2], 50);
  EXPECT_EQ(counts[0], 50);
  EXPECT_EQ(lb.effectiveMicros(2), 5'000u);
  // ... but not more than its share of the load while its first answers are outstanding.
  setInFlight(pool.servers[2], 3);
  EXPECT_EQ(countPicks(lb, 10), (std::map<uint32_t, int>{{0, 10}}));
}

TEST(LeastResponseTime, WithoutAnySampleItIsWeightedLeastConnections) {
  Pool pool = makePool({1, 1, 1});
  LeastResponseTime lb(pool);
  EXPECT_EQ(countPicks(lb, 300), (std::map<uint32_t, int>{{0, 100}, {1, 100}, {2, 100}}));
  setInFlight(pool.servers[0], 2);
  EXPECT_EQ(countPicks(lb, 10).count(0), 0u);
}

TEST(LeastResponseTime, WeightsHonouredUnderLoad) {
  Pool pool = makePool({1, 2, 3});
  for (const Server& s : pool.servers) respond(s, 3'000);
  LeastResponseTime lb(pool);
  expectShares(pickUnderLoad(lb, pool, 60000, 300), {1 / 6.0, 2 / 6.0, 3 / 6.0}, 0.01);
}

TEST(LeastResponseTime, SlowOnceServerGetsTrafficWhenTheOthersSlowDown) {
  Pool pool = makePool({1, 1});
  respond(pool.servers[0], 100'000);  // slow once
  respond(pool.servers[1], 10'000);
  LeastResponseTime lb(pool);
  EXPECT_EQ(countPicks(lb, 50), (std::map<uint32_t, int>{{1, 50}}));
  for (int i = 0; i < 30; ++i) respond(pool.servers[1], 300'000);  // the other one slows down
  EXPECT_GT(averageResponseMicros(pool.servers[1]), 100'000u);
  EXPECT_EQ(countPicks(lb, 50), (std::map<uint32_t, int>{{0, 50}}));
}

TEST(LeastResponseTime, StaleSlowServerDecaysTowardThePoolAndIsTriedAgain) {
  Pool pool = makePool({1, 1});
  const Server& slow = pool.servers[0];
  const Server& fast = pool.servers[1];
  respond(slow, 100'000);
  respond(fast, 1'000);
  LeastResponseTime lb(pool);
  // The fast server keeps answering (a response every 100 ms); the slow one gets nothing.
  std::map<uint32_t, int> early, later;
  uint64_t first_retry_ms = 0;
  for (uint64_t now = 0; now <= 120'000; now += 100) {
    respond(fast, 1'000);
    PickContext ctx;
    ctx.now_ms = now;
    const Server* s = lb.pick(ctx);
    ASSERT_NE(s, nullptr);
    (now <= LeastResponseTime::kStaleAfterMs ? early : later)[s->index]++;
    if (s == &slow && first_retry_ms == 0) first_retry_ms = now;
  }
  EXPECT_EQ(early.count(0), 0u) << "not while its slowness is recent";
  EXPECT_GT(later[0], 0) << "tried again once its belief decayed";
  EXPECT_GT(first_retry_ms, 10'000u);
  EXPECT_LT(first_retry_ms, 60'000u);
  EXPECT_EQ(lb.effectiveMicros(0), 1'000u);
  // Its new answer is slow again: that belief is fresh, the server is avoided again.
  respond(slow, 100'000);
  PickContext ctx;
  ctx.now_ms = 120'100;
  EXPECT_EQ(countPicks(lb, 20, ctx), (std::map<uint32_t, int>{{1, 20}}));
  EXPECT_GT(lb.effectiveMicros(0), 50'000u);
}

TEST(LeastResponseTime, HalfwayThroughDecayIsBetweenBeliefAndTarget) {
  Pool pool = makePool({1, 1});
  respond(pool.servers[0], 65'000);
  respond(pool.servers[1], 1'000);
  LeastResponseTime lb(pool);
  PickContext ctx;
  ctx.now_ms = 1;
  lb.pick(ctx);
  // Three half-lives after it went stale the server's excess of 64 ms is down to 8 ms. The fast
  // server keeps answering.
  respond(pool.servers[1], 1'000);
  ctx.now_ms = 1 + LeastResponseTime::kStaleAfterMs + 3 * LeastResponseTime::kHalfLifeMs;
  lb.pick(ctx);
  EXPECT_EQ(lb.effectiveMicros(0), 9'000u);
  EXPECT_EQ(lb.effectiveMicros(1), 1'000u);
}

// ---- random two choices -----------------------------------------------------------------------

TEST(RandomTwoChoices, IdleServersArePickedInProportionToWeights) {
  Pool pool = makePool({1, 2, 3, 4});
  RandomTwoChoices lb(pool);
  expectShares(countPicks(lb, 100000), {0.1, 0.2, 0.3, 0.4}, 0.01);
}

TEST(RandomTwoChoices, AvoidsALoadedServer) {
  Pool pool = makePool({1, 1, 1, 1, 1, 1, 1, 1, 1, 1});
  setInFlight(pool.servers[3], 20);
  RandomTwoChoices lb(pool);
  auto counts = countPicks(lb, 20000);
  EXPECT_EQ(counts.count(3), 0u);  // it loses every comparison
  for (uint32_t i = 0; i < 10; ++i) {
    if (i == 3) continue;
    EXPECT_NEAR(counts[i], 20000 / 9, 300) << i;
  }
  // Two servers: both are always drawn, the less loaded relative to weight wins.
  Pool two = makePool({1, 4});
  setInFlight(two.servers[0], 1);  // 1/1
  setInFlight(two.servers[1], 3);  // 3/4
  RandomTwoChoices lb2(two);
  EXPECT_EQ(countPicks(lb2, 100), (std::map<uint32_t, int>{{1, 100}}));
}

TEST(RandomTwoChoices, WeightsHonouredUnderLoad) {
  Pool pool = makePool({1, 2, 3});
  RandomTwoChoices lb(pool);
  expectShares(pickUnderLoad(lb, pool, 60000, 300), {1 / 6.0, 2 / 6.0, 3 / 6.0}, 0.02);
}

TEST(RandomTwoChoices, OneUsableServerLeft) {
  Pool pool = makePool({5, 1, 5});
  RandomTwoChoices lb(pool);
  EXPECT_EQ(countPicks(lb, 100, PickContext{std::vector<uint32_t>{0, 2}}),
            (std::map<uint32_t, int>{{1, 100}}));
}

TEST(RandomTwoChoices, InstancesDrawDifferentSequences) {
  Pool pool = makePool(std::vector<uint32_t>(16, 1));
  RandomTwoChoices a(pool), b(pool);
  int same = 0;
  for (int i = 0; i < 100; ++i) same += a.pick({}) == b.pick({});
  EXPECT_LT(same, 50);
}

}  // namespace
}  // namespace ballast::lb
