// What a worker needs to serve one virtual service: the configuration snapshot it belongs to,
// the pool, this worker's load balancer for it, and this worker's counters.
#pragma once

#include <memory>
#include <vector>

#include "config/config.h"
#include "core/access_log.h"
#include "core/stats.h"
#include "http/message.h"
#include "lb/balancer.h"
#include "lb/pool.h"

namespace ballast::proxy {

// An immutable configuration with the pools built from it. Shared by all workers; kept alive by
// every connection that started on it.
struct Snapshot {
  std::shared_ptr<const config::Config> config;
  std::vector<lb::Pool> pools;                       // same order as config->pools
  std::vector<std::shared_ptr<VsStats>> vs_stats;    // same order as config->virtual_services
  std::vector<std::shared_ptr<AccessLog>> access_logs;  // same order; null where off

  const lb::Pool* findPool(const std::string& name) const;
};

// One virtual service as one worker runs it. Connections hold a shared_ptr to it.
struct Service {
  Service(std::shared_ptr<const Snapshot> snapshot, size_t vs_index, size_t worker);

  std::shared_ptr<const Snapshot> snapshot;
  const config::VirtualService& config;
  const lb::Pool& pool;
  std::unique_ptr<lb::LoadBalancer> balancer;
  VsStats& stats;
  VsCounters& counters;                              // this worker's slot
  std::vector<ServerCounters*> server_counters;      // this worker's slot, by server index
  http::Limits limits;
  size_t worker;
  AccessLog* access_log;                             // null when off
  // Persistence (when on): where a key's server comes from when the store cannot answer.
  std::unique_ptr<lb::LoadBalancer> hash_fallback;
};

// What a listener serves now. Sessions keep the slot: a keep-alive connection takes the current
// version of its virtual service for each new request, so a reload reaches it too (a server
// drained or removed gets no more of its requests); `retired` when the virtual service is gone.
struct ServiceSlot {
  std::shared_ptr<Service> current;
  bool retired = false;
};

}  // namespace ballast::proxy
