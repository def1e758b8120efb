#include "se/report.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace ballast::se {

namespace {

constexpr const char* kClasses[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

struct ServerTotals {
  uint64_t connections_total = 0, connections_active = 0, connections_idle = 0, requests = 0,
           bytes_in = 0, bytes_out = 0;
  uint64_t responses[5] = {};
  uint64_t errors[kErrorKinds] = {};
  uint64_t buckets[Histogram::kBuckets] = {};
  uint64_t sum_us = 0;
};

ServerTotals totals(const ServerStats& stats) {
  ServerTotals t;
  const auto& w = stats.per_worker;
  for (size_t i = 0; i < w.size(); ++i) {
    const ServerCounters& c = w[i];
    t.connections_total += c.connections_total.get();
    t.connections_active += c.connections_active.get();
    t.connections_idle += c.connections_idle.get();
    t.requests += c.requests.get();
    t.bytes_in += c.bytes_in.get();
    t.bytes_out += c.bytes_out.get();
    for (size_t k = 0; k < 5; ++k) t.responses[k] += c.responses[k].get();
    for (size_t k = 0; k < kErrorKinds; ++k) t.errors[k] += c.errors[k].get();
    for (size_t k = 0; k < Histogram::kBuckets; ++k) t.buckets[k] += c.response_duration.bucket(k);
    t.sum_us += c.response_duration.sumMicros();
  }
  return t;
}

struct VsTotals {
  uint64_t connections_total = 0, connections_active = 0, requests = 0, bytes_in = 0, bytes_out = 0;
  uint64_t responses[5] = {};
  uint64_t errors[kErrorKinds] = {};
  uint64_t buckets[Histogram::kBuckets] = {};
  uint64_t sum_us = 0;
};

VsTotals totals(const VsStats& stats) {
  VsTotals t;
  const auto& w = stats.per_worker;
  for (size_t i = 0; i < w.size(); ++i) {
    const VsCounters& c = w[i];
    t.connections_total += c.connections_total.get();
    t.connections_active += c.connections_active.get();
    t.requests += c.requests.get();
    t.bytes_in += c.bytes_in.get();
    t.bytes_out += c.bytes_out.get();
    for (size_t k = 0; k < 5; ++k) t.responses[k] += c.responses[k].get();
    for (size_t k = 0; k < kErrorKinds; ++k) t.errors[k] += c.errors[k].get();
    for (size_t k = 0; k < Histogram::kBuckets; ++k) t.buckets[k] += c.request_duration.bucket(k);
    t.sum_us += c.request_duration.sumMicros();
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
  nlohmann::json j;
  j["version"] = BALLAST_VERSION;
  j["pid"] = info.pid;
  j["state"] = info.state;
  j["uptime_seconds"] = info.uptime_seconds;
  j["workers"] = info.workers;
  j["config"] = {{"source", cfg.source}, {"store", cfg.store.type}};
  j["virtual_services"] = nlohmann::json::array();
  for (size_t i = 0; i < cfg.virtual_services.size(); ++i) {
    const config::VirtualService& vs = cfg.virtual_services[i];
    VsTotals t = totals(*snapshot.vs_stats[i]);
    j["virtual_services"].push_back({
        {"name", vs.name},
        {"listen", vs.listen_text},
        {"protocol", config::toString(vs.protocol)},
        {"pool", vs.pool},
        {"max_connections", vs.max_connections},
        {"connections", {{"active", t.connections_active}, {"total", t.connections_total}}},
        {"requests", t.requests},
        {"bytes_in", t.bytes_in},
        {"bytes_out", t.bytes_out},
        {"responses", classesJson(t.responses)},
        {"errors", errorsJson(t.errors)},
    });
  }
  j["pools"] = nlohmann::json::array();
  for (const lb::Pool& pool : snapshot.pools) {
    nlohmann::json servers = nlohmann::json::array();
    for (const lb::Server& s : pool.servers) {
      ServerTotals t = totals(s.state->stats);
      servers.push_back({
          {"id", s.id},
          {"address", s.address_text},
          {"weight", s.weight},
          {"enabled", s.enabled},
          {"connections",
           {{"active", t.connections_active}, {"idle", t.connections_idle}, {"total", t.connections_total}}},
          {"requests", t.requests},
          {"bytes_in", t.bytes_in},
          {"bytes_out", t.bytes_out},
          {"responses", classesJson(t.responses)},
          {"errors", errorsJson(t.errors)},
      });
    }
    j["pools"].push_back({{"name", pool.name},
                          {"lb_algorithm", config::toString(pool.config->lb_algorithm)},
                          {"servers", servers}});
  }
  return j.dump(2) + "\n";
}

std::string renderMetrics(const proxy::Snapshot& snapshot, const EngineInfo& info) {
  const config::Config& cfg = *snapshot.config;
  Exposition e;
  e.family("ballast_info", "gauge", "Build information.");
  e.sample("ballast_info", fmt::format("version=\"{}\"", BALLAST_VERSION), 1);
  e.family("ballast_uptime_seconds", "gauge", "Seconds since the service engine started.");
  e.sample("ballast_uptime_seconds", "", info.uptime_seconds);
  e.family("ballast_workers", "gauge", "Worker threads.");
  e.sample("ballast_workers", "", static_cast<double>(info.workers));

  std::vector<VsTotals> vs_totals;
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
            [](const VsTotals& t) { return t.connections_active; });
  vs_family("ballast_vs_connections_total", "counter", "Client connections accepted.",
            [](const VsTotals& t) { return t.connections_total; });
  vs_family("ballast_vs_requests_total", "counter", "HTTP requests received.",
            [](const VsTotals& t) { return t.requests; });
  vs_family("ballast_vs_bytes_in_total", "counter", "Bytes received from clients.",
            [](const VsTotals& t) { return t.bytes_in; });
  vs_family("ballast_vs_bytes_out_total", "counter", "Bytes sent to clients.",
            [](const VsTotals& t) { return t.bytes_out; });
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

  // Servers, and pools as the sum of their servers.
  struct Row {
    std::string pool_label, server_label;
    ServerTotals t;
  };
  std::vector<Row> rows;
  std::vector<std::pair<std::string, ServerTotals>> pools;
  for (const lb::Pool& pool : snapshot.pools) {
    ServerTotals sum;
    std::string pl = fmt::format("pool=\"{}\"", escapeLabel(pool.name));
    for (const lb::Server& s : pool.servers) {
      ServerTotals t = totals(s.state->stats);
      sum.connections_total += t.connections_total;
      sum.connections_active += t.connections_active;
      sum.connections_idle += t.connections_idle;
      sum.requests += t.requests;
      sum.bytes_in += t.bytes_in;
      sum.bytes_out += t.bytes_out;
      for (size_t k = 0; k < 5; ++k) sum.responses[k] += t.responses[k];
      for (size_t k = 0; k < kErrorKinds; ++k) sum.errors[k] += t.errors[k];
      rows.push_back({pl, pl + fmt::format(",server=\"{}\"", escapeLabel(s.address_text)), t});
    }
    pools.emplace_back(pl, sum);
  }
  auto both = [&](const char* pool_name, const char* server_name, const char* type, const char* help,
                  auto value) {
    e.family(pool_name, type, help);
    for (auto& [label, t] : pools) e.sample(pool_name, label, static_cast<double>(value(t)));
    e.family(server_name, type, help);
    for (auto& r : rows) e.sample(server_name, r.server_label, static_cast<double>(value(r.t)));
  };
  both("ballast_pool_connections_active", "ballast_server_connections_active", "gauge",
       "Open connections to servers (in use or idle).",
       [](const ServerTotals& t) { return t.connections_active; });
  both("ballast_pool_connections_idle", "ballast_server_connections_idle", "gauge",
       "Idle connections kept for reuse.", [](const ServerTotals& t) { return t.connections_idle; });
  both("ballast_pool_connections_total", "ballast_server_connections_total", "counter",
       "Connections opened to servers.", [](const ServerTotals& t) { return t.connections_total; });
  both("ballast_pool_requests_total", "ballast_server_requests_total", "counter",
       "Requests (HTTP) or connections (TCP) sent to servers.",
       [](const ServerTotals& t) { return t.requests; });
  both("ballast_pool_bytes_in_total", "ballast_server_bytes_in_total", "counter",
       "Bytes received from servers.", [](const ServerTotals& t) { return t.bytes_in; });
  both("ballast_pool_bytes_out_total", "ballast_server_bytes_out_total", "counter",
       "Bytes sent to servers.", [](const ServerTotals& t) { return t.bytes_out; });
  e.family("ballast_pool_responses_total", "counter", "HTTP responses from servers, by class.");
  for (auto& [label, t] : pools)
    for (size_t k = 0; k < 5; ++k)
      e.sample("ballast_pool_responses_total", label + fmt::format(",class=\"{}\"", kClasses[k]),
               static_cast<double>(t.responses[k]));
  e.family("ballast_server_responses_total", "counter", "HTTP responses from servers, by class.");
  for (auto& r : rows)
    for (size_t k = 0; k < 5; ++k)
      e.sample("ballast_server_responses_total", r.server_label + fmt::format(",class=\"{}\"", kClasses[k]),
               static_cast<double>(r.t.responses[k]));
  e.family("ballast_pool_errors_total", "counter", "Server-side failures, by kind.");
  for (auto& [label, t] : pools)
    for (size_t k = 0; k < kErrorKinds; ++k)
      e.sample("ballast_pool_errors_total",
               label + fmt::format(",kind=\"{}\"", errorKindName(static_cast<ErrorKind>(k))),
               static_cast<double>(t.errors[k]));
  e.family("ballast_server_errors_total", "counter", "Server-side failures, by kind.");
  for (auto& r : rows)
    for (size_t k = 0; k < kErrorKinds; ++k)
      e.sample("ballast_server_errors_total",
               r.server_label + fmt::format(",kind=\"{}\"", errorKindName(static_cast<ErrorKind>(k))),
               static_cast<double>(r.t.errors[k]));
  e.family("ballast_server_response_duration_seconds", "histogram",
           "From the request sent to the first byte of the server's response.");
  for (auto& r : rows)
    e.histogram("ballast_server_response_duration_seconds", r.server_label, r.t.buckets, r.t.sum_us);
  return e.take();
}

}  // namespace ballast::se
