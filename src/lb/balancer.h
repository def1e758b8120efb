// Load-balancing algorithms behind one interface. Each worker owns its own instance per pool, so
// algorithm state (round-robin position, ...) needs no locks.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "lb/pool.h"

namespace ballast::lb {

struct PickContext {
  std::span<const uint32_t> excluded;  // server indexes already tried for this request
};

class LoadBalancer {
 public:
  virtual ~LoadBalancer() = default;
  // A usable server not in ctx.excluded, or nullptr when there is none.
  virtual const Server* pick(const PickContext& ctx) = 0;
};

std::unique_ptr<LoadBalancer> makeLoadBalancer(const Pool& pool);

// Weighted round robin over the pool's shared order: over any window of sum(weights) picks each
// server gets exactly its weight, interleaved rather than in bursts. A turn that falls on a server
// that cannot be used (disabled, already tried) is drawn again, so the others keep their shares.
class RoundRobin final : public LoadBalancer {
 public:
  explicit RoundRobin(const Pool& pool) : pool_(pool) {}
  const Server* pick(const PickContext& ctx) override;

 private:
  static bool usable(const Server& s, const PickContext& ctx);
  const Pool& pool_;
};

// The interleaved order behind RoundRobin: server indexes, each appearing weight/gcd times,
// spread evenly (stride scheduling: the next server is the one with the earliest next turn).
std::vector<uint32_t> weightedOrder(const std::vector<Server>& servers);

}  // namespace ballast::lb
