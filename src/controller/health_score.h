// Health scores of virtual services, pools, servers and service engines (DESIGN.md, "Health
// scores"; every formula is in docs/health-score.md). Pure logic: every health interval the
// controller builds the inputs from its analytics window and the SEs' reports, feeds one
// AnomalyDetector per object and calls the score functions. No I/O, no clock: time only enters
// through Traffic::seconds and the order of the samples.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace ballast::controller::healthscore {

using Json = nlohmann::json;

// ---- Anomalies: a baseline learned per object and metric ----

enum class Metric { RequestRate, Latency, ConnectionRate };
// "requests/s", "latency ms", "new connections/s": how reasons name the metric.
const char* metricName(Metric metric);

// One sample outside its baseline.
struct Anomaly {
  Metric metric = Metric::RequestRate;
  double value = 0;
  double mean = 0;   // the baseline before this sample
  double sigma = 0;  // effective deviation: max(learned sigma, floor / k), never 0
  double sigmas() const { return (value - mean) / sigma; }  // signed
  bool spike() const { return value > mean; }
  const char* direction() const { return spike() ? "spike" : "drop"; }
  // "requests/s 250.0 is 48.0 sigma above its baseline 50.0"
  std::string reason() const;
};

struct BaselineOptions {
  double alpha = 0.1;            // EWMA weight of a new sample once warmed up
  uint32_t warmup_samples = 12;  // learned, never judged (a minute at the 5 s default interval)
  double k_sigma = 3;            // flagged beyond k effective sigmas
  // Floors of the deviation that can be flagged, so noise on a flat series is not: the larger
  // of min_deviation (the metric's unit) and min_relative_deviation x |mean|.
  double min_deviation = 0;
  double min_relative_deviation = 0.25;
  bool flag_drops = true;  // false: a fall is learned as normal (latency getting better)
  // This many anomalous samples in a row (same direction) make the new level normal: the
  // baseline restarts, that sample first in a new warm-up. 0: never.
  uint32_t adopt_after = 12;
};

// EWMA mean and variance of one metric of one object. Samples before the first non-zero one
// are ignored (an idle new object has no baseline yet). Anomalous samples are not learned.
class Baseline {
 public:
  Baseline(Metric metric, BaselineOptions options);

  // Judges `value` against what was learned before it, then learns from it (unless anomalous).
  std::optional<Anomaly> observe(double value);

  double mean() const { return mean_; }
  double sigma() const;
  uint32_t samples() const { return samples_; }  // learned since the (re)start
  bool warmedUp() const { return samples_ >= options_.warmup_samples; }

 private:
  void learn(double value);
  void restart();

  Metric metric_;
  BaselineOptions options_;
  bool started_ = false;
  uint32_t samples_ = 0;
  double mean_ = 0;
  double variance_ = 0;
  uint32_t streak_ = 0;  // consecutive anomalous samples
  bool streak_up_ = false;
};

// The detectors' settings, shared by the metrics except for their floors.
struct AnomalyOptions {
  double alpha = 0.1;
  uint32_t warmup_samples = 12;
  double k_sigma = 3;
  uint32_t adopt_after = 12;
  double min_relative_deviation = 0.25;
  double min_request_rate_deviation = 1.0;     // requests/s
  double min_latency_deviation_ms = 5.0;       // latency spikes only: drops are not flagged
  double min_connection_rate_deviation = 1.0;  // new connections/s
};

// What one object did during the last health interval. Feed rates over that interval, not the
// analytics window: a spike averaged over a 30 s window ramps in and may be learned as normal.
struct Sample {
  double requests_per_second = 0;
  std::optional<double> latency_ms;              // p90 or mean of total latency; none: no traffic
  std::optional<double> connections_per_second;  // new connections (virtual services)
};

// One per object, kept by the controller across intervals.
class AnomalyDetector {
 public:
  explicit AnomalyDetector(const AnomalyOptions& options = {});
  // The anomalies of this sample (empty while warming up).
  std::vector<Anomaly> observe(const Sample& sample);

 private:
  Baseline request_rate_;
  Baseline latency_;
  Baseline connection_rate_;
};

// ---- Inputs ----

// What an object served during the analytics window. Each failed exchange is counted once (a
// reset answered with 502 is a 5xx, not also a reset).
struct Traffic {
  uint64_t requests = 0;        // HTTP requests; 0 for TCP (connections are the exchanges then)
  std::optional<double> apdex;  // 0..1; none: not measured
  uint64_t responses_5xx = 0;
  uint64_t resets = 0;    // exchanges cut without a response
  uint64_t timeouts = 0;  // exchanges ended by a timeout without a response
  uint64_t connections = 0;          // attempts: accepted by a VS, opened to a server
  uint64_t connection_failures = 0;  // refused or timed-out connects, refusals at max_connections
  double seconds = 0;                // length of the window, for rates
};

struct ServerInputs {
  std::string name;          // its id, "pool/address"
  std::string state = "up";  // up | down | ejected | disabled | draining, as in /status
  std::string state_reason;  // why down or ejected ("fall 3/3: HTTP 500"); may be empty
  Traffic traffic;
  uint64_t connections_active = 0;  // in flight now
  uint64_t max_connections = 0;     // 0: no limit
  std::vector<Anomaly> anomalies;   // from its detector, this interval
  std::optional<double> previous_score;
};

struct PoolInputs {
  std::string name;
  std::vector<ServerInputs> servers;  // its traffic is theirs summed
  std::vector<Anomaly> anomalies;
  std::optional<double> previous_score;
};

struct SeInputs {
  std::string name;
  bool connected = true;  // false: lost (no report for --se-lost-after)
  std::optional<double> cpu_percent;  // 0..100 of all its cores, as reports give it
  uint64_t memory_rss = 0;  // bytes; memory_total 0: unknown
  uint64_t memory_total = 0;
  uint64_t open_files = 0;  // max_open_files 0: unknown
  uint64_t max_open_files = 0;
  Traffic traffic;
  std::vector<Anomaly> anomalies;
  std::optional<double> previous_score;
};

// For virtual services that terminate TLS (none yet).
struct TlsInputs {
  std::string min_version;                      // OpenSSL's spelling: "TLSv1.2"; empty: unknown
  std::optional<double> certificate_days_left;  // negative: expired
};

struct VsInputs {
  std::string name;
  Traffic traffic;
  uint64_t connections_active = 0;
  uint64_t max_connections = 0;      // 0: no limit
  uint64_t rejected_requests = 0;    // malformed: bad_request + head_too_large + header_timeout
  uint64_t refused_connections = 0;  // refused at max_connections
  std::optional<TlsInputs> tls;
  PoolInputs pool;
  std::vector<SeInputs> ses;  // the SEs it is placed on
  // From its detector; a spike of new connections/s counts as a flood (security), not here.
  std::vector<Anomaly> anomalies;
  std::optional<double> previous_score;
};

// ---- Scores ----

// Grows linearly from 0 at `start` to `max` at `full`, flat beyond (start > full: the input
// falls towards trouble, as days left to a certificate's expiry).
struct Ramp {
  double start = 0;
  double full = 1;
  double max = 0;
  double at(double x) const;
};

struct Options {
  // Performance = 100 x apdex x (1 - error_weight x error ratio) x (1 - weight x failure ratio).
  double error_weight = 5;
  double connection_failure_weight = 2;
  // Resources.
  Ramp cpu{80, 100, 30};                 // percent
  Ramp memory{0.85, 1.0, 30};            // RSS / memory_total
  Ramp open_files{0.80, 1.0, 20};        // open_files / max_open_files
  Ramp connection_limit{0.80, 1.0, 20};  // connections_active / max_connections
  double capacity_lost_penalty = 60;     // x share of a pool's servers (a VS's SEs) lost
  // Security.
  Ramp malformed_share{0.02, 0.25, 25};  // rejected / (requests + rejected)
  double malformed_min_rate = 0.5;       // rejected per second below which nothing counts
  Ramp flood_ratio{2, 6, 30};            // flagged new connections/s over its baseline mean
  Ramp refused_share{0, 0.25, 25};       // refused at max_connections / connections
  double weak_tls_penalty = 20;          // min TLS version below TLSv1.2
  Ramp certificate_days{30, 0, 30};      // days left to expiry
  double expired_certificate_penalty = 50;
  // Anomaly, per flagged metric: base + per_sigma x (|sigmas| - k), at most max.
  double anomaly_base_penalty = 10;
  double anomaly_penalty_per_sigma = 2;
  double anomaly_max_penalty = 20;
  AnomalyOptions anomaly;  // give the same to the detectors (k_sigma is used here too)
};

struct Penalty {
  double value = 0;  // 0..100
  std::vector<std::string> reasons;
};

struct HealthScore {
  double score = 100;  // 0..100, one decimal
  std::string band = "green";
  bool down = false;  // then score 0, band red, performance 0 with the reason
  std::optional<double> previous_score;
  double performance_score = 100;
  std::vector<std::string> performance_reasons;
  Penalty resources;
  Penalty security;
  Penalty anomaly;
  // The anomalies that cost points: in `anomaly`, or in `security` as a connection flood (what
  // the controller raises `anomaly` events for).
  std::vector<Anomaly> anomalies;

  // {"score", "band", "previous_score" (null when none), "performance_score",
  //  "performance_reasons", "penalties": {"resources"|"security"|"anomaly": {"value", "reasons"}}}
  Json toJson() const;
};

// green >= 85, yellow >= 65, orange >= 1; red when down or below 1.
std::string bandOf(double score, bool down);

// 100 with no traffic (nothing bad seen). Appends a reason per factor that costs points.
double performanceScore(const Traffic& traffic, const Options& options,
                        std::vector<std::string>* reasons);

HealthScore scoreServer(const ServerInputs& server, const Options& options = {});
HealthScore scorePool(const PoolInputs& pool, const Options& options = {});
HealthScore scoreSe(const SeInputs& se, const Options& options = {});
HealthScore scoreVirtualService(const VsInputs& vs, const Options& options = {});

}  // namespace ballast::controller::healthscore
