#include "proxy/service.h"

namespace ballast::proxy {

const lb::Pool* Snapshot::findPool(const std::string& name) const {
  for (const lb::Pool& p : pools)
    if (p.name == name) return &p;
  return nullptr;
}

Service::Service(std::shared_ptr<const Snapshot> snap, size_t vs_index, size_t worker_index)
    : snapshot(std::move(snap)),
      config(snapshot->config->virtual_services[vs_index]),
      pool(*snapshot->findPool(config.pool)),
      balancer(lb::makeLoadBalancer(pool)),
      stats(*snapshot->vs_stats[vs_index]),
      counters(stats.per_worker[worker_index]),
      worker(worker_index),
      access_log(vs_index < snapshot->access_logs.size() ? snapshot->access_logs[vs_index].get()
                                                         : nullptr) {
  for (const lb::Server& s : pool.servers) server_counters.push_back(&s.state->stats.per_worker[worker]);
  if (config.persistence.type != config::PersistenceType::None)
    hash_fallback = std::make_unique<lb::ConsistentHash>(pool);
  limits.max_head_size = config.max_header_size;
  limits.max_fields = config.max_headers;
}

}  // namespace ballast::proxy
