// Active health checking.
//
// One thread runs one EventLoop. Every (server, monitor) pair is a Check with its own timer: the
// first check starts at an offset within the interval derived from a hash of the server id and the
// monitor name (so a thousand servers with the same monitor do not fire together, and the spread is
// the same after a reload), then every interval from the start of the previous one. A check that
// outlives its interval (timeout > interval) delays the next one instead of overlapping it.
//
// The state machine of each pair follows HAProxy's: a server starts up, but one failure away from
// down (nothing is known of it yet); after one success, it takes `fall` failures in a row to go
// down; once down, `rise` successes in a row to come back. A server is healthy iff all its pool's
// monitors say up; the checker writes ServerState::healthy (relaxed) and the health note, and
// emits server_down / server_up (and pool_down / pool_up when the last healthy server of a pool
// goes or the first comes back) only when that verdict changes.
//
// apply() posts the new pools to the loop. Checks are found again by (ServerState, monitor name):
// their state and counts carry over; if what they check changed (address, type, request, interval,
// timeout...) the check in flight is abandoned and the schedule starts afresh. Servers no longer in
// any monitored pool are forgotten; servers of pools without monitors are healthy.
#include "health/health_checker.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "core/event_loop.h"
#include "health/probe.h"
#include "health/tls.h"
#include "lb/balancer.h"

namespace ballast::health {

namespace {
constexpr const char* kNoMonitorNote = "no health monitor";
}

class HealthChecker::Impl {
 public:
  explicit Impl(EventSink& events) : events_(events) {
    std::string error;
    ssl_ctx_ = makeClientContext(&error);
  }

  ~Impl() {
    stop();
    servers_.clear();  // abandons checks in flight (their probes go to the loop's graveyard)
    loop_.collectGarbage();
  }

  void start() {
    std::lock_guard<std::mutex> lock(thread_mutex_);
    if (started_) return;
    started_ = true;
    thread_ = std::thread([this] {
      loop_.run();
      loop_.collectGarbage();
    });
  }

  void stop() {
    std::lock_guard<std::mutex> lock(thread_mutex_);
    if (!thread_.joinable()) return;
    loop_.post([this] { loop_.stop(); });
    thread_.join();
  }

  void apply(std::shared_ptr<const std::vector<lb::Pool>> pools) {
    loop_.post([this, pools = std::move(pools)] {
      if (pools) onApply(*pools);
    });
  }

 private:
  struct ServerEntry;

  // One monitor of one server.
  struct Check final : TimerHandler {
    Check(Impl& owner, ServerEntry& entry, std::string monitor_name)
        : impl(owner), server(&entry), monitor(std::move(monitor_name)), timer(owner.loop_, this) {}
    ~Check() override { abandon(); }
    Check(const Check&) = delete;
    Check& operator=(const Check&) = delete;

    void onTimer(int) override { impl.runCheck(*this); }

    // Drops the check in flight, if any, without a verdict.
    void abandon() {
      if (probe) {
        probe->cancel();
        impl.loop_.deferDelete(std::move(probe));
      }
    }

    Impl& impl;
    ServerEntry* server;
    const std::string monitor;
    ProbeSpec spec;
    uint32_t rise = 1;
    uint32_t fall = 1;
    bool up = true;
    bool confirmed = false;  // a success was seen since it started (else one failure takes it down)
    uint32_t successes = 0;  // in a row, while down
    uint32_t failures = 0;   // in a row, while up
    Timer timer;
    std::unique_ptr<Probe> probe;
    uint64_t started_ms = 0;  // of the check in flight or the last one
  };

  struct ServerEntry {
    std::shared_ptr<lb::ServerState> state;
    std::string pool;
    std::string address;  // as written
    std::string id;
    bool healthy = true;  // as last published
    std::vector<std::unique_ptr<Check>> checks;

    bool allUp() const {
      return std::all_of(checks.begin(), checks.end(), [](const auto& c) { return c->up; });
    }
  };

  struct PoolEntry {
    bool monitored = false;
    bool up = true;  // as last published
    std::vector<const ServerEntry*> servers;
  };

  uint64_t now() const { return loop_.now(); }

  void emit(std::string type, std::vector<std::pair<std::string, std::string>> fields) {
    events_.emit(Event{std::move(type), std::move(fields)});
  }

  void schedule(Check& c) {
    const uint64_t offset = lb::hashKey(c.server->id + "\n" + c.monitor) % c.spec.interval_ms;
    c.timer.armAt(now() + offset);
  }

  void runCheck(Check& c) {
    if (c.probe) return;  // cannot happen: the next check is armed when the last one ends
    c.started_ms = now();
    c.probe = std::make_unique<Probe>(loop_, ssl_ctx_.get(), c.spec,
                                      [this, &c](const ProbeResult& r) { onResult(c, r); });
    c.probe->start();
  }

  void onResult(Check& c, const ProbeResult& result) {
    loop_.deferDelete(std::move(c.probe));
    const uint64_t next = c.started_ms + c.spec.interval_ms;
    c.timer.armAt(std::max(next, now()));

    std::string reason;
    if (result.pass) {
      c.failures = 0;
      if (c.up) {
        c.confirmed = true;
      } else if (++c.successes >= c.rise) {
        c.up = c.confirmed = true;
        c.successes = 0;
        const std::string n = std::to_string(c.rise);
        reason = "rise " + n + "/" + n;
      }
    } else {
      c.successes = 0;
      if (c.up && !c.confirmed) {
        c.up = false;
        reason = "fall 1/1 (initial): " + result.reason;
      } else if (c.up && ++c.failures >= c.fall) {
        c.up = false;
        c.failures = 0;
        const std::string n = std::to_string(c.fall);
        reason = "fall " + n + "/" + n + ": " + result.reason;
      }
    }
    if (reason.empty()) return;  // no change of this monitor's verdict
    ServerEntry& s = *c.server;
    const bool healthy = s.allUp();
    if (healthy != s.healthy) publish(s, healthy, c.monitor, reason);
  }

  void publish(ServerEntry& s, bool healthy, const std::string& monitor,
               const std::string& reason) {
    s.healthy = healthy;
    s.state->healthy.store(healthy, std::memory_order_relaxed);
    // Back up by its monitors: an ejection for the failures that took it down ends too (as
    // Envoy's successful_active_health_check_uneject_host), or a restarted server would sit out
    // the rest of its ejection.
    if (healthy) s.state->ejected_until_ms.store(0, std::memory_order_relaxed);
    s.state->setHealthNote(reason, now());
    std::vector<std::pair<std::string, std::string>> fields{{"pool", s.pool},
                                                            {"server", s.address}};
    if (!monitor.empty()) fields.emplace_back("monitor", monitor);
    fields.emplace_back("reason", reason);
    emit(healthy ? "server_up" : "server_down", std::move(fields));
    updatePool(s.pool);
  }

  void updatePool(const std::string& name) {
    auto it = pools_.find(name);
    if (it == pools_.end() || !it->second.monitored) return;
    PoolEntry& p = it->second;
    const bool up = std::any_of(p.servers.begin(), p.servers.end(),
                                [](const ServerEntry* s) { return s->healthy; });
    if (up == p.up) return;
    p.up = up;
    if (up) {
      emit("pool_up", {{"pool", name}});
    } else {
      emit("pool_down", {{"pool", name}, {"reason", "no server is up"}});
    }
  }

  void onApply(const std::vector<lb::Pool>& pools) {
    std::unordered_map<const lb::ServerState*, std::unique_ptr<ServerEntry>> next;
    std::map<std::string, PoolEntry> next_pools;
    std::vector<ServerEntry*> changed;  // kept servers whose checks changed

    for (const lb::Pool& pool : pools) {
      if (pool.monitors.empty()) {
        for (const lb::Server& server : pool.servers) {
          if (!server.state) continue;
          const bool was_checked = servers_.count(server.state.get()) != 0;
          if (!server.state->healthy.load(std::memory_order_relaxed)) {
            server.state->healthy.store(true, std::memory_order_relaxed);
            server.state->setHealthNote(kNoMonitorNote, now());
            if (was_checked) {
              emit("server_up", {{"pool", pool.name},
                                 {"server", server.address_text},
                                 {"reason", "health monitors removed"}});
            }
          }
        }
        // A pool that was down and lost its monitors is up: all its servers are.
        auto old = pools_.find(pool.name);
        if (old != pools_.end() && old->second.monitored && !old->second.up)
          emit("pool_up", {{"pool", pool.name}});
        next_pools[pool.name] = PoolEntry{};
        continue;
      }

      PoolEntry& pool_entry = next_pools[pool.name];
      pool_entry.monitored = true;
      auto old_pool = pools_.find(pool.name);
      pool_entry.up = old_pool != pools_.end() && old_pool->second.monitored ? old_pool->second.up
                                                                             : true;
      for (const lb::Server& server : pool.servers) {
        if (!server.state || next.count(server.state.get()) != 0) continue;
        std::unique_ptr<ServerEntry> entry;
        bool fresh = false;
        if (auto it = servers_.find(server.state.get()); it != servers_.end()) {
          entry = std::move(it->second);
          servers_.erase(it);
        } else {
          fresh = true;
          entry = std::make_unique<ServerEntry>();
          entry->state = server.state;
          // A server starts up, unless its shared state says otherwise (it was checked before,
          // dropped, and is back): then it must rise again.
          entry->healthy = server.state->healthy.load(std::memory_order_relaxed);
        }
        entry->pool = pool.name;
        entry->address = server.address_text;
        entry->id = server.id;
        if (updateChecks(*entry, server, pool.monitors, fresh)) changed.push_back(entry.get());
        pool_entry.servers.push_back(entry.get());
        next[server.state.get()] = std::move(entry);
      }
    }

    // Servers no longer checked: their checks in flight are abandoned.
    servers_.clear();
    servers_ = std::move(next);
    pools_ = std::move(next_pools);

    // Monitors removed (or added to a server that is down) can change a server's verdict.
    for (ServerEntry* s : changed) {
      const bool healthy = s->allUp();
      if (healthy != s->healthy) publish(*s, healthy, "", "health monitors changed");
    }
    for (auto& [name, p] : pools_) {
      if (p.monitored) updatePool(name);
    }
  }

  // Fits the server's checks to the pool's monitors. True when monitors were added or removed.
  bool updateChecks(ServerEntry& entry, const lb::Server& server,
                    const std::vector<const config::HealthMonitor*>& monitors, bool fresh) {
    std::vector<std::unique_ptr<Check>> checks;
    bool changed = false;
    for (const config::HealthMonitor* monitor : monitors) {
      if (monitor == nullptr) continue;
      if (std::any_of(checks.begin(), checks.end(),
                      [monitor](const auto& c) { return c->monitor == monitor->name; }))
        continue;  // listed twice
      ProbeSpec spec = makeProbeSpec(server, *monitor);
      auto old = std::find_if(entry.checks.begin(), entry.checks.end(), [monitor](const auto& c) {
        return c && c->monitor == monitor->name;
      });
      std::unique_ptr<Check> check;
      bool reschedule = true;
      if (old != entry.checks.end()) {
        check = std::move(*old);
        if (check->spec == spec) {
          reschedule = false;
        } else {
          check->abandon();
          check->timer.cancel();
        }
      } else {
        check = std::make_unique<Check>(*this, entry, monitor->name);
        // A new monitor starts up, one failure from down (HAProxy's initial state), except for a
        // server this checker has not seen whose shared state says it is down (it was checked
        // before, dropped, and is back): that one must rise.
        check->up = fresh ? entry.healthy : true;
        changed = changed || !fresh;
      }
      check->server = &entry;
      check->spec = std::move(spec);
      check->rise = std::max<uint32_t>(1, monitor->rise);
      check->fall = std::max<uint32_t>(1, monitor->fall);
      if (reschedule) schedule(*check);
      checks.push_back(std::move(check));
    }
    for (const auto& c : entry.checks) {
      if (c) changed = true;  // a monitor removed; its check ends with the old list
    }
    entry.checks = std::move(checks);
    return changed;
  }

  EventSink& events_;
  EventLoop loop_;  // declared first among what it runs: destroyed after the checks
  SslCtxPtr ssl_ctx_;
  std::unordered_map<const lb::ServerState*, std::unique_ptr<ServerEntry>> servers_;
  std::map<std::string, PoolEntry> pools_;
  std::mutex thread_mutex_;
  bool started_ = false;
  std::thread thread_;
};

HealthChecker::HealthChecker(EventSink& events) : impl_(std::make_unique<Impl>(events)) {}

HealthChecker::~HealthChecker() = default;

void HealthChecker::start() { impl_->start(); }

void HealthChecker::stop() { impl_->stop(); }

void HealthChecker::apply(std::shared_ptr<const std::vector<lb::Pool>> pools) {
  impl_->apply(std::move(pools));
}

}  // namespace ballast::health
