#include "se/report.h"

#include <fmt/format.h>

#include <map>

#include "core/event_loop.h"
#include "lb/balancer.h"
#include "proxy/persistence.h"

namespace ballast::se {

namespace {

constexpr const char* kClasses[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

// Sums of the per-worker counter slots of a virtual service or a server (the fields both have).
struct Totals {
  uint64_t connections_total = 0, connections_active = 0, connections_idle = 0, requests = 0,
           bytes_in = 0, bytes_out = 0, retries = 0, ejections = 0, in_flight = 0;
  uint64_t responses[5] = {};
  uint64_t errors[kErrorKinds] = {};
  uint64_t buckets[Histogram::kBuckets] = {};
  uint64_t sum_us = 0;

  template <typename Counters>
  void addCommon(const Counters& c, const Histogram& h) {
    connections_total += c.connections_total.get();
    connections_active += c.connections_active.get();
    requests += c.requests.get();
    bytes_in += c.bytes_in.get();
    bytes_out += c.bytes_out.get();
    retries += c.retries.get();
    for (size_t k = 0; k < 5; ++k) responses[k] += c.responses[k].get();
    for (size_t k = 0; k < kErrorKinds; ++k) errors[k] += c.errors[k].get();
    for (size_t k = 0; k < Histogram::kBuckets; ++k) buckets[k] += h.bucket(k);
    sum_us += h.sumMicros();
  }
  void add(const Totals& o) {
    connections_total += o.connections_total;
    connections_active += o.connections_active;
    connections_idle += o.connections_idle;
    requests += o.requests;
    bytes_in += o.bytes_in;
    bytes_out += o.bytes_out;
    retries += o.retries;
    ejections += o.ejections;
    in_flight += o.in_flight;
    for (size_t k = 0; k < 5; ++k) responses[k] += o.responses[k];
    for (size_t k = 0; k < kErrorKinds; ++k) errors[k] += o.errors[k];
  }
};

Totals totals(const VsStats& stats) {
  Totals t;
  for (size_t i = 0; i < stats.per_worker.size(); ++i)
    t.addCommon(stats.per_worker[i], stats.per_worker[i].request_duration);
  return t;
}

Totals totals(const ServerStats& stats) {
  Totals t;
  for (size_t i = 0; i < stats.per_worker.size(); ++i) {
    const ServerCounters& c = stats.per_worker[i];
    t.addCommon(c, c.response_duration);
    t.connections_idle += c.connections_idle.get();
    t.ejections += c.ejections.get();
    t.in_flight += c.in_flight.get();
  }
  return t;
}

nlohmann::json classesJson(const uint64_t (&responses)[5]) {
  nlohmann::json j = nlohmann::json::object();
  for (size_t k = 0; k < 5; ++k) j[kClasses[k]] = responses[k];
  return j;
}

nlohmann::json errorsJson(const uint64_t (&errors)[kErrorKinds]) {
  nlohmann::json j = nlohmann::json::object();
  for (size_t k = 0; k < kErrorKinds; ++k) j[errorKindName(static_cast<ErrorKind>(k))] = errors[k];
  return j;
}

// The traffic counters /status and the controller's reports both show, under the same names.
void addTraffic(nlohmann::json& j, const Totals& t) {
  j["requests"] = t.requests;
  j["retries"] = t.retries;
  j["bytes_in"] = t.bytes_in;
  j["bytes_out"] = t.bytes_out;
  j["responses"] = classesJson(t.responses);
  j["errors"] = errorsJson(t.errors);
}

// What a server is, for traffic: the first reason it gets none, or "up".
const char* serverState(const lb::Server& s, uint64_t now_ms) {
  if (!s.enabled) return "disabled";
  if (s.drain) return "draining";
  if (!s.state->healthy.load(std::memory_order_relaxed)) return "down";
  if (s.state->ejected(now_ms)) return "ejected";
  return "up";
}

// Prometheus text exposition.
class Exposition {
 public:
  void family(const char* name, const char* type, const char* help) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  void sample(const std::string& name, const std::string& labels, double value) {
    out_ += name;
    if (!labels.empty()) out_ += "{" + labels + "}";
    out_ += fmt::format(" {}\n", value);
  }
  void histogram(const std::string& name, const std::string& labels,
                 const uint64_t (&buckets)[Histogram::kBuckets], uint64_t sum_us) {
    uint64_t cumulative = 0;
    for (size_t k = 0; k < Histogram::kBuckets; ++k) {
      cumulative += buckets[k];
      std::string le = k < Histogram::kBoundsSeconds.size()
                           ? fmt::format("{}", Histogram::kBoundsSeconds[k])
                           : std::string("+Inf");
      sample(name + "_bucket", labels + ",le=\"" + le + "\"", static_cast<double>(cumulative));
    }
    sample(name + "_sum", labels, static_cast<double>(sum_us) / 1e6);
    sample(name + "_count", labels, static_cast<double>(cumulative));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

nlohmann::json persistenceJson(const VsStats& stats) {
  nlohmann::json j = nlohmann::json::object();
  for (size_t k = 0; k < proxy::kPersistOutcomes; ++k)
    j[proxy::persistOutcomeName(static_cast<proxy::PersistOutcome>(k))] =
        stats.per_worker.sum([k](const VsCounters& c) { return c.persistence[k].get(); });
  return j;
}

std::string escapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

std::string renderStatus(const proxy::Snapshot& snapshot, const EngineInfo& info) {
  const config::Config& cfg = *snapshot.config;
  uint64_t now = monotonicMs();
  nlohmann::json j;
  j["version"] = BALLAST_VERSION;
  j["pid"] = info.pid;
  j["state"] = info.state;
  j["uptime_seconds"] = info.uptime_seconds;
  j["workers"] = info.workers;
  j["config"] = {{"source", cfg.source}, {"store", cfg.store.type}, {"generation", info.generation}};
  if (!info.store.type.empty()) {
    j["store"] = {{"type", info.store.type}, {"connected", info.store.connected}};
    if (!info.store.address.empty()) j["store"]["address"] = info.store.address;
  }
  if (info.reload_age_seconds >= 0)
    j["reload"] = {{"ok", info.reload_ok},
                   {"errors", info.reload_errors},
                   {"seconds_ago", info.reload_age_seconds}};
  j["virtual_services"] = nlohmann::json::array();
  for (size_t i = 0; i < cfg.virtual_services.size(); ++i) {
    const config::VirtualService& vs = cfg.virtual_services[i];
    Totals t = totals(*snapshot.vs_stats[i]);
    nlohmann::json v = {
        {"name", vs.name},
        {"listen", vs.listen_text},
        {"protocol", config::toString(vs.protocol)},
        {"pool", vs.pool},
        {"max_connections", vs.max_connections},
        {"connections", {{"active", t.connections_active}, {"total", t.connections_total}}},
    };
    addTraffic(v, t);
    if (vs.persistence.type != config::PersistenceType::None)
      v["persistence"] = {{"type", config::toString(vs.persistence.type)},
                          {"decisions", persistenceJson(*snapshot.vs_stats[i])}};
    if (i < snapshot.access_logs.size() && snapshot.access_logs[i]) {
      const AccessLog& log = *snapshot.access_logs[i];
      v["access_log"] = {{"target", log.target()}, {"lines", log.written()}, {"dropped", log.dropped()}};
    }
    j["virtual_services"].push_back(std::move(v));
  }
  j["pools"] = nlohmann::json::array();
  for (const lb::Pool& pool : snapshot.pools) {
    nlohmann::json servers = nlohmann::json::array();
    size_t up = 0;
    for (const lb::Server& s : pool.servers) {
      Totals t = totals(s.state->stats);
      const char* state = serverState(s, now);
      if (std::string_view(state) == "up") ++up;
      lb::ServerState::HealthNote note = s.state->healthNote();
      nlohmann::json health = {{"state", state},
                               {"healthy", s.state->healthy.load(std::memory_order_relaxed)},
                               {"ejected", s.state->ejected(now)},
                               {"ejections", t.ejections}};
      if (!note.reason.empty()) {
        health["reason"] = note.reason;
        health["changed_seconds_ago"] = static_cast<double>(now - note.changed_ms) / 1000.0;
      }
      nlohmann::json server = {
          {"id", s.id},
          {"address", s.address_text},
          {"weight", s.weight},
          {"enabled", s.enabled},
          {"drain", s.drain},
          {"max_connections", s.max_connections},
          {"health", health},
          {"in_flight", t.in_flight},
          {"connections",
           {{"active", t.connections_active}, {"idle", t.connections_idle}, {"total", t.connections_total}}},
      };
      addTraffic(server, t);
      servers.push_back(std::move(server));
    }
    nlohmann::json p = {{"name", pool.name},
                        {"lb_algorithm", config::toString(pool.config->lb_algorithm)},
                        {"state", up > 0 ? "up" : "down"},
                        {"servers_up", up},
                        {"servers", servers}};
    if (pool.config->lb_algorithm == config::LbAlgorithm::ConsistentHash) {
      p["hash_key"] = {{"type", config::toString(pool.config->hash_key.type)}};
      if (!pool.config->hash_key.name.empty()) p["hash_key"]["name"] = pool.config->hash_key.name;
    }
    std::vector<std::string> monitors;
    for (const config::HealthMonitor* m : pool.monitors) monitors.push_back(m->name);
    p["health_monitors"] = monitors;
    j["pools"].push_back(std::move(p));
  }
  j["events"] = info.events;
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

namespace {

// A phase histogram summed over the workers, sparse: {"buckets": [[index, count], ...] (only
// the buckets that are not empty, index ascending), "count", "sum_us"}.
template <typename Slot, typename Select>
nlohmann::json phaseJson(const PerWorker<Slot>& slots, Select select) {
  std::array<uint64_t, PhaseHistogram::kBuckets> buckets{};
  uint64_t sum_us = 0;
  for (size_t w = 0; w < slots.size(); ++w) {
    const PhaseHistogram& h = select(slots[w]);
    for (size_t k = 0; k < PhaseHistogram::kBuckets; ++k) buckets[k] += h.bucket(k);
    sum_us += h.sumMicros();
  }
  nlohmann::json sparse = nlohmann::json::array();
  uint64_t count = 0;
  for (size_t k = 0; k < buckets.size(); ++k) {
    if (buckets[k] == 0) continue;
    sparse.push_back({k, buckets[k]});
    count += buckets[k];
  }
  return {{"buckets", std::move(sparse)}, {"count", count}, {"sum_us", sum_us}};
}

nlohmann::json vsPhasesJson(const VsStats& stats) {
  const auto& slots = stats.per_worker;
  return {{"header", phaseJson(slots, [](const VsCounters& c) -> auto& { return c.phases.header; })},
          {"connect", phaseJson(slots, [](const VsCounters& c) -> auto& { return c.phases.connect; })},
          {"response", phaseJson(slots, [](const VsCounters& c) -> auto& { return c.phases.response; })},
          {"transfer", phaseJson(slots, [](const VsCounters& c) -> auto& { return c.phases.transfer; })},
          {"total", phaseJson(slots, [](const VsCounters& c) -> auto& { return c.phases.total; })}};
}

nlohmann::json serverPhasesJson(const ServerStats& stats) {
  const auto& slots = stats.per_worker;
  return {{"connect", phaseJson(slots, [](const ServerCounters& c) -> auto& { return c.phases.connect; })},
          {"response", phaseJson(slots, [](const ServerCounters& c) -> auto& { return c.phases.response; })}};
}

nlohmann::json countersJson(const Totals& t) {
  nlohmann::json j = {{"connections_total", t.connections_total},
                      {"connections_active", t.connections_active},
                      {"latency", {{"buckets", t.buckets}, {"sum_us", t.sum_us}}}};
  addTraffic(j, t);
  return j;
}

}  // namespace

nlohmann::json renderCounters(const proxy::Snapshot& snapshot) {
  const config::Config& cfg = *snapshot.config;
  uint64_t now = monotonicMs();
  nlohmann::json vss = nlohmann::json::object();
  for (size_t i = 0; i < cfg.virtual_services.size(); ++i) {
    const VsStats& stats = *snapshot.vs_stats[i];
    nlohmann::json j = countersJson(totals(stats));
    j["max_connections"] = cfg.virtual_services[i].max_connections;
    j["phases"] = vsPhasesJson(stats);
    vss[cfg.virtual_services[i].name] = std::move(j);
  }
  nlohmann::json servers = nlohmann::json::object();
  for (const lb::Pool& pool : snapshot.pools) {
    for (const lb::Server& s : pool.servers) {
      Totals t = totals(s.state->stats);
      nlohmann::json j = countersJson(t);
      j["pool"] = pool.name;
      j["address"] = s.address_text;
      j["health"] = serverState(s, now);
      j["connections_idle"] = t.connections_idle;
      j["in_flight"] = t.in_flight;
      j["ejections"] = t.ejections;
      j["max_connections"] = s.max_connections;
      j["phases"] = serverPhasesJson(s.state->stats);
      servers[s.id] = std::move(j);
    }
  }
  return {{"bounds_seconds", Histogram::kBoundsSeconds},
          {"phase_bounds_us", kPhaseBoundsUs},
          {"virtual_services", vss},
          {"servers", servers}};
}

std::string renderState(const proxy::Snapshot& snapshot, const EngineInfo& info,
                        const std::optional<EntryView>& entry) {
  const config::Config& cfg = *snapshot.config;
  nlohmann::json j;
  const state::StoreStatus& st = info.store;
  j["store"] = {{"type", st.type},
                {"connected", st.connected},
                {"round_trips", st.round_trips},
                {"errors", st.errors},
                {"timeouts", st.timeouts},
                {"reconnects", st.reconnects},
                {"notifications", st.notifications}};
  if (!st.address.empty()) j["store"]["address"] = st.address;
  if (st.entries) j["store"]["entries"] = *st.entries;
  uint64_t lookups = info.cache_hits + info.cache_misses;
  j["cache"] = {{"entries", info.cache_entries},
                {"capacity", info.cache_capacity},
                {"hits", info.cache_hits},
                {"misses", info.cache_misses},
                {"hit_rate", lookups == 0 ? 0.0 : static_cast<double>(info.cache_hits) / lookups}};
  j["sync"] = {{"pending", info.pending},
               {"dropped", info.pending_dropped},
               {"resynced", info.resynced},
               {"conflicts", info.resync_conflicts}};
  uint64_t degraded = 0;
  j["virtual_services"] = nlohmann::json::array();
  for (size_t i = 0; i < cfg.virtual_services.size(); ++i) {
    const config::VirtualService& vs = cfg.virtual_services[i];
    if (vs.persistence.type == config::PersistenceType::None) continue;
    nlohmann::json decisions = persistenceJson(*snapshot.vs_stats[i]);
    degraded += decisions["degraded"].get<uint64_t>();
    nlohmann::json v = {{"name", vs.name},
                        {"persistence", config::toString(vs.persistence.type)},
                        {"timeout_seconds", vs.persistence.timeout.count() / 1000.0},
                        {"decisions", decisions}};
    j["virtual_services"].push_back(std::move(v));
  }
  j["degraded_decisions"] = degraded;
  if (entry) {
    nlohmann::json e = {{"key", entry->key}};
    if (!entry->store.ok) {
      e["store"] = {{"error", entry->store.error}};
    } else if (entry->store.value) {
      e["store"] = {{"value", *entry->store.value}, {"ttl_ms", entry->store.ttl_ms}};
    } else {
      e["store"] = nullptr;
    }
    e["cached"] = entry->cached ? nlohmann::json(*entry->cached) : nlohmann::json(nullptr);
    j["entry"] = std::move(e);
  }
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string renderMetrics(const proxy::Snapshot& snapshot, const EngineInfo& info) {
  const config::Config& cfg = *snapshot.config;
  uint64_t now = monotonicMs();
  Exposition e;
  e.family("ballast_info", "gauge", "Build information.");
  e.sample("ballast_info", fmt::format("version=\"{}\"", BALLAST_VERSION), 1);
  e.family("ballast_uptime_seconds", "gauge", "Seconds since the service engine started.");
  e.sample("ballast_uptime_seconds", "", info.uptime_seconds);
  e.family("ballast_workers", "gauge", "Worker threads.");
  e.sample("ballast_workers", "", static_cast<double>(info.workers));
  e.family("ballast_config_generation", "gauge", "Configurations applied by reloads since start.");
  e.sample("ballast_config_generation", "", static_cast<double>(info.generation));
  e.family("ballast_config_reloads_total", "counter", "Reload attempts, by result.");
  e.sample("ballast_config_reloads_total", "result=\"ok\"", static_cast<double>(info.reloads_ok));
  e.sample("ballast_config_reloads_total", "result=\"failed\"", static_cast<double>(info.reloads_failed));

  std::vector<Totals> vs_totals;
  for (const auto& s : snapshot.vs_stats) vs_totals.push_back(totals(*s));
  auto vs_label = [&](size_t i) {
    return fmt::format("vs=\"{}\"", escapeLabel(cfg.virtual_services[i].name));
  };
  auto vs_family = [&](const char* name, const char* type, const char* help, auto value) {
    e.family(name, type, help);
    for (size_t i = 0; i < vs_totals.size(); ++i)
      e.sample(name, vs_label(i), static_cast<double>(value(vs_totals[i])));
  };
  vs_family("ballast_vs_connections_active", "gauge", "Open client connections.",
            [](const Totals& t) { return t.connections_active; });
  vs_family("ballast_vs_connections_total", "counter", "Client connections accepted.",
            [](const Totals& t) { return t.connections_total; });
  vs_family("ballast_vs_requests_total", "counter", "HTTP requests received.",
            [](const Totals& t) { return t.requests; });
  vs_family("ballast_vs_retries_total", "counter", "Further attempts on another server.",
            [](const Totals& t) { return t.retries; });
  vs_family("ballast_vs_bytes_in_total", "counter", "Bytes received from clients.",
            [](const Totals& t) { return t.bytes_in; });
  vs_family("ballast_vs_bytes_out_total", "counter", "Bytes sent to clients.",
            [](const Totals& t) { return t.bytes_out; });
  e.family("ballast_vs_responses_total", "counter", "HTTP responses sent to clients, by class.");
  for (size_t i = 0; i < vs_totals.size(); ++i)
    for (size_t k = 0; k < 5; ++k)
      e.sample("ballast_vs_responses_total", vs_label(i) + fmt::format(",class=\"{}\"", kClasses[k]),
               static_cast<double>(vs_totals[i].responses[k]));
  e.family("ballast_vs_errors_total", "counter", "Failed connections and requests, by kind.");
  for (size_t i = 0; i < vs_totals.size(); ++i)
    for (size_t k = 0; k < kErrorKinds; ++k)
      e.sample("ballast_vs_errors_total",
               vs_label(i) + fmt::format(",kind=\"{}\"", errorKindName(static_cast<ErrorKind>(k))),
               static_cast<double>(vs_totals[i].errors[k]));
  e.family("ballast_vs_request_duration_seconds", "histogram",
           "From the first byte of a request to the last byte of its response.");
  for (size_t i = 0; i < vs_totals.size(); ++i)
    e.histogram("ballast_vs_request_duration_seconds", vs_label(i), vs_totals[i].buckets,
                vs_totals[i].sum_us);
  std::map<std::string, const AccessLog*> logs;
  for (const auto& log : snapshot.access_logs)
    if (log) logs[log->target()] = log.get();
  e.family("ballast_vs_persistence_decisions_total", "counter",
           "Persistence decisions, by where the answer came from.");
  for (size_t i = 0; i < vs_totals.size(); ++i) {
    if (cfg.virtual_services[i].persistence.type == config::PersistenceType::None) continue;
    for (size_t k = 0; k < proxy::kPersistOutcomes; ++k)
      e.sample("ballast_vs_persistence_decisions_total",
               vs_label(i) + fmt::format(",outcome=\"{}\"",
                                         proxy::persistOutcomeName(static_cast<proxy::PersistOutcome>(k))),
               static_cast<double>(snapshot.vs_stats[i]->per_worker.sum(
                   [k](const VsCounters& c) { return c.persistence[k].get(); })));
  }
  const state::StoreStatus& st = info.store;
  std::string store_label = fmt::format("type=\"{}\"", st.type);
  e.family("ballast_store_connected", "gauge", "1 when the shared store can be reached.");
  e.sample("ballast_store_connected", store_label, st.connected ? 1 : 0);
  e.family("ballast_store_round_trips_total", "counter", "Store commands answered.");
  e.sample("ballast_store_round_trips_total", store_label, static_cast<double>(st.round_trips));
  e.family("ballast_store_errors_total", "counter", "Store commands that failed.");
  e.sample("ballast_store_errors_total", store_label, static_cast<double>(st.errors));
  e.family("ballast_store_timeouts_total", "counter", "Store commands that took too long.");
  e.sample("ballast_store_timeouts_total", store_label, static_cast<double>(st.timeouts));
  e.family("ballast_store_reconnects_total", "counter", "Store connections re-established.");
  e.sample("ballast_store_reconnects_total", store_label, static_cast<double>(st.reconnects));
  e.family("ballast_store_notifications_total", "counter", "Entry change notifications received (this engine's own included: the channel does not say who sent one).");
  e.sample("ballast_store_notifications_total", store_label, static_cast<double>(st.notifications));
  e.family("ballast_persistence_cache_entries", "gauge", "Persistence entries cached by this engine.");
  e.sample("ballast_persistence_cache_entries", "", static_cast<double>(info.cache_entries));
  e.family("ballast_persistence_cache_hits_total", "counter", "Cache lookups that found the entry.");
  e.sample("ballast_persistence_cache_hits_total", "", static_cast<double>(info.cache_hits));
  e.family("ballast_persistence_cache_misses_total", "counter", "Cache lookups that did not.");
  e.sample("ballast_persistence_cache_misses_total", "", static_cast<double>(info.cache_misses));
  e.family("ballast_persistence_sync_pending", "gauge",
           "Decisions made without the store, still to be written to it.");
  e.sample("ballast_persistence_sync_pending", "", static_cast<double>(info.pending));
  e.family("ballast_persistence_resynced_total", "counter",
           "Decisions made without the store and written when it came back.");
  e.sample("ballast_persistence_resynced_total", "", static_cast<double>(info.resynced));
  e.family("ballast_access_log_lines_total", "counter", "Access log lines written, by target.");
  for (auto& [target, log] : logs)
    e.sample("ballast_access_log_lines_total", fmt::format("target=\"{}\"", escapeLabel(target)),
             static_cast<double>(log->written()));
  e.family("ballast_access_log_dropped_total", "counter",
           "Access log lines dropped because the writer could not keep up.");
  for (auto& [target, log] : logs)
    e.sample("ballast_access_log_dropped_total", fmt::format("target=\"{}\"", escapeLabel(target)),
             static_cast<double>(log->dropped()));

  // Servers, and pools as the sum of their servers.
  struct Row {
    std::string label;
    const lb::Server* server;
    Totals t;
  };
  std::vector<Row> rows;
  struct PoolRow {
    std::string label;
    Totals t;
    size_t up = 0;
  };
  std::vector<PoolRow> pools;
  for (const lb::Pool& pool : snapshot.pools) {
    PoolRow pr{fmt::format("pool=\"{}\"", escapeLabel(pool.name)), {}, 0};
    for (const lb::Server& s : pool.servers) {
      Totals t = totals(s.state->stats);
      pr.t.add(t);
      if (std::string_view(serverState(s, now)) == "up") ++pr.up;
      rows.push_back({pr.label + fmt::format(",server=\"{}\"", escapeLabel(s.address_text)), &s, t});
    }
    pools.push_back(std::move(pr));
  }
  auto both = [&](const char* pool_name, const char* server_name, const char* type, const char* help,
                  auto value) {
    e.family(pool_name, type, help);
    for (auto& p : pools) e.sample(pool_name, p.label, static_cast<double>(value(p.t)));
    e.family(server_name, type, help);
    for (auto& r : rows) e.sample(server_name, r.label, static_cast<double>(value(r.t)));
  };
  e.family("ballast_pool_servers_up", "gauge", "Servers that take new traffic.");
  for (auto& p : pools) e.sample("ballast_pool_servers_up", p.label, static_cast<double>(p.up));
  e.family("ballast_server_up", "gauge",
           "1 when the server takes new traffic (enabled, not draining, healthy, not ejected).");
  for (auto& r : rows)
    e.sample("ballast_server_up", r.label, std::string_view(serverState(*r.server, now)) == "up" ? 1 : 0);
  e.family("ballast_server_healthy", "gauge", "1 when the active health monitors pass.");
  for (auto& r : rows)
    e.sample("ballast_server_healthy", r.label,
             r.server->state->healthy.load(std::memory_order_relaxed) ? 1 : 0);
  e.family("ballast_server_ejected", "gauge", "1 while outlier detection keeps the server out.");
  for (auto& r : rows) e.sample("ballast_server_ejected", r.label, r.server->state->ejected(now) ? 1 : 0);
  e.family("ballast_server_ejections_total", "counter", "Times outlier detection ejected the server.");
  for (auto& r : rows) e.sample("ballast_server_ejections_total", r.label, static_cast<double>(r.t.ejections));
  e.family("ballast_server_in_flight", "gauge", "Requests (HTTP) or connections (TCP) in flight.");
  for (auto& r : rows) e.sample("ballast_server_in_flight", r.label, static_cast<double>(r.t.in_flight));
  both("ballast_pool_connections_active", "ballast_server_connections_active", "gauge",
       "Open connections to servers (in use or idle).",
       [](const Totals& t) { return t.connections_active; });
  both("ballast_pool_connections_idle", "ballast_server_connections_idle", "gauge",
       "Idle connections kept for reuse.", [](const Totals& t) { return t.connections_idle; });
  both("ballast_pool_connections_total", "ballast_server_connections_total", "counter",
       "Connections opened to servers.", [](const Totals& t) { return t.connections_total; });
  both("ballast_pool_requests_total", "ballast_server_requests_total", "counter",
       "Attempts (HTTP requests or TCP connections) sent to servers.",
       [](const Totals& t) { return t.requests; });
  both("ballast_pool_retries_total", "ballast_server_retries_total", "counter",
       "Attempts that failed at the server and went on to another.",
       [](const Totals& t) { return t.retries; });
  both("ballast_pool_bytes_in_total", "ballast_server_bytes_in_total", "counter",
       "Bytes received from servers.", [](const Totals& t) { return t.bytes_in; });
  both("ballast_pool_bytes_out_total", "ballast_server_bytes_out_total", "counter",
       "Bytes sent to servers.", [](const Totals& t) { return t.bytes_out; });
  e.family("ballast_pool_responses_total", "counter", "HTTP responses from servers, by class.");
  for (auto& p : pools)
    for (size_t k = 0; k < 5; ++k)
      e.sample("ballast_pool_responses_total", p.label + fmt::format(",class=\"{}\"", kClasses[k]),
               static_cast<double>(p.t.responses[k]));
  e.family("ballast_server_responses_total", "counter", "HTTP responses from servers, by class.");
  for (auto& r : rows)
    for (size_t k = 0; k < 5; ++k)
      e.sample("ballast_server_responses_total", r.label + fmt::format(",class=\"{}\"", kClasses[k]),
               static_cast<double>(r.t.responses[k]));
  e.family("ballast_pool_errors_total", "counter", "Server-side failures, by kind.");
  for (auto& p : pools)
    for (size_t k = 0; k < kErrorKinds; ++k)
      e.sample("ballast_pool_errors_total",
               p.label + fmt::format(",kind=\"{}\"", errorKindName(static_cast<ErrorKind>(k))),
               static_cast<double>(p.t.errors[k]));
  e.family("ballast_server_errors_total", "counter", "Server-side failures, by kind.");
  for (auto& r : rows)
    for (size_t k = 0; k < kErrorKinds; ++k)
      e.sample("ballast_server_errors_total",
               r.label + fmt::format(",kind=\"{}\"", errorKindName(static_cast<ErrorKind>(k))),
               static_cast<double>(r.t.errors[k]));
  e.family("ballast_server_response_duration_seconds", "histogram",
           "From the request sent to the first byte of the server's response.");
  for (auto& r : rows)
    e.histogram("ballast_server_response_duration_seconds", r.label, r.t.buckets, r.t.sum_us);
  return e.take();
}

}  // namespace ballast::se
