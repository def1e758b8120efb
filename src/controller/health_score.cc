#include "controller/health_score.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

namespace ballast::controller::healthscore {

namespace {

// Scores and penalties are shown with one decimal; the score is computed from the rounded parts
// so that a reader can check it.
double round1(double x) { return std::round(x * 10) / 10; }

double ratio(uint64_t part, uint64_t whole) {
  return whole == 0 ? 0 : static_cast<double>(part) / static_cast<double>(whole);
}

double ratioCapped(uint64_t part, uint64_t whole) { return ratio(part, std::max(part, whole)); }

std::string points(double value) { return fmt::format("(-{:.1f})", value); }

void add(Penalty& penalty, double value, std::string reason) {
  if (value <= 0) return;
  penalty.value += value;
  penalty.reasons.push_back(std::move(reason) + " " + points(value));
}

void append(std::vector<std::string>& to, const std::vector<std::string>& from,
            const std::string& prefix = "") {
  for (const std::string& line : from) to.push_back(prefix + line);
}

HealthScore finish(HealthScore result, const std::vector<std::string>& down_reasons,
                   std::optional<double> previous) {
  for (Penalty* penalty : {&result.resources, &result.security, &result.anomaly}) {
    penalty->value = round1(std::clamp(penalty->value, 0.0, 100.0));
  }
  result.performance_score = round1(std::clamp(result.performance_score, 0.0, 100.0));
  result.down = !down_reasons.empty();
  if (result.down) {
    // A down object performs nothing; why comes first.
    result.performance_score = 0;
    result.performance_reasons.insert(result.performance_reasons.begin(), down_reasons.begin(),
                                      down_reasons.end());
  }
  double penalties = result.resources.value + result.security.value + result.anomaly.value;
  result.score = result.down ? 0 : round1(std::clamp(result.performance_score - penalties, 0.0, 100.0));
  result.band = bandOf(result.score, result.down);
  result.previous_score = previous;
  return result;
}

// A spike of new connections/s on a virtual service is a flood (security), not an anomaly.
bool isFlood(const Anomaly& anomaly) {
  return anomaly.metric == Metric::ConnectionRate && anomaly.spike();
}

// Also appends each anomaly it counts to *counted.
Penalty anomalyPenalty(const std::vector<Anomaly>& anomalies, const Options& options,
                       bool floods_elsewhere, std::vector<Anomaly>* counted) {
  Penalty penalty;
  for (const Anomaly& anomaly : anomalies) {
    if (floods_elsewhere && isFlood(anomaly)) continue;
    double beyond = std::max(0.0, std::abs(anomaly.sigmas()) - options.anomaly.k_sigma);
    double value = std::min(options.anomaly_max_penalty,
                            options.anomaly_base_penalty + options.anomaly_penalty_per_sigma * beyond);
    add(penalty, value, anomaly.reason());
    counted->push_back(anomaly);
  }
  return penalty;
}

// ---- servers and pools ----

bool serving(const ServerInputs& server) {
  return server.state == "up" || server.state == "draining";
}

// Taken out of service by the operator, not lost.
bool setAside(const ServerInputs& server) {
  return server.state == "disabled" || server.state == "draining";
}

// "server web-pool/10.0.0.1:80 is down (fall 3/3: HTTP 500)"
std::string stateLine(const ServerInputs& server) {
  std::string line = "server " + server.name + " is " + server.state;
  if (!server.state_reason.empty()) line += " (" + server.state_reason + ")";
  return line;
}

double connectionLimitPoints(uint64_t active, uint64_t max, const Options& options) {
  return max == 0 ? 0 : options.connection_limit.at(ratio(active, max));
}

std::string connectionsLine(const std::string& what, uint64_t active, uint64_t max) {
  return fmt::format("{} has {} of {} connections ({:.0f}%)", what, active, max,
                     100 * ratio(active, max));
}

Traffic sumTraffic(const std::vector<ServerInputs>& servers) {
  Traffic sum;
  double apdex_weighted = 0;
  uint64_t apdex_weight = 0;
  for (const ServerInputs& server : servers) {
    const Traffic& t = server.traffic;
    sum.requests += t.requests;
    sum.responses_5xx += t.responses_5xx;
    sum.resets += t.resets;
    sum.timeouts += t.timeouts;
    sum.connections += t.connections;
    sum.connection_failures += t.connection_failures;
    sum.seconds = std::max(sum.seconds, t.seconds);
    uint64_t exchanges = t.requests > 0 ? t.requests : t.connections;
    if (t.apdex && exchanges > 0) {
      apdex_weighted += *t.apdex * static_cast<double>(exchanges);
      apdex_weight += exchanges;
    }
  }
  if (apdex_weight > 0) sum.apdex = apdex_weighted / static_cast<double>(apdex_weight);
  return sum;
}

// A pool's resources: capacity lost to failed servers, and servers near max_connections.
Penalty poolResources(const PoolInputs& pool, const Options& options) {
  Penalty penalty;
  size_t up = 0;
  std::vector<const ServerInputs*> lost;
  for (const ServerInputs& server : pool.servers) {
    if (server.state == "up") ++up;
    else if (!setAside(server)) lost.push_back(&server);
  }
  if (!lost.empty()) {
    size_t counted = up + lost.size();
    add(penalty, options.capacity_lost_penalty * ratio(lost.size(), counted),
        fmt::format("pool {} has {} of {} servers up", pool.name, up, counted));
    for (const ServerInputs* server : lost) penalty.reasons.push_back(stateLine(*server));
  }
  // The mean over serving servers: one full server among idle ones is a small matter.
  double limit_points = 0;
  size_t serving_count = 0;
  std::vector<std::string> full;
  for (const ServerInputs& server : pool.servers) {
    if (!serving(server)) continue;
    ++serving_count;
    double p = connectionLimitPoints(server.connections_active, server.max_connections, options);
    if (p <= 0) continue;
    limit_points += p;
    full.push_back(connectionsLine("server " + server.name, server.connections_active,
                                   server.max_connections));
  }
  if (!full.empty()) {
    add(penalty, limit_points / static_cast<double>(serving_count),
        fmt::format("pool {}: {} of {} servers near max_connections", pool.name, full.size(),
                    serving_count));
    append(penalty.reasons, full);
  }
  return penalty;
}

std::optional<std::string> poolDownReason(const PoolInputs& pool) {
  if (pool.servers.empty()) return "pool " + pool.name + " has no servers";
  size_t down = 0, ejected = 0, disabled = 0, draining = 0;
  for (const ServerInputs& server : pool.servers) {
    if (server.state == "up") return std::nullopt;
    if (server.state == "ejected") ++ejected;
    else if (server.state == "disabled") ++disabled;
    else if (server.state == "draining") ++draining;
    else ++down;
  }
  std::vector<std::string> counts;
  if (down > 0) counts.push_back(fmt::format("{} down", down));
  if (ejected > 0) counts.push_back(fmt::format("{} ejected", ejected));
  if (disabled > 0) counts.push_back(fmt::format("{} disabled", disabled));
  if (draining > 0) counts.push_back(fmt::format("{} draining", draining));
  return fmt::format("pool {} has no server up ({})", pool.name, fmt::join(counts, ", "));
}

// ---- service engines ----

Penalty seResources(const SeInputs& se, const Options& options) {
  Penalty penalty;
  if (se.cpu_percent) {
    add(penalty, options.cpu.at(*se.cpu_percent), fmt::format("CPU at {:.0f}%", *se.cpu_percent));
  }
  if (se.memory_total > 0) {
    double share = ratio(se.memory_rss, se.memory_total);
    add(penalty, options.memory.at(share), fmt::format("memory at {:.0f}%", 100 * share));
  }
  if (se.max_open_files > 0) {
    add(penalty, options.open_files.at(ratio(se.open_files, se.max_open_files)),
        fmt::format("{} of {} open files", se.open_files, se.max_open_files));
  }
  return penalty;
}

// ---- virtual services ----

// A flood shows as a flagged spike of new connections or as refusals at max_connections; both
// are signs of one thing, so the larger counts.
// Appends the flood anomalies it counts to *counted.
void addFlood(Penalty& penalty, const VsInputs& vs, const Options& options,
              std::vector<Anomaly>* counted) {
  double worst = 0;
  std::vector<std::string> signs;
  std::vector<Anomaly> floods;
  for (const Anomaly& anomaly : vs.anomalies) {
    if (!isFlood(anomaly)) continue;
    floods.push_back(anomaly);
    double over = anomaly.mean > 0 ? anomaly.value / anomaly.mean : INFINITY;
    double p = options.flood_ratio.at(over);
    worst = std::max(worst, p);
    signs.push_back(anomaly.reason() + ": connection flood " + points(p));
  }
  if (vs.refused_connections > 0) {
    double share = ratioCapped(vs.refused_connections, vs.traffic.connections);
    double p = options.refused_share.at(share);
    worst = std::max(worst, p);
    signs.push_back(fmt::format("{} connections refused at max_connections ({:.1f}% of connections) {}",
                                vs.refused_connections, 100 * share, points(p)));
  }
  if (worst <= 0) return;
  penalty.value += worst;
  append(penalty.reasons, signs);
  counted->insert(counted->end(), floods.begin(), floods.end());
}

void addMalformed(Penalty& penalty, const VsInputs& vs, const Options& options) {
  if (vs.rejected_requests == 0) return;
  double rate = vs.traffic.seconds > 0
                    ? static_cast<double>(vs.rejected_requests) / vs.traffic.seconds
                    : static_cast<double>(vs.rejected_requests);
  if (rate < options.malformed_min_rate) return;
  double share = ratio(vs.rejected_requests, vs.traffic.requests + vs.rejected_requests);
  add(penalty, options.malformed_share.at(share),
      fmt::format("{} malformed requests rejected ({:.1f}/s, {:.1f}% of requests)",
                  vs.rejected_requests, rate, 100 * share));
}

bool weakTlsVersion(const std::string& version) {
  for (const char* weak : {"SSLv2", "SSLv3", "TLSv1", "TLSv1.0", "TLSv1.1"}) {
    if (version == weak) return true;
  }
  return false;
}

void addTls(Penalty& penalty, const TlsInputs& tls, const Options& options) {
  if (weakTlsVersion(tls.min_version)) {
    add(penalty, options.weak_tls_penalty,
        "minimum TLS version " + tls.min_version + " is weak (below TLSv1.2)");
  }
  if (!tls.certificate_days_left) return;
  double days = *tls.certificate_days_left;
  if (days < 0) {
    add(penalty, options.expired_certificate_penalty,
        fmt::format("certificate expired {:.0f} days ago", std::ceil(-days)));
  } else {
    add(penalty, options.certificate_days.at(days),
        fmt::format("certificate expires in {:.0f} days", std::floor(days)));
  }
}

}  // namespace

// ---- anomalies ----

const char* metricName(Metric metric) {
  switch (metric) {
    case Metric::RequestRate:
      return "requests/s";
    case Metric::Latency:
      return "latency ms";
    case Metric::ConnectionRate:
      return "new connections/s";
  }
  return "?";
}

std::string Anomaly::reason() const {
  return fmt::format("{} {:.1f} is {:.1f} sigma {} its baseline {:.1f}", metricName(metric), value,
                     std::abs(sigmas()), spike() ? "above" : "below", mean);
}

Baseline::Baseline(Metric metric, BaselineOptions options) : metric_(metric), options_(options) {}

double Baseline::sigma() const { return std::sqrt(variance_); }

void Baseline::learn(double value) {
  ++samples_;
  // 1/n at first: the warm-up learns the plain mean and variance of its samples.
  double alpha = std::max(options_.alpha, 1.0 / samples_);
  double diff = value - mean_;
  double step = alpha * diff;
  mean_ += step;
  variance_ = (1 - alpha) * (variance_ + diff * step);
}

void Baseline::restart() {
  started_ = false;
  samples_ = 0;
  mean_ = 0;
  variance_ = 0;
  streak_ = 0;
}

std::optional<Anomaly> Baseline::observe(double value) {
  if (!started_) {
    if (value == 0) return std::nullopt;
    started_ = true;
  }
  if (!warmedUp()) {
    learn(value);
    return std::nullopt;
  }
  double floor = std::max(options_.min_deviation, options_.min_relative_deviation * std::abs(mean_));
  double k = std::max(options_.k_sigma, 1e-9);
  double effective = std::max({sigma(), floor / k, 1e-9});
  double deviation = value - mean_;
  bool up = deviation > 0;
  bool anomalous = std::abs(deviation) > k * effective && (up || options_.flag_drops);
  if (!anomalous) {
    streak_ = 0;
    learn(value);
    return std::nullopt;
  }
  if (streak_ > 0 && up != streak_up_) streak_ = 0;
  ++streak_;
  streak_up_ = up;
  if (options_.adopt_after > 0 && streak_ >= options_.adopt_after) {
    restart();  // a lasting change: the new level is the new normal, learned afresh
    return observe(value);
  }
  return Anomaly{metric_, value, mean_, effective};
}

namespace {

BaselineOptions baselineOptions(const AnomalyOptions& options, double min_deviation,
                                bool flag_drops) {
  BaselineOptions result;
  result.alpha = options.alpha;
  result.warmup_samples = options.warmup_samples;
  result.k_sigma = options.k_sigma;
  result.adopt_after = options.adopt_after;
  result.min_relative_deviation = options.min_relative_deviation;
  result.min_deviation = min_deviation;
  result.flag_drops = flag_drops;
  return result;
}

}  // namespace

AnomalyDetector::AnomalyDetector(const AnomalyOptions& options)
    : request_rate_(Metric::RequestRate,
                    baselineOptions(options, options.min_request_rate_deviation, true)),
      latency_(Metric::Latency, baselineOptions(options, options.min_latency_deviation_ms, false)),
      connection_rate_(Metric::ConnectionRate,
                       baselineOptions(options, options.min_connection_rate_deviation, true)) {}

std::vector<Anomaly> AnomalyDetector::observe(const Sample& sample) {
  std::vector<Anomaly> found;
  auto check = [&found](Baseline& baseline, double value) {
    if (auto anomaly = baseline.observe(value)) found.push_back(*anomaly);
  };
  check(request_rate_, sample.requests_per_second);
  if (sample.latency_ms) check(latency_, *sample.latency_ms);
  if (sample.connections_per_second) check(connection_rate_, *sample.connections_per_second);
  return found;
}

// ---- scores ----

double Ramp::at(double x) const {
  if (start == full) return x >= full ? max : 0;
  return max * std::clamp((x - start) / (full - start), 0.0, 1.0);
}

Json HealthScore::toJson() const {
  auto penaltyJson = [](const Penalty& penalty) {
    return Json{{"value", penalty.value}, {"reasons", penalty.reasons}};
  };
  return Json{{"score", score},
              {"band", band},
              {"previous_score", previous_score ? Json(*previous_score) : Json(nullptr)},
              {"performance_score", performance_score},
              {"performance_reasons", performance_reasons},
              {"penalties",
               {{"resources", penaltyJson(resources)},
                {"security", penaltyJson(security)},
                {"anomaly", penaltyJson(anomaly)}}}};
}

std::string bandOf(double score, bool down) {
  if (down) return "red";
  if (score >= 85) return "green";
  if (score >= 65) return "yellow";
  if (score >= 1) return "orange";
  return "red";
}

double performanceScore(const Traffic& traffic, const Options& options,
                        std::vector<std::string>* reasons) {
  auto note = [reasons](std::string line) {
    if (reasons != nullptr) reasons->push_back(std::move(line));
  };
  bool tcp = traffic.requests == 0;
  uint64_t exchanges = tcp ? traffic.connections : traffic.requests;
  const char* unit = tcp ? "connections" : "requests";

  double apdex = std::clamp(traffic.apdex.value_or(1.0), 0.0, 1.0);
  if (apdex < 0.9995) note(fmt::format("apdex {:.2f} over {} {}", apdex, exchanges, unit));

  uint64_t errors = traffic.responses_5xx + traffic.resets + traffic.timeouts;
  double error_ratio = ratioCapped(errors, exchanges);
  double errors_factor = std::max(0.0, 1 - options.error_weight * error_ratio);
  if (errors > 0) {
    note(fmt::format("error rate {:.1f}%: {} 5xx, {} resets, {} timeouts in {} {}",
                     100 * error_ratio, traffic.responses_5xx, traffic.resets, traffic.timeouts,
                     std::max(errors, exchanges), unit));
  }

  double failure_ratio = ratioCapped(traffic.connection_failures, traffic.connections);
  double connections_factor = std::max(0.0, 1 - options.connection_failure_weight * failure_ratio);
  if (traffic.connection_failures > 0) {
    note(fmt::format("connection failures {:.1f}%: {} of {} connections", 100 * failure_ratio,
                     traffic.connection_failures,
                     std::max(traffic.connection_failures, traffic.connections)));
  }
  return 100 * apdex * errors_factor * connections_factor;
}

HealthScore scoreServer(const ServerInputs& server, const Options& options) {
  HealthScore result;
  result.performance_score = performanceScore(server.traffic, options, &result.performance_reasons);
  add(result.resources,
      connectionLimitPoints(server.connections_active, server.max_connections, options),
      connectionsLine("server " + server.name, server.connections_active, server.max_connections));
  result.anomaly = anomalyPenalty(server.anomalies, options, false, &result.anomalies);
  std::vector<std::string> down;
  if (!serving(server)) down.push_back(stateLine(server));
  return finish(std::move(result), down, server.previous_score);
}

HealthScore scorePool(const PoolInputs& pool, const Options& options) {
  HealthScore result;
  result.performance_score =
      performanceScore(sumTraffic(pool.servers), options, &result.performance_reasons);
  result.resources = poolResources(pool, options);
  result.anomaly = anomalyPenalty(pool.anomalies, options, false, &result.anomalies);
  std::vector<std::string> down;
  if (auto reason = poolDownReason(pool)) down.push_back(*reason);
  return finish(std::move(result), down, pool.previous_score);
}

HealthScore scoreSe(const SeInputs& se, const Options& options) {
  HealthScore result;
  result.performance_score = performanceScore(se.traffic, options, &result.performance_reasons);
  result.resources = seResources(se, options);
  result.anomaly = anomalyPenalty(se.anomalies, options, false, &result.anomalies);
  std::vector<std::string> down;
  if (!se.connected) down.push_back("service engine " + se.name + " is lost");
  return finish(std::move(result), down, se.previous_score);
}

HealthScore scoreVirtualService(const VsInputs& vs, const Options& options) {
  HealthScore result;
  result.performance_score = performanceScore(vs.traffic, options, &result.performance_reasons);

  Penalty& resources = result.resources;
  add(resources, connectionLimitPoints(vs.connections_active, vs.max_connections, options),
      connectionsLine("virtual service " + vs.name, vs.connections_active, vs.max_connections));
  Penalty pool = poolResources(vs.pool, options);
  resources.value += pool.value;
  append(resources.reasons, pool.reasons);
  // SEs: capacity lost to lost SEs, then the worst of the connected ones.
  std::vector<std::string> lost;
  const SeInputs* worst = nullptr;
  Penalty worst_penalty;
  for (const SeInputs& se : vs.ses) {
    if (!se.connected) {
      lost.push_back("service engine " + se.name + " is lost");
      continue;
    }
    Penalty penalty = seResources(se, options);
    if (worst == nullptr || penalty.value > worst_penalty.value) {
      worst = &se;
      worst_penalty = std::move(penalty);
    }
  }
  if (!lost.empty()) {
    add(resources, options.capacity_lost_penalty * ratio(lost.size(), vs.ses.size()),
        fmt::format("virtual service {} has {} of {} service engines connected", vs.name,
                    vs.ses.size() - lost.size(), vs.ses.size()));
    append(resources.reasons, lost);
  }
  if (worst != nullptr && worst_penalty.value > 0) {
    resources.value += worst_penalty.value;
    append(resources.reasons, worst_penalty.reasons, "service engine " + worst->name + ": ");
  }

  addMalformed(result.security, vs, options);
  addFlood(result.security, vs, options, &result.anomalies);
  if (vs.tls) addTls(result.security, *vs.tls, options);

  result.anomaly = anomalyPenalty(vs.anomalies, options, true, &result.anomalies);

  std::vector<std::string> down;
  if (vs.ses.empty()) {
    down.push_back("virtual service " + vs.name + " is placed on no service engine");
  } else if (lost.size() == vs.ses.size()) {
    down.push_back("virtual service " + vs.name + " has no service engine connected");
  }
  if (auto reason = poolDownReason(vs.pool)) down.push_back(*reason);
  return finish(std::move(result), down, vs.previous_score);
}

}  // namespace ballast::controller::healthscore
