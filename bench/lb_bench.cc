// Cost of one pick for each load-balancing algorithm, with 2, 10 and 100 servers.
// Not built by CMake; build and run by hand:
//   g++ -std=c++20 -O2 -DNDEBUG -Isrc bench/lb_bench.cc src/lb/*.cc src/config/*.cc src/core/*.cc
//       -lbenchmark -lyaml-cpp -lfmt -lspdlog -lpthread -o /tmp/lb_bench && /tmp/lb_bench
// Servers have mixed weights (1..4) and some requests in flight; their counters have two worker
// slots (what a two-worker engine reads). One thread picks: no contention on the shared state.
#include <benchmark/benchmark.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "lb/balancer.h"
#include "lb/maglev.h"

namespace {

using ballast::config::LbAlgorithm;
using namespace ballast::lb;

constexpr size_t kWorkers = 2;

const ballast::config::Pool* configFor(LbAlgorithm algorithm) {
  static std::array<ballast::config::Pool, 5> configs;
  auto& c = configs[static_cast<size_t>(algorithm)];
  c.lb_algorithm = algorithm;
  return &c;
}

std::unique_ptr<Pool> makePool(LbAlgorithm algorithm, size_t n) {
  auto pool = std::make_unique<Pool>();
  pool->name = "bench";
  pool->config = configFor(algorithm);
  for (size_t i = 0; i < n; ++i) {
    Server s;
    s.id = "bench/10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256) + ":80";
    s.weight = static_cast<uint32_t>(1 + i % 4);
    s.index = static_cast<uint32_t>(i);
    s.state = std::make_shared<ServerState>(s.id, kWorkers, s.index);
    for (size_t w = 0; w < kWorkers; ++w) {
      auto& c = s.state->stats.per_worker[w];
      c.in_flight.set((i * 7 + w * 3) % 5);
      recordResponseTime(c, 1000 + (i * 37) % 500);
    }
    pool->servers.push_back(std::move(s));
  }
  preparePool(*pool);
  return pool;
}

void pickLoop(benchmark::State& state, LbAlgorithm algorithm, bool one_down = false) {
  auto pool = makePool(algorithm, static_cast<size_t>(state.range(0)));
  if (one_down) pool->servers[0].state->healthy = false;
  auto lb = makeLoadBalancer(*pool);
  std::vector<uint64_t> hashes(1024);
  for (size_t i = 0; i < hashes.size(); ++i) hashes[i] = hashKey("10.1.2." + std::to_string(i));
  PickContext ctx;
  ctx.now_ms = 1'000'000;
  ctx.has_hash = true;
  size_t i = 0;
  for (auto _ : state) {
    ctx.hash = hashes[i++ & 1023];
    const Server* s = lb->pick(ctx);
    benchmark::DoNotOptimize(s);
  }
}

void BM_RoundRobin(benchmark::State& s) { pickLoop(s, LbAlgorithm::RoundRobin); }
void BM_LeastConnections(benchmark::State& s) { pickLoop(s, LbAlgorithm::LeastConnections); }
void BM_LeastResponseTime(benchmark::State& s) { pickLoop(s, LbAlgorithm::LeastResponseTime); }
void BM_RandomTwoChoices(benchmark::State& s) { pickLoop(s, LbAlgorithm::RandomTwoChoices); }
void BM_ConsistentHash(benchmark::State& s) { pickLoop(s, LbAlgorithm::ConsistentHash); }
// The same with one server down: its keys walk on to the next usable server.
void BM_ConsistentHashOneDown(benchmark::State& s) { pickLoop(s, LbAlgorithm::ConsistentHash, true); }

void BM_HashKey(benchmark::State& state) {
  std::string key = "192.168.100.200";
  for (auto _ : state) {
    uint64_t h = hashKey(key);
    benchmark::DoNotOptimize(h);
  }
}

void BM_BuildMaglev(benchmark::State& state) {
  auto pool = makePool(LbAlgorithm::RoundRobin, static_cast<size_t>(state.range(0)));
  for (auto _ : state) {
    auto table = buildMaglev(pool->servers);
    benchmark::DoNotOptimize(table.data());
  }
  state.SetLabel("table " + std::to_string(maglevTableSize(pool->servers.size())));
}

}  // namespace

BENCHMARK(BM_RoundRobin)->Arg(2)->Arg(10)->Arg(100);
BENCHMARK(BM_LeastConnections)->Arg(2)->Arg(10)->Arg(100);
BENCHMARK(BM_LeastResponseTime)->Arg(2)->Arg(10)->Arg(100);
BENCHMARK(BM_RandomTwoChoices)->Arg(2)->Arg(10)->Arg(100);
BENCHMARK(BM_ConsistentHash)->Arg(2)->Arg(10)->Arg(100);
BENCHMARK(BM_ConsistentHashOneDown)->Arg(2)->Arg(10)->Arg(100);
BENCHMARK(BM_HashKey);
BENCHMARK(BM_BuildMaglev)->Arg(10)->Arg(100)->Arg(1000)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
