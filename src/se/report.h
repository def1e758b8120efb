// What the admin listener shows: /status as JSON and /metrics in the Prometheus text format,
// both read from the current snapshot and the counters every worker writes.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "proxy/service.h"

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
};

std::string renderStatus(const proxy::Snapshot& snapshot, const EngineInfo& info);
std::string renderMetrics(const proxy::Snapshot& snapshot, const EngineInfo& info);

}  // namespace ballast::se
