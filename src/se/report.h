// What the admin listener shows: /status as JSON and /metrics in the Prometheus text format,
// both read from the current snapshot and the counters every worker writes.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "proxy/service.h"
#include "state/state_store.h"

namespace ballast::se {

struct EngineInfo {
  double uptime_seconds = 0;
  const char* state = "running";  // running | draining
  size_t workers = 0;
  long pid = 0;
  uint64_t generation = 0;        // configurations applied by reloads
  bool reload_ok = true;          // the last reload (if any) was applied
  std::vector<std::string> reload_errors;
  double reload_age_seconds = -1;  // since the last reload attempt; -1 = none yet
  uint64_t reloads_ok = 0, reloads_failed = 0;
  nlohmann::json events = nlohmann::json::array();  // latest events
  // The shared store and persistence (for /metrics and /state).
  state::StoreStatus store;
  size_t cache_entries = 0, cache_capacity = 0;
  uint64_t cache_hits = 0, cache_misses = 0;
  uint64_t pending = 0, pending_dropped = 0, resynced = 0, resync_conflicts = 0;
};

// GET /state: the store, the cache, persistence decisions per virtual service, and (with a key)
// one entry as the store and this engine's cache hold it.
struct EntryView {
  std::string key;             // "vs:client key" as asked
  state::StoreBackend::Inspection store;
  std::optional<std::string> cached;
};
std::string renderState(const proxy::Snapshot& snapshot, const EngineInfo& info,
                        const std::optional<EntryView>& entry);

std::string renderStatus(const proxy::Snapshot& snapshot, const EngineInfo& info);
// Counters since start, for a managed engine's report (it sends the differences,
// managed::counterDeltas):
// {"bounds_seconds": [...], "phase_bounds_us": [80 bounds],
//  "virtual_services": {name: {...counters, "max_connections",
//                              "phases": {"header", "connect", "response", "transfer", "total"}}},
//  "servers": {id: {"pool", "address", "health", ...counters, "max_connections",
//                   "phases": {"connect", "response"}}}}
// Counters are those of /status plus "latency": {"buckets": [...] (not cumulative, the last one
// +Inf), "sum_us"}, whose upper bounds are "bounds_seconds". A phase is a sparse histogram:
// {"buckets": [[index, count], ...] (non-zero buckets only, index ascending), "count", "sum_us"};
// bucket i holds durations <= phase_bounds_us[i] (and above the bound before), index 80 the rest.
// "connections_active", "connections_idle", "in_flight" and "max_connections" (the configured
// limit, 0 = none) are values now, not counters.
nlohmann::json renderCounters(const proxy::Snapshot& snapshot);
std::string renderMetrics(const proxy::Snapshot& snapshot, const EngineInfo& info);

}  // namespace ballast::se
