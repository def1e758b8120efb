// What the controller makes of the SEs' reports: analytics (analytics.h), a health score per
// virtual service, pool, server and SE every health interval (health_score.h, docs/health-score.md),
// and the events those raise (band crossings and drops, up/down, anomalies). Between the Service,
// which owns the desired objects, the placement and the SE registry, and the pure score logic.
//
// Thread-compatible: the Service calls it holding its mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "controller/analytics.h"
#include "controller/documents.h"
#include "controller/health_score.h"
#include "controller/placement.h"
#include "controller/store.h"

namespace ballast::controller {

struct MonitorOptions {
  std::chrono::milliseconds health_interval{5000};  // how often every score is computed
  std::chrono::milliseconds health_window{30000};   // the analytics a score looks at
  double drop_event_points = 10;  // a fall this large raises health_changed within a band
  healthscore::Options score;
};

// A virtual service's Apdex threshold T in microseconds: its `apdex_threshold` (default 500 ms).
double apdexThresholdUs(const Json& virtual_service);

// An event for the Service to store and publish.
struct RaisedEvent {
  std::string type;
  std::string object;  // "virtual_services/web", "pools/p", "servers/p/127.0.0.1:9001", "ses/se1"
  std::string message;
  Json details;
};

class HealthMonitor {
 public:
  HealthMonitor(std::unique_ptr<Analytics> analytics, MonitorOptions options);

  Analytics& analytics() { return *analytics_; }
  const MonitorOptions& options() const { return options_; }

  // One SE report, the whole body (docs/api.md): into analytics, the per-interval totals of the
  // anomaly detectors, and that SE's view of its servers' health.
  void onReport(const std::string& se, const Json& report, int64_t now_ms);

  // An SE removed from the registry: its score and its view of servers go (its analytics stay
  // until they age out).
  void forgetSe(const std::string& se);

  // Whether the health interval has passed since the last evaluation.
  bool due(int64_t now_ms) const {
    return last_evaluation_ms_ == 0 || now_ms - last_evaluation_ms_ >= options_.health_interval.count();
  }
  // Scores every object when the health interval has passed since the last time (or `force`),
  // and answers the events that raises. `document`: the desired objects; `ses`: the registry.
  std::vector<RaisedEvent> evaluate(const Document& document, const Placement& placement,
                                    const std::vector<SeRecord>& ses, int64_t now_ms,
                                    bool force = false);

  // Writes closed analytics points every 10 s (and when `force`, at shutdown).
  void flush(int64_t now_ms, bool force = false);

  // A score as the API shows it: {"kind", "name", "score", "band", "previous_score",
  // "performance_score", "penalties", "reasons", "updated"}; nullopt: not scored (unknown).
  std::optional<Json> score(const std::string& kind, const std::string& name) const;
  // The scores of a kind ("" = every kind), by kind then name.
  Json scores(const std::string& kind) const;

 private:
  using Key = std::pair<analytics::Kind, std::string>;
  // What an object did since the last evaluation, for its anomaly detector.
  struct Interval {
    uint64_t requests = 0;
    uint64_t connections = 0;
    analytics::PhaseHistogram latency;  // total (virtual services, SEs) or response (servers)
  };
  struct ServerView {
    std::string state;
    std::string reason;
  };
  // What the last event said of an object.
  struct Announced {
    double reference = 100;  // the score a fall is measured from: the highest since the event
    std::string band;
    bool down = false;
    std::set<std::string> anomalies;  // metrics flagged
  };

  std::vector<healthscore::Anomaly> observe(const Key& key, double elapsed_s, bool with_connections);
  void record(const Key& key, const healthscore::HealthScore& score, const std::string& updated,
              bool first, std::vector<RaisedEvent>* events);

  std::unique_ptr<Analytics> analytics_;
  MonitorOptions options_;
  std::map<std::string, std::map<std::string, ServerView>> server_views_;  // se -> server id ->
  std::map<Key, Interval> interval_;
  std::map<Key, healthscore::AnomalyDetector> detectors_;
  std::map<Key, Json> scores_;
  std::map<Key, double> last_score_;
  std::map<Key, Announced> announced_;
  int64_t last_evaluation_ms_ = 0;
  int64_t last_flush_ms_ = 0;
};

}  // namespace ballast::controller
