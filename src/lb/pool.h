// Pools and servers as the data path sees them: built once per configuration snapshot, immutable,
// shared by all workers. What changes at run time (health, counters) is in ServerState, which
// outlives snapshots.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/address.h"
#include "lb/server_state.h"

namespace ballast::lb {

struct Server {
  std::string id;        // stable identity: "<pool>/<address as written>"
  std::string address_text;
  SocketAddress address;
  uint32_t weight = 1;
  bool enabled = true;
  bool drain = false;
  uint32_t max_connections = 0;
  uint32_t index = 0;    // position in the pool
  std::shared_ptr<ServerState> state;
};

struct Pool {
  std::string name;
  const config::Pool* config = nullptr;
  std::vector<Server> servers;
  std::vector<const config::HealthMonitor*> monitors;  // resolved from config->health_monitors
  // Round robin is engine-wide, not per worker: one order (each server as often as its weight,
  // interleaved) and one position shared by all workers, so consecutive requests alternate
  // across the whole engine.
  std::vector<uint32_t> rr_order;
  std::unique_ptr<std::atomic<uint64_t>> rr_next = std::make_unique<std::atomic<uint64_t>>(0);
  // consistent_hash: the Maglev lookup table (server indexes), prime size.
  std::vector<uint32_t> maglev;
};

// Fills the pool's derived state (rr_order, maglev) once its servers are set.
void preparePool(Pool& pool);

}  // namespace ballast::lb
