// What a service engine process uses of its host, for a managed engine's reports (the controller's
// health scores). Reads /proc and cgroup files: call it from a control thread, never a worker.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ballast::se {

struct ProcessResources {
  double cpu_seconds = 0;           // user + system time of the whole process since it started
  unsigned cpu_cores = 1;           // online cores
  uint64_t memory_rss_bytes = 0;    // resident set size
  uint64_t memory_total_bytes = 0;  // the host's memory, or the cgroup v2 limit when smaller
  uint64_t open_files = 0;          // file descriptors open now
  uint64_t max_open_files = 0;      // RLIMIT_NOFILE, soft; 0 = unlimited
};

ProcessResources readProcessResources();

// User + system time of the process (cheap: one system call).
double processCpuSeconds();

// CPU time used over a wall-clock interval as a percentage of all `cores` (0-100).
double cpuPercent(double cpu_seconds, double interval_seconds, unsigned cores);

// The pieces that parse, for tests.
// The MemTotal line of /proc/meminfo, in bytes; 0 when it is missing.
uint64_t parseMemTotal(std::string_view meminfo);
// The smallest memory.max from the process's cgroup v2 (the "0::/path" line of /proc/self/cgroup)
// up to the root of the hierarchy mounted at `cgroup_root`: a parent's limit applies too.
// nullopt when no level sets one ("max"), or on a cgroup v1 only host.
std::optional<uint64_t> cgroupMemoryLimit(const std::string& cgroup_root, std::string_view proc_self_cgroup);

}  // namespace ballast::se
