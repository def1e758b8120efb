#include "controller/service.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

namespace ballast::controller {
namespace {

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/ballast-service-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    start();
  }
  void TearDown() override {
    service_.reset();
    std::filesystem::remove_all(dir_);
  }
  void start() {
    service_.reset();
    std::string error;
    auto store = Store::open(dir_ + "/controller.db", &error);
    ASSERT_NE(store, nullptr) << error;
    ServiceOptions options;
    options.admin_token = "admin";
    options.readonly_token = "reader";
    options.se_token = "engine";
    service_ = std::make_unique<Service>(std::move(store), options);
  }
  Response call(const std::string& method, const std::string& path, const Json& body = nullptr,
                const std::string& token = "admin",
                std::multimap<std::string, std::string> params = {},
                std::map<std::string, std::string> headers = {}) {
    Request r;
    r.method = method;
    r.path = path;
    r.params = std::move(params);
    r.headers = std::move(headers);
    if (!token.empty()) r.headers["authorization"] = "Bearer " + token;
    if (!body.is_null()) r.body = body.dump();
    return service_->handle(r);
  }
  void createWeb() {
    ASSERT_EQ(call("POST", "/api/v1/pools",
                   {{"name", "web"}, {"servers", {{{"address", "127.0.0.1:9001"}}}}})
                  .status,
              201);
    ASSERT_EQ(
        call("POST", "/api/v1/virtual_services",
             {{"name", "web"}, {"listen", "127.0.0.1:8080"}, {"protocol", "http"}, {"pool", "web"}})
            .status,
        201);
  }

  std::string dir_;
  std::unique_ptr<Service> service_;
};

TEST_F(ServiceTest, AuthenticationCases) {
  Response none = call("GET", "/api/v1/pools", nullptr, "");
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.headers["WWW-Authenticate"], "Bearer");
  EXPECT_EQ(call("GET", "/api/v1/pools", nullptr, "wrong").status, 401);
  EXPECT_EQ(call("GET", "/api/v1/pools", nullptr, "admin2").status, 401);
  EXPECT_EQ(call("GET", "/api/v1/pools", nullptr, "reader").status, 200);
  Response ro = call("DELETE", "/api/v1/pools/x", nullptr, "reader");
  EXPECT_EQ(ro.status, 403);
  EXPECT_EQ(ro.body["error"], "forbidden: read-only token");
  EXPECT_EQ(call("GET", "/api/v1/pools", nullptr, "engine").body["error"],
            "forbidden: service engine token");
  EXPECT_EQ(call("POST", "/api/v1/se/register", {{"name", "a"}}, "admin").status, 403);
  EXPECT_EQ(call("POST", "/api/v1/se/register", {{"name", "a"}}, "engine").status, 200);
}

TEST_F(ServiceTest, DefaultGroupExistsAndCannotBeDeleted) {
  EXPECT_EQ(call("GET", "/api/v1/se_groups/default").status, 200);
  EXPECT_EQ(call("DELETE", "/api/v1/se_groups/default").status, 409);
}

TEST_F(ServiceTest, VersionsIfMatchAndReferences) {
  createWeb();
  Response got = call("GET", "/api/v1/pools/web");
  int64_t version = got.body["version"];
  EXPECT_EQ(got.headers["ETag"], "\"" + std::to_string(version) + "\"");
  Json changed = got.body;
  changed["servers"].push_back({{"address", "127.0.0.1:9002"}});
  Response stale = call("PUT", "/api/v1/pools/web", changed, "admin", {},
                        {{"if-match", "\"" + std::to_string(version - 1) + "\""}});
  EXPECT_EQ(stale.status, 409);
  EXPECT_EQ(stale.body["error"], "version mismatch: current is " + std::to_string(version));
  Response ok = call("PUT", "/api/v1/pools/web", changed, "admin", {},
                     {{"if-match", std::to_string(version)}});
  EXPECT_EQ(ok.status, 200);
  EXPECT_GT(ok.body["version"].get<int64_t>(), version);
  Response refused = call("DELETE", "/api/v1/pools/web");
  EXPECT_EQ(refused.status, 409);
  EXPECT_EQ(refused.body["error"], "pools/web is used by virtual_services/web");
  Response wrong = call("PATCH", "/api/v1/pools/web");
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(wrong.headers["Allow"], "GET, PUT, DELETE");
  EXPECT_EQ(call("GET", "/api/v1/nothing").status, 404);
}

TEST_F(ServiceTest, PlacementLongPollAndLoss) {
  createWeb();
  ASSERT_EQ(call("POST", "/api/v1/se/register", {{"name", "se1"}}, "engine").status, 200);
  Response first = call("GET", "/api/v1/se/se1/config", nullptr, "engine", {{"known", "0"}});
  ASSERT_EQ(first.status, 200);
  ASSERT_EQ(first.body["config"]["virtual_services"].size(), 1u);
  std::string revision = std::to_string(first.body["revision"].get<int64_t>());
  Response same = call("GET", "/api/v1/se/se1/config", nullptr, "engine",
                       {{"known", revision}, {"wait", "0.1"}});
  EXPECT_EQ(same.status, 304);

  ASSERT_EQ(call("POST", "/api/v1/se/register", {{"name", "se2"}}, "engine").status, 200);
  // se2 reports, se1 falls silent: se1 is lost and web moves to se2.
  auto later = Service::Clock::now() + std::chrono::seconds(10);
  ASSERT_EQ(call("POST", "/api/v1/se/se2/report", {{"acked_revision", 0}}, "engine").status, 204);
  // The controller checks every 200 ms (a gap in its own checks would be a stall of its own):
  // both silent for 10 s from their own view: both lost.
  for (auto t = Service::Clock::now(); t < later; t += std::chrono::milliseconds(200))
    service_->tick(t);
  service_->tick(later);
  Response ses = call("GET", "/api/v1/ses");
  EXPECT_EQ(ses.body["items"][0]["state"], "lost");
  ASSERT_EQ(call("POST", "/api/v1/se/se2/report", {{"acked_revision", 0}}, "engine").status, 204);
  Response placements = call("GET", "/api/v1/placements");
  EXPECT_EQ(placements.body["items"][0]["ses"], Json::array({"se2"}));
  Response events = call("GET", "/api/v1/events", nullptr, "admin", {{"type", "se_lost"}});
  EXPECT_GE(events.body["items"].size(), 1u);
  Response one = call("GET", "/api/v1/se/se1/config", nullptr, "engine", {{"known", revision}});
  EXPECT_EQ(one.status, 200);
  EXPECT_TRUE(one.body["config"]["virtual_services"].empty());
}

TEST_F(ServiceTest, StateSurvivesRestart) {
  createWeb();
  int64_t version = call("GET", "/api/v1/virtual_services/web").body["version"];
  start();
  Response got = call("GET", "/api/v1/virtual_services/web");
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.body["version"], version);
}

TEST_F(ServiceTest, ApplyDryRunThenApply) {
  std::string yaml =
      "pools:\n  - name: web\n    servers: [{address: 127.0.0.1:9001}]\n"
      "virtual_services:\n  - {name: web, listen: 127.0.0.1:8080, protocol: http, pool: web}\n";
  Request r;
  r.method = "POST";
  r.path = "/api/v1/apply";
  r.headers["authorization"] = "Bearer admin";
  r.body = yaml;
  r.params = {{"dry_run", "true"}};
  Response dry = service_->handle(r);
  ASSERT_EQ(dry.status, 200) << dry.body.dump();
  EXPECT_EQ(dry.body["changes"].size(), 2u);
  EXPECT_EQ(call("GET", "/api/v1/pools/web").status, 404);
  r.params.clear();
  Response done = service_->handle(r);
  EXPECT_EQ(done.body["changes"].size(), 2u);
  EXPECT_EQ(call("GET", "/api/v1/pools/web").status, 200);
  Response again = service_->handle(r);
  EXPECT_TRUE(again.body["changes"].empty());
}

}  // namespace
}  // namespace ballast::controller
