#include "controller/documents.h"

#include <gtest/gtest.h>

#include <string>

namespace ballast::controller {
namespace {

Json pool(const std::string& name, const std::string& address = "127.0.0.1:9001") {
  return {{"name", name}, {"servers", {{{"address", address}}}}};
}

Json vs(const std::string& name, const std::string& listen, const std::string& pool_name) {
  return {{"name", name}, {"listen", listen}, {"protocol", "http"}, {"pool", pool_name}};
}

Document base() {
  Document doc;
  doc["pools"] = {pool("web")};
  doc["virtual_services"] = {vs("web", "127.0.0.1:8080", "web")};
  doc["health_monitors"] = {{{"name", "ok"}, {"type", "tcp"}, {"interval", "2s"}}};
  doc["se_groups"] = {{{"name", "default"}}};
  return doc;
}

TEST(ValidateChange, AcceptsAValidObject) {
  EXPECT_FALSE(validateChange(base(), "pools", pool("api", "127.0.0.1:9002")));
}

TEST(ValidateChange, BadValueNamesThePathInsideTheObject) {
  Json p = pool("api");
  p["servers"].push_back({{"address", "not-an-address"}});
  auto invalid = validateChange(base(), "pools", p);
  ASSERT_TRUE(invalid);
  EXPECT_EQ((*invalid)["error"], "invalid pools/api");
  ASSERT_EQ((*invalid)["errors"].size(), 1u);
  EXPECT_EQ((*invalid)["errors"][0]["path"], "servers[1].address");
  EXPECT_FALSE((*invalid)["errors"][0].contains("object"));
}

TEST(ValidateChange, UnknownKeyAndDurationString) {
  Json m = {{"name", "m"}, {"type", "http"}, {"interval", "fast"}, {"colour", "red"}};
  auto invalid = validateChange(base(), "health_monitors", m);
  ASSERT_TRUE(invalid);
  std::set<std::string> paths;
  for (const Json& e : (*invalid)["errors"]) paths.insert(e["path"].get<std::string>());
  EXPECT_TRUE(paths.count("colour"));
  EXPECT_TRUE(paths.count("interval"));
}

TEST(ValidateChange, MissingReferences) {
  Json v = vs("api", "127.0.0.1:8081", "nope");
  v["se_group"] = "blue";
  auto invalid = validateChange(base(), "virtual_services", v);
  ASSERT_TRUE(invalid);
  ASSERT_EQ((*invalid)["errors"].size(), 2u);
  EXPECT_EQ((*invalid)["errors"][0]["path"], "pool");
  EXPECT_EQ((*invalid)["errors"][0]["message"], "no pool named \"nope\"");
  EXPECT_EQ((*invalid)["errors"][1]["path"], "se_group");
}

TEST(ValidateChange, DuplicateListenIsReportedOnTheChangedObject) {
  auto invalid = validateChange(base(), "virtual_services", vs("api", "127.0.0.1:8080", "web"));
  ASSERT_TRUE(invalid);
  EXPECT_EQ((*invalid)["error"], "invalid virtual_services/api");
  EXPECT_EQ((*invalid)["errors"][0]["path"], "listen");
  EXPECT_NE((*invalid)["errors"][0]["message"].get<std::string>().find("already used"),
            std::string::npos);
}

TEST(ValidateChange, ReplacingKeepsOneObjectOfTheName) {
  // The same name replaces; it does not count as a duplicate.
  EXPECT_FALSE(validateChange(base(), "virtual_services", vs("web", "127.0.0.1:8080", "web")));
}

TEST(ValidateChange, ErrorCausedInAnotherObjectNamesIt) {
  Document doc = base();
  doc["virtual_services"] = {
      {{"name", "t"}, {"listen", "127.0.0.1:7000"}, {"protocol", "tcp"}, {"pool", "web"}}};
  Json p = pool("web");
  p["lb_algorithm"] = "consistent_hash";
  p["hash_key"] = {{"type", "header"}, {"name", "X-User"}};
  auto invalid = validateChange(doc, "pools", p);
  ASSERT_TRUE(invalid);
  EXPECT_EQ((*invalid)["errors"][0]["object"], "virtual_services/t");
  EXPECT_EQ((*invalid)["errors"][0]["path"], "pool");
}

TEST(UsersOf, NamesWhatRefersToAnObject) {
  Document doc = base();
  doc["pools"][0]["health_monitors"] = {"ok"};
  EXPECT_EQ(usersOf(doc, "pools", "web"), std::vector<std::string>{"virtual_services/web"});
  EXPECT_EQ(usersOf(doc, "health_monitors", "ok"), std::vector<std::string>{"pools/web"});
  // Without se_group a virtual service uses "default".
  EXPECT_EQ(usersOf(doc, "se_groups", "default"), std::vector<std::string>{"virtual_services/web"});
  EXPECT_TRUE(usersOf(doc, "pools", "other").empty());
}

TEST(ParseApplyDocument, ErrorsKeepLineNumbers) {
  std::string text =
      "pools:\n"
      "  - name: web\n"
      "    servers:\n"
      "      - address: 127.0.0.1:9001\n"
      "      - address: nope\n";
  ApplyDocument parsed = parseApplyDocument(text);
  EXPECT_EQ(parsed.status, 422);
  std::string error = parsed.error["error"];
  EXPECT_NE(error.find("line 5: pools[0].servers[1].address: "), std::string::npos) << error;
  EXPECT_EQ(parsed.error["errors"][0]["line"], 5);
}

TEST(ParseApplyDocument, RefusesEngineSections) {
  ApplyDocument parsed = parseApplyDocument("se:\n  workers: 2\npools: []\n");
  EXPECT_EQ(parsed.status, 422);
  EXPECT_EQ(parsed.error["errors"][0]["path"], "se");
  EXPECT_EQ(parsed.error["errors"][0]["line"], 1);
}

TEST(ParseApplyDocument, SyntaxErrorIs400) {
  EXPECT_EQ(parseApplyDocument("pools: [\n").status, 400);
  EXPECT_EQ(parseApplyDocument("").status, 400);
}

TEST(ParseApplyDocument, YamlScalarsBecomeJsonTypes) {
  ApplyDocument parsed = parseApplyDocument(
      "pools:\n"
      "  - name: web\n"
      "    servers: [{address: \"127.0.0.1:9001\", weight: 3, enabled: true}]\n"
      "se_groups:\n"
      "  - {name: \"10\", max_vs_per_se: 4}\n");
  ASSERT_EQ(parsed.status, 0) << parsed.error.dump();
  const Json& server = parsed.desired["pools"][0]["servers"][0];
  EXPECT_EQ(server["weight"], 3);
  EXPECT_EQ(server["enabled"], true);
  EXPECT_EQ(parsed.desired["se_groups"][0]["name"], "10");  // quoted: stays a string
  EXPECT_EQ(parsed.desired["se_groups"][0]["max_vs_per_se"], 4);
  EXPECT_TRUE(parsed.desired["virtual_services"].empty());
}

TEST(ParseApplyDocument, VersionsOfExportedObjectsAreIgnored) {
  ApplyDocument parsed = parseApplyDocument(
      "pools:\n  - {name: web, version: 7, servers: [{address: 127.0.0.1:9001}]}\n");
  ASSERT_EQ(parsed.status, 0) << parsed.error.dump();
  EXPECT_FALSE(parsed.desired["pools"][0].contains("version"));
  // Elsewhere "version" is still an unknown key.
  EXPECT_EQ(parseApplyDocument("pools:\n  - {name: web, servers: [{address: 127.0.0.1:9001, "
                               "version: 1}]}\n")
                .status,
            422);
}

TEST(Diff, CreatesUpdatesDeletesAndKeepsDefaultGroup) {
  Document current = base();
  Document desired;
  desired["pools"] = {pool("web", "127.0.0.1:9009"), pool("api")};
  desired["health_monitors"] = current["health_monitors"];
  std::vector<Change> changes = diff(current, desired);
  std::vector<std::string> seen;
  for (const Change& c : changes) seen.push_back(c.op + " " + c.kind + "/" + c.name);
  std::vector<std::string> expected = {"delete virtual_services/web", "create pools/api",
                                       "update pools/web"};
  EXPECT_EQ(seen, expected);
}

TEST(RenderSeConfig, OnlyWhatIsPlacedWithItsPoolsAndMonitors) {
  Document doc = base();
  doc["pools"][0]["health_monitors"] = {"ok"};
  doc["pools"].push_back(pool("unused", "127.0.0.1:9100"));
  doc["virtual_services"][0]["se_group"] = "default";
  Json config = renderSeConfig(doc, {"web"});
  ASSERT_EQ(config["virtual_services"].size(), 1u);
  EXPECT_FALSE(config["virtual_services"][0].contains("se_group"));
  ASSERT_EQ(config["pools"].size(), 1u);
  EXPECT_EQ(config["pools"][0]["name"], "web");
  ASSERT_EQ(config["health_monitors"].size(), 1u);
  Json empty = renderSeConfig(doc, {});
  EXPECT_TRUE(empty["virtual_services"].empty());
  EXPECT_TRUE(empty["pools"].empty());
}

}  // namespace
}  // namespace ballast::controller
