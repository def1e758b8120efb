#include "lb/balancer.h"

#include <algorithm>
#include <numeric>
#include <queue>

#include "lb/maglev.h"

namespace ballast::lb {

std::unique_ptr<LoadBalancer> makeLoadBalancer(const Pool& pool) {
  switch (pool.config ? pool.config->lb_algorithm : config::LbAlgorithm::RoundRobin) {
    case config::LbAlgorithm::LeastConnections:
      return std::make_unique<LeastConnections>(pool);
    case config::LbAlgorithm::LeastResponseTime:
      return std::make_unique<LeastResponseTime>(pool);
    case config::LbAlgorithm::RandomTwoChoices:
      return std::make_unique<RandomTwoChoices>(pool);
    case config::LbAlgorithm::ConsistentHash:
      return std::make_unique<ConsistentHash>(pool);
    case config::LbAlgorithm::RoundRobin:
      break;
  }
  return std::make_unique<RoundRobin>(pool);
}

void preparePool(Pool& pool, bool hashed) {
  pool.rr_order = weightedOrder(pool.servers);
  pool.by_id.clear();
  for (const Server& s : pool.servers) pool.by_id.emplace(s.id, s.index);
  // The Maglev table (256 KiB for up to 655 servers, a few milliseconds to build) only for the
  // pools that hash, and for pools without a configuration (tests, tools).
  if (hashed || pool.config == nullptr ||
      pool.config->lb_algorithm == config::LbAlgorithm::ConsistentHash)
    pool.maglev = buildMaglev(pool.servers);
  else
    pool.maglev.clear();
}

uint64_t averageResponseMicros(const Server& s) {
  const auto& w = s.state->stats.per_worker;
  uint64_t sum = 0, n = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (w[i].ewma_samples.get() == 0) continue;
    sum += w[i].ewma_us.get();
    ++n;
  }
  return n == 0 ? 0 : sum / n;
}

uint64_t hashKey(std::string_view key) {
  // FNV-1a, then a murmur3-style finalizer to spread the bits: stable everywhere.
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

std::vector<uint32_t> weightedOrder(const std::vector<Server>& servers) {
  uint32_t g = 0;
  for (const Server& s : servers) g = std::gcd(g, s.weight);
  if (g == 0) return {};
  // Server i's k-th turn is due at (k + 1) / w_i; compared exactly as cross products.
  struct Turn {
    uint64_t k;
    uint32_t weight;
    uint32_t index;
    bool operator>(const Turn& o) const {
      uint64_t a = (k + 1) * o.weight, b = (o.k + 1) * weight;
      return a != b ? a > b : index > o.index;
    }
  };
  std::priority_queue<Turn, std::vector<Turn>, std::greater<Turn>> due;
  uint64_t total = 0;
  for (const Server& s : servers) {
    if (s.weight == 0) continue;
    due.push({0, s.weight / g, s.index});
    total += s.weight / g;
  }
  std::vector<uint32_t> order;
  order.reserve(total);
  while (order.size() < total) {
    Turn t = due.top();
    due.pop();
    order.push_back(t.index);
    ++t.k;
    due.push(t);
  }
  return order;
}

const Server* RoundRobin::pick(const PickContext& ctx) {
  if (const Server* s = pickOnce(ctx, false)) return s;
  // Every usable server is ejected: ejections give way (the panic rule) rather than failing.
  return pickOnce(ctx, true);
}

const Server* RoundRobin::pickOnce(const PickContext& ctx, bool ignore_ejection) {
  const std::vector<uint32_t>& order = pool_.rr_order;
  size_t n = order.size();
  // A turn that falls on a server that cannot be used is not passed to its neighbour in the
  // order (that would give the neighbour a double share): a new turn is drawn instead, so the
  // usable servers keep their proportions.
  for (size_t attempt = 0; attempt < n; ++attempt) {
    uint64_t turn = pool_.rr_next->fetch_add(1, std::memory_order_relaxed);
    const Server& s = pool_.servers[order[turn % n]];
    if (usable(s, ctx, ignore_ejection)) return &s;
  }
  // Unlucky draws (or almost nothing usable): take the first usable server in order.
  for (uint32_t index : order)
    if (usable(pool_.servers[index], ctx, ignore_ejection)) return &pool_.servers[index];
  return nullptr;
}

}  // namespace ballast::lb
