#include "se/stats_registry.h"

namespace ballast::se {

std::shared_ptr<VsStats> StatsRegistry::virtualService(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = vs_[name];
  if (!slot) slot = std::make_shared<VsStats>(workers_);
  return slot;
}

std::shared_ptr<lb::ServerState> StatsRegistry::server(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = servers_[id];
  if (!slot)
    slot = std::make_shared<lb::ServerState>(id, workers_, static_cast<uint32_t>(servers_.size() - 1));
  return slot;
}

}  // namespace ballast::se
