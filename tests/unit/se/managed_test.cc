#include "se/managed.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace ballast::se::managed {
namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;

Json webDocument() {
  return Json::parse(R"({
    "virtual_services": [{"name": "web", "listen": "127.0.0.1:8080", "protocol": "http",
                          "pool": "web-pool", "se_group": "edge", "version": 7}],
    "pools": [{"name": "web-pool", "lb_algorithm": "least_connections", "version": 5,
               "servers": [{"address": "127.0.0.1:9001", "weight": 3, "drain": false}],
               "health_monitors": ["ok"]}],
    "health_monitors": [{"name": "ok", "type": "http", "interval": "2s", "timeout": "1s",
                         "request": "GET /health", "expect": [200], "version": 4}]
  })");
}

TEST(ManagedMerge, AnEmptyDocumentIsAValidConfiguration) {
  config::LoadResult r = mergeConfig("", Json::object(), "controller revision 1");
  ASSERT_TRUE(r.ok()) << describe(r);
  EXPECT_TRUE(r.config->virtual_services.empty());
  EXPECT_TRUE(r.config->pools.empty());
  EXPECT_EQ(r.config->source, "controller revision 1");
}

TEST(ManagedMerge, TakesTheEnginesOwnSettingsAndTheControllersServices) {
  std::string own = "se:\n  workers: 3\n  admin: 127.0.0.1:9901\nstore:\n  type: memory\n  cache_size: 1000\n";
  config::LoadResult r = mergeConfig(own, webDocument(), "controller revision 9");
  ASSERT_TRUE(r.ok()) << describe(r);
  EXPECT_EQ(r.config->se.workers, 3u);
  EXPECT_EQ(r.config->se.admin_text, "127.0.0.1:9901");
  EXPECT_EQ(r.config->store.cache_size, 1000u);
  ASSERT_EQ(r.config->virtual_services.size(), 1u);
  EXPECT_EQ(r.config->virtual_services[0].name, "web");
  // The group is the controller's business; the engine runs it in its default.
  EXPECT_EQ(r.config->virtual_services[0].se_group, "default");
  ASSERT_EQ(r.config->pools.size(), 1u);
  EXPECT_EQ(r.config->pools[0].lb_algorithm, config::LbAlgorithm::LeastConnections);
  EXPECT_EQ(r.config->pools[0].servers[0].weight, 3u);
  ASSERT_EQ(r.config->health_monitors.size(), 1u);
  EXPECT_EQ(r.config->health_monitors[0].interval, milliseconds(2000));
}

TEST(ManagedMerge, IgnoresWhatTheControllerMayNotPlace) {
  Json doc = webDocument();
  doc["se"] = {{"workers", 64}};
  doc["se_groups"] = Json::array({{{"name", "edge"}}});
  config::LoadResult r = mergeConfig("se: {workers: 2}\n", doc, "c");
  ASSERT_TRUE(r.ok()) << describe(r);
  EXPECT_EQ(r.config->se.workers, 2u);
}

TEST(ManagedMerge, AnInvalidDocumentIsOneLineWithTheKeyPath) {
  Json doc = webDocument();
  doc["virtual_services"][0]["listen"] = "nowhere";
  doc["pools"][0]["servers"][0]["weight"] = 0;
  config::LoadResult r = mergeConfig("", doc, "c");
  ASSERT_FALSE(r.ok());
  std::string line = describe(r);
  EXPECT_NE(line.find("pools[0].servers[0].weight: expected an integer"), std::string::npos) << line;
  EXPECT_NE(line.find("(and 1 more)"), std::string::npos) << line;
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

TEST(ManagedMerge, RefusesADocumentOfTheWrongShape) {
  EXPECT_FALSE(mergeConfig("", Json::array(), "c").ok());
  EXPECT_FALSE(mergeConfig("", Json{{"pools", "none"}}, "c").ok());
  config::LoadResult r = mergeConfig("", Json{{"pools", Json::array({42})}}, "c");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(describe(r).find("pools[0]"), std::string::npos) << describe(r);
}

TEST(ManagedMerge, StringsThatLookLikeOtherYamlStayStrings) {
  Json doc = webDocument();
  doc["health_monitors"][0]["body"] = "null: ~ # {not: yaml}";
  config::LoadResult r = mergeConfig("", doc, "c");
  ASSERT_TRUE(r.ok()) << describe(r);
  EXPECT_EQ(r.config->health_monitors[0].body, "null: ~ # {not: yaml}");
}

Json counters(uint64_t requests, uint64_t active, uint64_t bucket0) {
  return {{"bounds_seconds", {0.5}},
          {"virtual_services",
           {{"web", {{"requests", requests}, {"connections_active", active},
                     {"responses", {{"2xx", requests}}},
                     {"latency", {{"buckets", {bucket0, 1}}, {"sum_us", 10 * requests}}}}}}},
          {"servers", {{"p/127.0.0.1:1", {{"requests", requests}, {"in_flight", active}, {"pool", "p"}}}}}};
}

TEST(ManagedCounters, FirstReportSendsEverythingSinceStart) {
  Json d = counterDeltas(counters(10, 2, 4), Json::object());
  EXPECT_EQ(d["virtual_services"]["web"]["requests"], 10u);
  EXPECT_EQ(d["servers"]["p/127.0.0.1:1"]["pool"], "p");
  EXPECT_EQ(d["bounds_seconds"], Json({0.5}));
}

TEST(ManagedCounters, LaterReportsSendDifferencesAndGaugesAsTheyAre) {
  Json sent = Json::object();
  markSent(counters(10, 2, 4), &sent);
  Json d = counterDeltas(counters(25, 3, 6), sent);
  const Json& web = d["virtual_services"]["web"];
  EXPECT_EQ(web["requests"], 15u);
  EXPECT_EQ(web["responses"]["2xx"], 15u);
  EXPECT_EQ(web["connections_active"], 3u);  // a gauge
  EXPECT_EQ(web["latency"]["buckets"], Json({2u, 0u}));
  EXPECT_EQ(web["latency"]["sum_us"], 150u);
  EXPECT_EQ(d["servers"]["p/127.0.0.1:1"]["in_flight"], 3u);
  EXPECT_EQ(d["servers"]["p/127.0.0.1:1"]["requests"], 15u);
}

TEST(ManagedCounters, AVirtualServiceThatComesBackContinuesFromWhatWasSent) {
  Json sent = Json::object();
  markSent(counters(10, 0, 0), &sent);
  markSent(Json{{"virtual_services", Json::object()}, {"servers", Json::object()}}, &sent);  // removed
  Json d = counterDeltas(counters(12, 0, 0), sent);
  EXPECT_EQ(d["virtual_services"]["web"]["requests"], 2u);
}

// A sparse phase histogram as renderCounters writes it (cumulative since start).
Json phase(std::vector<std::pair<uint64_t, uint64_t>> buckets, uint64_t sum_us) {
  Json list = Json::array();
  uint64_t count = 0;
  for (auto [index, n] : buckets) {
    list.push_back({index, n});
    count += n;
  }
  return {{"buckets", list}, {"count", count}, {"sum_us", sum_us}};
}

Json phased(Json response, uint64_t errors_max_connections = 0) {
  return {{"phase_bounds_us", {100, 119}},
          {"virtual_services",
           {{"web", {{"requests", 1},
                     {"max_connections", 100},
                     {"errors", {{"max_connections", errors_max_connections}}},
                     {"phases", {{"response", response}, {"total", phase({{3, 1}}, 500)}}}}}}},
          {"servers", {{"p/127.0.0.1:1", {{"max_connections", 7},
                                          {"phases", {{"response", response}}}}}}}};
}

TEST(ManagedCounters, PhaseHistogramsAreSentAsSparseDifferences) {
  Json first = phased(phase({{2, 5}, {40, 1}}, 1000));
  Json d = counterDeltas(first, Json::object());
  EXPECT_EQ(d["phase_bounds_us"], Json({100, 119}));
  EXPECT_EQ(d["virtual_services"]["web"]["phases"]["response"], phase({{2, 5}, {40, 1}}, 1000));

  Json sent = Json::object();
  markSent(first, &sent);
  // Bucket 2 unchanged (left out), 40 grew by 2, 7 is new.
  d = counterDeltas(phased(phase({{2, 5}, {7, 4}, {40, 3}}, 1600)), sent);
  const Json& response = d["virtual_services"]["web"]["phases"]["response"];
  EXPECT_EQ(response["buckets"], Json::parse("[[7, 4], [40, 2]]"));
  EXPECT_EQ(response["count"], 6u);
  EXPECT_EQ(response["sum_us"], 600u);
  EXPECT_EQ(d["servers"]["p/127.0.0.1:1"]["phases"]["response"], response);
  // Nothing new: an empty histogram, not the last one again.
  EXPECT_EQ(d["virtual_services"]["web"]["phases"]["total"], phase({}, 0));
}

TEST(ManagedCounters, AfterMarkSentNothingIsSentTwice) {
  Json now = phased(phase({{0, 1}, {80, 2}}, 9000));
  Json sent = Json::object();
  markSent(now, &sent);
  Json d = counterDeltas(now, sent);
  EXPECT_EQ(d["virtual_services"]["web"]["phases"]["response"], phase({}, 0));
  EXPECT_EQ(d["virtual_services"]["web"]["requests"], 0u);
  // A report that failed is not marked: the next one carries what it had.
  Json later = phased(phase({{0, 2}, {80, 2}}, 9010));
  d = counterDeltas(later, sent);
  EXPECT_EQ(d["virtual_services"]["web"]["phases"]["response"], phase({{0, 1}}, 10));
}

TEST(ManagedCounters, AHistogramThatWentDownRestartsFromZero) {
  Json sent = Json::object();
  markSent(phased(phase({{2, 5}, {40, 1}}, 1000)), &sent);
  // Bucket 40 is gone and 2 shrank: counters started again (not a difference of two histories).
  Json restarted = phase({{2, 3}, {9, 1}}, 400);
  Json d = counterDeltas(phased(restarted), sent);
  EXPECT_EQ(d["virtual_services"]["web"]["phases"]["response"], restarted);
  // Only the sum went down.
  markSent(phased(phase({{2, 5}}, 1000)), &sent);
  Json lower_sum = phase({{2, 6}}, 900);
  EXPECT_EQ(counterDeltas(phased(lower_sum), sent)["virtual_services"]["web"]["phases"]["response"],
            lower_sum);
}

TEST(ManagedCounters, MaxConnectionsIsAValueButTheErrorKindACounter) {
  Json sent = Json::object();
  markSent(phased(phase({}, 0), 4), &sent);
  Json d = counterDeltas(phased(phase({}, 0), 10), sent);
  EXPECT_EQ(d["virtual_services"]["web"]["max_connections"], 100u);
  EXPECT_EQ(d["servers"]["p/127.0.0.1:1"]["max_connections"], 7u);
  EXPECT_EQ(d["virtual_services"]["web"]["errors"]["max_connections"], 6u);
}

TEST(ManagedBackoff, DoublesUpToTheMaximumWithJitterBelow) {
  Backoff b(milliseconds(100), milliseconds(5000));
  milliseconds expected(100);
  for (int i = 0; i < 10; ++i) {
    milliseconds d = b.next();
    EXPECT_LE(d, expected);
    EXPECT_GE(d, expected / 2);
    expected = std::min(expected * 2, milliseconds(5000));
  }
  b.reset();
  EXPECT_LE(b.next(), milliseconds(100));
}

TEST(ManagedDocument, ParsesWhatTheControllerSends) {
  auto doc = parseDocument(R"({"revision": 12, "config": {"virtual_services": []}})");
  ASSERT_TRUE(doc.has_value());
  EXPECT_EQ(doc->revision, 12);
  EXPECT_TRUE(doc->config.contains("virtual_services"));
  EXPECT_FALSE(parseDocument("").has_value());
  EXPECT_FALSE(parseDocument("[]").has_value());
  EXPECT_FALSE(parseDocument(R"({"revision": "12", "config": {}})").has_value());
  EXPECT_FALSE(parseDocument(R"({"revision": 12, "config": []})").has_value());
  EXPECT_FALSE(parseDocument(R"({"config": {}})").has_value());
}

class ManagedState : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/ballast-managed-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(ManagedState, NoDocumentYetIsNotAnError) {
  std::string error = "x";
  EXPECT_FALSE(loadDocument(dir_, &error).has_value());
  EXPECT_EQ(error, "");
}

TEST_F(ManagedState, KeepsTheLastDocument) {
  std::string error;
  ASSERT_TRUE(saveDocument(dir_, KeptDocument{3, webDocument()}, &error)) << error;
  ASSERT_TRUE(saveDocument(dir_, KeptDocument{4, Json::object()}, &error)) << error;
  auto kept = loadDocument(dir_, &error);
  ASSERT_TRUE(kept.has_value()) << error;
  EXPECT_EQ(kept->revision, 4);
  EXPECT_EQ(kept->config, Json::object());
  // Nothing left behind but the document.
  size_t files = 0;
  for (auto& entry : std::filesystem::directory_iterator(dir_)) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 1u);
}

TEST_F(ManagedState, AnUnreadableDocumentIsReported) {
  std::ofstream(dir_ + "/config.json") << "{\"revision\": 3, \"config\": [";
  std::string error;
  EXPECT_FALSE(loadDocument(dir_, &error).has_value());
  EXPECT_NE(error.find("config.json"), std::string::npos);
}

TEST_F(ManagedState, SavingIntoAMissingDirectoryFails) {
  std::string error;
  EXPECT_FALSE(saveDocument(dir_ + "/missing", KeptDocument{1, Json::object()}, &error));
  EXPECT_NE(error, "");
}

}  // namespace
}  // namespace ballast::se::managed
