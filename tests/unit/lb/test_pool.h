// Pools for the balancer tests: servers "p/10.0.0.<n>:80" with the given weights, their shared
// state sized for `workers` workers, and counters written the way the proxy writes them.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "lb/balancer.h"

namespace ballast::lb::testing {

// A configuration naming the algorithm (the pool keeps a pointer to it: static storage).
inline const config::Pool* algorithmConfig(config::LbAlgorithm algorithm) {
  static const std::array<config::Pool, 5> configs = [] {
    std::array<config::Pool, 5> c;
    c[0].lb_algorithm = config::LbAlgorithm::RoundRobin;
    c[1].lb_algorithm = config::LbAlgorithm::LeastConnections;
    c[2].lb_algorithm = config::LbAlgorithm::LeastResponseTime;
    c[3].lb_algorithm = config::LbAlgorithm::RandomTwoChoices;
    c[4].lb_algorithm = config::LbAlgorithm::ConsistentHash;
    return c;
  }();
  for (const config::Pool& c : configs)
    if (c.lb_algorithm == algorithm) return &c;
  return nullptr;
}

inline std::string serverId(uint32_t n) { return "p/10.0.0." + std::to_string(n) + ":80"; }

inline Server makeServer(uint32_t n, uint32_t weight, size_t workers = 1) {
  Server s;
  s.id = serverId(n);
  s.address_text = s.id.substr(2);
  s.weight = weight;
  s.state = std::make_shared<ServerState>(s.id, workers, n);
  return s;
}

// Adds the servers (indexes set), then prepares the pool.
inline Pool makePool(const std::vector<Server>& servers, const config::Pool* config = nullptr) {
  Pool pool;
  pool.name = "p";
  pool.config = config;
  for (const Server& s : servers) {
    pool.servers.push_back(s);
    pool.servers.back().index = static_cast<uint32_t>(pool.servers.size() - 1);
  }
  preparePool(pool);
  return pool;
}

// Servers 0..n-1 with these weights.
inline Pool makePool(const std::vector<uint32_t>& weights, size_t workers = 1,
                     const config::Pool* config = nullptr) {
  std::vector<Server> servers;
  for (uint32_t i = 0; i < weights.size(); ++i) servers.push_back(makeServer(i, weights[i], workers));
  return makePool(servers, config);
}

inline ServerCounters& counters(const Server& s, size_t worker = 0) {
  return s.state->stats.per_worker[worker];
}

inline void setInFlight(const Server& s, uint64_t n, size_t worker = 0) {
  counters(s, worker).in_flight.set(n);
}

// One response of `us` microseconds seen by `worker`.
inline void respond(const Server& s, uint64_t us, size_t worker = 0) {
  recordResponseTime(counters(s, worker), us);
}

}  // namespace ballast::lb::testing
