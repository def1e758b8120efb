#include "lb/balancer.h"

#include <algorithm>
#include <numeric>
#include <queue>

namespace ballast::lb {

std::unique_ptr<LoadBalancer> makeLoadBalancer(const Pool& pool) {
  switch (pool.config ? pool.config->lb_algorithm : config::LbAlgorithm::RoundRobin) {
    case config::LbAlgorithm::RoundRobin: return std::make_unique<RoundRobin>(pool);
  }
  return std::make_unique<RoundRobin>(pool);
}

void preparePool(Pool& pool) { pool.rr_order = weightedOrder(pool.servers); }

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
  const std::vector<uint32_t>& order = pool_.rr_order;
  size_t n = order.size();
  // A turn that falls on a server that cannot be used is not passed to its neighbour in the
  // order (that would give the neighbour a double share): a new turn is drawn instead, so the
  // usable servers keep their proportions.
  for (size_t attempt = 0; attempt < n; ++attempt) {
    uint64_t turn = pool_.rr_next->fetch_add(1, std::memory_order_relaxed);
    const Server& s = pool_.servers[order[turn % n]];
    if (usable(s, ctx)) return &s;
  }
  // Unlucky draws (or almost nothing usable): take the first usable server in order.
  for (uint32_t index : order)
    if (usable(pool_.servers[index], ctx)) return &pool_.servers[index];
  return nullptr;
}

bool RoundRobin::usable(const Server& s, const PickContext& ctx) {
  return s.enabled &&
         std::find(ctx.excluded.begin(), ctx.excluded.end(), s.index) == ctx.excluded.end();
}

}  // namespace ballast::lb
