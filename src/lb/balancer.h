// Load-balancing algorithms behind one interface. Each worker owns its own instance per pool, so
// algorithm state needs no locks; what must be seen engine-wide (round-robin position, counts of
// requests in flight, response times) is read from the pool and the servers' shared state.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "lb/pool.h"

namespace ballast::lb {

struct PickContext {
  std::span<const uint32_t> excluded;  // server indexes already tried for this request
  uint64_t now_ms = 0;                 // monotonic, for ejection expiry
  bool has_hash = false;               // consistent_hash: the client's key was found
  uint64_t hash = 0;                   // its hash (hashKey())
};

class LoadBalancer {
 public:
  virtual ~LoadBalancer() = default;
  // A usable server not in ctx.excluded, or nullptr when there is none.
  virtual const Server* pick(const PickContext& ctx) = 0;
};

// The algorithm the pool's configuration names, for one worker.
std::unique_ptr<LoadBalancer> makeLoadBalancer(const Pool& pool);

// A server may take a new request: enabled, not draining, healthy, not ejected (unless
// ignore_ejection), under its connection limit, and not already tried.
bool usable(const Server& s, const PickContext& ctx, bool ignore_ejection = false);

// Requests in flight (HTTP) or connections (TCP) at the server, all workers together.
uint64_t inFlight(const Server& s);
// Moving average of the server's response times over the workers that have seen any (µs), or 0
// when none has.
uint64_t averageResponseMicros(const Server& s);

// Stable 64-bit hash of a key (same value in every process and on every machine: several
// service engines must agree on it).
uint64_t hashKey(std::string_view key);

// Weighted round robin over the pool's shared order: over any window of sum(weights) picks each
// server gets exactly its weight, interleaved rather than in bursts. A turn that falls on a server
// that cannot be used (disabled, already tried) is drawn again, so the others keep their shares.
class RoundRobin final : public LoadBalancer {
 public:
  explicit RoundRobin(const Pool& pool) : pool_(pool) {}
  const Server* pick(const PickContext& ctx) override;

 private:
  const Server* pickOnce(const PickContext& ctx, bool ignore_ejection);
  const Pool& pool_;
};

// The interleaved order behind RoundRobin: server indexes, each appearing weight/gcd times,
// spread evenly (stride scheduling: the next server is the one with the earliest next turn).
std::vector<uint32_t> weightedOrder(const std::vector<Server>& servers);

}  // namespace ballast::lb
