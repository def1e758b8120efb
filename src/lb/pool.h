// Pools and servers as the data path sees them: built once per configuration snapshot, immutable,
// shared by all workers. Counters live in Stats objects that outlive snapshots.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/address.h"
#include "core/stats.h"

namespace ballast::lb {

struct Server {
  std::string id;        // stable identity: "<pool>/<address as written>"
  std::string address_text;
  SocketAddress address;
  uint32_t weight = 1;
  bool enabled = true;
  uint32_t index = 0;    // position in the pool
  std::shared_ptr<ServerStats> stats;
};

struct Pool {
  std::string name;
  const config::Pool* config = nullptr;
  std::vector<Server> servers;
  // Round robin is engine-wide, not per worker: one order (each server as often as its weight,
  // interleaved) and one position shared by all workers, so consecutive requests alternate
  // across the whole engine.
  std::vector<uint32_t> rr_order;
  std::unique_ptr<std::atomic<uint64_t>> rr_next = std::make_unique<std::atomic<uint64_t>>(0);
};

// Fills the pool's derived state (rr_order) once its servers are set.
void preparePool(Pool& pool);

}  // namespace ballast::lb
