// A standalone service engine: workers serving the virtual services of one configuration, the
// health checker, the admin listener, reloads, binary upgrades, and the signals that drive them.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "core/access_log.h"
#include "health/health_checker.h"
#include "proxy/service.h"
#include "se/admin.h"
#include "se/event_log.h"
#include "se/stats_registry.h"
#include "se/takeover.h"
#include "se/worker.h"
#include "state/state_store.h"

namespace ballast::se {

struct ReloadResult {
  bool ok = false;
  std::vector<std::string> errors;  // why it was refused (the running configuration stays)
  std::vector<std::string> notes;   // what was applied, and settings that need a restart
};

class ServiceEngine {
 public:
  // takeover: the control socket of a running service engine whose listening sockets this one
  // takes (binary upgrade), or "".
  ServiceEngine(std::shared_ptr<const config::Config> config, std::string takeover = "");
  ~ServiceEngine();

  // Binds (or takes over) every listener and the admin socket, starts the workers and the health
  // checker. false with *error set when something cannot be bound (nothing is left running).
  bool start(std::string* error);
  // Blocks until SIGTERM or SIGINT (SIGHUP reloads), then drains (up to se.drain_timeout) and
  // stops. A second signal stops at once. Returns the process exit code.
  int runUntilSignalled();
  // Blocks until SIGTERM or SIGINT; SIGHUP reloads meanwhile.
  void waitForStopSignal();
  // Loads the configuration file again and applies it without closing the listeners of virtual
  // services that stay; keeps the running configuration when the new one is invalid.
  ReloadResult reload();
  // Applies a configuration that is already loaded (validated), as reload() does: hitless, the
  // running one stays when it cannot be applied. se and store keep their running values.
  ReloadResult apply(std::shared_ptr<const config::Config> next);
  // Same from YAML (or JSON) text, validated by config::loadString.
  ReloadResult applyText(const std::string& text, const std::string& source_name);

  // For managed engines (src/se/managed.h); all three before start().
  // Where reload() (SIGHUP, POST /reload) takes the next configuration; default: the file the
  // running configuration was loaded from.
  void setReloadSource(std::function<config::LoadResult()> source) { reload_source_ = std::move(source); }
  // Other engines on this host may serve the same VIP:port (SO_REUSEPORT): do not refuse an
  // address that is already bound. A standalone engine refuses it, since two engines sharing a
  // port by mistake would each get a part of the traffic.
  void shareListenAddresses(bool share) { share_listen_addresses_ = share; }
  // Buffers at least this large (bytes), for the virtual services that later configurations
  // may bring (buffers are sized once, at start).
  void reserveBufferBlock(size_t bytes) { min_block_size_ = bytes; }
  // Stop accepting, let in-flight work finish up to the drain timeout, stop.
  void shutdown();

  std::string statusJson() const;
  // The cumulative counters and latency histograms of every virtual service and server of the
  // running configuration (renderCounters in report.h).
  nlohmann::json countersJson() const;
  std::string metricsText() const;
  // GET /state: the store and persistence; with a key ("vs:client key"), that entry.
  std::string stateJson(std::string_view query) const;

 private:
  struct Generation {
    uint64_t number = 0;
    bool last_ok = true;
    std::vector<std::string> last_errors;
    uint64_t last_attempt_ms = 0;
    uint64_t reloads_ok = 0, reloads_failed = 0;
  };

  std::shared_ptr<const proxy::Snapshot> snapshot() const;
  // apply() with reload_mutex_ held; `reopen_logs` for a reload (after a log rotation).
  ReloadResult applyLocked(const config::LoadResult& loaded, bool reopen_logs);
  // Builds a snapshot with its access logs opened; null with errors when a log cannot be opened.
  std::shared_ptr<const proxy::Snapshot> build(std::shared_ptr<const config::Config> config,
                                               std::vector<std::string>* errors);
  // Sockets for the virtual services of `config` that have no listener yet, per worker. false
  // with *error set (and nothing kept open) when one cannot be bound.
  bool openListeners(const config::Config& config, ListenerFds* inherited,
                     std::vector<std::vector<std::vector<int>>>* per_worker, std::string* error);
  void startHealth();
  bool startControl(std::string* error);
  bool startStore(std::string* error);
  ListenerFds listenerFds() const;

  std::shared_ptr<const config::Config> config_;
  std::string takeover_;
  StatsRegistry stats_;
  EventLog events_;
  health::HealthChecker health_;
  mutable std::mutex snapshot_mutex_;
  std::shared_ptr<const proxy::Snapshot> snapshot_;
  std::map<std::string, std::shared_ptr<AccessLog>> access_logs_;  // by target
  std::vector<std::shared_ptr<AccessLog>> retired_logs_;            // see reload()
  // The listening sockets, by address (the workers own them; this is for handing them over).
  mutable std::mutex listeners_mutex_;
  ListenerFds listen_fds_;
  size_t block_size_ = 0;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<ControlServer> control_;
  std::unique_ptr<state::StoreBackend> store_;
  std::unique_ptr<proxy::PersistenceShared> persistence_;
  std::mutex reload_mutex_;
  Generation generation_;
  uint64_t start_ms_ = 0;
  std::atomic<bool> draining_{false};
  std::function<config::LoadResult()> reload_source_;
  bool share_listen_addresses_ = false;
  size_t min_block_size_ = 0;
};

// Before any thread starts: SIGTERM/SIGINT/SIGHUP blocked (waitForStopSignal takes them),
// SIGPIPE ignored (every `ballast se` mode).
void blockEngineSignals();
// spdlog to stderr with the engine's line format (every `ballast se` mode).
void setUpLogging();

// `ballast se` entry points.
int runServiceEngine(const std::string& config_path, const std::string& takeover);
int checkConfig(const std::string& config_path);
// `ballast se state`: asks a running engine's admin listener (the address given, or se.admin of
// the configuration file) for GET /state and prints it. 0 when it answered 200.
int printState(const std::string& admin, const std::string& config_path, const std::string& key);

}  // namespace ballast::se
