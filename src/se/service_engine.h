// A standalone service engine: workers serving the virtual services of one configuration, the
// admin listener, and the signals that stop it.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/config.h"
#include "proxy/service.h"
#include "se/admin.h"
#include "se/stats_registry.h"
#include "se/worker.h"

namespace ballast::se {

class ServiceEngine {
 public:
  explicit ServiceEngine(std::shared_ptr<const config::Config> config);
  ~ServiceEngine();

  // Binds every listener and the admin socket, starts the workers. false with *error set when
  // something cannot be bound (nothing is left running then).
  bool start(std::string* error);
  // Blocks until SIGTERM or SIGINT, then drains (up to se.drain_timeout) and stops.
  // A second signal stops at once. Returns the process exit code.
  int runUntilSignalled();
  // Stop accepting, let in-flight work finish up to the drain timeout, stop.
  void shutdown();

  std::string statusJson() const;
  std::string metricsText() const;

 private:
  std::shared_ptr<const proxy::Snapshot> snapshot() const;

  std::shared_ptr<const config::Config> config_;
  StatsRegistry stats_;
  mutable std::mutex snapshot_mutex_;
  std::shared_ptr<const proxy::Snapshot> snapshot_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<AdminServer> admin_;
  uint64_t start_ms_ = 0;
  std::atomic<bool> draining_{false};
};

// `ballast se` entry points.
int runServiceEngine(const std::string& config_path);
int checkConfig(const std::string& config_path);

}  // namespace ballast::se
