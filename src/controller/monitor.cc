#include "controller/monitor.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <ctime>

#include "config/values.h"
#include "controller/wall_clock.h"

namespace ballast::controller {
namespace {

using analytics::Gauge;
using analytics::Kind;
using analytics::Phase;
namespace hs = healthscore;

constexpr int64_t kFlushEveryMs = 10'000;


// "virtual_services/web": how events name objects (docs/api.md).
std::string eventObject(Kind kind, const std::string& name) {
  switch (kind) {
    case Kind::Vs: return "virtual_services/" + name;
    case Kind::Pool: return "pools/" + name;
    case Kind::Server: return "servers/" + name;
    case Kind::Se: return "ses/" + name;
  }
  return name;
}

// A name for people: "virtual service web", "server p/127.0.0.1:9001".
std::string describe(Kind kind, const std::string& name) {
  switch (kind) {
    case Kind::Vs: return "virtual service " + name;
    case Kind::Pool: return "pool " + name;
    case Kind::Server: return "server " + name;
    case Kind::Se: return "service engine " + name;
  }
  return name;
}

uint64_t count(const Json& object, const char* key) {
  if (!object.is_object()) return 0;
  auto it = object.find(key);
  return it != object.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

// Adds a reported phase histogram ({"buckets": [[i, n]...], "sum_us"}) to `into`.
void addPhase(const Json& phases, const char* phase, analytics::PhaseHistogram* into) {
  if (!phases.is_object()) return;
  auto h = phases.find(phase);
  if (h == phases.end() || !h->is_object()) return;
  auto buckets = h->find("buckets");
  if (buckets == h->end() || !buckets->is_array()) return;
  for (const Json& pair : *buckets) {
    if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number_unsigned() ||
        !pair[1].is_number_unsigned()) {
      continue;
    }
    into->add(pair[0].get<size_t>(), pair[1].get<uint64_t>());
  }
}

const Json& member(const Json& object, const char* key) {
  static const Json kNull;
  if (!object.is_object()) return kNull;
  auto it = object.find(key);
  return it == object.end() ? kNull : *it;
}

uint64_t configured(const Json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end()) return 0;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (it->is_string()) {
    try {
      return std::stoull(it->get<std::string>());
    } catch (const std::exception&) {
      return 0;
    }
  }
  return 0;
}

}  // namespace

double apdexThresholdUs(const Json& vs) {
  config::Duration d{};
  std::string problem;
  auto it = vs.find("apdex_threshold");
  if (it == vs.end() || !it->is_string() || !config::parseDuration(it->get<std::string>(), &d, &problem) ||
      d.count() <= 0) {
    return 500'000;  // validated on write: only a default reaches here
  }
  return static_cast<double>(d.count()) * 1000;
}

namespace {

// What an object served in a window, counting each failed exchange once: errors beyond the
// answered requests are the resets and timeouts (an error answered with 502 is already a 5xx).
// Connection quality: for a virtual service, clients refused at max_connections among the
// connections accepted (a failed server connect is retried, or answered 503: a 5xx); for a
// server or pool, failed connects among every use of it (requests, or connections for TCP, plus
// the failures): keep-alive makes the connections it opened too few to compare with.
hs::Traffic trafficOf(const analytics::Window& w, bool server_side) {
  const analytics::Counters& c = w.counters;
  hs::Traffic t;
  t.requests = c.requests;
  t.responses_5xx = c.responses[4];
  uint64_t answered = c.responsesTotal();
  uint64_t unanswered = c.requests > answered ? c.requests - answered : 0;
  uint64_t resets = c.error(ErrorKind::ServerReset) + c.error(ErrorKind::ClientAbort);
  uint64_t timeouts = c.error(ErrorKind::ServerTimeout) + c.error(ErrorKind::ClientTimeout);
  t.resets = std::min(unanswered, resets);
  t.timeouts = std::min(unanswered - t.resets, timeouts);
  if (server_side) {
    t.connection_failures =
        c.error(ErrorKind::ConnectRefused) + c.error(ErrorKind::ConnectTimeout);
    t.connections = (c.requests > 0 ? c.requests : c.connections) + t.connection_failures;
  } else {
    t.connection_failures = c.error(ErrorKind::MaxConnections);
    t.connections = c.connections;
  }
  t.seconds = w.seconds;
  return t;
}

uint64_t gaugeValue(const analytics::Window& w, Gauge g) {
  std::optional<double> v = w.gauge(g);
  return v && *v > 0 ? static_cast<uint64_t>(std::llround(*v)) : 0;
}

// The state of a server over the SEs that serve it: the best any of them sees (one SE that
// reaches it means it can serve), with the reason of a worse one when none sees it up.
int stateRank(const std::string& state) {
  if (state == "up") return 0;
  if (state == "draining") return 1;
  if (state == "disabled") return 2;
  if (state == "ejected") return 3;
  return 4;  // down
}

std::string oneDecimal(double v) { return fmt::format("{:.1f}", v); }

}  // namespace

HealthMonitor::HealthMonitor(std::unique_ptr<Analytics> analytics, MonitorOptions options)
    : analytics_(std::move(analytics)), options_(std::move(options)) {}

void HealthMonitor::forgetSe(const std::string& se) {
  server_views_.erase(se);
  const Key key{Kind::Se, se};
  interval_.erase(key);
  detectors_.erase(key);
  scores_.erase(key);
  last_score_.erase(key);
  announced_.erase(key);
}

void HealthMonitor::onReport(const std::string& se, const Json& report, int64_t now_ms) {
  if (!report.is_object()) return;
  const Json& counters = member(report, "counters");
  double interval_s = 0;
  if (const Json& i = member(report, "interval_s"); i.is_number()) interval_s = i.get<double>();
  if (counters.is_object()) {
    analytics_->ingest(se, counters, member(report, "resources"), interval_s, now_ms);
    Interval& engine = interval_[{Kind::Se, se}];
    const Json& vss = member(counters, "virtual_services");
    if (vss.is_object()) {
      for (const auto& [name, vs] : vss.items()) {
        Interval& i = interval_[{Kind::Vs, name}];
        uint64_t requests = count(vs, "requests"), connections = count(vs, "connections_total");
        i.requests += requests;
        i.connections += connections;
        engine.requests += requests;
        engine.connections += connections;
        addPhase(member(vs, "phases"), "total", &i.latency);
        addPhase(member(vs, "phases"), "total", &engine.latency);
      }
    }
    const Json& servers = member(counters, "servers");
    if (servers.is_object()) {
      for (const auto& [id, server] : servers.items()) {
        Interval& i = interval_[{Kind::Server, id}];
        i.requests += count(server, "requests");
        i.connections += count(server, "connections_total");
        addPhase(member(server, "phases"), "response", &i.latency);
        const Json& pool = member(server, "pool");
        if (pool.is_string()) {
          Interval& p = interval_[{Kind::Pool, pool.get<std::string>()}];
          p.requests += count(server, "requests");
          p.connections += count(server, "connections_total");
          addPhase(member(server, "phases"), "response", &p.latency);
        }
      }
    }
  }
  // The SE's view of its servers: /status's pools[].servers[].health.
  const Json& pools = member(member(report, "status"), "pools");
  if (pools.is_array()) {
    std::map<std::string, ServerView>& view = server_views_[se];
    view.clear();
    for (const Json& pool : pools) {
      const Json& pool_name = member(pool, "name");
      const Json& servers = member(pool, "servers");
      if (!pool_name.is_string() || !servers.is_array()) continue;
      for (const Json& server : servers) {
        const Json& address = member(server, "address");
        const Json& health = member(server, "health");
        if (!address.is_string()) continue;
        ServerView v;
        const Json& state = member(health, "state");
        const Json& reason = member(health, "reason");
        v.state = state.is_string() ? state.get<std::string>() : "up";
        if (reason.is_string()) v.reason = reason.get<std::string>();
        view[pool_name.get<std::string>() + "/" + address.get<std::string>()] = std::move(v);
      }
    }
  }
}

std::vector<hs::Anomaly> HealthMonitor::observe(const Key& key, double elapsed_s,
                                                bool with_connections) {
  if (elapsed_s <= 0) return {};
  Interval interval;
  if (auto it = interval_.find(key); it != interval_.end()) interval = std::move(it->second);
  hs::Sample sample;
  sample.requests_per_second = static_cast<double>(interval.requests) / elapsed_s;
  if (std::optional<double> p90 = interval.latency.percentileUs(0.9)) {
    sample.latency_ms = *p90 / 1000;
  }
  if (with_connections) {
    sample.connections_per_second = static_cast<double>(interval.connections) / elapsed_s;
  }
  auto detector = detectors_.try_emplace(key, options_.score.anomaly).first;
  return detector->second.observe(sample);
}

std::vector<RaisedEvent> HealthMonitor::evaluate(const Document& document,
                                                 const Placement& placement,
                                                 const std::vector<SeRecord>& ses, int64_t now_ms,
                                                 bool force) {
  std::vector<RaisedEvent> events;
  if (!force && last_evaluation_ms_ != 0 &&
      now_ms - last_evaluation_ms_ < options_.health_interval.count()) {
    return events;
  }
  double elapsed_s = last_evaluation_ms_ == 0 ? 0 : (now_ms - last_evaluation_ms_) / 1000.0;
  last_evaluation_ms_ = now_ms;
  const double window_s = std::chrono::duration<double>(options_.health_window).count();
  const hs::Options& opts = options_.score;
  const std::string updated = isoTime(now_ms);
  auto previous = [this](const Key& key) -> std::optional<double> {
    auto it = last_score_.find(key);
    return it == last_score_.end() ? std::nullopt : std::optional<double>(it->second);
  };
  auto windowOf = [&](Kind kind, const std::string& name) {
    return analytics_->window(kind, name, window_s, now_ms);
  };
  std::set<Key> seen;  // scored this time: the others are gone

  // Service engines.
  std::map<std::string, hs::SeInputs> se_inputs;
  std::set<std::string> connected;
  for (const SeRecord& se : ses) {
    Key key{Kind::Se, se.name};
    analytics::Window w = windowOf(Kind::Se, se.name);
    hs::SeInputs in;
    in.name = se.name;
    in.connected = se.state == "connected";
    if (in.connected) connected.insert(se.name);
    in.cpu_percent = w.gauge(Gauge::CpuPercent);
    in.memory_rss = gaugeValue(w, Gauge::MemoryRssBytes);
    in.memory_total = gaugeValue(w, Gauge::MemoryTotalBytes);
    in.open_files = gaugeValue(w, Gauge::OpenFiles);
    in.max_open_files = gaugeValue(w, Gauge::MaxOpenFiles);
    in.traffic = trafficOf(w, /*server_side=*/false);
    in.anomalies = observe(key, elapsed_s, /*with_connections=*/false);
    in.previous_score = previous(key);
    record(key, hs::scoreSe(in, opts), updated, elapsed_s == 0, &events);
    seen.insert(key);
    se_inputs[se.name] = std::move(in);
  }

  // Servers and pools.
  std::map<std::string, hs::PoolInputs> pool_inputs;
  for (const Json& pool : document.count("pools") ? document.at("pools") : std::vector<Json>{}) {
    hs::PoolInputs in;
    in.name = pool.value("name", "");
    const Json& servers = member(pool, "servers");
    for (const Json& server : servers.is_array() ? servers : Json::array()) {
      hs::ServerInputs s;
      s.name = in.name + "/" + server.value("address", "");
      Key key{Kind::Server, s.name};
      int best = -1;
      for (const auto& [se, view] : server_views_) {
        if (!connected.count(se)) continue;
        auto it = view.find(s.name);
        if (it == view.end()) continue;
        int rank = stateRank(it->second.state);
        if (best < 0 || rank < best) {
          best = rank;
          s.state = it->second.state;
          s.state_reason = it->second.reason;
        }
      }
      if (best < 0) {  // no SE serves it: what its configuration says
        s.state = server.value("enabled", true) == false ? "disabled"
                  : server.value("drain", false)         ? "draining"
                                                         : "up";
      }
      analytics::Window w = windowOf(Kind::Server, s.name);
      s.traffic = trafficOf(w, /*server_side=*/true);
      s.connections_active = gaugeValue(w, Gauge::InFlight);
      s.max_connections = configured(server, "max_connections");
      s.anomalies = observe(key, elapsed_s, false);
      s.previous_score = previous(key);
      record(key, hs::scoreServer(s, opts), updated, elapsed_s == 0, &events);
      seen.insert(key);
      in.servers.push_back(std::move(s));
    }
    Key key{Kind::Pool, in.name};
    in.anomalies = observe(key, elapsed_s, false);
    in.previous_score = previous(key);
    record(key, hs::scorePool(in, opts), updated, elapsed_s == 0, &events);
    seen.insert(key);
    pool_inputs[in.name] = std::move(in);
  }

  // Virtual services.
  for (const Json& vs : document.count("virtual_services") ? document.at("virtual_services")
                                                           : std::vector<Json>{}) {
    hs::VsInputs in;
    in.name = vs.value("name", "");
    Key key{Kind::Vs, in.name};
    analytics::Window w = windowOf(Kind::Vs, in.name);
    in.traffic = trafficOf(w, /*server_side=*/false);
    if (w.counters.requests > 0) in.traffic.apdex = w.apdex(apdexThresholdUs(vs));
    in.connections_active = gaugeValue(w, Gauge::ConnectionsActive);
    in.max_connections = configured(vs, "max_connections");
    const analytics::Counters& c = w.counters;
    in.rejected_requests = c.error(ErrorKind::BadRequest) + c.error(ErrorKind::HeadTooLarge) +
                           c.error(ErrorKind::HeaderTimeout);
    in.refused_connections = c.error(ErrorKind::MaxConnections);
    if (auto it = pool_inputs.find(vs.value("pool", "")); it != pool_inputs.end()) {
      in.pool = it->second;
    }
    if (auto it = placement.find(in.name); it != placement.end()) {
      for (const std::string& se : it->second) {
        if (auto s = se_inputs.find(se); s != se_inputs.end()) in.ses.push_back(s->second);
      }
    }
    in.anomalies = observe(key, elapsed_s, /*with_connections=*/true);
    in.previous_score = previous(key);
    record(key, hs::scoreVirtualService(in, opts), updated, elapsed_s == 0, &events);
    seen.insert(key);
  }

  interval_.clear();
  for (auto it = scores_.begin(); it != scores_.end();) {
    if (seen.count(it->first)) {
      ++it;
      continue;
    }
    detectors_.erase(it->first);
    last_score_.erase(it->first);
    announced_.erase(it->first);
    it = scores_.erase(it);
  }
  return events;
}

void HealthMonitor::record(const Key& key, const hs::HealthScore& score,
                           const std::string& updated, bool first,
                           std::vector<RaisedEvent>* events) {
  const auto& [kind, name] = key;
  Json j = score.toJson();
  j["kind"] = analytics::kindName(kind);
  j["name"] = name;
  Json reasons = Json::array();
  for (const std::string& r : score.performance_reasons) reasons.push_back(r);
  for (const hs::Penalty* p : {&score.resources, &score.security, &score.anomaly}) {
    for (const std::string& r : p->reasons) reasons.push_back(r);
  }
  j["reasons"] = reasons;
  j["updated"] = updated;
  scores_[key] = j;
  last_score_[key] = score.score;

  const std::string object = eventObject(kind, name);
  const std::string who = describe(kind, name);
  auto summary = [&reasons]() {
    std::string text;
    for (size_t i = 0; i < reasons.size() && i < 3; ++i) {
      text += (i == 0 ? ": " : "; ") + reasons[i].get<std::string>();
    }
    if (reasons.size() > 3) text += fmt::format(" (and {} more)", reasons.size() - 3);
    return text;
  };

  auto [it, fresh] = announced_.try_emplace(key);
  Announced& a = it->second;
  if (fresh) {
    a.reference = score.score;
    a.band = score.band;
    a.down = score.down;
  }
  // Up and down: servers by their state; pools, virtual services and SEs by their score.
  static const char* kDownEvent[] = {"vs_down", "pool_down", "server_down", nullptr};
  static const char* kUpEvent[] = {"vs_up", "pool_up", "server_up", nullptr};
  const char* down_event = kDownEvent[static_cast<size_t>(kind)];
  if (down_event != nullptr && score.down != a.down) {
    const char* type = score.down ? down_event : kUpEvent[static_cast<size_t>(kind)];
    events->push_back({type, object, who + (score.down ? " is down" + summary() : " is up again"),
                       {{"kind", j["kind"]}, {"name", name}, {"reasons", reasons}}});
  } else if (fresh && score.down && down_event != nullptr && !first) {
    events->push_back({down_event, object, who + " is down" + summary(),
                       {{"kind", j["kind"]}, {"name", name}, {"reasons", reasons}}});
  }
  a.down = score.down;

  bool band_changed = score.band != a.band;
  bool fell = a.reference - score.score >= options_.drop_event_points;
  if (!fresh && (band_changed || fell)) {
    std::string message = fmt::format("{} health {} ({}) -> {} ({}){}", who,
                                      oneDecimal(a.reference), a.band, oneDecimal(score.score),
                                      score.band, summary());
    events->push_back({"health_changed", object, message,
                       {{"kind", j["kind"]},
                        {"name", name},
                        {"score", score.score},
                        {"band", score.band},
                        {"previous_score", a.reference},
                        {"previous_band", a.band},
                        {"reasons", reasons}}});
    a.reference = score.score;
    a.band = score.band;
  } else {
    a.reference = std::max(a.reference, score.score);  // a fall counts from the latest high
  }

  std::set<std::string> flagged;
  Json anomaly_reasons = Json::array();
  for (const hs::Anomaly& anomaly : score.anomalies) {
    flagged.insert(hs::metricName(anomaly.metric));
    anomaly_reasons.push_back(anomaly.reason());
  }
  bool new_metric = false;
  for (const std::string& m : flagged) new_metric = new_metric || !a.anomalies.count(m);
  if (new_metric) {
    std::string text;
    for (const Json& r : anomaly_reasons) text += (text.empty() ? ": " : "; ") + r.get<std::string>();
    events->push_back({"anomaly", object, who + " anomaly" + text,
                       {{"kind", j["kind"]}, {"name", name}, {"reasons", anomaly_reasons},
                        {"penalty", score.anomaly.value}}});
  }
  a.anomalies = std::move(flagged);
}

void HealthMonitor::flush(int64_t now_ms, bool force) {
  if (!force && now_ms - last_flush_ms_ < kFlushEveryMs) return;
  last_flush_ms_ = now_ms;
  std::string error;
  if (!analytics_->flush(now_ms, &error)) {
    spdlog::error("controller: analytics not saved: {}", error);
  }
}

std::optional<Json> HealthMonitor::score(const std::string& kind, const std::string& name) const {
  std::optional<Kind> k = analytics::parseKind(kind);
  if (!k) return std::nullopt;
  auto it = scores_.find({*k, name});
  if (it == scores_.end()) return std::nullopt;
  return it->second;
}

Json HealthMonitor::scores(const std::string& kind) const {
  Json items = Json::array();
  std::optional<Kind> only = kind.empty() ? std::nullopt : analytics::parseKind(kind);
  for (const auto& [key, value] : scores_) {
    if (only && key.first != *only) continue;
    items.push_back(value);
  }
  return items;
}

}  // namespace ballast::controller
