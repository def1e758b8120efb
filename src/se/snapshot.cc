#include "se/snapshot.h"

#include <algorithm>

namespace ballast::se {

namespace {
// Room for what forwarding adds to a head (X-Forwarded-*, normalised framing fields).
constexpr size_t kHeadGrowth = 4096;
}

std::shared_ptr<const proxy::Snapshot> buildSnapshot(std::shared_ptr<const config::Config> config,
                                                     StatsRegistry& stats) {
  auto snapshot = std::make_shared<proxy::Snapshot>();
  snapshot->config = config;
  for (const config::Pool& p : config->pools) {
    lb::Pool pool;
    pool.name = p.name;
    pool.config = &p;
    for (const config::Server& s : p.servers) {
      lb::Server server;
      server.id = p.name + "/" + s.address_text;
      server.address_text = s.address_text;
      server.address = s.address;
      server.weight = s.weight;
      server.enabled = s.enabled;
      server.index = static_cast<uint32_t>(pool.servers.size());
      server.drain = s.drain;
      server.max_connections = s.max_connections;
      server.state = stats.server(server.id);
      pool.servers.push_back(std::move(server));
    }
    for (const std::string& m : p.health_monitors)
      if (const config::HealthMonitor* monitor = config->findMonitor(m)) pool.monitors.push_back(monitor);
    // Persistence falls back to a consistent hash when the store cannot answer.
    bool hashed = false;
    for (const config::VirtualService& vs : config->virtual_services)
      hashed |= vs.pool == p.name && vs.persistence.type != config::PersistenceType::None;
    lb::preparePool(pool, hashed);
    snapshot->pools.push_back(std::move(pool));
  }
  for (const config::VirtualService& vs : config->virtual_services)
    snapshot->vs_stats.push_back(stats.virtualService(vs.name));
  return snapshot;
}

size_t bufferBlockSize(const config::Config& config) {
  size_t size = config.se.buffer_size;
  for (const config::VirtualService& vs : config.virtual_services)
    if (vs.protocol == config::Protocol::Http) size = std::max(size, vs.max_header_size + kHeadGrowth);
  return size;
}

}  // namespace ballast::se
