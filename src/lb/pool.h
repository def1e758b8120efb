// Pools and servers as the data path sees them: built once per configuration snapshot, immutable,
// shared by all workers. What changes at run time (health, counters) is in ServerState, which
// outlives snapshots.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
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
  // consistent_hash (and persistence's fallback): the Maglev lookup table (server indexes).
  std::vector<uint32_t> maglev;
  struct IdHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, uint32_t, IdHash, std::equal_to<>> by_id;  // server id -> index

  // The server with this id (persistence entries name servers by id), or null.
  const Server* findServer(std::string_view id) const {
    auto it = by_id.find(id);
    return it == by_id.end() ? nullptr : &servers[it->second];
  }
};

// Fills the pool's derived state (rr_order, by_id, maglev) once its servers are set. `hashed`:
// build the Maglev table even if the algorithm does not need it (persistence falls back to it).
void preparePool(Pool& pool, bool hashed = false);

}  // namespace ballast::lb
