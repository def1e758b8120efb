// Analytics time series of the controller: the counter deltas managed engines report every
// heartbeat (docs/operations.md, "Reports"), summed over engines into points of fixed steps per
// object (virtual service, pool, server, engine), kept for a bounded time and optionally in
// SQLite so they survive a restart. Read back as a Window (for health scores) or as series for
// `GET /api/v1/analytics/{kind}/{name}` (query()).
//
// Thread-compatible: the caller serialises every call (the controller holds its mutex).
//
// Wiring, for the controller:
//   auto analytics = Analytics::open({.db_path = data_dir + "/analytics.db"}, &error);
//   on each report:  analytics->ingest(se_name, body["counters"], body["resources"],
//                                      body["interval_s"] (0 when absent), now_ms);
//   every ~10 s and at shutdown:  analytics->flush(now_ms, &error);  (log a failure, go on)
//   GET /api/v1/analytics/{kind}/{name}: analytics->query(...); a server's name contains '/'
//   ("<pool>/<address>"), so {name} is the rest of the path.
// now_ms is wall-clock milliseconds since the Unix epoch (points align to multiples of the step).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "controller/documents.h"  // Json
#include "core/stats.h"            // kErrorKinds, errorKindName, kPhaseBoundsUs

struct sqlite3;

namespace ballast::controller {

namespace analytics {

enum class Kind : uint8_t { Vs, Pool, Server, Se };
inline constexpr size_t kKinds = 4;
const char* kindName(Kind kind);  // "vs", "pool", "server", "se"
std::optional<Kind> parseKind(const std::string& text);

// Latency phases reported per request. Servers (and so pools) have only connect and response.
enum class Phase : uint8_t { Header, Connect, Response, Transfer, Total };
inline constexpr size_t kPhases = 5;
const char* phaseName(Phase phase);  // "header", "connect", ...

// Values that are a state at a moment, not a count. Per point each engine's last report counts;
// an object's value is the sum over engines (and over servers for a pool, over virtual services
// for an engine).
enum class Gauge : uint8_t {
  ConnectionsActive,
  ConnectionsIdle,  // servers: idle in the reuse pool
  InFlight,         // servers
  MaxConnections,   // the configured limit; 0 = none, and a sum with a "none" stays none
  ServersUp,        // servers and pools: how many (engine, server) pairs report each health
  ServersDown,
  ServersEjected,
  ServersDisabled,
  ServersDraining,
  CpuPercent,  // engines, from "resources"
  CpuCores,
  MemoryRssBytes,
  MemoryTotalBytes,
  EngineConnections,  // resources.connections_active: every connection the engine holds
  OpenFiles,
  MaxOpenFiles,
};
inline constexpr size_t kGauges = 16;
using Gauges = std::array<std::optional<double>, kGauges>;

// A latency histogram over the engines' phase buckets (kPhaseBoundsUs in core/stats.h), stored
// sparsely (non-zero buckets only): bucket i < 80 holds samples up to round(100 * 2^(i/4)) us,
// bucket 80 the rest. Histograms of several engines or points merge by adding bucket counts, so
// percentiles of a sum come from the merged counts, never from averaged percentiles.
class PhaseHistogram {
 public:
  static constexpr size_t kBounds = ::ballast::kPhaseBounds;
  static constexpr size_t kBuckets = kBounds + 1;  // the last one is the overflow
  static uint64_t upperBoundUs(size_t bucket);     // of bucket < kBounds
  static uint64_t lowerBoundUs(size_t bucket);     // 0 for the first bucket
  static size_t bucketFor(uint64_t us) { return ::ballast::phaseBucketIndex(us); }

  void add(size_t bucket, uint64_t count);  // bucket >= kBuckets is ignored
  void addSumUs(uint64_t us) { sum_us_ += us; }
  void merge(const PhaseHistogram& other);

  uint64_t count() const { return count_; }
  uint64_t sumUs() const { return sum_us_; }
  // (bucket, count) pairs in bucket order, counts > 0.
  const std::vector<std::pair<uint8_t, uint64_t>>& buckets() const { return buckets_; }

  // The value at rank q * count, interpolated linearly inside its bucket; the overflow bucket
  // answers its lower bound. nullopt when empty.
  std::optional<double> percentileUs(double q) const;
  std::optional<double> meanUs() const;
  // Samples at or below `us`, counting the bucket containing it in proportion.
  double countAtOrBelow(double us) const;

 private:
  std::vector<std::pair<uint8_t, uint64_t>> buckets_;
  uint64_t count_ = 0;
  uint64_t sum_us_ = 0;
};

// Counter deltas summed over a point or a window.
struct Counters {
  uint64_t connections = 0;  // new connections (connections_total deltas)
  uint64_t requests = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t retries = 0;
  uint64_t ejections = 0;                      // servers and pools
  std::array<uint64_t, 5> responses{};         // 1xx .. 5xx
  std::array<uint64_t, kErrorKinds> errors{};  // by ErrorKind (core/stats.h)
  std::array<PhaseHistogram, kPhases> phases;

  void add(const Counters& other);
  uint64_t responsesTotal() const;
  uint64_t errorsTotal() const;
  uint64_t error(ErrorKind kind) const { return errors[static_cast<size_t>(kind)]; }
  // Failed requests: 5xx responses plus requests that got no response at all. The latter are
  // estimated as min(requests - responses, errors): an unanswered request always counts an
  // error, while an error answered by the engine itself (502, 503, 504) is also a response,
  // and TCP traffic has no responses at all. nullopt without requests.
  std::optional<double> errorRate() const;
};

// What happened to one object over the last `seconds` (Analytics::window).
struct Window {
  double seconds = 0;  // covered by the reports summed here; 0 = no data
  Counters counters;
  Gauges gauges;  // the latest values in the window

  double perSecond(uint64_t count) const { return seconds > 0 ? count / seconds : 0; }
  std::optional<double> gauge(Gauge g) const { return gauges[static_cast<size_t>(g)]; }
  std::optional<double> percentileUs(Phase phase, double q) const {
    return counters.phases[static_cast<size_t>(phase)].percentileUs(q);
  }
  // Apdex of the total phase with threshold T: (samples <= T + samples in (T, 4T] / 2) / count.
  // nullopt without requests.
  std::optional<double> apdex(double threshold_us) const;
};

}  // namespace analytics

class Analytics {
 public:
  struct Options {
    std::string db_path;  // "" = memory only; the controller passes DATA_DIR/analytics.db
    int64_t fine_step_s = 10;
    size_t fine_points = 360;     // 1 hour
    int64_t coarse_step_s = 300;  // a multiple of fine_step_s, at most the fine retention
    size_t coarse_points = 2016;  // 7 days
    // Objects kept; past it the least recently updated object is dropped. A point takes ~40
    // bytes for an idle object and up to ~900 for a busy one (five wide histograms). Memory
    // holds the fine points, and the rollups only without a database (with one they are read
    // from it): per object ~15 KB idle to ~250 KB busy with a database, 100 KB to 2 MB
    // without; on disk up to ~2 MB (measured with the defaults).
    size_t max_objects = 10000;
  };

  // Opens (creating) the database and loads the points it keeps; nullptr with *error set on a
  // database error or inconsistent options.
  static std::unique_ptr<Analytics> open(const Options& options, std::string* error);
  ~Analytics();
  Analytics(const Analytics&) = delete;
  Analytics& operator=(const Analytics&) = delete;

  // Adds one engine report: `counters` and `resources` as docs/operations.md describes them,
  // deltas covering `interval_s` seconds, added to the point containing now_ms. Input comes from
  // the network: anything missing counts as absent or 0, anything of the wrong type is ignored.
  void ingest(const std::string& se, const Json& counters, const Json& resources, double interval_s,
              int64_t now_ms);

  // Closes the points that ended by now_ms, drops what is past retention, and writes the closed
  // points not written yet in one transaction. The open point is not written: a restart loses
  // at most one fine step. false with *error set on a database error (retried next time).
  bool flush(int64_t now_ms, std::string* error);

  // The points of the last `seconds` (those starting in it, plus the one containing now_ms):
  // fine points when `seconds` fits the fine retention, coarse ones beyond.
  analytics::Window window(analytics::Kind kind, const std::string& name, double seconds,
                           int64_t now_ms) const;
  bool has(analytics::Kind kind, const std::string& name) const;
  std::vector<std::string> names(analytics::Kind kind) const;  // sorted

  struct QueryError {
    // 400 (bad metric, range or step), 404 (unknown kind or object), 500 (database)
    int status = 0;
    std::string message;
  };
  static constexpr size_t kMaxQueryPoints = 1000;

  // The series for GET /api/v1/analytics/{kind}/{name}?metric=a,b&from=&to=&step=:
  //   {"kind", "name", "from", "to", "step", "resolution", "timestamps": [...],
  //    "series": {"<metric>": [value or null per step]}}
  // in Unix seconds: steps align to multiples of the step, "from" is the start of the first,
  // "to" the end of the last, "timestamps" the start of each. A step without any report is
  // null. Resolution: fine points when from_ms is within the fine retention, else coarse.
  // step_s is rounded up to a multiple of the resolution; 0 = the resolution, widened to give
  // at most kMaxQueryPoints steps (an explicit step giving more is an error). to_ms <= 0 means
  // now_ms, from_ms <= 0 one hour before to. Rates divide by the seconds reports covered;
  // gauges over a step are the mean of its points. apdex_threshold_us is T for "apdex".
  // On error: null, with *error set. metricNames(kind) lists the metrics a kind has.
  Json query(const std::string& kind, const std::string& name,
             const std::vector<std::string>& metrics, int64_t from_ms, int64_t to_ms,
             int64_t step_s, double apdex_threshold_us, int64_t now_ms, QueryError* error) const;
  static std::vector<std::string> metricNames(analytics::Kind kind);

 private:
  struct Series;  // one object's points (analytics.cc)
  struct Point;
  using Key = std::pair<analytics::Kind, std::string>;

  Analytics(const Options& options, sqlite3* db);
  void load();  // throws std::runtime_error on a database error
  // The series of an object, created (within max_objects) and advanced to now_ms, with an open
  // point to add a report to.
  Series& touch(analytics::Kind kind, const std::string& name, int64_t now_ms);
  void dropOldest();
  void advance(Series& s, int64_t now_ms);
  void closeFine(Series& s);
  void rollUp(Series& s, const Point& fine);
  void closeCoarse(Series& s);
  // Visits the points of an object (point, its length in ms) whose start is in
  // [from_ms, to_ms), oldest first, at fine or coarse resolution, including the ones still open;
  // what is past retention at now_ms is skipped. false with *error set (if not null) when the
  // database could not be read; the points in memory are visited all the same.
  template <typename Visit>
  bool forEachPoint(const Key& key, const Series& s, bool coarse, int64_t from_ms, int64_t to_ms,
                    int64_t now_ms, Visit&& visit, std::string* error) const;
  int64_t fineMs() const { return options_.fine_step_s * 1000; }
  int64_t coarseMs() const { return options_.coarse_step_s * 1000; }
  int64_t fineRetentionMs() const;
  int64_t coarseRetentionMs() const;

  Options options_;
  sqlite3* db_ = nullptr;
  std::map<Key, std::unique_ptr<Series>> series_;
  std::vector<Key> dropped_;  // to delete from the database at the next flush
};

}  // namespace ballast::controller
