#include "controller/health_score.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace ballast::controller::healthscore {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Steady HTTP traffic over a 30 s window with nothing wrong.
Traffic healthyTraffic(uint64_t requests = 1500) {
  Traffic traffic;
  traffic.requests = requests;
  traffic.apdex = 1.0;
  traffic.connections = requests / 10;
  traffic.seconds = 30;
  return traffic;
}

ServerInputs server(const std::string& address, const std::string& state = "up",
                    const std::string& reason = "") {
  ServerInputs s;
  s.name = "web-pool/" + address;
  s.state = state;
  s.state_reason = reason;
  s.traffic = healthyTraffic(500);
  return s;
}

PoolInputs threeServerPool() {
  PoolInputs pool;
  pool.name = "web-pool";
  pool.servers = {server("127.0.0.1:9001"), server("127.0.0.1:9002"), server("127.0.0.1:9003")};
  return pool;
}

SeInputs se(const std::string& name) {
  SeInputs s;
  s.name = name;
  s.cpu_percent = 20;
  s.memory_rss = 200;
  s.memory_total = 1000;
  s.open_files = 100;
  s.max_open_files = 1000;
  s.traffic = healthyTraffic();
  return s;
}

VsInputs webVs() {
  VsInputs vs;
  vs.name = "web";
  vs.traffic = healthyTraffic();
  vs.pool = threeServerPool();
  vs.ses = {se("se-1")};
  return vs;
}

std::vector<std::string> reasonsOf(const HealthScore& score) {
  std::vector<std::string> all = score.performance_reasons;
  for (const Penalty* p : {&score.resources, &score.security, &score.anomaly}) {
    all.insert(all.end(), p->reasons.begin(), p->reasons.end());
  }
  return all;
}

// ---- performance ----

TEST(PerformanceScoreTest, NoTrafficIsPerfect) {
  std::vector<std::string> reasons;
  EXPECT_EQ(performanceScore(Traffic{}, Options{}, &reasons), 100);
  EXPECT_THAT(reasons, IsEmpty());
}

TEST(PerformanceScoreTest, HealthyTrafficIsPerfect) {
  std::vector<std::string> reasons;
  EXPECT_EQ(performanceScore(healthyTraffic(), Options{}, &reasons), 100);
  EXPECT_THAT(reasons, IsEmpty());
}

TEST(PerformanceScoreTest, SlowBackendApdexLowersIt) {
  Traffic traffic = healthyTraffic(200);
  traffic.apdex = 0.5;
  std::vector<std::string> reasons;
  EXPECT_DOUBLE_EQ(performanceScore(traffic, Options{}, &reasons), 50);
  EXPECT_THAT(reasons, ElementsAre("apdex 0.50 over 200 requests"));
}

TEST(PerformanceScoreTest, ErrorsCountFiveTimesTheirShare) {
  Traffic traffic = healthyTraffic(100);
  traffic.responses_5xx = 1;
  traffic.resets = 1;
  std::vector<std::string> reasons;
  EXPECT_DOUBLE_EQ(performanceScore(traffic, Options{}, &reasons), 90);  // 2% errors
  EXPECT_THAT(reasons, ElementsAre("error rate 2.0%: 1 5xx, 1 resets, 0 timeouts in 100 requests"));

  traffic.timeouts = 30;  // 32%: more than 20% leaves nothing
  EXPECT_DOUBLE_EQ(performanceScore(traffic, Options{}, nullptr), 0);
}

TEST(PerformanceScoreTest, ConnectionFailuresCountTwiceTheirShare) {
  Traffic traffic = healthyTraffic(500);  // 50 connections
  traffic.connection_failures = 5;
  std::vector<std::string> reasons;
  EXPECT_DOUBLE_EQ(performanceScore(traffic, Options{}, &reasons), 80);
  EXPECT_THAT(reasons, ElementsAre("connection failures 10.0%: 5 of 50 connections"));
}

TEST(PerformanceScoreTest, FactorsMultiply) {
  Traffic traffic = healthyTraffic(100);  // 10 connections
  traffic.apdex = 0.8;
  traffic.responses_5xx = 2;        // x 0.9
  traffic.connection_failures = 1;  // x 0.8
  EXPECT_NEAR(performanceScore(traffic, Options{}, nullptr), 100 * 0.8 * 0.9 * 0.8, 1e-9);
}

TEST(PerformanceScoreTest, TcpTrafficCountsConnectionsAsExchanges) {
  Traffic traffic;
  traffic.connections = 100;
  traffic.resets = 10;
  traffic.seconds = 30;
  std::vector<std::string> reasons;
  EXPECT_DOUBLE_EQ(performanceScore(traffic, Options{}, &reasons), 50);
  EXPECT_THAT(reasons,
              ElementsAre("error rate 10.0%: 0 5xx, 10 resets, 0 timeouts in 100 connections"));
}

// ---- bands and clamping ----

TEST(BandTest, Edges) {
  EXPECT_EQ(bandOf(100, false), "green");
  EXPECT_EQ(bandOf(85, false), "green");
  EXPECT_EQ(bandOf(84.9, false), "yellow");
  EXPECT_EQ(bandOf(65, false), "yellow");
  EXPECT_EQ(bandOf(64.9, false), "orange");
  EXPECT_EQ(bandOf(1, false), "orange");
  EXPECT_EQ(bandOf(0.9, false), "red");
  EXPECT_EQ(bandOf(0, false), "red");
  EXPECT_EQ(bandOf(100, true), "red");
}

TEST(ScoreTest, BandFollowsTheRoundedScore) {
  ServerInputs s = server("10.0.0.1:80");
  s.max_connections = 100;
  s.connections_active = 95;  // (0.95 - 0.8) / 0.2 x 20 = 15
  HealthScore score = scoreServer(s);
  EXPECT_DOUBLE_EQ(score.resources.value, 15);
  EXPECT_DOUBLE_EQ(score.score, 85);
  EXPECT_EQ(score.band, "green");

  s.connections_active = 96;  // 16
  score = scoreServer(s);
  EXPECT_DOUBLE_EQ(score.score, 84);
  EXPECT_EQ(score.band, "yellow");
}

TEST(ScoreTest, ClampedToZeroButNotDown) {
  VsInputs vs = webVs();
  vs.traffic.apdex = 0.3;  // 30
  vs.tls = TlsInputs{"TLSv1", -2};  // 20 + 50
  HealthScore score = scoreVirtualService(vs);
  EXPECT_DOUBLE_EQ(score.performance_score, 30);
  EXPECT_DOUBLE_EQ(score.security.value, 70);
  EXPECT_DOUBLE_EQ(score.score, 0);
  EXPECT_FALSE(score.down);
  EXPECT_EQ(score.band, "red");
}

TEST(ScoreTest, PenaltyClampedTo100) {
  SeInputs s = se("se-1");
  s.cpu_percent = 100;          // 30
  s.memory_rss = 1000;          // 30
  s.open_files = 1000;          // 20
  Options options;
  options.open_files.max = 60;  // 60: 120 in all
  HealthScore score = scoreSe(s, options);
  EXPECT_DOUBLE_EQ(score.resources.value, 100);
  EXPECT_DOUBLE_EQ(score.score, 0);
}

TEST(ScoreTest, PreviousScoreCarriedAndJsonShape) {
  ServerInputs s = server("10.0.0.1:80");
  HealthScore first = scoreServer(s);
  EXPECT_EQ(first.previous_score, std::nullopt);
  Json json = first.toJson();
  EXPECT_TRUE(json["previous_score"].is_null());

  s.previous_score = first.score;
  s.traffic.apdex = 0.7;
  HealthScore second = scoreServer(s);
  json = second.toJson();
  EXPECT_EQ(json["previous_score"], 100.0);
  EXPECT_EQ(json["score"], 70.0);
  EXPECT_EQ(json["band"], "yellow");
  EXPECT_EQ(json["performance_score"], 70.0);
  EXPECT_EQ(json["performance_reasons"], Json::array({"apdex 0.70 over 500 requests"}));
  std::vector<std::string> keys;
  for (const auto& [key, value] : json.items()) keys.push_back(key);
  EXPECT_THAT(keys, ElementsAre("band", "penalties", "performance_reasons", "performance_score",
                                "previous_score", "score"));
  for (const char* kind : {"resources", "security", "anomaly"}) {
    EXPECT_EQ(json["penalties"][kind], (Json{{"value", 0.0}, {"reasons", Json::array()}})) << kind;
  }
}

// ---- servers ----

TEST(ServerScoreTest, DownServerScoresZeroWithItsReason) {
  HealthScore score =
      scoreServer(server("127.0.0.1:9003", "down", "fall 3/3: connect refused"));
  EXPECT_TRUE(score.down);
  EXPECT_EQ(score.score, 0);
  EXPECT_EQ(score.band, "red");
  EXPECT_EQ(score.performance_score, 0);
  EXPECT_THAT(score.performance_reasons,
              ElementsAre("server web-pool/127.0.0.1:9003 is down (fall 3/3: connect refused)"));
}

TEST(ServerScoreTest, EjectedAndDisabledAreDownDrainingIsNot) {
  HealthScore ejected =
      scoreServer(server("10.0.0.1:80", "ejected", "5 consecutive gateway failures"));
  EXPECT_EQ(ejected.band, "red");
  EXPECT_THAT(ejected.performance_reasons,
              Contains("server web-pool/10.0.0.1:80 is ejected (5 consecutive gateway failures)"));
  EXPECT_EQ(scoreServer(server("10.0.0.1:80", "disabled")).band, "red");
  HealthScore draining = scoreServer(server("10.0.0.1:80", "draining"));
  EXPECT_FALSE(draining.down);
  EXPECT_EQ(draining.score, 100);
}

TEST(ServerScoreTest, NearMaxConnections) {
  ServerInputs s = server("10.0.0.1:80");
  s.max_connections = 10;
  s.connections_active = 10;
  HealthScore score = scoreServer(s);
  EXPECT_EQ(score.resources.value, 20);
  EXPECT_THAT(score.resources.reasons,
              ElementsAre("server web-pool/10.0.0.1:80 has 10 of 10 connections (100%) (-20.0)"));
  s.connections_active = 8;  // the ramp starts at 80%
  EXPECT_EQ(scoreServer(s).resources.value, 0);
}

// ---- pools ----

TEST(PoolScoreTest, AllUpIsGreen) {
  HealthScore score = scorePool(threeServerPool());
  EXPECT_EQ(score.score, 100);
  EXPECT_EQ(score.band, "green");
  EXPECT_THAT(reasonsOf(score), IsEmpty());
}

TEST(PoolScoreTest, TwoOfThreeDownLeavesGreenNamingTheServers) {
  PoolInputs pool = threeServerPool();
  pool.servers[1].state = "down";
  pool.servers[1].state_reason = "fall 1/1: connect refused";
  pool.servers[2].state = "ejected";
  HealthScore score = scorePool(pool);
  EXPECT_FALSE(score.down);
  EXPECT_DOUBLE_EQ(score.resources.value, 40);  // 60 x 2/3
  EXPECT_DOUBLE_EQ(score.score, 60);
  EXPECT_EQ(score.band, "orange");
  EXPECT_THAT(score.resources.reasons,
              ElementsAre("pool web-pool has 1 of 3 servers up (-40.0)",
                          "server web-pool/127.0.0.1:9002 is down (fall 1/1: connect refused)",
                          "server web-pool/127.0.0.1:9003 is ejected"));
}

TEST(PoolScoreTest, OneOfThreeDownIsYellow) {
  PoolInputs pool = threeServerPool();
  pool.servers[0].state = "down";
  HealthScore score = scorePool(pool);
  EXPECT_DOUBLE_EQ(score.score, 80);
  EXPECT_EQ(score.band, "yellow");
}

TEST(PoolScoreTest, ServersSetAsideByTheOperatorAreNotLostCapacity) {
  PoolInputs pool = threeServerPool();
  pool.servers[0].state = "disabled";
  pool.servers[1].state = "draining";
  EXPECT_EQ(scorePool(pool).score, 100);
}

TEST(PoolScoreTest, NoServerUpIsDown) {
  PoolInputs pool = threeServerPool();
  pool.servers[0].state = "down";
  pool.servers[1].state = "down";
  pool.servers[2].state = "disabled";
  HealthScore score = scorePool(pool);
  EXPECT_TRUE(score.down);
  EXPECT_EQ(score.score, 0);
  EXPECT_EQ(score.band, "red");
  EXPECT_EQ(score.performance_reasons.front(), "pool web-pool has no server up (2 down, 1 disabled)");

  pool.servers.clear();
  EXPECT_THAT(scorePool(pool).performance_reasons, ElementsAre("pool web-pool has no servers"));
}

TEST(PoolScoreTest, PerformanceFromItsServersTraffic) {
  PoolInputs pool = threeServerPool();
  pool.servers[0].traffic.apdex = 0.4;  // 500 of 1500 requests: apdex 0.8 in all
  HealthScore score = scorePool(pool);
  EXPECT_DOUBLE_EQ(score.performance_score, 80);
  EXPECT_THAT(score.performance_reasons, ElementsAre("apdex 0.80 over 1500 requests"));
}

TEST(PoolScoreTest, ServersNearTheirLimitCountOnAverage) {
  PoolInputs pool = threeServerPool();
  pool.servers[0].max_connections = 10;
  pool.servers[0].connections_active = 10;  // 20, over 3 servers
  HealthScore score = scorePool(pool);
  EXPECT_NEAR(score.resources.value, 6.7, 1e-9);
  EXPECT_THAT(score.resources.reasons,
              ElementsAre("pool web-pool: 1 of 3 servers near max_connections (-6.7)",
                          "server web-pool/127.0.0.1:9001 has 10 of 10 connections (100%)"));
}

// ---- service engines ----

TEST(SeScoreTest, ResourcePenalties) {
  SeInputs s = se("se-1");
  s.cpu_percent = 90;    // 15
  s.memory_rss = 940;    // 94%: 18
  s.open_files = 900;    // 90%: 10
  HealthScore score = scoreSe(s);
  EXPECT_DOUBLE_EQ(score.resources.value, 43);
  EXPECT_DOUBLE_EQ(score.score, 57);
  EXPECT_THAT(score.resources.reasons,
              ElementsAre("CPU at 90% (-15.0)", "memory at 94% (-18.0)",
                          "900 of 1000 open files (-10.0)"));
}

TEST(SeScoreTest, UnknownFiguresCostNothing) {
  SeInputs s;
  s.name = "se-1";
  EXPECT_EQ(scoreSe(s).score, 100);
}

TEST(SeScoreTest, LostSeIsDown) {
  SeInputs s = se("se-1");
  s.connected = false;
  HealthScore score = scoreSe(s);
  EXPECT_TRUE(score.down);
  EXPECT_EQ(score.band, "red");
  EXPECT_THAT(score.performance_reasons, ElementsAre("service engine se-1 is lost"));
}

// ---- virtual services ----

TEST(VsScoreTest, SteadyLoadIsGreen) {
  HealthScore score = scoreVirtualService(webVs());
  EXPECT_EQ(score.score, 100);
  EXPECT_EQ(score.band, "green");
}

TEST(VsScoreTest, TwoOfThreeServersDownTakeItOutOfGreen) {
  VsInputs vs = webVs();
  vs.pool.servers[1].state = "down";
  vs.pool.servers[1].state_reason = "fall 1/1: connect refused";
  vs.pool.servers[2].state = "down";
  vs.pool.servers[2].state_reason = "fall 1/1: connect refused";
  HealthScore score = scoreVirtualService(vs);
  EXPECT_DOUBLE_EQ(score.score, 60);
  EXPECT_NE(score.band, "green");
  EXPECT_THAT(score.resources.reasons,
              AllOf(Contains("server web-pool/127.0.0.1:9002 is down (fall 1/1: connect refused)"),
                    Contains("server web-pool/127.0.0.1:9003 is down (fall 1/1: connect refused)")));
}

TEST(VsScoreTest, SlowBackendLowersPerformance) {
  VsInputs vs = webVs();
  vs.traffic.apdex = 0.5;
  HealthScore score = scoreVirtualService(vs);
  EXPECT_DOUBLE_EQ(score.performance_score, 50);
  EXPECT_EQ(score.band, "orange");
}

TEST(VsScoreTest, DownWhenPlacedNowhereOrItsPoolIsDown) {
  VsInputs vs = webVs();
  vs.ses.clear();
  HealthScore score = scoreVirtualService(vs);
  EXPECT_TRUE(score.down);
  EXPECT_EQ(score.band, "red");
  EXPECT_THAT(score.performance_reasons,
              ElementsAre("virtual service web is placed on no service engine"));

  vs = webVs();
  vs.ses[0].connected = false;
  EXPECT_THAT(scoreVirtualService(vs).performance_reasons,
              Contains("virtual service web has no service engine connected"));

  vs = webVs();
  for (ServerInputs& s : vs.pool.servers) s.state = "down";
  score = scoreVirtualService(vs);
  EXPECT_TRUE(score.down);
  EXPECT_EQ(score.score, 0);
  EXPECT_THAT(score.performance_reasons, ElementsAre("pool web-pool has no server up (3 down)"));
}

TEST(VsScoreTest, WorstSeAndLostSesCount) {
  VsInputs vs = webVs();
  vs.ses = {se("se-1"), se("se-2"), se("se-3")};
  vs.ses[0].cpu_percent = 90;  // 15
  vs.ses[1].cpu_percent = 95;  // 22.5: the worst
  vs.ses[2].connected = false;  // 60 x 1/3
  HealthScore score = scoreVirtualService(vs);
  EXPECT_DOUBLE_EQ(score.resources.value, 42.5);
  EXPECT_THAT(score.resources.reasons,
              ElementsAre("virtual service web has 2 of 3 service engines connected (-20.0)",
                          "service engine se-3 is lost",
                          "service engine se-2: CPU at 95% (-22.5)"));
}

TEST(VsScoreTest, ConnectionsAgainstItsLimit) {
  VsInputs vs = webVs();
  vs.max_connections = 1000;
  vs.connections_active = 900;
  HealthScore score = scoreVirtualService(vs);
  EXPECT_DOUBLE_EQ(score.resources.value, 10);
  EXPECT_THAT(score.resources.reasons,
              ElementsAre("virtual service web has 900 of 1000 connections (90%) (-10.0)"));
}

// ---- security ----

TEST(SecurityTest, MalformedRequestsByRateAndShare) {
  VsInputs vs = webVs();
  vs.traffic.requests = 2700;
  vs.rejected_requests = 300;  // 10/s, 10%: (0.10 - 0.02) / 0.23 x 25
  HealthScore score = scoreVirtualService(vs);
  EXPECT_DOUBLE_EQ(score.security.value, 8.7);
  EXPECT_THAT(score.security.reasons,
              ElementsAre("300 malformed requests rejected (10.0/s, 10.0% of requests) (-8.7)"));

  vs.rejected_requests = 10;  // 0.33/s: a stray scanner
  vs.traffic.requests = 10;
  EXPECT_EQ(scoreVirtualService(vs).security.value, 0);
}

TEST(SecurityTest, ConnectionFloodFromTheBaselineOrRefusals) {
  VsInputs vs = webVs();
  Anomaly flood{Metric::ConnectionRate, 500, 50, 10};
  vs.anomalies = {flood};
  vs.traffic.connections = 1000;
  vs.refused_connections = 50;  // 5%: 5 points, less than the spike's
  HealthScore score = scoreVirtualService(vs);
  EXPECT_DOUBLE_EQ(score.security.value, 30);  // 10x the baseline: the whole ramp
  EXPECT_THAT(score.security.reasons,
              ElementsAre("new connections/s 500.0 is 45.0 sigma above its baseline 50.0: "
                          "connection flood (-30.0)",
                          "50 connections refused at max_connections (5.0% of connections) "
                          "(-5.0)"));
  EXPECT_EQ(score.anomaly.value, 0);  // counted once, as a flood
  ASSERT_EQ(score.anomalies.size(), 1u);  // and reported as the anomaly it is
  EXPECT_EQ(score.anomalies[0].metric, Metric::ConnectionRate);

  vs.anomalies.clear();
  EXPECT_DOUBLE_EQ(scoreVirtualService(vs).security.value, 5);
  EXPECT_TRUE(scoreVirtualService(vs).anomalies.empty());

  // A flagged spike under twice its baseline costs nothing: no anomaly to report either.
  vs.refused_connections = 0;
  vs.anomalies = {Anomaly{Metric::ConnectionRate, 90, 50, 10}};
  EXPECT_EQ(scoreVirtualService(vs).security.value, 0);
  EXPECT_TRUE(scoreVirtualService(vs).anomalies.empty());
}

TEST(SecurityTest, TlsSettingsWhenTlsExists) {
  VsInputs vs = webVs();
  vs.tls = TlsInputs{"TLSv1.2", 90};
  EXPECT_EQ(scoreVirtualService(vs).security.value, 0);

  vs.tls = TlsInputs{"TLSv1.1", 10};  // 20 + (30 - 10) / 30 x 30
  HealthScore score = scoreVirtualService(vs);
  EXPECT_DOUBLE_EQ(score.security.value, 40);
  EXPECT_THAT(score.security.reasons,
              ElementsAre("minimum TLS version TLSv1.1 is weak (below TLSv1.2) (-20.0)",
                          "certificate expires in 10 days (-20.0)"));

  vs.tls = TlsInputs{"TLSv1.3", -2.5};
  score = scoreVirtualService(vs);
  EXPECT_DOUBLE_EQ(score.security.value, 50);
  EXPECT_THAT(score.security.reasons, ElementsAre("certificate expired 3 days ago (-50.0)"));
}

// ---- anomalies ----

BaselineOptions quickBaseline() {
  BaselineOptions options;
  options.warmup_samples = 5;
  options.min_deviation = 1;
  return options;
}

TEST(BaselineTest, LearnsDuringWarmUpWithoutFlagging) {
  Baseline baseline(Metric::RequestRate, quickBaseline());
  for (double value : {50.0, 250.0, 50.0, 5.0, 50.0}) {
    EXPECT_EQ(baseline.observe(value), std::nullopt) << value;
  }
  EXPECT_TRUE(baseline.warmedUp());
  EXPECT_DOUBLE_EQ(baseline.mean(), 81);  // the plain mean of the warm-up
}

TEST(BaselineTest, SpikeAndDropAfterWarmUp) {
  Baseline baseline(Metric::RequestRate, quickBaseline());
  for (double value : {48.0, 52.0, 50.0, 49.0, 51.0}) baseline.observe(value);
  std::optional<Anomaly> spike = baseline.observe(250);
  ASSERT_TRUE(spike);
  EXPECT_TRUE(spike->spike());
  EXPECT_STREQ(spike->direction(), "spike");
  EXPECT_DOUBLE_EQ(spike->mean, 50);
  EXPECT_DOUBLE_EQ(spike->sigma, 12.5 / 3);  // the 25% floor is wider than the noise
  EXPECT_EQ(spike->reason(), "requests/s 250.0 is 48.0 sigma above its baseline 50.0");
  EXPECT_DOUBLE_EQ(baseline.mean(), 50);  // anomalies are not learned

  std::optional<Anomaly> drop = baseline.observe(5);
  ASSERT_TRUE(drop);
  EXPECT_STREQ(drop->direction(), "drop");
  EXPECT_EQ(drop->reason(), "requests/s 5.0 is 10.8 sigma below its baseline 50.0");
}

TEST(BaselineTest, NoiseOnAFlatSeriesIsNotFlagged) {
  Baseline flat(Metric::RequestRate, quickBaseline());
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(flat.observe(100 + (i % 3) - 1), std::nullopt) << i;
  }
  // Exactly flat, then a wobble within the absolute floor.
  BaselineOptions options = quickBaseline();
  options.min_relative_deviation = 0;
  Baseline still(Metric::Latency, options);
  for (int i = 0; i < 10; ++i) still.observe(2.0);
  EXPECT_EQ(still.sigma(), 0);
  EXPECT_EQ(still.observe(2.9), std::nullopt);
  EXPECT_TRUE(still.observe(5.5));
}

TEST(BaselineTest, LeadingZerosAreNotLearned) {
  Baseline baseline(Metric::RequestRate, quickBaseline());
  for (int i = 0; i < 20; ++i) baseline.observe(0);
  EXPECT_EQ(baseline.samples(), 0u);
  EXPECT_EQ(baseline.observe(100), std::nullopt);  // traffic starts: a warm-up, not a spike
  EXPECT_EQ(baseline.samples(), 1u);
}

TEST(BaselineTest, DropsIgnoredWhenAsked) {
  BaselineOptions options = quickBaseline();
  options.flag_drops = false;
  Baseline latency(Metric::Latency, options);
  for (int i = 0; i < 5; ++i) latency.observe(100);
  EXPECT_EQ(latency.observe(10), std::nullopt);
  EXPECT_LT(latency.mean(), 100);  // learned as normal
}

TEST(BaselineTest, SustainedChangeBecomesTheNewNormal) {
  BaselineOptions options = quickBaseline();
  options.adopt_after = 4;
  Baseline baseline(Metric::RequestRate, options);
  for (int i = 0; i < 5; ++i) baseline.observe(50);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(baseline.observe(250)) << i;
  EXPECT_EQ(baseline.observe(250), std::nullopt);  // the 4th: relearned from here
  EXPECT_EQ(baseline.samples(), 1u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(baseline.observe(250), std::nullopt);
  EXPECT_DOUBLE_EQ(baseline.mean(), 250);
}

TEST(BaselineTest, StreakRestartsWhenTheDirectionChanges) {
  BaselineOptions options = quickBaseline();
  options.adopt_after = 2;
  Baseline baseline(Metric::RequestRate, options);
  for (int i = 0; i < 5; ++i) baseline.observe(50);
  EXPECT_TRUE(baseline.observe(250));
  EXPECT_TRUE(baseline.observe(5));  // a drop: a new streak of 1, not adoption
  EXPECT_DOUBLE_EQ(baseline.mean(), 50);
}

AnomalyOptions quickDetector() {
  AnomalyOptions options;
  options.warmup_samples = 5;
  return options;
}

TEST(AnomalyDetectorTest, FiveTimesSpikeAfterWarmUpGivesAPenalty) {
  AnomalyDetector detector(quickDetector());
  for (int i = 0; i < 5; ++i) {
    Sample sample{50.0 + (i % 2), 20.0 + i % 3, 10.0};
    EXPECT_THAT(detector.observe(sample), IsEmpty()) << i;
  }
  std::vector<Anomaly> anomalies = detector.observe(Sample{250, 21, 10});
  ASSERT_EQ(anomalies.size(), 1u);
  EXPECT_EQ(anomalies[0].metric, Metric::RequestRate);

  VsInputs vs = webVs();
  vs.anomalies = anomalies;
  HealthScore score = scoreVirtualService(vs);
  EXPECT_DOUBLE_EQ(score.anomaly.value, 20);  // far beyond k: the most one metric costs
  EXPECT_EQ(score.band, "yellow");
  ASSERT_EQ(score.anomaly.reasons.size(), 1u);
  EXPECT_THAT(score.anomaly.reasons[0],
              AllOf(HasSubstr("requests/s 250.0 is"), HasSubstr("above its baseline 50.4"),
                    HasSubstr("(-20.0)")));
  ASSERT_EQ(score.anomalies.size(), 1u);  // what the controller raises an `anomaly` event for
  EXPECT_EQ(score.anomalies[0].metric, Metric::RequestRate);
}

TEST(AnomalyDetectorTest, LatencySpikeFlaggedItsDropNot) {
  AnomalyDetector detector(quickDetector());
  for (int i = 0; i < 5; ++i) detector.observe(Sample{50, 20.0, std::nullopt});
  EXPECT_THAT(detector.observe(Sample{50, 5.0, std::nullopt}), IsEmpty());
  std::vector<Anomaly> anomalies = detector.observe(Sample{50, 200.0, std::nullopt});
  ASSERT_EQ(anomalies.size(), 1u);
  EXPECT_EQ(anomalies[0].metric, Metric::Latency);
  EXPECT_THAT(anomalies[0].reason(), HasSubstr("latency ms 200.0 is"));
}

TEST(AnomalyPenaltyTest, GradedBySigmas) {
  ServerInputs s = server("10.0.0.1:80");
  s.anomalies = {Anomaly{Metric::Latency, 80, 50, 6}};  // 5 sigma: 10 + 2 x (5 - 3)
  HealthScore score = scoreServer(s);
  EXPECT_DOUBLE_EQ(score.anomaly.value, 14);
  EXPECT_THAT(score.anomaly.reasons,
              ElementsAre("latency ms 80.0 is 5.0 sigma above its baseline 50.0 (-14.0)"));
  EXPECT_DOUBLE_EQ(score.score, 86);
}

// The example of docs/health-score.md, to the letter.
TEST(WorkedExampleTest, AsTheDocsShowIt) {
  VsInputs vs;
  vs.name = "web";
  vs.traffic.requests = 3000;
  vs.traffic.apdex = 0.90;
  vs.traffic.responses_5xx = 15;
  vs.traffic.connections = 300;
  vs.traffic.connection_failures = 3;
  vs.traffic.seconds = 30;
  vs.pool.name = "web-pool";
  for (const char* address : {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}) {
    ServerInputs s;
    s.name = std::string("web-pool/") + address;
    vs.pool.servers.push_back(s);
  }
  vs.pool.servers[2].state = "down";
  vs.pool.servers[2].state_reason = "fall 3/3: connect refused";
  SeInputs se1;
  se1.name = "se-1";
  se1.cpu_percent = 88;
  vs.ses = {se1};
  vs.anomalies = {Anomaly{Metric::RequestRate, 210, 100, 25.0 / 3}};

  Json expected = Json::parse(R"json({
    "score": 34.0, "band": "orange", "previous_score": null, "performance_score": 86.0,
    "performance_reasons": ["apdex 0.90 over 3000 requests",
                            "error rate 0.5%: 15 5xx, 0 resets, 0 timeouts in 3000 requests",
                            "connection failures 1.0%: 3 of 300 connections"],
    "penalties": {
      "resources": { "value": 32.0, "reasons": [
          "pool web-pool has 2 of 3 servers up (-20.0)",
          "server web-pool/10.0.0.3:80 is down (fall 3/3: connect refused)",
          "service engine se-1: CPU at 88% (-12.0)"] },
      "security": { "value": 0.0, "reasons": [] },
      "anomaly": { "value": 20.0, "reasons": [
          "requests/s 210.0 is 13.2 sigma above its baseline 100.0 (-20.0)"] } } })json");
  EXPECT_EQ(scoreVirtualService(vs).toJson(), expected)
      << scoreVirtualService(vs).toJson().dump(2);
}

}  // namespace
}  // namespace ballast::controller::healthscore
