#include "controller/analytics.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace ballast::controller {
namespace {

using analytics::Gauge;
using analytics::Kind;
using analytics::Phase;
using analytics::PhaseHistogram;

// Aligned to 5 minutes (and so to every step the tests use).
constexpr int64_t kT0 = 1'700'000'100'000;

// A reported histogram of these samples (microseconds).
Json histogram(const std::vector<uint64_t>& samples) {
  std::map<size_t, uint64_t> counts;
  uint64_t sum = 0;
  for (uint64_t us : samples) {
    ++counts[PhaseHistogram::bucketFor(us)];
    sum += us;
  }
  Json buckets = Json::array();
  for (const auto& [bucket, n] : counts) buckets.push_back({bucket, n});
  return {{"buckets", buckets}, {"count", samples.size()}, {"sum_us", sum}};
}

Json bucketHistogram(const std::map<size_t, uint64_t>& counts) {
  Json buckets = Json::array();
  uint64_t n = 0;
  for (const auto& [bucket, count] : counts) {
    buckets.push_back({bucket, count});
    n += count;
  }
  return {{"buckets", buckets}, {"count", n}, {"sum_us", 0}};
}

Json vsCounters(const std::string& vs, Json entry) {
  return {{"virtual_services", {{vs, std::move(entry)}}}};
}

Json requests(uint64_t n) { return {{"requests", n}, {"responses", {{"2xx", n}}}}; }

Json series(const Json& answer, const std::string& metric) { return answer["series"][metric]; }

class AnalyticsTest : public ::testing::Test {
 protected:
  void SetUp() override { analytics_ = make(Analytics::Options{}); }

  static std::unique_ptr<Analytics> make(const Analytics::Options& options) {
    std::string error;
    auto a = Analytics::open(options, &error);
    EXPECT_NE(a, nullptr) << error;
    return a;
  }
  // Fine points of 1 s for 10 s, coarse points of 5 s for 20 s.
  static Analytics::Options shortOptions() {
    Analytics::Options o;
    o.fine_step_s = 1;
    o.fine_points = 10;
    o.coarse_step_s = 5;
    o.coarse_points = 4;
    return o;
  }

  Json query(const std::string& kind, const std::string& name,
             const std::vector<std::string>& metrics, int64_t from_ms, int64_t to_ms,
             int64_t step_s, int64_t now_ms, double apdex_t = 0) {
    Analytics::QueryError error;
    Json answer =
        analytics_->query(kind, name, metrics, from_ms, to_ms, step_s, apdex_t, now_ms, &error);
    EXPECT_EQ(error.status, 0) << error.message;
    return answer;
  }
  void checkRetention(const Analytics::Options& options);
  Analytics::QueryError queryError(const std::string& kind, const std::string& name,
                                   const std::vector<std::string>& metrics, int64_t from_ms,
                                   int64_t to_ms, int64_t step_s, double apdex_t = 0) {
    Analytics::QueryError error;
    Json answer = analytics_->query(kind, name, metrics, from_ms, to_ms, step_s, apdex_t,
                                    kT0 + 60'000, &error);
    EXPECT_TRUE(answer.is_null());
    return error;
  }

  std::unique_ptr<Analytics> analytics_;
};

TEST_F(AnalyticsTest, MergedHistogramsOfTwoEnginesGiveThePercentilesOfTheUnion) {
  // Log-uniform samples from 0.2 ms to 2 s, split unevenly between two engines.
  std::vector<uint64_t> a, b, all;
  uint64_t state = 12345;
  for (int i = 0; i < 5000; ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    double u = static_cast<double>(state >> 11) / static_cast<double>(1ULL << 53);
    auto us = static_cast<uint64_t>(200 * std::pow(10000.0, u));
    (i % 3 == 0 ? a : b).push_back(us);
    all.push_back(us);
  }
  // Engine b is slower: shift its samples so that the union differs from either part.
  for (uint64_t& us : b) us = us * 3;
  all.clear();
  all.insert(all.end(), a.begin(), a.end());
  all.insert(all.end(), b.begin(), b.end());
  std::sort(all.begin(), all.end());

  analytics_->ingest("se-a", vsCounters("web", {{"phases", {{"total", histogram(a)}}}}),
                     Json::object(), 1, kT0 + 100);
  analytics_->ingest("se-b", vsCounters("web", {{"phases", {{"total", histogram(b)}}}}),
                     Json::object(), 1, kT0 + 200);
  analytics::Window w = analytics_->window(Kind::Vs, "web", 10, kT0 + 500);
  ASSERT_EQ(w.counters.phases[static_cast<size_t>(Phase::Total)].count(), all.size());

  for (double q : {0.5, 0.9, 0.99}) {
    uint64_t exact = all[static_cast<size_t>(std::ceil(q * all.size())) - 1];
    size_t bucket = PhaseHistogram::bucketFor(exact);
    double width = static_cast<double>(PhaseHistogram::upperBoundUs(bucket) -
                                       PhaseHistogram::lowerBoundUs(bucket));
    std::optional<double> estimate = w.percentileUs(Phase::Total, q);
    ASSERT_TRUE(estimate.has_value());
    EXPECT_NEAR(*estimate, static_cast<double>(exact), width) << "q=" << q;
  }
  uint64_t sum = 0;
  for (uint64_t us : all) sum += us;
  EXPECT_NEAR(*w.counters.phases[static_cast<size_t>(Phase::Total)].meanUs(),
              static_cast<double>(sum) / all.size(), 1e-6);
}

TEST_F(AnalyticsTest, PercentileInterpolatesInsideTheBucketAndOverflowAnswersItsLowerBound) {
  PhaseHistogram h;
  h.add(12, 10);  // (700, 800]: bound 11 is round(100 * 2^2.75) = 673
  EXPECT_EQ(PhaseHistogram::upperBoundUs(0), 100u);
  EXPECT_EQ(PhaseHistogram::upperBoundUs(4), 200u);
  EXPECT_EQ(PhaseHistogram::upperBoundUs(12), 800u);
  EXPECT_EQ(PhaseHistogram::lowerBoundUs(12), 673u);
  EXPECT_DOUBLE_EQ(*h.percentileUs(0.5), 673 + (800 - 673) * 0.5);
  PhaseHistogram overflow;
  overflow.add(80, 3);
  EXPECT_DOUBLE_EQ(*overflow.percentileUs(0.99),
                   static_cast<double>(PhaseHistogram::upperBoundUs(79)));
  EXPECT_FALSE(PhaseHistogram().percentileUs(0.5).has_value());
}

TEST_F(AnalyticsTest, Apdex) {
  // T = 800 us is bound 12 and 4T = 3200 us bound 20: 60 satisfied, 20 tolerating, 20 frustrated.
  analytics_->ingest(
      "se-a",
      vsCounters("web", {{"requests", 100},
                         {"phases", {{"total", bucketHistogram({{5, 60}, {16, 20}, {80, 20}})}}}}),
      Json::object(), 1, kT0);
  analytics::Window w = analytics_->window(Kind::Vs, "web", 10, kT0 + 1);
  EXPECT_DOUBLE_EQ(*w.apdex(800), (60 + 20 / 2.0) / 100);

  // T in the middle of a bucket counts half of it as satisfied.
  analytics_->ingest("se-a",
                     vsCounters("api", {{"phases", {{"total", bucketHistogram({{13, 10}})}}}}),
                     Json::object(), 1, kT0);
  w = analytics_->window(Kind::Vs, "api", 10, kT0 + 1);
  double t = (800 + 951) / 2.0;
  EXPECT_EQ(PhaseHistogram::upperBoundUs(13), 951u);
  EXPECT_DOUBLE_EQ(*w.apdex(t), (5 + 5 / 2.0) / 10);  // 5 satisfied, 5 tolerating

  analytics_->ingest("se-a", vsCounters("idle", {{"requests", 0}}), Json::object(), 1, kT0);
  EXPECT_FALSE(analytics_->window(Kind::Vs, "idle", 10, kT0 + 1).apdex(800).has_value());

  Json answer = query("vs", "web", {"apdex"}, kT0, kT0 + 10'000, 10, kT0 + 1, 800);
  EXPECT_DOUBLE_EQ(series(answer, "apdex")[0].get<double>(), 0.7);
}

TEST_F(AnalyticsTest, RatesOverAStepUseTheSecondsReportsCovered) {
  // Two engines serve "web" side by side, each reporting every second.
  for (int s = 0; s < 10; ++s) {
    int64_t now = kT0 + s * 1000 + 500;
    analytics_->ingest("se-a", vsCounters("web", requests(30)), Json::object(), 1, now);
    analytics_->ingest("se-b", vsCounters("web", requests(20)), Json::object(), 1, now);
  }
  // The next point is half over.
  for (int s = 0; s < 5; ++s) {
    int64_t now = kT0 + 10'000 + s * 1000 + 500;
    analytics_->ingest("se-a", vsCounters("web", requests(100)), Json::object(), 1, now);
  }
  int64_t now = kT0 + 14'900;
  Json answer = query("vs", "web", {"requests_per_s", "responses_2xx_per_s", "error_rate"},
                      kT0 - 10'000, kT0 + 20'000, 10, now);
  EXPECT_EQ(answer["step"], 10);
  EXPECT_EQ(answer["resolution"], 10);
  EXPECT_EQ(answer["timestamps"],
            Json::array({(kT0 - 10'000) / 1000, kT0 / 1000, (kT0 + 10'000) / 1000}));
  EXPECT_EQ(series(answer, "requests_per_s"), Json::array({nullptr, 50.0, 100.0}));
  EXPECT_EQ(series(answer, "responses_2xx_per_s"), Json::array({nullptr, 50.0, 100.0}));
  EXPECT_EQ(series(answer, "error_rate"), Json::array({nullptr, 0.0, 0.0}));

  // A wider step sums the points in it: (500 + 500) requests over 15 s covered.
  answer = query("vs", "web", {"requests_per_s"}, kT0, kT0 + 20'000, 20, now);
  EXPECT_EQ(answer["step"], 20);
  EXPECT_DOUBLE_EQ(series(answer, "requests_per_s")[0].get<double>(), 1000.0 / 15);

  analytics::Window w = analytics_->window(Kind::Vs, "web", 20, now);
  EXPECT_DOUBLE_EQ(w.seconds, 15);
  EXPECT_EQ(w.counters.requests, 1000u);
  EXPECT_DOUBLE_EQ(w.perSecond(w.counters.requests), 1000.0 / 15);
  // Only the open point, when the window is shorter than a step.
  EXPECT_EQ(analytics_->window(Kind::Vs, "web", 1, now).counters.requests, 500u);
}

TEST_F(AnalyticsTest, ErrorRateCountsFiveHundredsAndUnansweredRequests) {
  Json entry = {{"requests", 100},
                {"responses", {{"2xx", 80}, {"5xx", 10}}},
                {"errors", {{"client_abort", 4}, {"server_reset", 30}}}};
  analytics_->ingest("se-a", vsCounters("web", entry), Json::object(), 1, kT0);
  // 10 requests got no response; 34 errors, some of them answered with the 5xx.
  EXPECT_DOUBLE_EQ(*analytics_->window(Kind::Vs, "web", 10, kT0).counters.errorRate(), 0.2);
  // TCP: no responses at all, every error is a failed connection.
  Json tcp = {{"requests", 50}, {"errors", {{"no_server", 5}}}};
  analytics_->ingest("se-a", vsCounters("tcp", tcp), Json::object(), 1, kT0);
  EXPECT_DOUBLE_EQ(*analytics_->window(Kind::Vs, "tcp", 10, kT0).counters.errorRate(), 0.1);

  Json answer = query("vs", "web", {"errors_per_s", "resets_per_s", "timeouts_per_s"}, kT0,
                      kT0 + 10'000, 10, kT0 + 500);
  EXPECT_EQ(series(answer, "errors_per_s")[0], 34.0);
  EXPECT_EQ(series(answer, "resets_per_s")[0], 34.0);
  EXPECT_EQ(series(answer, "timeouts_per_s")[0], 0.0);
}

TEST_F(AnalyticsTest, PoolsSumTheirServersAcrossEngines) {
  Json from_a = {{"servers",
                  {{"web/10.0.0.1:80",
                    {{"pool", "web"},
                     {"address", "10.0.0.1:80"},
                     {"health", "up"},
                     {"requests", 10},
                     {"connections_active", 3},
                     {"phases", {{"response", histogram({1000, 2000})}}}}},
                   {"web/10.0.0.2:80",
                    {{"pool", "web"},
                     {"health", "down"},
                     {"requests", 5},
                     {"errors", {{"connect_refused", 5}}},
                     {"connections_active", 1}}},
                   {"api/10.0.0.3:80", {{"pool", "api"}, {"health", "up"}, {"requests", 7}}}}}};
  Json from_b = {{"servers",
                  {{"web/10.0.0.1:80",
                    {{"health", "up"},  // no "pool": taken from the name
                     {"requests", 20},
                     {"connections_active", 4},
                     {"phases", {{"response", histogram({3000})}}}}}}}};
  analytics_->ingest("se-a", from_a, Json::object(), 1, kT0 + 100);
  analytics_->ingest("se-b", from_b, Json::object(), 1, kT0 + 200);

  analytics::Window pool = analytics_->window(Kind::Pool, "web", 10, kT0 + 300);
  EXPECT_EQ(pool.counters.requests, 35u);
  EXPECT_EQ(pool.counters.error(ErrorKind::ConnectRefused), 5u);
  EXPECT_EQ(pool.gauge(Gauge::ConnectionsActive), 8);
  EXPECT_EQ(pool.gauge(Gauge::ServersUp), 2);  // 10.0.0.1 seen up by both engines
  EXPECT_EQ(pool.gauge(Gauge::ServersDown), 1);
  EXPECT_EQ(pool.counters.phases[static_cast<size_t>(Phase::Response)].count(), 3u);

  analytics::Window server = analytics_->window(Kind::Server, "web/10.0.0.1:80", 10, kT0 + 300);
  EXPECT_EQ(server.counters.requests, 30u);
  EXPECT_EQ(server.gauge(Gauge::ConnectionsActive), 7);
  EXPECT_EQ(analytics_->window(Kind::Pool, "api", 10, kT0 + 300).counters.requests, 7u);
  EXPECT_EQ(analytics_->names(Kind::Pool), (std::vector<std::string>{"api", "web"}));
  EXPECT_EQ(analytics_->names(Kind::Server),
            (std::vector<std::string>{"api/10.0.0.3:80", "web/10.0.0.1:80", "web/10.0.0.2:80"}));
}

TEST_F(AnalyticsTest, EnginesSumTheirVirtualServicesAndKeepTheirResources) {
  Json counters = {
      {"virtual_services",
       {{"web",
         {{"requests", 10}, {"connections_active", 4}, {"phases", {{"total", histogram({500})}}}}},
        {"api",
         {{"requests", 5},
          {"connections_active", 2},
          {"phases", {{"total", histogram({5000})}}}}}}}};
  Json resources = {{"cpu_percent", 37.5},     {"cpu_cores", 4},
                    {"memory_rss_bytes", 1e8}, {"memory_total_bytes", 8e9},
                    {"connections_active", 9}, {"open_files", 40},
                    {"max_open_files", 1024}};
  analytics_->ingest("se-a", counters, resources, 1, kT0 + 100);
  analytics_->ingest("se-b", vsCounters("web", requests(1)), {{"cpu_percent", 90}}, 1, kT0 + 100);

  analytics::Window se = analytics_->window(Kind::Se, "se-a", 10, kT0 + 200);
  EXPECT_EQ(se.counters.requests, 15u);
  EXPECT_EQ(se.counters.phases[static_cast<size_t>(Phase::Total)].count(), 2u);
  EXPECT_EQ(se.gauge(Gauge::ConnectionsActive), 6);
  EXPECT_EQ(se.gauge(Gauge::CpuPercent), 37.5);
  EXPECT_EQ(se.gauge(Gauge::MemoryRssBytes), 1e8);
  EXPECT_EQ(se.gauge(Gauge::EngineConnections), 9);
  EXPECT_EQ(se.gauge(Gauge::MaxOpenFiles), 1024);
  EXPECT_FALSE(se.gauge(Gauge::MaxConnections).has_value());
  EXPECT_EQ(analytics_->window(Kind::Se, "se-b", 10, kT0 + 200).gauge(Gauge::CpuPercent), 90);

  Json answer = query("se", "se-a", {"cpu_percent", "memory_rss_bytes", "requests_per_s"}, kT0,
                      kT0 + 10'000, 0, kT0 + 200);
  EXPECT_EQ(series(answer, "cpu_percent")[0], 37.5);
  EXPECT_EQ(series(answer, "memory_rss_bytes")[0], 1e8);
  EXPECT_EQ(series(answer, "requests_per_s")[0], 15.0);
  EXPECT_EQ(analytics_->names(Kind::Se), (std::vector<std::string>{"se-a", "se-b"}));
}

TEST_F(AnalyticsTest, GaugesAreEachEnginesLatestValueSummed) {
  Json entry5 = {{"connections_active", 5}, {"max_connections", 100}};
  Json entry7 = {{"connections_active", 7}, {"max_connections", 100}};
  Json entry3 = {{"connections_active", 3}, {"max_connections", 50}};
  analytics_->ingest("se-a", vsCounters("web", entry5), Json::object(), 1, kT0 + 1000);
  analytics_->ingest("se-b", vsCounters("web", entry3), Json::object(), 1, kT0 + 1500);
  analytics_->ingest("se-a", vsCounters("web", entry7), Json::object(), 1, kT0 + 2000);
  analytics::Window w = analytics_->window(Kind::Vs, "web", 10, kT0 + 3000);
  EXPECT_EQ(w.gauge(Gauge::ConnectionsActive), 10);
  EXPECT_EQ(w.gauge(Gauge::MaxConnections), 150);
  // An engine without a limit makes the sum unlimited.
  analytics_->ingest("se-c", vsCounters("web", {{"max_connections", 0}}), Json::object(), 1,
                     kT0 + 2500);
  w = analytics_->window(Kind::Vs, "web", 10, kT0 + 3000);
  EXPECT_EQ(w.gauge(Gauge::MaxConnections), 0);
  EXPECT_EQ(w.gauge(Gauge::ConnectionsActive), 10);

  // In the next point only se-a reports: its value alone.
  analytics_->ingest("se-a", vsCounters("web", entry5), Json::object(), 1, kT0 + 11'000);
  EXPECT_EQ(analytics_->window(Kind::Vs, "web", 30, kT0 + 12'000).gauge(Gauge::ConnectionsActive),
            5);
  Json answer = query("vs", "web", {"connections_active"}, kT0, kT0 + 20'000, 10, kT0 + 12'000);
  EXPECT_EQ(series(answer, "connections_active"), Json::array({10.0, 5.0}));
  // Over a wider step: the mean of its points.
  answer = query("vs", "web", {"connections_active"}, kT0, kT0 + 20'000, 20, kT0 + 12'000);
  EXPECT_EQ(series(answer, "connections_active"), Json::array({7.5}));
}

// With a database, rollups are read from it; without, they stay in memory: the same answers.
void AnalyticsTest::checkRetention(const Analytics::Options& options) {
  analytics_ = make(options);
  // One report a second for 30 s: 1 request per second, 5 per coarse point.
  for (int s = 0; s < 30; ++s) {
    analytics_->ingest("se-a", vsCounters("web", requests(1)), Json::object(), 1,
                       kT0 + s * 1000 + 500);
  }
  int64_t now = kT0 + 30'000;
  std::string error;
  ASSERT_TRUE(analytics_->flush(now, &error)) << error;

  // Within the fine retention (10 s): 1 s points.
  Json fine = query("vs", "web", {"requests_per_s"}, now - 8'000, now, 0, now);
  EXPECT_EQ(fine["resolution"], 1);
  EXPECT_EQ(series(fine, "requests_per_s"), Json(std::vector<double>(8, 1.0)));

  // Further back: coarse 5 s points, kept for 20 s; older ones are gone.
  Json coarse = query("vs", "web", {"requests_per_s"}, kT0, now, 0, now);
  EXPECT_EQ(coarse["resolution"], 5);
  EXPECT_EQ(coarse["step"], 5);
  EXPECT_EQ(series(coarse, "requests_per_s"), Json::array({nullptr, nullptr, 1.0, 1.0, 1.0, 1.0}));
  analytics::Window w = analytics_->window(Kind::Vs, "web", 25, now);
  EXPECT_EQ(w.counters.requests, 20u);
  EXPECT_DOUBLE_EQ(w.seconds, 20);

  // Without reports everything expires, and the object with it.
  ASSERT_TRUE(analytics_->flush(now + 60'000, &error)) << error;
  EXPECT_FALSE(analytics_->has(Kind::Vs, "web"));
}

TEST_F(AnalyticsTest, RetentionDropsOldFinePointsAndKeepsCoarseOnes) {
  checkRetention(shortOptions());
}

TEST_F(AnalyticsTest, RetentionWithADatabase) {
  char pattern[] = "/tmp/ballast-analytics-test-XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  Analytics::Options options = shortOptions();
  options.db_path = std::string(pattern) + "/analytics.db";
  checkRetention(options);
  analytics_.reset();
  // Expired rows left the file, they are not only hidden.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(options.db_path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* count = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM points", -1, &count, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(count), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int64(count, 0), 0);
  sqlite3_finalize(count);
  sqlite3_close(db);
  std::filesystem::remove_all(pattern);
}

TEST_F(AnalyticsTest, ObjectCapDropsTheLeastRecentlyUpdated) {
  Analytics::Options options;
  options.max_objects = 3;  // the engine's own object counts too
  analytics_ = make(options);
  analytics_->ingest("se-a", vsCounters("a", requests(1)), Json::object(), 1, kT0 + 1000);
  analytics_->ingest("se-a", vsCounters("b", requests(1)), Json::object(), 1, kT0 + 2000);
  EXPECT_TRUE(analytics_->has(Kind::Vs, "a"));
  analytics_->ingest("se-a", vsCounters("c", requests(1)), Json::object(), 1, kT0 + 3000);
  EXPECT_FALSE(analytics_->has(Kind::Vs, "a"));
  EXPECT_TRUE(analytics_->has(Kind::Vs, "b"));
  EXPECT_TRUE(analytics_->has(Kind::Vs, "c"));
  EXPECT_TRUE(analytics_->has(Kind::Se, "se-a"));
  EXPECT_EQ(analytics_->window(Kind::Vs, "a", 10, kT0 + 3000).seconds, 0);
}

TEST_F(AnalyticsTest, QueryErrorsNameWhatIsWrong) {
  analytics_->ingest("se-a", vsCounters("web", requests(1)), Json::object(), 1, kT0);
  int64_t from = kT0, to = kT0 + 60'000;

  Analytics::QueryError e = queryError("vips", "web", {"requests_per_s"}, from, to, 0);
  EXPECT_EQ(e.status, 404);
  EXPECT_NE(e.message.find("vs, pool, server, se"), std::string::npos) << e.message;

  e = queryError("vs", "nope", {"requests_per_s"}, from, to, 0);
  EXPECT_EQ(e.status, 404);
  EXPECT_EQ(e.message, "no analytics for vs/nope");

  e = queryError("vs", "web", {"requests_per_s", "rps"}, from, to, 0);
  EXPECT_EQ(e.status, 400);
  EXPECT_NE(e.message.find("\"rps\""), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("latency_total_p99_ms"), std::string::npos) << e.message;

  e = queryError("vs", "web", {}, from, to, 0);
  EXPECT_EQ(e.status, 400);
  e = queryError("server", "web/x", {"latency_header_p50_ms"}, from, to, 0);
  EXPECT_EQ(e.status, 400);
  e = queryError("pool", "web", {"apdex"}, from, to, 0, 500);
  EXPECT_EQ(e.status, 400);
  e = queryError("vs", "web", {"apdex"}, from, to, 0, 0);  // no threshold
  EXPECT_EQ(e.status, 400);
  e = queryError("vs", "web", {"requests_per_s"}, to, from, 0);
  EXPECT_EQ(e.status, 400);
  EXPECT_NE(e.message.find("from must be before to"), std::string::npos) << e.message;
  e = queryError("vs", "web", {"requests_per_s"}, from, to, -5);
  EXPECT_EQ(e.status, 400);

  // An explicit step giving more than 1000 points is refused; without one, it widens.
  int64_t long_from = kT0 + 60'000 - 7 * 86'400'000LL;  // coarse: 300 s points
  e = queryError("vs", "web", {"requests_per_s"}, long_from, to, 1);
  EXPECT_EQ(e.status, 400);
  EXPECT_NE(e.message.find("at most 1000"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("step >= "), std::string::npos) << e.message;
  Json wide = query("vs", "web", {"requests_per_s"}, long_from - 86'400'000, to, 0, kT0 + 60'000);
  EXPECT_LE(wide["timestamps"].size(), Analytics::kMaxQueryPoints);
  EXPECT_EQ(wide["resolution"], 300);
  EXPECT_EQ(wide["step"].get<int64_t>() % 300, 0);
  // The step rounds up to the resolution.
  Json rounded = query("vs", "web", {"requests_per_s"}, from, to, 15, kT0 + 60'000);
  EXPECT_EQ(rounded["step"], 20);
}

TEST_F(AnalyticsTest, MalformedInputIsIgnored) {
  for (const Json& counters :
       {Json(nullptr), Json("x"), Json::array({1, 2}), Json{{"virtual_services", "x"}},
        Json{{"virtual_services", Json::array({1})}}, Json{{"servers", 7}},
        Json{{"virtual_services", {{"web", "x"}, {"", {{"requests", 1}}}}}}}) {
    analytics_->ingest("se-a", counters, Json("nope"), 1, kT0);
  }
  analytics_->ingest("", vsCounters("web", requests(1)), Json::object(), 1, kT0);
  analytics_->ingest("se-a", vsCounters(std::string(1000, 'x'), requests(1)), Json::object(), 1,
                     kT0);
  EXPECT_TRUE(analytics_->names(Kind::Vs).empty());

  Json bad = {
      {"requests", "many"},
      {"bytes_in", -5},
      {"bytes_out", 1e300},
      {"retries", true},
      {"connections_total", 2.5},
      {"connections_active", "x"},
      {"responses", {{"2xx", 3}, {"6xx", 4}, {"5xx", nullptr}}},
      {"errors", {{"no_such_error", 1}, {"no_server", 2}}},
      {"health", 5},
      {"phases",
       {{"total",
         {{"buckets", Json::array({Json::array({-1, 5}), Json::array({81, 5}),
                                   Json::array({"a", 1}), Json::array({3}), 7, Json::array({2, -4}),
                                   Json::array({2, 1e300}), Json::array({4, 6})})},
          {"sum_us", "x"}}},
        {"connect", "x"},
        {"nonsense", {{"buckets", Json::array({Json::array({1, 1})})}}}}}};
  analytics_->ingest("se-a", vsCounters("web", bad), Json::object(), NAN, kT0 + 100);
  analytics_->ingest("se-a", vsCounters("web", bad), Json{{"cpu_percent", "hot"}}, -3, kT0 + 200);
  analytics::Window w = analytics_->window(Kind::Vs, "web", 10, kT0 + 300);
  EXPECT_EQ(w.counters.requests, 0u);
  EXPECT_EQ(w.counters.bytes_in, 0u);
  EXPECT_EQ(w.counters.bytes_out, 0u);
  EXPECT_EQ(w.counters.connections, 4u);  // 2.5 read as 2
  EXPECT_EQ(w.counters.responses[1], 6u);
  EXPECT_EQ(w.counters.error(ErrorKind::NoServer), 4u);
  EXPECT_EQ(w.counters.errorsTotal(), 4u);
  EXPECT_EQ(w.counters.phases[static_cast<size_t>(Phase::Total)].count(), 12u);
  EXPECT_EQ(w.counters.phases[static_cast<size_t>(Phase::Total)].sumUs(), 0u);
  EXPECT_FALSE(w.gauge(Gauge::ConnectionsActive).has_value());
  EXPECT_DOUBLE_EQ(w.seconds, 10);  // no usable interval_s: the whole step
  EXPECT_FALSE(analytics_->window(Kind::Se, "se-a", 10, kT0 + 300).gauge(Gauge::CpuPercent));

  // Histograms on another bucket table cannot be merged: left out.
  Json other_table = vsCounters("api", {{"phases", {{"total", histogram({1000})}}}});
  other_table["phase_bounds_us"] = Json::array({1, 2, 3});
  analytics_->ingest("se-a", other_table, Json::object(), 1, kT0);
  EXPECT_EQ(analytics_->window(Kind::Vs, "api", 10, kT0).counters.phases[4].count(), 0u);
  Json same_table = vsCounters("api", {{"phases", {{"total", histogram({1000})}}}});
  same_table["phase_bounds_us"] = Json::array();
  for (size_t i = 0; i < PhaseHistogram::kBounds; ++i) {
    same_table["phase_bounds_us"].push_back(PhaseHistogram::upperBoundUs(i));
  }
  analytics_->ingest("se-a", same_table, Json::object(), 1, kT0);
  EXPECT_EQ(analytics_->window(Kind::Vs, "api", 10, kT0).counters.phases[4].count(), 1u);
}

class AnalyticsPersistenceTest : public AnalyticsTest {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/ballast-analytics-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    analytics_.reset();
    std::filesystem::remove_all(dir_);
  }
  Analytics::Options options() {
    Analytics::Options o = shortOptions();
    o.db_path = dir_ + "/analytics.db";
    return o;
  }
  std::string dir_;
};

TEST_F(AnalyticsPersistenceTest, AReopenedDatabaseAnswersTheSameQueries) {
  analytics_ = make(options());
  std::string error;
  // 17 s of traffic with latencies and gauges, flushed along the way and at the end.
  for (int s = 0; s < 17; ++s) {
    int64_t now = kT0 + s * 1000 + 500;
    Json entry = {{"requests", 10 + s},
                  {"bytes_out", 1000 * s},
                  {"responses", {{"2xx", 9 + s}, {"5xx", 1}}},
                  {"connections_active", s},
                  {"phases", {{"total", histogram({100u * (s + 1), 2000u * (s + 1)})}}}};
    analytics_->ingest("se-a", vsCounters("web", entry), {{"cpu_percent", 2.5 * s}}, 1, now);
    if (s % 4 == 3) {
      ASSERT_TRUE(analytics_->flush(now, &error)) << error;
    }
  }
  int64_t now = kT0 + 17'000;
  ASSERT_TRUE(analytics_->flush(now, &error)) << error;

  std::vector<std::string> metrics = {
      "requests_per_s",       "bytes_out_per_s",       "error_rate", "connections_active",
      "latency_total_p90_ms", "latency_total_mean_ms", "apdex"};
  auto answers = [&] {
    return Json::array({query("vs", "web", metrics, now - 9'000, now, 0, now, 1000),
                        query("vs", "web", metrics, kT0, now, 5, now, 1000),
                        query("se", "se-a", {"cpu_percent", "requests_per_s"}, kT0, now, 0, now)});
  };
  Json before = answers();
  EXPECT_EQ(before[0]["resolution"], 1);
  EXPECT_EQ(before[1]["resolution"], 5);
  for (const Json& answer : before) {  // every step had reports: no null to compare
    for (const auto& [metric, values] : answer["series"].items()) {
      for (const Json& v : values) EXPECT_TRUE(v.is_number()) << metric << " " << answer.dump();
    }
  }
  analytics::Window window_before = analytics_->window(Kind::Vs, "web", 15, now);

  analytics_.reset();
  analytics_ = make(options());
  EXPECT_EQ(answers(), before);
  analytics::Window window_after = analytics_->window(Kind::Vs, "web", 15, now);
  EXPECT_EQ(window_after.counters.requests, window_before.counters.requests);
  EXPECT_EQ(window_after.gauges, window_before.gauges);
  EXPECT_EQ(analytics_->names(Kind::Vs), std::vector<std::string>{"web"});

  // The rollup interrupted by the restart goes on and is written once complete.
  analytics_->ingest("se-a", vsCounters("web", requests(40)), Json::object(), 1, kT0 + 18'500);
  ASSERT_TRUE(analytics_->flush(kT0 + 21'000, &error)) << error;
  Json coarse = query("vs", "web", {"requests_per_s"}, kT0, kT0 + 20'000, 5, kT0 + 21'000);
  // Seconds 15 and 16 from before the restart, 18 after it (17 was never reported).
  EXPECT_DOUBLE_EQ(series(coarse, "requests_per_s")[3].get<double>(), (25 + 26 + 40) / 3.0);
  analytics_.reset();
  analytics_ = make(options());
  EXPECT_EQ(query("vs", "web", {"requests_per_s"}, kT0, kT0 + 20'000, 5, kT0 + 21'000), coarse);
}

TEST_F(AnalyticsPersistenceTest, DroppedObjectsAndExpiredPointsLeaveTheDatabase) {
  Analytics::Options o = options();
  o.max_objects = 2;
  analytics_ = make(o);
  std::string error;
  analytics_->ingest("se-a", vsCounters("a", requests(1)), Json::object(), 1, kT0 + 500);
  ASSERT_TRUE(analytics_->flush(kT0 + 2000, &error)) << error;
  analytics_->ingest("se-a", vsCounters("b", requests(1)), Json::object(), 1, kT0 + 2500);
  ASSERT_TRUE(analytics_->flush(kT0 + 4000, &error)) << error;
  EXPECT_FALSE(analytics_->has(Kind::Vs, "a"));
  analytics_.reset();
  analytics_ = make(o);
  EXPECT_FALSE(analytics_->has(Kind::Vs, "a"));
  EXPECT_TRUE(analytics_->has(Kind::Vs, "b"));

  ASSERT_TRUE(analytics_->flush(kT0 + 600'000, &error)) << error;
  analytics_.reset();
  analytics_ = make(o);
  EXPECT_TRUE(analytics_->names(Kind::Vs).empty());
  EXPECT_TRUE(analytics_->names(Kind::Se).empty());
}

TEST_F(AnalyticsPersistenceTest, DamagedRowsAreSkipped) {
  analytics_ = make(options());
  std::string error;
  Json entry = {{"requests", 5},
                {"connections_active", 2},
                {"phases", {{"total", histogram({300, 4000, 90'000})}}}};
  analytics_->ingest("se-a", vsCounters("web", entry), {{"cpu_percent", 12.5}}, 1, kT0 + 500);
  ASSERT_TRUE(analytics_->flush(kT0 + 1000, &error)) << error;
  analytics_.reset();

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ + "/analytics.db").c_str(), &db), SQLITE_OK);
  std::vector<std::string> blobs;
  {
    sqlite3_stmt* read = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT data FROM points", -1, &read, nullptr), SQLITE_OK);
    while (sqlite3_step(read) == SQLITE_ROW) {
      blobs.emplace_back(static_cast<const char*>(sqlite3_column_blob(read, 0)),
                         static_cast<size_t>(sqlite3_column_bytes(read, 0)));
    }
    sqlite3_finalize(read);
  }
  ASSERT_FALSE(blobs.empty());
  // Every truncation of a good point, bytes flipped, a bad kind: under other names.
  std::vector<std::pair<std::string, std::string>> rows;  // kind, data
  for (const std::string& blob : blobs) {
    for (size_t n = 0; n < blob.size(); ++n) rows.emplace_back("vs", blob.substr(0, n));
    for (size_t i = 0; i < blob.size(); ++i) {
      std::string flipped = blob;
      flipped[i] = static_cast<char>(~flipped[i]);
      rows.emplace_back("vs", flipped);
    }
    rows.emplace_back("bogus", blob);
  }
  sqlite3_stmt* insert = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db,
                               "INSERT INTO points (kind, name, step_s, start_ms, data)"
                               " VALUES (?, ?, ?, ?, ?)",
                               -1, &insert, nullptr),
            SQLITE_OK);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int64_t step_s : {1, 5}) {  // fine points are read at open, rollups when asked for
      std::string name = "damaged-" + std::to_string(i);
      sqlite3_bind_text(insert, 1, rows[i].first.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(insert, 2, name.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(insert, 3, step_s);
      sqlite3_bind_int64(insert, 4, kT0);
      sqlite3_bind_blob(insert, 5, rows[i].second.data(), static_cast<int>(rows[i].second.size()),
                        SQLITE_TRANSIENT);
      ASSERT_EQ(sqlite3_step(insert), SQLITE_DONE);
      sqlite3_reset(insert);
    }
  }
  sqlite3_finalize(insert);
  sqlite3_close(db);

  analytics_ = make(options());
  analytics::Window w = analytics_->window(Kind::Vs, "web", 5, kT0 + 1000);
  EXPECT_EQ(w.counters.requests, 5u);
  EXPECT_EQ(w.gauge(Gauge::ConnectionsActive), 2);
  EXPECT_EQ(w.counters.phases[static_cast<size_t>(Phase::Total)].count(), 3u);
  EXPECT_GT(analytics_->names(Kind::Vs).size(), 1u);
  for (const std::string& name : analytics_->names(Kind::Vs)) {
    // Whatever a damaged row decoded to (a flipped count still decodes), reading it is safe.
    analytics_->window(Kind::Vs, name, 5, kT0 + 1000).percentileUs(Phase::Total, 0.9);
    analytics_->window(Kind::Vs, name, 15, kT0 + 1000).apdex(1000);  // rollups, from disk
    Json answer = query("vs", name, {"latency_total_p99_ms", "connections_active"}, kT0 - 15'000,
                        kT0 + 5'000, 5, kT0 + 1000);
    EXPECT_EQ(answer["resolution"], 5);
  }
}

TEST(AnalyticsOptions, InconsistentStepsAreRefused) {
  Analytics::Options o;
  o.coarse_step_s = 15;  // not a multiple of 10
  std::string error;
  EXPECT_EQ(Analytics::open(o, &error), nullptr);
  EXPECT_FALSE(error.empty());
  o = Analytics::Options{};
  o.db_path = "/nonexistent-dir/analytics.db";
  EXPECT_EQ(Analytics::open(o, &error), nullptr);
  EXPECT_NE(error.find("/nonexistent-dir/analytics.db"), std::string::npos) << error;
}

}  // namespace
}  // namespace ballast::controller
