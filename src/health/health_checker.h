// Active health monitoring: checks every server of every pool that has monitors, off the data path
// (its own thread and event loop, non-blocking sockets), spread over time, and publishes each
// server's state in its ServerState (workers read it) and as events.
#pragma once

#include <memory>
#include <thread>
#include <vector>

#include "core/events.h"
#include "lb/pool.h"

namespace ballast::health {

class HealthChecker {
 public:
  explicit HealthChecker(EventSink& events);
  ~HealthChecker();  // stops the thread
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  void start();
  void stop();
  // From now on checks these pools' servers with their monitors (pool.monitors). Servers already
  // checked (same ServerState) keep their state and counts; servers no longer present stop being
  // checked. Thread-safe, returns at once. The shared_ptr keeps the pools alive while in use.
  void apply(std::shared_ptr<const std::vector<lb::Pool>> pools);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ballast::health
