// What the admin listener shows: /status as JSON and /metrics in the Prometheus text format,
// both read from the current snapshot and the counters every worker writes.
#pragma once

#include <string>

#include "proxy/service.h"

namespace ballast::se {

struct EngineInfo {
  double uptime_seconds = 0;
  const char* state = "running";  // running | draining
  size_t workers = 0;
  long pid = 0;
};

std::string renderStatus(const proxy::Snapshot& snapshot, const EngineInfo& info);
std::string renderMetrics(const proxy::Snapshot& snapshot, const EngineInfo& info);

}  // namespace ballast::se
