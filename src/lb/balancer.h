// Load-balancing algorithms behind one interface. Each worker owns its own instance per pool, so
// algorithm state needs no locks; what must be seen engine-wide (round-robin position, counts of
// requests in flight, response times) is read from the pool and the servers' shared state.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

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
// ignore_ejection), under its connection limit, and not already tried. In two parts: what the
// configuration snapshot says (fixed for the life of the pool), and what changes at run time.
// Inline: the algorithms ask it of every server they consider.
inline bool takesNewTraffic(const Server& s) { return s.enabled && !s.drain; }

inline bool usableNow(const ServerState& st, uint32_t max_connections, uint32_t index,
                      const PickContext& ctx, bool ignore_ejection) {
  if (!st.healthy.load(std::memory_order_relaxed)) return false;
  if (!ignore_ejection && st.ejected(ctx.now_ms)) return false;
  if (max_connections != 0 &&
      st.limited_in_use.load(std::memory_order_relaxed) >= static_cast<int32_t>(max_connections))
    return false;
  for (uint32_t tried : ctx.excluded)
    if (tried == index) return false;
  return true;
}

inline bool usable(const Server& s, const PickContext& ctx, bool ignore_ejection = false) {
  return takesNewTraffic(s) && usableNow(*s.state, s.max_connections, s.index, ctx, ignore_ejection);
}

// Requests in flight (HTTP) or connections (TCP) at the server, all workers together.
inline uint64_t inFlight(const Server& s) {
  return s.state->stats.per_worker.sum([](const ServerCounters& c) { return c.in_flight.get(); });
}
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

// What the scanning algorithms (least connections, least response time) read of a server, packed
// per instance: only servers that the configuration lets take traffic (enabled, not draining,
// weight > 0), with direct pointers to their shared state and per-worker counters.
struct Candidate {
  const ServerState* state;
  const ServerCounters* slots;  // one per worker
  uint32_t workers;
  uint32_t weight;
  uint32_t max_connections;
  uint32_t index;  // in the pool
};
std::vector<Candidate> candidates(const Pool& pool);

// Least connections (as NGINX's least_conn): the usable server with the fewest requests (HTTP) or
// connections (TCP) in flight relative to its weight, compared exactly (cross products), summed
// over all workers. Servers tied at the lowest load share by smooth weighted round robin, so idle
// servers get requests in proportion to their weights and equal ones take turns (each instance
// starts its turns at a different server). A pick reads every server's counters:
// O(servers x workers); prefer random_two_choices for pools of hundreds of servers.
class LeastConnections final : public LoadBalancer {
 public:
  explicit LeastConnections(const Pool& pool);
  const Server* pick(const PickContext& ctx) override;

 private:
  const Server* pickOnce(const PickContext& ctx, bool ignore_ejection);
  const Pool& pool_;
  std::vector<Candidate> candidates_;
  std::vector<int64_t> credit_;     // per server: smooth weighted round-robin credit among ties
  std::vector<uint64_t> loads_ = std::vector<uint64_t>(pool_.servers.size(), 0);  // scratch
};

// Least response time: the lowest averageResponseMicros x (inFlight + 1) / weight.
//  - A server with no response time yet is treated as being as fast as the fastest server that
//    has one (1 µs when none has): it is tried first, and the in-flight factor still limits how
//    much it gets before its first responses come back.
//  - What this instance believes of a server that has had no new response for kStaleAfterMs (a
//    slow server that stopped getting traffic) decays toward the average of the servers that are
//    answering, halving the difference every kHalfLifeMs, so it is tried again; its next responses
//    replace the belief. This needs ctx.now_ms (monotonic); without a clock nothing decays.
// Ties go to the server this instance picked least recently. O(servers x workers) per pick.
class LeastResponseTime final : public LoadBalancer {
 public:
  static constexpr uint64_t kStaleAfterMs = 2000;
  static constexpr uint64_t kHalfLifeMs = 2000;

  explicit LeastResponseTime(const Pool& pool);
  const Server* pick(const PickContext& ctx) override;
  // The response time this instance uses for server `index` as of its last pick (tests, status).
  uint64_t effectiveMicros(uint32_t index) const { return servers_[index].effective_us; }

 private:
  struct View {
    uint64_t samples = 0;                   // responses seen so far, all workers together
    uint64_t changed_ms = UINT64_MAX;       // when `samples` last changed (UINT64_MAX: never seen)
    uint64_t effective_us = 0;              // response time used for the pick in progress
    uint64_t in_flight = 0;
  };
  void observe(uint64_t now_ms);
  const Server* pickOnce(const PickContext& ctx, bool ignore_ejection);
  const Pool& pool_;
  std::vector<Candidate> candidates_;
  std::vector<View> servers_;  // per server of the pool
  std::vector<uint64_t> last_pick_;
  uint64_t clock_ = 0;
};

// Power of two choices: two distinct usable servers drawn at random in proportion to their
// weights; the one with fewer requests in flight relative to its weight (inFlight / weight,
// compared exactly) wins, the first drawn on a tie. Idle servers tie, so at low load the picks
// follow the weights; under load the busier of the two is avoided. O(1): an alias table (built
// per instance) and a splitmix64 generator (seeded per instance).
class RandomTwoChoices final : public LoadBalancer {
 public:
  explicit RandomTwoChoices(const Pool& pool);
  const Server* pick(const PickContext& ctx) override;

 private:
  struct Column {
    uint64_t threshold;  // out of total_weight_: below it the column's own server, else alias
    uint32_t alias;
  };
  uint64_t next();
  uint32_t draw();
  const Server* drawUsable(const PickContext& ctx, bool ignore_ejection, const Server* other);
  const Server* scanUsable(const PickContext& ctx, bool ignore_ejection, const Server* other);
  const Server* pickOnce(const PickContext& ctx, bool ignore_ejection);
  const Pool& pool_;
  std::vector<Column> columns_;
  uint64_t total_weight_ = 0;
  uint64_t rng_;
};

// Consistent hashing over the pool's Maglev table (lb/maglev.h): a key with hash h goes to
// table[h % size]; when that server cannot be used, to the next usable server further along the
// table (the same replacement on every engine; the keys return when the server is usable again).
// Servers that are disabled, draining or of weight 0 are not in the table. Without a key
// (!ctx.has_hash: no such header or cookie) the request is placed by round robin.
class ConsistentHash final : public LoadBalancer {
 public:
  explicit ConsistentHash(const Pool& pool);
  const Server* pick(const PickContext& ctx) override;

 private:
  const Server* walk(const PickContext& ctx, bool ignore_ejection);
  const Pool& pool_;
  RoundRobin round_robin_;
  uint32_t members_ = 0;               // distinct servers in the table
  std::vector<uint32_t> rejected_;     // per server: the walk (generation) that found it unusable
  uint32_t generation_ = 0;
};

// The interleaved order behind RoundRobin: server indexes, each appearing weight/gcd times,
// spread evenly (stride scheduling: the next server is the one with the earliest next turn).
std::vector<uint32_t> weightedOrder(const std::vector<Server>& servers);

}  // namespace ballast::lb
