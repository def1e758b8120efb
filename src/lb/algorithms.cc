// The load-balancing algorithms other than round robin (lb/balancer.h describes each). The hot
// path of every pick allocates nothing: per-instance scratch is sized when the instance is made.
#include <algorithm>
#include <atomic>
#include <limits>

#include "lb/balancer.h"
#include "lb/maglev.h"

namespace ballast::lb {

namespace {

__extension__ typedef unsigned __int128 u128;

constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();
// Bounds that keep the products of the comparisons below within 128 bits:
// response time (2^40 µs = 12 days) x in flight (2^32) x weight (2^32) < 2^104.
constexpr uint64_t kMaxMicros = uint64_t{1} << 40;
constexpr uint64_t kMaxInFlight = uint64_t{1} << 32;

uint64_t mix64(uint64_t x) {  // splitmix64's finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// A different seed for every instance (workers must not make the same "random" choices).
uint64_t instanceSeed(const void* self) {
  static std::atomic<uint64_t> instances{0};
  uint64_t n = instances.fetch_add(1, std::memory_order_relaxed);
  return mix64(n * 0x9e3779b97f4a7c15ULL ^ static_cast<uint64_t>(reinterpret_cast<uintptr_t>(self)));
}

// A uniform value in [0, range) from 64 random bits (Lemire's multiply-shift, no division).
uint64_t below(uint64_t random, uint64_t range) {
  return static_cast<uint64_t>((static_cast<u128>(random) * range) >> 64);
}

// Tie-breaking by recency: the per-instance "last picked" clocks start rotated by a per-instance
// offset, so each instance begins its turns at a different server.
std::vector<uint64_t> initialPickClocks(size_t n, uint64_t seed) {
  std::vector<uint64_t> clocks(n);
  size_t offset = n == 0 ? 0 : seed % n;
  for (size_t i = 0; i < n; ++i) clocks[i] = (i + n - offset) % n;
  return clocks;
}

// `value` moved toward `target`, the gap halving every half_life_ms (linear within a half-life).
uint64_t decayToward(uint64_t value, uint64_t target, uint64_t elapsed_ms, uint64_t half_life_ms) {
  uint64_t halvings = elapsed_ms / half_life_ms;
  if (halvings >= 64) return target;
  bool above = value > target;
  uint64_t gap = (above ? value - target : target - value) >> halvings;
  gap -= (gap / 2) * (elapsed_ms % half_life_ms) / half_life_ms;
  return above ? target + gap : target - gap;
}

}  // namespace

std::vector<Candidate> candidates(const Pool& pool) {
  std::vector<Candidate> out;
  for (const Server& s : pool.servers) {
    if (!takesNewTraffic(s) || s.weight == 0) continue;
    const auto& slots = s.state->stats.per_worker;
    out.push_back({s.state.get(), slots.size() ? &slots[0] : nullptr,
                   static_cast<uint32_t>(slots.size()), s.weight, s.max_connections, s.index});
  }
  return out;
}

// ---- least connections ----------------------------------------------------------------------

LeastConnections::LeastConnections(const Pool& pool)
    : pool_(pool), candidates_(candidates(pool)), credit_(pool.servers.size(), 0) {
  // Instances start their turns at different servers, so that workers picking at the same time
  // do not all choose the same one.
  uint64_t seed = instanceSeed(this);
  for (size_t i = 0; i < credit_.size(); ++i)
    credit_[i] = static_cast<int64_t>((seed + i) % credit_.size());
}

const Server* LeastConnections::pick(const PickContext& ctx) {
  if (const Server* s = pickOnce(ctx, false)) return s;
  return pickOnce(ctx, true);  // panic: every usable server is ejected
}

const Server* LeastConnections::pickOnce(const PickContext& ctx, bool ignore_ejection) {
  // First the lowest in-flight / weight, exactly (cross products)...
  const Candidate* best = nullptr;
  u128 best_load = 0;
  for (const Candidate& c : candidates_) {
    if (!usableNow(*c.state, c.max_connections, c.index, ctx, ignore_ejection)) continue;
    uint64_t in_flight = 0;
    for (uint32_t w = 0; w < c.workers; ++w) in_flight += c.slots[w].in_flight.get();
    loads_[c.index] = in_flight;
    if (best == nullptr || static_cast<u128>(in_flight) * best->weight < best_load * c.weight) {
      best = &c;
      best_load = in_flight;
    }
  }
  if (best == nullptr) return nullptr;
  // ...then, among the servers tied at it, smooth weighted round robin: idle servers (all tied at
  // zero) get requests in proportion to their weights, and equal ones take turns.
  const Candidate* chosen = nullptr;
  int64_t total = 0;
  for (const Candidate& c : candidates_) {
    if (!usableNow(*c.state, c.max_connections, c.index, ctx, ignore_ejection)) continue;
    if (static_cast<u128>(loads_[c.index]) * best->weight != best_load * c.weight) continue;
    credit_[c.index] += c.weight;
    total += c.weight;
    if (chosen == nullptr || credit_[c.index] > credit_[chosen->index]) chosen = &c;
  }
  credit_[chosen->index] -= total;
  return &pool_.servers[chosen->index];
}

// ---- least response time --------------------------------------------------------------------

LeastResponseTime::LeastResponseTime(const Pool& pool)
    : pool_(pool), candidates_(candidates(pool)), servers_(pool.servers.size()),
      last_pick_(initialPickClocks(pool.servers.size(), instanceSeed(this))),
      clock_(pool.servers.size()) {}

const Server* LeastResponseTime::pick(const PickContext& ctx) {
  observe(ctx.now_ms);
  if (const Server* s = pickOnce(ctx, false)) return s;
  return pickOnce(ctx, true);
}

void LeastResponseTime::observe(uint64_t now_ms) {
  auto stale = [&](const View& v) { return now_ms > v.changed_ms && now_ms - v.changed_ms > kStaleAfterMs; };
  uint64_t fresh_sum = 0, fresh_n = 0, all_sum = 0, all_n = 0, fastest = kMaxMicros;
  for (const Candidate& c : candidates_) {
    View& v = servers_[c.index];
    // One pass over the workers' slots: in flight, and the average of the workers' averages
    // (as averageResponseMicros computes it).
    uint64_t in_flight = 0, samples = 0, ewma_sum = 0, sampled_workers = 0;
    for (uint32_t w = 0; w < c.workers; ++w) {
      const ServerCounters& slot = c.slots[w];
      in_flight += slot.in_flight.get();
      if (uint64_t n = slot.ewma_samples.get()) {
        samples += n;
        ewma_sum += std::min(slot.ewma_us.get(), kMaxMicros);
        ++sampled_workers;
      }
    }
    v.in_flight = std::min(in_flight, kMaxInFlight);
    if (v.changed_ms == kNever || samples != v.samples) {
      v.samples = samples;
      v.changed_ms = now_ms;
    }
    if (sampled_workers == 0) {
      v.effective_us = 0;  // no response yet: settled below
      continue;
    }
    uint64_t avg = std::max<uint64_t>(ewma_sum / sampled_workers, 1);
    v.effective_us = avg;
    all_sum += avg;
    ++all_n;
    fastest = std::min(fastest, avg);
    if (!stale(v)) {
      fresh_sum += avg;
      ++fresh_n;
    }
  }
  // What stale beliefs decay toward: the servers that are answering now (all, if none is).
  uint64_t target = fresh_n ? fresh_sum / fresh_n : (all_n ? all_sum / all_n : 0);
  for (const Candidate& c : candidates_) {
    View& v = servers_[c.index];
    if (v.effective_us == 0)
      v.effective_us = all_n ? fastest : 1;  // explore: as fast as the fastest
    else if (stale(v))
      v.effective_us = decayToward(v.effective_us, target, now_ms - v.changed_ms - kStaleAfterMs,
                                   kHalfLifeMs);
  }
}

const Server* LeastResponseTime::pickOnce(const PickContext& ctx, bool ignore_ejection) {
  const Candidate* best = nullptr;
  u128 best_cost = 0;  // response time x (in flight + 1)
  for (const Candidate& c : candidates_) {
    if (!usableNow(*c.state, c.max_connections, c.index, ctx, ignore_ejection)) continue;
    const View& v = servers_[c.index];
    u128 cost = static_cast<u128>(v.effective_us) * (v.in_flight + 1);
    if (best == nullptr) {
      best = &c;
      best_cost = cost;
      continue;
    }
    u128 mine = cost * best->weight, theirs = best_cost * c.weight;
    if (mine < theirs || (mine == theirs && last_pick_[c.index] < last_pick_[best->index])) {
      best = &c;
      best_cost = cost;
    }
  }
  if (best == nullptr) return nullptr;
  last_pick_[best->index] = ++clock_;
  return &pool_.servers[best->index];
}

// ---- random two choices ---------------------------------------------------------------------

RandomTwoChoices::RandomTwoChoices(const Pool& pool) : pool_(pool), rng_(instanceSeed(this)) {
  // Walker's alias method (Vose's construction) in exact integers: column i is chosen uniformly,
  // then its own server with probability threshold / total, else its alias. Servers that the
  // static configuration keeps out of traffic get weight 0 and are never drawn.
  const std::vector<Server>& servers = pool.servers;
  const uint64_t n = servers.size();
  std::vector<uint64_t> scaled(n);
  for (size_t i = 0; i < n; ++i) {
    const Server& s = servers[i];
    uint64_t w = s.enabled && !s.drain ? s.weight : 0;
    total_weight_ += w;
    scaled[i] = w * n;
  }
  if (total_weight_ == 0) return;
  columns_.resize(n);
  std::vector<uint32_t> small, large;
  for (uint32_t i = 0; i < n; ++i) (scaled[i] < total_weight_ ? small : large).push_back(i);
  while (!small.empty() && !large.empty()) {
    uint32_t s = small.back(), l = large.back();
    small.pop_back();
    columns_[s] = {scaled[s], l};
    scaled[l] -= total_weight_ - scaled[s];
    if (scaled[l] < total_weight_) {
      large.pop_back();
      small.push_back(l);
    }
  }
  for (uint32_t i : small) columns_[i] = {total_weight_, i};
  for (uint32_t i : large) columns_[i] = {total_weight_, i};
}

uint64_t RandomTwoChoices::next() {  // splitmix64
  rng_ += 0x9e3779b97f4a7c15ULL;
  return mix64(rng_);
}

uint32_t RandomTwoChoices::draw() {
  uint64_t col = below(next(), columns_.size());
  const Column& c = columns_[col];
  return below(next(), total_weight_) < c.threshold ? static_cast<uint32_t>(col) : c.alias;
}

const Server* RandomTwoChoices::drawUsable(const PickContext& ctx, bool ignore_ejection,
                                           const Server* other) {
  // A draw that falls on a server that cannot be used is drawn again (the others keep their
  // proportions); after a few misses, a pass over the pool settles it.
  constexpr int kDraws = 4;
  for (int k = 0; k < kDraws; ++k) {
    const Server& s = pool_.servers[draw()];
    if (&s != other && usable(s, ctx, ignore_ejection)) return &s;
  }
  return scanUsable(ctx, ignore_ejection, other);
}

const Server* RandomTwoChoices::scanUsable(const PickContext& ctx, bool ignore_ejection,
                                           const Server* other) {
  // Weighted reservoir sampling: each usable server replaces the choice with probability
  // weight / (weights seen so far).
  const Server* chosen = nullptr;
  uint64_t seen = 0;
  for (const Server& s : pool_.servers) {
    if (s.weight == 0 || &s == other || !usable(s, ctx, ignore_ejection)) continue;
    seen += s.weight;
    if (below(next(), seen) < s.weight) chosen = &s;
  }
  return chosen;
}

const Server* RandomTwoChoices::pick(const PickContext& ctx) {
  if (columns_.empty()) return nullptr;
  if (const Server* s = pickOnce(ctx, false)) return s;
  return pickOnce(ctx, true);
}

const Server* RandomTwoChoices::pickOnce(const PickContext& ctx, bool ignore_ejection) {
  const Server* a = drawUsable(ctx, ignore_ejection, nullptr);
  if (a == nullptr) return nullptr;
  const Server* b = drawUsable(ctx, ignore_ejection, a);
  if (b == nullptr) return a;
  // inFlight(b) / weight(b) < inFlight(a) / weight(a), exactly; a (the first drawn) on a tie.
  u128 load_a = static_cast<u128>(inFlight(*a)) * b->weight;
  u128 load_b = static_cast<u128>(inFlight(*b)) * a->weight;
  return load_b < load_a ? b : a;
}

// ---- consistent hash ------------------------------------------------------------------------

ConsistentHash::ConsistentHash(const Pool& pool)
    : pool_(pool), round_robin_(pool), rejected_(pool.servers.size(), 0) {
  std::vector<bool> present(pool.servers.size(), false);
  for (uint32_t index : pool.maglev)
    if (!present[index]) {
      present[index] = true;
      ++members_;
    }
}

const Server* ConsistentHash::pick(const PickContext& ctx) {
  // No key (no such header or cookie): nothing to be consistent about, spread by round robin.
  if (!ctx.has_hash || pool_.maglev.empty()) return round_robin_.pick(ctx);
  if (const Server* s = walk(ctx, false)) return s;
  return walk(ctx, true);
}

const Server* ConsistentHash::walk(const PickContext& ctx, bool ignore_ejection) {
  const std::vector<uint32_t>& table = pool_.maglev;
  const uint64_t size = table.size();
  uint64_t pos = ctx.hash % size;
  uint32_t index = table[pos];
  if (usable(pool_.servers[index], ctx, ignore_ejection)) return &pool_.servers[index];
  // Walk forward to the first usable server. Each server is asked once per walk (the others are
  // remembered as rejected for this generation), and the walk stops when all have been.
  if (++generation_ == 0) {
    std::fill(rejected_.begin(), rejected_.end(), 0);
    generation_ = 1;
  }
  rejected_[index] = generation_;
  uint32_t rejected = 1;
  for (uint64_t step = 1; step < size && rejected < members_; ++step) {
    if (++pos == size) pos = 0;
    index = table[pos];
    if (rejected_[index] == generation_) continue;
    const Server& s = pool_.servers[index];
    if (usable(s, ctx, ignore_ejection)) return &s;
    rejected_[index] = generation_;
    ++rejected;
  }
  return nullptr;
}

}  // namespace ballast::lb
