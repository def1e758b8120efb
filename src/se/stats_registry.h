// Counters by name, kept for the life of the process so that they carry over when a new
// configuration snapshot replaces the old one (a server keeps its counters by identity).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/stats.h"
#include "lb/server_state.h"

namespace ballast::se {

class StatsRegistry {
 public:
  explicit StatsRegistry(size_t workers) : workers_(workers) {}

  std::shared_ptr<VsStats> virtualService(const std::string& name);
  std::shared_ptr<lb::ServerState> server(const std::string& id);

 private:
  size_t workers_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<VsStats>> vs_;
  std::map<std::string, std::shared_ptr<lb::ServerState>> servers_;
};

}  // namespace ballast::se
