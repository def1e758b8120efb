#include "controller/analytics.h"

#include "controller/sqlite.h"

#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <string_view>

namespace ballast::controller {

using namespace analytics;

namespace analytics {

namespace {

constexpr const char* kKindNames[kKinds] = {"vs", "pool", "server", "se"};
constexpr const char* kPhaseNames[kPhases] = {"header", "connect", "response", "transfer", "total"};
constexpr const char* kClassNames[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

}  // namespace

const char* kindName(Kind kind) { return kKindNames[static_cast<size_t>(kind)]; }

std::optional<Kind> parseKind(const std::string& text) {
  for (size_t i = 0; i < kKinds; ++i) {
    if (text == kKindNames[i]) return static_cast<Kind>(i);
  }
  return std::nullopt;
}

const char* phaseName(Phase phase) { return kPhaseNames[static_cast<size_t>(phase)]; }

// ---- PhaseHistogram ---------------------------------------------------------------------------

uint64_t PhaseHistogram::upperBoundUs(size_t bucket) {
  return kPhaseBoundsUs[std::min(bucket, kBounds - 1)];
}

uint64_t PhaseHistogram::lowerBoundUs(size_t bucket) {
  return bucket == 0 ? 0 : upperBoundUs(bucket - 1);
}

void PhaseHistogram::add(size_t bucket, uint64_t count) {
  if (bucket >= kBuckets || count == 0) return;
  auto index = static_cast<uint8_t>(bucket);
  auto it = std::lower_bound(buckets_.begin(), buckets_.end(), index,
                             [](const auto& entry, uint8_t i) { return entry.first < i; });
  if (it != buckets_.end() && it->first == index) {
    it->second += count;
  } else {
    buckets_.insert(it, {index, count});
  }
  count_ += count;
}

void PhaseHistogram::merge(const PhaseHistogram& other) {
  if (other.buckets_.empty()) {
    sum_us_ += other.sum_us_;
    return;
  }
  std::vector<std::pair<uint8_t, uint64_t>> merged;
  merged.reserve(buckets_.size() + other.buckets_.size());
  auto a = buckets_.cbegin();
  auto b = other.buckets_.cbegin();
  while (a != buckets_.cend() || b != other.buckets_.cend()) {
    if (b == other.buckets_.cend() || (a != buckets_.cend() && a->first < b->first)) {
      merged.push_back(*a++);
    } else if (a == buckets_.cend() || b->first < a->first) {
      merged.push_back(*b++);
    } else {
      merged.emplace_back(a->first, a->second + b->second);
      ++a;
      ++b;
    }
  }
  buckets_ = std::move(merged);
  count_ += other.count_;
  sum_us_ += other.sum_us_;
}

std::optional<double> PhaseHistogram::percentileUs(double q) const {
  if (count_ == 0 || std::isnan(q)) return std::nullopt;
  double rank = std::clamp(q, 0.0, 1.0) * static_cast<double>(count_);
  double below = 0;
  for (const auto& [bucket, n] : buckets_) {
    double here = static_cast<double>(n);
    if (below + here >= rank) {
      double lower = static_cast<double>(lowerBoundUs(bucket));
      if (bucket >= kBounds) return lower;  // overflow: nothing known above its lower bound
      double upper = static_cast<double>(upperBoundUs(bucket));
      return lower + (upper - lower) * (rank - below) / here;
    }
    below += here;
  }
  size_t last = buckets_.back().first;  // only reached through rounding at q = 1
  return static_cast<double>(last >= kBounds ? lowerBoundUs(last) : upperBoundUs(last));
}

std::optional<double> PhaseHistogram::meanUs() const {
  if (count_ == 0) return std::nullopt;
  return static_cast<double>(sum_us_) / static_cast<double>(count_);
}

double PhaseHistogram::countAtOrBelow(double us) const {
  double total = 0;
  for (const auto& [bucket, n] : buckets_) {
    double lower = static_cast<double>(lowerBoundUs(bucket));
    if (bucket >= kBounds || lower >= us) break;  // overflow samples are all counted above
    double upper = static_cast<double>(upperBoundUs(bucket));
    if (upper <= us) {
      total += static_cast<double>(n);
    } else {
      total += static_cast<double>(n) * (us - lower) / (upper - lower);
      break;
    }
  }
  return total;
}

// ---- Counters and Window ----------------------------------------------------------------------

void Counters::add(const Counters& o) {
  connections += o.connections;
  requests += o.requests;
  bytes_in += o.bytes_in;
  bytes_out += o.bytes_out;
  retries += o.retries;
  ejections += o.ejections;
  for (size_t i = 0; i < responses.size(); ++i) responses[i] += o.responses[i];
  for (size_t i = 0; i < errors.size(); ++i) errors[i] += o.errors[i];
  for (size_t i = 0; i < kPhases; ++i) phases[i].merge(o.phases[i]);
}

uint64_t Counters::responsesTotal() const {
  uint64_t total = 0;
  for (uint64_t n : responses) total += n;
  return total;
}

uint64_t Counters::errorsTotal() const {
  uint64_t total = 0;
  for (uint64_t n : errors) total += n;
  return total;
}

std::optional<double> Counters::errorRate() const {
  if (requests == 0) return std::nullopt;
  uint64_t answered = responsesTotal();
  uint64_t unanswered = requests > answered ? requests - answered : 0;
  double failed = static_cast<double>(responses[4] + std::min(unanswered, errorsTotal()));
  return std::min(1.0, failed / static_cast<double>(requests));
}

std::optional<double> Window::apdex(double threshold_us) const {
  const PhaseHistogram& total = counters.phases[static_cast<size_t>(Phase::Total)];
  if (total.count() == 0 || !(threshold_us > 0)) return std::nullopt;
  double satisfied = total.countAtOrBelow(threshold_us);
  double within_4t = total.countAtOrBelow(4 * threshold_us);
  return (satisfied + within_4t) / 2 / static_cast<double>(total.count());
}

}  // namespace analytics

namespace {

constexpr int64_t kNone = std::numeric_limits<int64_t>::min();
constexpr size_t kMaxNameLength = 256;
// Deltas above this are garbage (a petabyte or 10^15 requests in one report), not traffic;
// refusing them keeps sums far from overflowing.
constexpr double kMaxDelta = 1e15;
constexpr double kMaxIntervalS = 86400;
constexpr uint8_t kFormat = 1;  // of an encoded point

// The counters a point stores, as numbered fields (for the encoding).
constexpr size_t kScalarCounters = 6;
constexpr size_t kCounterFields = kScalarCounters + 5 + kErrorKinds;
static_assert(kCounterFields <= 32 && kGauges <= 32, "masks are 32 bits");

template <typename C>  // Counters or const Counters
auto& counterField(C& c, size_t i) {
  switch (i) {
    case 0: return c.connections;
    case 1: return c.requests;
    case 2: return c.bytes_in;
    case 3: return c.bytes_out;
    case 4: return c.retries;
    case 5: return c.ejections;
    default: break;
  }
  if (i < kScalarCounters + 5) return c.responses[i - kScalarCounters];
  return c.errors[i - kScalarCounters - 5];
}

int64_t alignDown(int64_t t, int64_t step) {
  int64_t q = t / step;
  if (t % step != 0 && t < 0) --q;
  return q * step;
}

// The limit 0 means "none": a sum with an unlimited part is unlimited.
double combineGauge(size_t gauge, double a, double b) {
  if (gauge == static_cast<size_t>(Gauge::MaxConnections) && (a == 0 || b == 0)) return 0;
  return a + b;
}

// Gauge values with a presence mask (absent differs from 0).
struct GaugeSet {
  std::array<double, kGauges> values{};
  uint32_t mask = 0;

  void add(size_t gauge, double value) {
    uint32_t bit = 1u << gauge;
    values[gauge] = (mask & bit) ? combineGauge(gauge, values[gauge], value) : value;
    mask |= bit;
  }
  void add(Gauge gauge, double value) { add(static_cast<size_t>(gauge), value); }
  void add(const GaugeSet& other) {
    for (size_t g = 0; g < kGauges; ++g) {
      if (other.mask & (1u << g)) add(g, other.values[g]);
    }
  }
};

// ---- reading reports (untrusted JSON) ---------------------------------------------------------

const Json* member(const Json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

std::optional<double> number(const Json* j) {
  if (j == nullptr || !j->is_number()) return std::nullopt;
  double v = j->get<double>();
  if (!std::isfinite(v) || v < 0) return std::nullopt;
  return v;
}

uint64_t delta(const Json* j) {
  std::optional<double> v = number(j);
  if (!v || *v > kMaxDelta) return 0;
  if (j->is_number_unsigned()) return j->get<uint64_t>();
  if (j->is_number_integer()) return static_cast<uint64_t>(j->get<int64_t>());
  return static_cast<uint64_t>(*v);
}

void readGauge(const Json& object, const char* key, Gauge gauge, GaugeSet& into) {
  std::optional<double> v = number(member(object, key));
  if (v && *v <= kMaxDelta) into.add(gauge, *v);
}

void readHistogram(const Json* h, PhaseHistogram& into) {
  if (h == nullptr) return;
  const Json* buckets = member(*h, "buckets");
  if (buckets == nullptr || !buckets->is_array()) return;
  uint64_t added = 0;
  for (const Json& entry : *buckets) {
    if (!entry.is_array() || entry.size() < 2 || !entry[0].is_number_integer()) continue;
    int64_t index = entry[0].get<int64_t>();
    if (index < 0 || index >= static_cast<int64_t>(PhaseHistogram::kBuckets)) continue;
    uint64_t n = delta(&entry[1]);
    into.add(static_cast<size_t>(index), n);
    added += n;
  }
  // "count" is implied by the buckets; the sum only matters when some samples came with it.
  if (added > 0) into.addSumUs(delta(member(*h, "sum_us")));
}

// Histograms merge only over the same bucket table (an engine of another version might use
// another one); a report without the table is taken to use ours. Bounds are compared to the
// microsecond, whatever their rounding.
bool sameBounds(const Json& counters) {
  const Json* bounds = member(counters, "phase_bounds_us");
  if (bounds == nullptr) return true;
  if (!bounds->is_array() || bounds->size() != PhaseHistogram::kBounds) return false;
  for (size_t i = 0; i < PhaseHistogram::kBounds; ++i) {
    std::optional<double> v = number(&(*bounds)[i]);
    if (!v || std::fabs(*v - static_cast<double>(PhaseHistogram::upperBoundUs(i))) > 1) {
      return false;
    }
  }
  return true;
}

// What one report says about one object.
struct Contribution {
  Counters counters;
  GaugeSet gauges;

  void add(const Contribution& other) {
    counters.add(other.counters);
    gauges.add(other.gauges);
  }
};

Contribution readEntry(const Json& entry, bool with_phases) {
  Contribution c;
  Counters& k = c.counters;
  k.connections = delta(member(entry, "connections_total"));
  k.requests = delta(member(entry, "requests"));
  k.bytes_in = delta(member(entry, "bytes_in"));
  k.bytes_out = delta(member(entry, "bytes_out"));
  k.retries = delta(member(entry, "retries"));
  k.ejections = delta(member(entry, "ejections"));
  if (const Json* responses = member(entry, "responses")) {
    for (size_t i = 0; i < 5; ++i) k.responses[i] = delta(member(*responses, kClassNames[i]));
  }
  if (const Json* errors = member(entry, "errors")) {
    for (size_t i = 0; i < kErrorKinds; ++i) {
      k.errors[i] = delta(member(*errors, errorKindName(static_cast<ErrorKind>(i))));
    }
  }
  if (const Json* phases = member(entry, "phases"); phases != nullptr && with_phases) {
    for (size_t i = 0; i < kPhases; ++i) {
      readHistogram(member(*phases, kPhaseNames[i]), k.phases[i]);
    }
  }
  readGauge(entry, "connections_active", Gauge::ConnectionsActive, c.gauges);
  readGauge(entry, "connections_idle", Gauge::ConnectionsIdle, c.gauges);
  readGauge(entry, "in_flight", Gauge::InFlight, c.gauges);
  readGauge(entry, "max_connections", Gauge::MaxConnections, c.gauges);
  if (const Json* health = member(entry, "health"); health != nullptr && health->is_string()) {
    static constexpr std::pair<const char*, Gauge> kHealth[] = {
        {"up", Gauge::ServersUp},
        {"down", Gauge::ServersDown},
        {"ejected", Gauge::ServersEjected},
        {"disabled", Gauge::ServersDisabled},
        {"draining", Gauge::ServersDraining}};
    for (const auto& [name, gauge] : kHealth) {
      if (*health == name) c.gauges.add(gauge, 1);
    }
  }
  return c;
}

bool usableName(const std::string& name) { return !name.empty() && name.size() <= kMaxNameLength; }

// ---- encoding of a closed point ---------------------------------------------------------------

class Writer {
 public:
  void byte(uint8_t b) { out_.push_back(static_cast<char>(b)); }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      byte(static_cast<uint8_t>(v | 0x80));
      v >>= 7;
    }
    byte(static_cast<uint8_t>(v));
  }
  // Whole values (nearly all gauges) as a varint; others as the 8 bytes of the double.
  void real(double v) {
    if (v >= 0 && v < 4503599627370496.0 && v == std::floor(v)) {
      varint(static_cast<uint64_t>(v) << 1);
      return;
    }
    varint(1);
    char raw[8];
    std::memcpy(raw, &v, sizeof raw);
    out_.append(raw, sizeof raw);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool ok() const { return ok_; }
  bool atEnd() const { return pos_ == in_.size(); }
  uint8_t byte() {
    if (pos_ >= in_.size()) {
      ok_ = false;
      return 0;
    }
    return static_cast<uint8_t>(in_[pos_++]);
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = byte();
      if (!ok_) return 0;
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    ok_ = false;
    return 0;
  }
  double real() {
    uint64_t tag = varint();
    if ((tag & 1) == 0) return static_cast<double>(tag >> 1);
    if (in_.size() - pos_ < 8) {
      ok_ = false;
      return 0;
    }
    double v;
    std::memcpy(&v, in_.data() + pos_, sizeof v);
    pos_ += 8;
    return v;
  }

 private:
  std::string_view in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

struct StoredPoint {
  int64_t start_ms;
  std::string data;  // Point::encode()
};

// One SE's share of the open point: the seconds its reports covered, its latest gauges.
struct SeSlot {
  int64_t interval_ms = 0;
  GaugeSet gauges;
};

}  // namespace

// A point: counter sums, the seconds reports covered, and gauge sums over gauge_samples points
// (1 for a fine point; a rollup keeps the mean of its fine points).
struct Analytics::Point {
  int64_t start_ms = 0;
  int64_t covered_ms = 0;
  Counters counters;
  GaugeSet gauge_sums;
  uint32_t gauge_samples = 0;

  void merge(const Point& other) {
    covered_ms += other.covered_ms;
    counters.add(other.counters);
    for (size_t g = 0; g < kGauges; ++g) {
      if (other.gauge_sums.mask & (1u << g)) {
        gauge_sums.values[g] += other.gauge_sums.values[g];
        gauge_sums.mask |= 1u << g;
      }
    }
    gauge_samples += other.gauge_samples;
  }
  Gauges gauges() const {
    Gauges out;
    if (gauge_samples == 0) return out;
    for (size_t g = 0; g < kGauges; ++g) {
      if (gauge_sums.mask & (1u << g)) out[g] = gauge_sums.values[g] / gauge_samples;
    }
    return out;
  }

  std::string encode() const {
    Writer w;
    w.byte(kFormat);
    w.varint(static_cast<uint64_t>(std::max<int64_t>(covered_ms, 0)));
    uint32_t mask = 0;
    for (size_t i = 0; i < kCounterFields; ++i) {
      if (counterField(counters, i) != 0) mask |= 1u << i;
    }
    w.varint(mask);
    for (size_t i = 0; i < kCounterFields; ++i) {
      if (mask & (1u << i)) w.varint(counterField(counters, i));
    }
    w.varint(gauge_sums.mask);
    if (gauge_sums.mask != 0) {
      w.varint(gauge_samples);
      for (size_t g = 0; g < kGauges; ++g) {
        if (gauge_sums.mask & (1u << g)) w.real(gauge_sums.values[g]);
      }
    }
    uint8_t phases = 0;
    for (size_t p = 0; p < kPhases; ++p) {
      if (counters.phases[p].count() != 0) phases |= static_cast<uint8_t>(1u << p);
    }
    w.byte(phases);
    for (size_t p = 0; p < kPhases; ++p) {
      if ((phases & (1u << p)) == 0) continue;
      const PhaseHistogram& h = counters.phases[p];
      w.varint(h.sumUs());
      w.varint(h.buckets().size());
      for (const auto& [bucket, n] : h.buckets()) {
        w.byte(bucket);
        w.varint(n);
      }
    }
    return w.take();
  }

  // false when `data` is not a point this code wrote.
  bool decode(std::string_view data) {
    Reader r(data);
    if (r.byte() != kFormat) return false;
    covered_ms = static_cast<int64_t>(std::min<uint64_t>(r.varint(), INT64_MAX));
    uint64_t mask = r.varint();
    if (mask >> kCounterFields) return false;
    for (size_t i = 0; i < kCounterFields; ++i) {
      if (mask & (1u << i)) counterField(counters, i) = r.varint();
    }
    uint64_t gauge_mask = r.varint();
    if (gauge_mask >> kGauges) return false;
    gauge_sums.mask = static_cast<uint32_t>(gauge_mask);
    if (gauge_mask != 0) {
      gauge_samples = static_cast<uint32_t>(std::min<uint64_t>(r.varint(), UINT32_MAX));
      for (size_t g = 0; g < kGauges; ++g) {
        if ((gauge_mask & (1u << g)) == 0) continue;
        gauge_sums.values[g] = r.real();
        if (!std::isfinite(gauge_sums.values[g])) return false;
      }
    }
    uint8_t phases = r.byte();
    if (phases >> kPhases) return false;
    for (size_t p = 0; p < kPhases && r.ok(); ++p) {
      if ((phases & (1u << p)) == 0) continue;
      PhaseHistogram& h = counters.phases[p];
      h.addSumUs(r.varint());
      uint64_t n = r.varint();
      if (n > PhaseHistogram::kBuckets) return false;
      for (uint64_t i = 0; i < n && r.ok(); ++i) {
        uint8_t bucket = r.byte();
        if (bucket >= PhaseHistogram::kBuckets) return false;
        h.add(bucket, r.varint());
      }
    }
    return r.ok() && r.atEnd();
  }
};

struct Analytics::Series {
  // The fine point being filled: counters summed as reports come, per SE its gauges.
  int64_t open_start_ms = kNone;
  Counters open_counters;
  std::map<std::string, SeSlot> open_ses;
  // The rollup being built from the fine points closed so far in its step.
  std::optional<Point> coarse_open;
  std::deque<StoredPoint> fine;  // closed, oldest first
  // Closed rollups, oldest first. With a database only those not written yet: the others are
  // read from it, so that a week of histograms does not sit in memory.
  std::deque<StoredPoint> coarse;
  int64_t last_update_ms = 0;
  int64_t fine_flushed_ms = kNone;    // start of the newest fine point written
  int64_t coarse_on_disk_ms = kNone;  // start of the newest rollup in the database, if retained

  bool isOpen() const { return open_start_ms != kNone; }
  bool empty() const {
    return !isOpen() && !coarse_open && fine.empty() && coarse.empty() &&
           coarse_on_disk_ms == kNone;
  }

  Point openPoint() const {
    Point p;
    p.start_ms = open_start_ms;
    p.counters = open_counters;
    for (const auto& [se, slot] : open_ses) {
      p.covered_ms = std::max(p.covered_ms, slot.interval_ms);  // engines report in parallel
      p.gauge_sums.add(slot.gauges);
    }
    p.gauge_samples = p.gauge_sums.mask != 0 ? 1 : 0;
    return p;
  }
};

namespace {

// ---- SQLite -----------------------------------------------------------------------------------

using sqlite::Statement;
using sqlite::exec;

// ---- metrics of query() -----------------------------------------------------------------------

using MetricValue = std::function<std::optional<double>(const Window&, double apdex_t)>;
struct Metric {
  std::string name;
  MetricValue value;
};

std::optional<double> perSecond(const Window& w, uint64_t count) { return w.perSecond(count); }

std::vector<Metric> metricsOf(Kind kind) {
  std::vector<Metric> m;
  auto rate = [&m](std::string name, std::function<uint64_t(const Counters&)> count) {
    m.push_back({std::move(name),
                 [count](const Window& w, double) { return perSecond(w, count(w.counters)); }});
  };
  auto errors = [](const Counters& c, std::initializer_list<ErrorKind> kinds) {
    uint64_t n = 0;
    for (ErrorKind k : kinds) n += c.error(k);
    return n;
  };
  auto gauge = [&m](std::string name, Gauge g) {
    m.push_back({std::move(name), [g](const Window& w, double) { return w.gauge(g); }});
  };
  rate("requests_per_s", [](const Counters& c) { return c.requests; });
  rate("connections_per_s", [](const Counters& c) { return c.connections; });
  gauge("connections_active", Gauge::ConnectionsActive);
  rate("bytes_in_per_s", [](const Counters& c) { return c.bytes_in; });
  rate("bytes_out_per_s", [](const Counters& c) { return c.bytes_out; });
  for (size_t i = 0; i < 5; ++i) {
    rate(std::string("responses_") + kClassNames[i] + "_per_s",
         [i](const Counters& c) { return c.responses[i]; });
  }
  rate("errors_per_s", [](const Counters& c) { return c.errorsTotal(); });
  rate("resets_per_s", [errors](const Counters& c) {
    return errors(c, {ErrorKind::ServerReset, ErrorKind::ConnectRefused, ErrorKind::ClientAbort});
  });
  rate("timeouts_per_s", [errors](const Counters& c) {
    return errors(c, {ErrorKind::HeaderTimeout, ErrorKind::ClientTimeout, ErrorKind::ConnectTimeout,
                      ErrorKind::ServerTimeout});
  });
  m.push_back({"error_rate", [](const Window& w, double) { return w.counters.errorRate(); }});
  bool server_side = kind == Kind::Server || kind == Kind::Pool;
  for (size_t p = 0; p < kPhases; ++p) {
    auto phase = static_cast<Phase>(p);
    if (server_side && phase != Phase::Connect && phase != Phase::Response) continue;
    std::string prefix = std::string("latency_") + kPhaseNames[p] + "_";
    static constexpr std::pair<const char*, double> kPercentiles[] = {
        {"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}};
    for (const auto& [suffix, quantile] : kPercentiles) {
      double q = quantile;
      m.push_back({prefix + suffix + "_ms", [phase, q](const Window& w, double) {
                     std::optional<double> us = w.percentileUs(phase, q);
                     return us ? std::optional<double>(*us / 1000) : std::nullopt;
                   }});
    }
    m.push_back({prefix + "mean_ms", [p](const Window& w, double) {
                   std::optional<double> us = w.counters.phases[p].meanUs();
                   return us ? std::optional<double>(*us / 1000) : std::nullopt;
                 }});
  }
  if (kind == Kind::Vs) {
    m.push_back({"apdex", [](const Window& w, double t) { return w.apdex(t); }});
  }
  if (kind == Kind::Se) {
    gauge("cpu_percent", Gauge::CpuPercent);
    gauge("memory_rss_bytes", Gauge::MemoryRssBytes);
  }
  return m;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

Json optionalJson(std::optional<double> v) {
  return v && std::isfinite(*v) ? Json(*v) : Json(nullptr);
}

}  // namespace

// ---- Analytics --------------------------------------------------------------------------------

Analytics::Analytics(const Options& options, sqlite3* db) : options_(options), db_(db) {}

Analytics::~Analytics() {
  if (db_ != nullptr) sqlite3_close(db_);
}

int64_t Analytics::fineRetentionMs() const {
  return fineMs() * static_cast<int64_t>(options_.fine_points);
}

int64_t Analytics::coarseRetentionMs() const {
  return coarseMs() * static_cast<int64_t>(options_.coarse_points);
}

std::unique_ptr<Analytics> Analytics::open(const Options& options, std::string* error) {
  if (options.fine_step_s < 1 || options.coarse_step_s <= options.fine_step_s ||
      options.coarse_step_s % options.fine_step_s != 0 || options.fine_points == 0 ||
      options.coarse_points == 0 || options.max_objects == 0 ||
      options.fine_step_s * static_cast<int64_t>(options.fine_points) < options.coarse_step_s) {
    *error =
        "analytics: the coarse step must be a multiple of the fine step, larger than it and "
        "within the fine retention; point counts and max_objects must be positive";
    return nullptr;
  }
  if (options.db_path.empty()) return std::unique_ptr<Analytics>(new Analytics(options, nullptr));

  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(options.db_path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    *error =
        "cannot open " + options.db_path + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return nullptr;
  }
  std::unique_ptr<Analytics> analytics(new Analytics(options, db));
  try {
    sqlite3_busy_timeout(db, 5000);
    exec(db, "PRAGMA journal_mode=WAL");
    exec(db, "PRAGMA synchronous=NORMAL");
    // Keyed for reading one object's range at one step; the index serves retention.
    exec(db,
         "CREATE TABLE IF NOT EXISTS points (step_s INTEGER NOT NULL, kind TEXT NOT NULL,"
         "  name TEXT NOT NULL, start_ms INTEGER NOT NULL, data BLOB NOT NULL,"
         "  PRIMARY KEY (step_s, kind, name, start_ms)) WITHOUT ROWID;"
         "CREATE INDEX IF NOT EXISTS points_by_time ON points (step_s, start_ms)");
    analytics->load();
  } catch (const std::exception& e) {
    *error = options.db_path + ": " + e.what();
    return nullptr;
  }
  return analytics;
}

void Analytics::load() {
  {  // points of other steps (the options changed) can no longer be read
    Statement stale(db_, "DELETE FROM points WHERE step_s NOT IN (?, ?)");
    stale.bind(1, options_.fine_step_s).bind(2, options_.coarse_step_s).run();
  }
  auto seriesOf = [this](const std::string& kind_text, const std::string& name) -> Series* {
    std::optional<Kind> kind = parseKind(kind_text);
    if (!kind || !usableName(name)) return nullptr;  // not written by this code: skipped
    std::unique_ptr<Series>& slot = series_[{*kind, name}];
    if (!slot) slot = std::make_unique<Series>();
    return slot.get();
  };
  // Rollups stay on disk: only which objects have some, and the newest.
  Statement coarse(db_,
                   "SELECT kind, name, MAX(start_ms) FROM points WHERE step_s = ?"
                   " GROUP BY kind, name");
  coarse.bind(1, options_.coarse_step_s);
  while (coarse.step()) {
    Series* s = seriesOf(coarse.text(0), coarse.text(1));
    if (s == nullptr) continue;
    s->coarse_on_disk_ms = coarse.integer(2);
    s->last_update_ms = s->coarse_on_disk_ms + coarseMs();
  }
  Statement fine(db_,
                 "SELECT kind, name, start_ms, data FROM points WHERE step_s = ?"
                 " ORDER BY kind, name, start_ms");
  fine.bind(1, options_.fine_step_s);
  while (fine.step()) {
    std::string data = fine.blob(3);
    Point check;
    if (!check.decode(data)) continue;
    Series* s = seriesOf(fine.text(0), fine.text(1));
    if (s == nullptr) continue;
    int64_t start = fine.integer(2);
    s->fine.push_back({start, std::move(data)});
    s->fine_flushed_ms = start;
    s->last_update_ms = std::max(s->last_update_ms, start + fineMs());
  }
  for (auto& [key, series] : series_) {
    Series& x = *series;
    // Fine points after the newest rollup written were not rolled up yet: do it again.
    for (const StoredPoint& stored : x.fine) {
      int64_t coarse_start = alignDown(stored.start_ms, coarseMs());
      if (x.coarse_on_disk_ms != kNone && coarse_start <= x.coarse_on_disk_ms) continue;
      Point p;
      p.decode(stored.data);
      p.start_ms = stored.start_ms;
      rollUp(x, p);
    }
  }
  while (series_.size() > options_.max_objects) dropOldest();
}

void Analytics::dropOldest() {
  auto oldest = series_.begin();
  for (auto it = series_.begin(); it != series_.end(); ++it) {
    if (it->second->last_update_ms < oldest->second->last_update_ms) oldest = it;
  }
  if (oldest == series_.end()) return;
  if (db_ != nullptr) dropped_.push_back(oldest->first);
  series_.erase(oldest);
}

Analytics::Series& Analytics::touch(Kind kind, const std::string& name, int64_t now_ms) {
  auto it = series_.find({kind, name});
  if (it == series_.end()) {
    if (series_.size() >= options_.max_objects) dropOldest();
    it = series_.emplace(Key{kind, name}, std::make_unique<Series>()).first;
  }
  Series& s = *it->second;
  advance(s, now_ms);
  if (!s.isOpen()) {
    int64_t start = alignDown(now_ms, fineMs());
    // A clock that went back must not write before a point already closed.
    if (!s.fine.empty()) start = std::max(start, s.fine.back().start_ms + fineMs());
    s.open_start_ms = start;
  }
  s.last_update_ms = now_ms;
  return s;
}

void Analytics::closeFine(Series& s) {
  Point p = s.openPoint();
  s.open_start_ms = kNone;
  s.open_counters = Counters();
  s.open_ses.clear();
  s.fine.push_back({p.start_ms, p.encode()});
  rollUp(s, p);
}

void Analytics::rollUp(Series& s, const Point& fine) {
  int64_t coarse_start = alignDown(fine.start_ms, coarseMs());
  if (s.coarse_open && coarse_start > s.coarse_open->start_ms) closeCoarse(s);
  if (!s.coarse_open) {
    s.coarse_open.emplace();
    s.coarse_open->start_ms = coarse_start;
  }
  s.coarse_open->merge(fine);
}

void Analytics::closeCoarse(Series& s) {
  s.coarse.push_back({s.coarse_open->start_ms, s.coarse_open->encode()});
  s.coarse_open.reset();
}

void Analytics::advance(Series& s, int64_t now_ms) {
  if (s.isOpen() && now_ms >= s.open_start_ms + fineMs()) closeFine(s);
  if (s.coarse_open && now_ms >= s.coarse_open->start_ms + coarseMs()) closeCoarse(s);
  auto trim = [now_ms](std::deque<StoredPoint>& points, int64_t step, int64_t retention,
                       size_t max_points) {
    while (!points.empty() &&
           (points.size() > max_points || points.front().start_ms + step <= now_ms - retention)) {
      points.pop_front();
    }
  };
  trim(s.fine, fineMs(), fineRetentionMs(), options_.fine_points);
  trim(s.coarse, coarseMs(), coarseRetentionMs(), options_.coarse_points);
  if (s.coarse_on_disk_ms != kNone &&
      s.coarse_on_disk_ms + coarseMs() <= now_ms - coarseRetentionMs()) {
    s.coarse_on_disk_ms = kNone;  // flush() deletes the rows
  }
}

void Analytics::ingest(const std::string& se, const Json& counters, const Json& resources,
                       double interval_s, int64_t now_ms) {
  if (!usableName(se)) return;
  int64_t interval_ms = 0;
  if (std::isfinite(interval_s) && interval_s > 0) {
    interval_ms = std::llround(std::min(interval_s, kMaxIntervalS) * 1000);
  }
  auto record = [&](Kind kind, const std::string& name, const Contribution& c) {
    Series& s = touch(kind, name, now_ms);
    s.open_counters.add(c.counters);
    SeSlot& slot = s.open_ses[se];
    slot.interval_ms += interval_ms;
    slot.gauges = c.gauges;  // the latest report of this engine wins
  };

  bool with_phases = sameBounds(counters);
  Contribution engine;
  if (const Json* vss = member(counters, "virtual_services"); vss && vss->is_object()) {
    for (const auto& [name, entry] : vss->items()) {
      if (!entry.is_object() || !usableName(name)) continue;
      Contribution c = readEntry(entry, with_phases);
      engine.add(c);
      record(Kind::Vs, name, c);
    }
  }
  std::map<std::string, Contribution> pools;
  if (const Json* servers = member(counters, "servers"); servers && servers->is_object()) {
    for (const auto& [name, entry] : servers->items()) {
      if (!entry.is_object() || !usableName(name)) continue;
      Contribution c = readEntry(entry, with_phases);
      record(Kind::Server, name, c);
      std::string pool;
      if (const Json* p = member(entry, "pool"); p && p->is_string()) {
        pool = p->get<std::string>();
      } else {
        pool = name.substr(0, std::min(name.find('/'), name.size()));  // "<pool>/<address>"
      }
      if (usableName(pool) && pool != name) pools[pool].add(c);
    }
  }
  for (const auto& [pool, c] : pools) record(Kind::Pool, pool, c);

  engine.gauges.mask &= 1u << static_cast<size_t>(Gauge::ConnectionsActive);  // others: per VS
  readGauge(resources, "cpu_percent", Gauge::CpuPercent, engine.gauges);
  readGauge(resources, "cpu_cores", Gauge::CpuCores, engine.gauges);
  readGauge(resources, "memory_rss_bytes", Gauge::MemoryRssBytes, engine.gauges);
  readGauge(resources, "memory_total_bytes", Gauge::MemoryTotalBytes, engine.gauges);
  readGauge(resources, "connections_active", Gauge::EngineConnections, engine.gauges);
  readGauge(resources, "open_files", Gauge::OpenFiles, engine.gauges);
  readGauge(resources, "max_open_files", Gauge::MaxOpenFiles, engine.gauges);
  record(Kind::Se, se, engine);
}

bool Analytics::flush(int64_t now_ms, std::string* error) {
  for (auto it = series_.begin(); it != series_.end();) {
    advance(*it->second, now_ms);
    it = it->second->empty() ? series_.erase(it) : std::next(it);
  }
  if (db_ == nullptr) return true;

  struct Written {
    Series* series;
    int64_t fine_ms;
  };
  std::vector<Written> written;
  try {
    exec(db_, "BEGIN IMMEDIATE");
    try {
      Statement drop(db_, "DELETE FROM points WHERE step_s IN (?, ?) AND kind = ? AND name = ?");
      for (const Key& key : dropped_) {
        drop.bind(1, options_.fine_step_s).bind(2, options_.coarse_step_s);
        drop.bind(3, kindName(key.first)).bind(4, key.second).run();
      }
      Statement insert(db_,
                       "INSERT OR REPLACE INTO points (step_s, kind, name, start_ms, data)"
                       " VALUES (?, ?, ?, ?, ?)");
      for (auto& entry : series_) {
        const Key& key = entry.first;  // not a structured binding: lambdas capture it (C++20)
        Series& s = *entry.second;
        auto write = [&](const std::deque<StoredPoint>& points, int64_t step_s, int64_t after) {
          auto first = points.end();  // the points not written yet are the newest few
          while (first != points.begin() && std::prev(first)->start_ms > after) --first;
          for (auto p = first; p != points.end(); ++p) {
            insert.bind(1, step_s).bind(2, kindName(key.first)).bind(3, key.second);
            insert.bind(4, p->start_ms).bindBlob(5, p->data).run();
          }
          return points.empty() ? after : std::max(after, points.back().start_ms);
        };
        int64_t fine = write(s.fine, options_.fine_step_s, s.fine_flushed_ms);
        write(s.coarse, options_.coarse_step_s, kNone);
        written.push_back({&s, fine});
      }
      Statement expire(db_, "DELETE FROM points WHERE step_s = ? AND start_ms <= ?");
      expire.bind(1, options_.fine_step_s).bind(2, now_ms - fineRetentionMs() - fineMs()).run();
      expire.bind(1, options_.coarse_step_s)
          .bind(2, now_ms - coarseRetentionMs() - coarseMs())
          .run();
      exec(db_, "COMMIT");
    } catch (...) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  } catch (const std::exception& e) {
    *error = options_.db_path + ": " + e.what();
    return false;
  }
  for (const Written& w : written) {
    Series& s = *w.series;
    s.fine_flushed_ms = w.fine_ms;
    if (!s.coarse.empty()) {
      s.coarse_on_disk_ms = std::max(s.coarse_on_disk_ms, s.coarse.back().start_ms);
      s.coarse.clear();
    }
  }
  dropped_.clear();
  return true;
}

template <typename Visit>
bool Analytics::forEachPoint(const Key& key, const Series& s, bool coarse, int64_t from_ms,
                             int64_t to_ms, int64_t now_ms, Visit&& visit,
                             std::string* error) const {
  int64_t step = coarse ? coarseMs() : fineMs();
  int64_t horizon = now_ms - (coarse ? coarseRetentionMs() : fineRetentionMs());
  from_ms = std::max(from_ms, horizon - step + 1);  // points ending after the horizon
  auto visitStored = [&](int64_t start, std::string_view data) {
    if (start < from_ms || start >= to_ms) return;
    Point p;
    if (!p.decode(data)) return;
    p.start_ms = start;
    visit(p, step);
  };
  bool ok = true;
  if (coarse && s.coarse_on_disk_ms != kNone && from_ms <= s.coarse_on_disk_ms) {
    try {
      Statement rows(db_,
                     "SELECT start_ms, data FROM points WHERE step_s = ? AND kind = ?"
                     " AND name = ? AND start_ms >= ? AND start_ms < ? ORDER BY start_ms");
      rows.bind(1, options_.coarse_step_s).bind(2, kindName(key.first)).bind(3, key.second);
      rows.bind(4, from_ms).bind(5, to_ms);
      while (rows.step()) visitStored(rows.integer(0), rows.blob(1));
    } catch (const std::exception& e) {
      if (error != nullptr) *error = options_.db_path + ": " + e.what();
      ok = false;
    }
  }
  for (const StoredPoint& stored : coarse ? s.coarse : s.fine) {
    visitStored(stored.start_ms, stored.data);
  }
  auto wanted = [&](int64_t start) { return start >= from_ms && start < to_ms; };
  if (coarse && s.coarse_open && wanted(s.coarse_open->start_ms)) visit(*s.coarse_open, step);
  // The open fine point is at both resolutions: a rollup only takes fine points once closed.
  if (s.isOpen() && wanted(s.open_start_ms)) visit(s.openPoint(), fineMs());
  return ok;
}

Window Analytics::window(Kind kind, const std::string& name, double seconds, int64_t now_ms) const {
  Window w;
  auto it = series_.find({kind, name});
  if (it == series_.end()) return w;
  const Series& s = *it->second;  // a database error leaves out what it would have read
  double span_ms = std::clamp(seconds, 0.0, 1e9) * 1000;
  bool coarse = span_ms > static_cast<double>(fineRetentionMs());
  // The point containing now_ms counts even when it started before the window.
  int64_t from = std::min(now_ms - static_cast<int64_t>(span_ms),
                          alignDown(now_ms, coarse ? coarseMs() : fineMs()));
  int64_t covered_ms = 0;
  int64_t gauges_start = kNone;
  auto take = [&](const Point& p, int64_t length) {
    w.counters.add(p.counters);
    covered_ms += p.covered_ms > 0 ? p.covered_ms : length;  // interval_s missing: a whole step
    if (p.gauge_samples > 0 && p.start_ms >= gauges_start) {
      gauges_start = p.start_ms;
      w.gauges = p.gauges();
    }
  };
  forEachPoint(it->first, s, coarse, from, std::numeric_limits<int64_t>::max(), now_ms, take,
               nullptr);
  if (coarse && !s.fine.empty() && s.fine.back().start_ms > gauges_start) {
    Point latest;  // fresher gauges than a rollup's mean
    if (latest.decode(s.fine.back().data) && latest.gauge_samples > 0) w.gauges = latest.gauges();
  }
  w.seconds = static_cast<double>(covered_ms) / 1000;
  return w;
}

bool Analytics::has(Kind kind, const std::string& name) const {
  return series_.count({kind, name}) != 0;
}

std::vector<std::string> Analytics::names(Kind kind) const {
  std::vector<std::string> out;
  for (auto it = series_.lower_bound({kind, std::string()});
       it != series_.end() && it->first.first == kind; ++it) {
    out.push_back(it->first.second);
  }
  return out;
}

std::vector<std::string> Analytics::metricNames(Kind kind) {
  std::vector<std::string> out;
  for (const Metric& m : metricsOf(kind)) out.push_back(m.name);
  return out;
}

Json Analytics::query(const std::string& kind_text, const std::string& name,
                      const std::vector<std::string>& metric_names, int64_t from_ms, int64_t to_ms,
                      int64_t step_s, double apdex_threshold_us, int64_t now_ms,
                      QueryError* error) const {
  auto fail = [error](int status, std::string message) {
    *error = {status, std::move(message)};
    return Json(nullptr);
  };
  std::optional<Kind> kind = parseKind(kind_text);
  if (!kind) {
    return fail(404, "unknown analytics kind \"" + kind_text + "\": one of vs, pool, server, se");
  }

  std::vector<Metric> available = metricsOf(*kind);
  std::vector<const Metric*> metrics;
  if (metric_names.empty()) {
    return fail(400,
                std::string("metric is required, one or more of: ") + joined(metricNames(*kind)));
  }
  for (const std::string& wanted : metric_names) {
    auto it = std::find_if(available.begin(), available.end(),
                           [&](const Metric& m) { return m.name == wanted; });
    if (it == available.end()) {
      return fail(400, "unknown metric \"" + wanted + "\" for " + kindName(*kind) + ": one of " +
                           joined(metricNames(*kind)));
    }
    if (wanted == "apdex" && !(apdex_threshold_us > 0)) {
      return fail(400, "apdex needs a positive threshold");
    }
    metrics.push_back(&*it);
  }

  int64_t to = to_ms > 0 ? to_ms : now_ms;
  int64_t from = from_ms > 0 ? from_ms : to - 3600 * 1000;
  if (from >= to) return fail(400, "bad range: from must be before to");
  bool coarse = from < now_ms - fineRetentionMs();
  int64_t resolution = coarse ? coarseMs() : fineMs();
  auto steps = [&](int64_t step) {
    int64_t first = alignDown(from, step);
    return (to - first + step - 1) / step;
  };
  constexpr int64_t kMaxStepS = int64_t{10} * 366 * 86400;  // keeps the arithmetic in range
  if (step_s < 0 || step_s > kMaxStepS) {
    return fail(400, "bad step: seconds from 0 (the resolution) to " + std::to_string(kMaxStepS));
  }
  int64_t step = resolution;
  if (step_s > 0) {
    step = (step_s * 1000 + resolution - 1) / resolution * resolution;
    // An explicit step is what the caller wants to see: refuse rather than change it.
    if (steps(step) > static_cast<int64_t>(kMaxQueryPoints)) {
      int64_t needed = (to - from) / static_cast<int64_t>(kMaxQueryPoints - 1);
      int64_t least = (needed + resolution - 1) / resolution * resolution;
      return fail(400, "too many points: " + std::to_string(steps(step)) + " steps of " +
                           std::to_string(step / 1000) + " s, at most " +
                           std::to_string(kMaxQueryPoints) +
                           "; use step >= " + std::to_string(least / 1000));
    }
  } else {
    // No step asked for: widen the resolution until the answer fits.
    int64_t span = to - from;
    int64_t per_point =
        (span + static_cast<int64_t>(kMaxQueryPoints) - 1) / static_cast<int64_t>(kMaxQueryPoints);
    step = std::max<int64_t>(1, (per_point + resolution - 1) / resolution) * resolution;
    while (steps(step) > static_cast<int64_t>(kMaxQueryPoints)) step += resolution;
  }

  auto it = series_.find({*kind, name});
  if (it == series_.end()) {
    return fail(404, std::string("no analytics for ") + kindName(*kind) + "/" + name);
  }

  int64_t first = alignDown(from, step);
  auto count = static_cast<size_t>(steps(step));
  struct Step {
    bool any = false;
    int64_t covered_ms = 0;
    Counters counters;
    std::array<double, kGauges> gauge_total{};
    std::array<uint32_t, kGauges> gauge_points{};
  };
  std::vector<Step> buckets(count);
  std::string read_error;
  auto add = [&](const Point& p, int64_t length) {
    Step& b = buckets[static_cast<size_t>((p.start_ms - first) / step)];
    b.any = true;
    b.covered_ms += p.covered_ms > 0 ? p.covered_ms : length;
    b.counters.add(p.counters);
    Gauges g = p.gauges();
    for (size_t i = 0; i < kGauges; ++i) {
      if (!g[i]) continue;
      b.gauge_total[i] += *g[i];
      ++b.gauge_points[i];
    }
  };
  if (!forEachPoint(it->first, *it->second, coarse, first,
                    first + static_cast<int64_t>(count) * step, now_ms, add, &read_error)) {
    return fail(500, read_error);
  }

  Json timestamps = Json::array();
  Json series = Json::object();
  for (const Metric* m : metrics) series[m->name] = Json::array();
  for (size_t i = 0; i < count; ++i) {
    timestamps.push_back((first + static_cast<int64_t>(i) * step) / 1000);
    Step& b = buckets[i];
    Window w;
    w.seconds = static_cast<double>(b.covered_ms) / 1000;
    w.counters = std::move(b.counters);
    for (size_t g = 0; g < kGauges; ++g) {  // a gauge over a step: the mean of its points
      if (b.gauge_points[g] > 0) w.gauges[g] = b.gauge_total[g] / b.gauge_points[g];
    }
    for (const Metric* m : metrics) {
      series[m->name].push_back(b.any ? optionalJson(m->value(w, apdex_threshold_us))
                                      : Json(nullptr));
    }
  }
  return Json{{"kind", kindName(*kind)},
              {"name", name},
              {"from", first / 1000},
              {"to", (first + static_cast<int64_t>(count) * step) / 1000},
              {"step", step / 1000},
              {"resolution", resolution / 1000},
              {"timestamps", std::move(timestamps)},
              {"series", std::move(series)}};
}

}  // namespace ballast::controller
