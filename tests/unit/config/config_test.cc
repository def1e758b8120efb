#include "config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "config/values.h"

namespace ballast::config {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::StartsWith;

constexpr const char* kFile = "test.yaml";

// Raw strings in this file start with a newline so that their first line reads as line 1.
std::string doc(const char* text) { return text[0] == '\n' ? text + 1 : text; }

std::string indent(const std::string& text, int spaces) {
  std::string out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    out += std::string(static_cast<size_t>(spaces), ' ') + line + "\n";
  }
  return out;
}

std::shared_ptr<const Config> mustLoad(const std::string& yaml) {
  LoadResult result = loadString(yaml, kFile);
  for (const ConfigError& error : result.errors) ADD_FAILURE() << error.toString();
  EXPECT_TRUE(result.ok());
  return result.config;
}

// Every error as "file:line: key.path: message".
std::vector<std::string> errorsOf(const std::string& yaml) {
  LoadResult result = loadString(yaml, kFile);
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.config, nullptr);
  std::vector<std::string> out;
  for (const ConfigError& error : result.errors) out.push_back(error.toString());
  return out;
}

// The one error a document has, as "key.path: message" (no file and line).
std::string onlyError(const std::string& yaml) {
  LoadResult result = loadString(yaml, kFile);
  EXPECT_EQ(result.errors.size(), 1u) << yaml;
  if (result.errors.empty()) return "(no error)";
  std::string all;
  for (const ConfigError& error : result.errors) {
    if (!all.empty()) all += " | ";
    all += error.key_path.empty() ? error.message : error.key_path + ": " + error.message;
  }
  return all;
}

// A valid pool "p" (at the top) and one virtual service using it, with `vs_fields` as the
// fields of that service; `pool_extra` adds fields to the pool.
std::string withVs(const std::string& vs_fields, const std::string& pool_extra = "") {
  return "pools:\n"
         "  - name: p\n"
         "    servers:\n"
         "      - address: 127.0.0.1:9001\n" +
         indent(pool_extra, 4) + "virtual_services:\n  - " + indent(vs_fields, 4).substr(4);
}

const std::string kHttpVs =
    "name: v\n"
    "listen: 127.0.0.1:8080\n"
    "protocol: http\n"
    "pool: p\n";
const std::string kTcpVs =
    "name: v\n"
    "listen: 127.0.0.1:8080\n"
    "protocol: tcp\n"
    "pool: p\n";

// One pool with `pool_fields`, and no virtual services.
std::string withPool(const std::string& pool_fields) {
  return "pools:\n  - " + indent(pool_fields, 4).substr(4);
}

const std::string kPoolBase = "name: p\nservers:\n  - address: 127.0.0.1:9001\n";

// ---------------------------------------------------------------------------------------------
// Value syntax

TEST(ValuesTest, ParsesDurations) {
  struct Case {
    const char* text;
    Duration expected;
  };
  for (const Case& c :
       {Case{"0s", Duration(0)}, Case{"0ms", Duration(0)}, Case{"300ms", milliseconds(300)},
        Case{"2s", seconds(2)}, Case{"1.5s", milliseconds(1500)}, Case{"0.001s", milliseconds(1)},
        Case{"5m", minutes(5)}, Case{"1.5m", seconds(90)}, Case{"1h", hours(1)},
        Case{"24h", hours(24)}, Case{"0.25h", minutes(15)}}) {
    Duration value{};
    std::string error;
    EXPECT_TRUE(parseDuration(c.text, &value, &error)) << c.text << ": " << error;
    EXPECT_EQ(value, c.expected) << c.text;
  }
}

TEST(ValuesTest, RejectsMalformedDurations) {
  for (const char* text : {"",    "30",    "1.5",    "s",     "ms",    "-1",    "+1s",
                           "1 s", " 1s",   "1s ",    "1S",    "1sec",  "1d",    "1.s",
                           ".5s", "1..5s", "1.2.3s", "1e3ms", "0x10s", "1h30m", "1.0000000001s"}) {
    Duration value{};
    std::string error;
    EXPECT_FALSE(parseDuration(text, &value, &error)) << text;
    EXPECT_EQ(error, "expected a duration with a unit, e.g. 300ms, 2s, 5m") << text;
  }
}

TEST(ValuesTest, NegativeDurationsSaySo) {
  for (const char* text : {"-1s", "-0.5s", "-300ms"}) {
    Duration value{};
    std::string error;
    EXPECT_FALSE(parseDuration(text, &value, &error)) << text;
    EXPECT_EQ(error, "a duration cannot be negative") << text;
  }
}

TEST(ValuesTest, RejectsDurationsFinerThanAMillisecond) {
  Duration value{};
  std::string error;
  EXPECT_FALSE(parseDuration("1.5ms", &value, &error));
  EXPECT_EQ(error, "durations have millisecond resolution");
  EXPECT_FALSE(parseDuration("0.0001s", &value, &error));
}

TEST(ValuesTest, HugeDurationsSaturate) {
  Duration value{};
  std::string error;
  ASSERT_TRUE(parseDuration("99999999999999999999999h", &value, &error)) << error;
  EXPECT_EQ(value, Duration::max());
}

TEST(ValuesTest, ParsesSizes) {
  uint64_t value = 0;
  EXPECT_TRUE(parseSize("16384", &value));
  EXPECT_EQ(value, 16384u);
  EXPECT_TRUE(parseSize("16KiB", &value));
  EXPECT_EQ(value, 16384u);
  EXPECT_TRUE(parseSize("1MiB", &value));
  EXPECT_EQ(value, 1048576u);
  EXPECT_TRUE(parseSize("0", &value));
  EXPECT_EQ(value, 0u);
  EXPECT_TRUE(parseSize("99999999999999999999999MiB", &value));
  EXPECT_EQ(value, UINT64_MAX);
  for (const char* text :
       {"", "KiB", "16K", "16KB", "16kib", "16 KiB", "1.5KiB", "-1", "1GiB", "0x10", "16KiB "}) {
    EXPECT_FALSE(parseSize(text, &value)) << text;
  }
}

TEST(ValuesTest, ParsesUnsignedAndBool) {
  uint64_t n = 0;
  EXPECT_TRUE(parseUnsigned("0", &n));
  EXPECT_TRUE(parseUnsigned("42", &n));
  EXPECT_EQ(n, 42u);
  for (const char* text : {"", "-1", "+1", "1.0", "0x1", "1_000", " 1", "1e3"}) {
    EXPECT_FALSE(parseUnsigned(text, &n)) << text;
  }
  bool b = false;
  EXPECT_TRUE(parseBool("true", &b));
  EXPECT_TRUE(b);
  EXPECT_TRUE(parseBool("FALSE", &b));
  EXPECT_FALSE(b);
  for (const char* text : {"yes", "no", "on", "off", "1", "0", "y", "tRue", ""}) {
    EXPECT_FALSE(parseBool(text, &b)) << text;
  }
}

TEST(ValuesTest, FormatsDurationsAndSizes) {
  EXPECT_EQ(formatDuration(Duration(0)), "0s");
  EXPECT_EQ(formatDuration(milliseconds(300)), "300ms");
  EXPECT_EQ(formatDuration(milliseconds(1500)), "1500ms");
  EXPECT_EQ(formatDuration(seconds(30)), "30s");
  EXPECT_EQ(formatDuration(seconds(90)), "90s");
  EXPECT_EQ(formatDuration(minutes(5)), "5m");
  EXPECT_EQ(formatDuration(hours(24)), "24h");
  EXPECT_EQ(formatSize(1000), "1000");
  EXPECT_EQ(formatSize(4096), "4KiB");
  EXPECT_EQ(formatSize(1048576), "1MiB");
  EXPECT_EQ(formatSize(0), "0");
}

TEST(ValuesTest, ValidatesNames) {
  EXPECT_TRUE(isValidName("web"));
  EXPECT_TRUE(isValidName("Web_pool-1.eu"));
  EXPECT_TRUE(isValidName(std::string(64, 'a')));
  EXPECT_FALSE(isValidName(""));
  EXPECT_FALSE(isValidName(std::string(65, 'a')));
  for (const char* name : {"a b", "a/b", "a:b", "é", "a\tb", "web!"}) {
    EXPECT_FALSE(isValidName(name)) << name;
  }
}

TEST(ValuesTest, ValidatesTokens) {
  for (const char* text : {"X-Client-Id", "x", "JSESSIONID", "a!#$%&'*+-.^_`|~9"}) {
    EXPECT_TRUE(isToken(text)) << text;
  }
  for (const char* text : {"", "a b", "a:b", "a;b", "a=b", "(a)", "a/b", "\"a\"", "\xc3\xa9",
                           "a\tb", "a,b", "a@b", "[a]", "{a}", "a?b", "a\\b"}) {
    EXPECT_FALSE(isToken(text)) << text;
  }
}

TEST(ValuesTest, ValidatesKeyPrefixes) {
  for (const std::string& text : {std::string("ballast"), std::string("shop:eu-1"),
                                   std::string("a.b_c-d:E9"), std::string(":"),
                                   std::string(64, 'p')}) {
    EXPECT_TRUE(isValidKeyPrefix(text)) << text;
  }
  for (const std::string& text :
       {std::string(""), std::string(65, 'p'), std::string("a b"), std::string("a/b"),
        std::string("{a}"), std::string("a*"), std::string("a\nb"), std::string("\xc3\xa9")}) {
    EXPECT_FALSE(isValidKeyPrefix(text)) << text;
  }
}

TEST(ValuesTest, StripsTrailingWhitespace) {
  EXPECT_EQ(stripTrailingWhitespace("secret\n"), "secret");
  EXPECT_EQ(stripTrailingWhitespace("secret\r\n"), "secret");
  EXPECT_EQ(stripTrailingWhitespace("  s e\tcret \t\r\n\v\f\n"), "  s e\tcret");
  EXPECT_EQ(stripTrailingWhitespace("a\nb\n"), "a\nb");
  EXPECT_EQ(stripTrailingWhitespace("secret"), "secret");
  EXPECT_EQ(stripTrailingWhitespace(" \n\t"), "");
  EXPECT_EQ(stripTrailingWhitespace(""), "");
}

TEST(ValuesTest, ValidatesHostValues) {
  for (const std::string& text :
       {std::string("example.com"), std::string("health.example.com:8080"), std::string("10.0.0.1"),
        std::string("10.0.0.1:80"), std::string("[::1]"), std::string("[::1]:8080"),
        std::string("[2001:db8::1]"), std::string("localhost"), std::string("a_b.internal~1"),
        std::string("h:1"), std::string("h:65535"), std::string(255, 'a')}) {
    EXPECT_TRUE(isValidHost(text)) << text;
  }
  for (const char* text :
       {"", ":80", "h:", "h:0", "h:65536", "h:8o", "h:80:81", "::1", "[::1", "[::x]", "[]",
        "[::1]x", "[::1]:", "[10.0.0.1]", "a b", "a/b", "user@h", "h%20", "\xc3\xa9.com"}) {
    EXPECT_FALSE(isValidHost(text)) << text;
  }
  EXPECT_FALSE(isValidHost(std::string(256, 'a')));
}

TEST(ValuesTest, ParsesRequestLines) {
  struct Good {
    const char* text;
    const char* method;
    const char* path;
  };
  for (const Good& c :
       {Good{"GET /", "GET", "/"}, Good{"HEAD /health?deep=1", "HEAD", "/health?deep=1"},
        Good{"OPTIONS /a/b;c=d", "OPTIONS", "/a/b;c=d"}, Good{"get /x", "get", "/x"}}) {
    std::string method = "unset";
    std::string path = "unset";
    std::string error;
    EXPECT_TRUE(parseRequestLine(c.text, &method, &path, &error)) << c.text << ": " << error;
    EXPECT_EQ(method, c.method);
    EXPECT_EQ(path, c.path);
  }
  struct Bad {
    const char* text;
    const char* error;
  };
  const char* syntax = "expected \"METHOD /path\", e.g. \"GET /health\"";
  const char* method = "the method must be a token, e.g. GET or HEAD";
  const char* target =
      "the path must start with / and contain only visible ASCII characters, no "
      "spaces or #";
  for (const Bad& c :
       {Bad{"", syntax}, Bad{"GET", syntax}, Bad{"GET ", syntax}, Bad{" /x", syntax},
        Bad{"/health", syntax}, Bad{"G(T /x", method}, Bad{"G\xc3\xa9T /x", method},
        Bad{"GET health", target}, Bad{"GET /a b", target}, Bad{"GET  /x", target},
        Bad{"GET /health HTTP/1.1", target}, Bad{"GET /a#b", target}, Bad{"GET /\xc3\xa9", target},
        Bad{"GET /a\tb", target}, Bad{"GET /a\x7f", target}}) {
    std::string m = "unset";
    std::string p = "unset";
    std::string error;
    EXPECT_FALSE(parseRequestLine(c.text, &m, &p, &error)) << c.text;
    EXPECT_EQ(error, c.error) << c.text;
    EXPECT_EQ(m, "unset");
    EXPECT_EQ(p, "unset");
  }
}

TEST(ValuesTest, ParsesStatusRanges) {
  std::pair<int, int> range;
  EXPECT_TRUE(parseStatusRange("200", &range));
  EXPECT_EQ(range, std::make_pair(200, 200));
  EXPECT_TRUE(parseStatusRange("100", &range));
  EXPECT_EQ(range, std::make_pair(100, 100));
  EXPECT_TRUE(parseStatusRange("599", &range));
  EXPECT_EQ(range, std::make_pair(599, 599));
  EXPECT_TRUE(parseStatusRange("2xx", &range));
  EXPECT_EQ(range, std::make_pair(200, 299));
  EXPECT_TRUE(parseStatusRange("5xx", &range));
  EXPECT_EQ(range, std::make_pair(500, 599));
  for (const char* text : {"", "99", "099", "600", "1xx", "6xx", "0xx", "2XX", "2xX", "xx", "x00",
                           "20", "2000", "0200", "2x", "abc", "-200", "+200", " 200"}) {
    EXPECT_FALSE(parseStatusRange(text, &range)) << text;
  }
}

// ---------------------------------------------------------------------------------------------
// Model helpers

TEST(ConfigErrorTest, FormatsFileLineKeyAndMessage) {
  EXPECT_EQ((ConfigError{"a.yaml", 3, "se.workers", "bad"}).toString(),
            "a.yaml:3: se.workers: bad");
  EXPECT_EQ((ConfigError{"a.yaml", 0, "", "cannot read: x"}).toString(), "a.yaml: cannot read: x");
  EXPECT_EQ((ConfigError{"a.yaml", 7, "", "YAML syntax error: x"}).toString(),
            "a.yaml:7: YAML syntax error: x");
}

TEST(ConfigTest, NamesEnumValues) {
  EXPECT_STREQ(toString(Protocol::Tcp), "tcp");
  EXPECT_STREQ(toString(Protocol::Http), "http");
  EXPECT_STREQ(toString(LbAlgorithm::RoundRobin), "round_robin");
  EXPECT_STREQ(toString(LbAlgorithm::LeastConnections), "least_connections");
  EXPECT_STREQ(toString(LbAlgorithm::LeastResponseTime), "least_response_time");
  EXPECT_STREQ(toString(LbAlgorithm::RandomTwoChoices), "random_two_choices");
  EXPECT_STREQ(toString(LbAlgorithm::ConsistentHash), "consistent_hash");
  EXPECT_STREQ(toString(HashKeyType::ClientIp), "client_ip");
  EXPECT_STREQ(toString(HashKeyType::Header), "header");
  EXPECT_STREQ(toString(HashKeyType::Path), "path");
  EXPECT_STREQ(toString(HashKeyType::Cookie), "cookie");
  EXPECT_STREQ(toString(MonitorType::Tcp), "tcp");
  EXPECT_STREQ(toString(MonitorType::Http), "http");
  EXPECT_STREQ(toString(MonitorType::Https), "https");
  EXPECT_STREQ(toString(PersistenceType::None), "none");
  EXPECT_STREQ(toString(PersistenceType::ClientIp), "client_ip");
  EXPECT_STREQ(toString(PersistenceType::HttpHeader), "http_header");
  EXPECT_STREQ(toString(PersistenceType::HttpCookie), "http_cookie");
  EXPECT_STREQ(toString(PersistenceType::AppCookie), "app_cookie");
}

TEST(ConfigTest, FindsMonitorsByName) {
  auto config = mustLoad("health_monitors:\n  - {name: a, type: tcp}\n  - {name: b, type: http}\n");
  ASSERT_NE(config, nullptr);
  ASSERT_NE(config->findMonitor("b"), nullptr);
  EXPECT_EQ(config->findMonitor("b")->type, MonitorType::Http);
  EXPECT_EQ(config->findMonitor("a"), &config->health_monitors[0]);
  EXPECT_EQ(config->findMonitor("c"), nullptr);
}

TEST(ConfigTest, FindsPoolsByName) {
  auto config = mustLoad(withPool(kPoolBase) +
                         "  - name: q\n    servers:\n"
                         "      - address: 127.0.0.1:9002\n");
  ASSERT_NE(config, nullptr);
  ASSERT_NE(config->findPool("q"), nullptr);
  EXPECT_EQ(config->findPool("q")->servers[0].address_text, "127.0.0.1:9002");
  EXPECT_EQ(config->findPool("p"), &config->pools[0]);
  EXPECT_EQ(config->findPool("nope"), nullptr);
}

// ---------------------------------------------------------------------------------------------
// Valid documents and defaults

TEST(LoadTest, AppliesEveryDefault) {
  auto config = mustLoad(withVs(kHttpVs));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->source, kFile);

  const SeSettings& se = config->se;
  EXPECT_EQ(se.workers, std::clamp(std::thread::hardware_concurrency(), 1u, 256u));
  EXPECT_FALSE(se.admin.has_value());
  EXPECT_EQ(se.admin_text, "");
  EXPECT_EQ(se.drain_timeout, seconds(30));
  EXPECT_EQ(se.buffer_size, 16u * 1024);
  EXPECT_EQ(config->store.type, "memory");

  ASSERT_EQ(config->virtual_services.size(), 1u);
  const VirtualService& vs = config->virtual_services[0];
  EXPECT_EQ(vs.name, "v");
  EXPECT_EQ(vs.listen_text, "127.0.0.1:8080");
  EXPECT_EQ(vs.listen.toString(), "127.0.0.1:8080");
  EXPECT_EQ(vs.protocol, Protocol::Http);
  EXPECT_EQ(vs.pool, "p");
  EXPECT_EQ(vs.max_connections, 0u);
  EXPECT_EQ(vs.max_header_size, 16u * 1024);
  EXPECT_EQ(vs.max_headers, 100u);
  EXPECT_TRUE(vs.x_forwarded_for);
  EXPECT_EQ(vs.timeouts.client_header, seconds(10));
  EXPECT_EQ(vs.timeouts.idle, seconds(60));
  EXPECT_EQ(vs.timeouts.client, seconds(60));
  EXPECT_EQ(vs.timeouts.connect, seconds(5));
  EXPECT_EQ(vs.timeouts.server, seconds(60));
  EXPECT_EQ(vs.line, 6);

  ASSERT_EQ(config->pools.size(), 1u);
  const Pool& pool = config->pools[0];
  EXPECT_EQ(pool.name, "p");
  EXPECT_EQ(pool.line, 2);
  EXPECT_EQ(pool.lb_algorithm, LbAlgorithm::RoundRobin);
  EXPECT_EQ(pool.connection_pool.max_idle_per_server, 64u);
  EXPECT_EQ(pool.connection_pool.idle_timeout, seconds(30));
  ASSERT_EQ(pool.servers.size(), 1u);
  EXPECT_EQ(pool.servers[0].address_text, "127.0.0.1:9001");
  EXPECT_EQ(pool.servers[0].address.toString(), "127.0.0.1:9001");
  EXPECT_EQ(pool.servers[0].weight, 1u);
  EXPECT_TRUE(pool.servers[0].enabled);

  // Added with issue 3.
  EXPECT_EQ(se.control_socket, "");
  EXPECT_EQ(vs.retries, 2u);
  EXPECT_EQ(vs.access_log, "");
  EXPECT_FALSE(pool.servers[0].drain);
  EXPECT_EQ(pool.servers[0].max_connections, 0u);
  // Added with issue 6.
  EXPECT_EQ(vs.apdex_threshold, milliseconds(500));
  EXPECT_EQ(pool.hash_key.type, HashKeyType::ClientIp);
  EXPECT_EQ(pool.hash_key.name, "");
  EXPECT_TRUE(pool.health_monitors.empty());
  const OutlierDetection& od = pool.outlier_detection;
  EXPECT_TRUE(od.enabled);
  EXPECT_EQ(od.consecutive_5xx, 5u);
  EXPECT_EQ(od.consecutive_gateway_failure, 5u);
  EXPECT_EQ(od.base_ejection_time, seconds(30));
  EXPECT_EQ(od.max_ejection_time, seconds(300));
  EXPECT_EQ(od.max_ejection_percent, 10u);
  EXPECT_EQ(od.panic_threshold, 50u);
  EXPECT_TRUE(config->health_monitors.empty());

  // Added with issue 4.
  const StoreSettings& store = config->store;
  EXPECT_EQ(store.cache_size, 100000u);
  EXPECT_EQ(store.redis.address_text, "127.0.0.1:6379");
  EXPECT_EQ(store.redis.address.toString(), "127.0.0.1:6379");
  EXPECT_EQ(store.redis.password_file, "");
  EXPECT_EQ(store.redis.password, "");
  EXPECT_EQ(store.redis.prefix, "ballast");
  EXPECT_EQ(store.redis.connect_timeout, seconds(1));
  EXPECT_EQ(store.redis.timeout, milliseconds(200));
  const Persistence& persistence = vs.persistence;
  EXPECT_EQ(persistence.type, PersistenceType::None);
  EXPECT_EQ(persistence.timeout, seconds(300));
  EXPECT_EQ(persistence.header, "");
  EXPECT_EQ(persistence.cookie, "");
  EXPECT_EQ(persistence.ipv4_prefix, 32u);
  EXPECT_EQ(persistence.ipv6_prefix, 128u);
}

TEST(LoadTest, AppliesEveryHealthMonitorDefault) {
  auto config = mustLoad(
      "health_monitors:\n  - name: t\n    type: tcp\n"
      "  - {name: h, type: http}\n  - {name: s, type: https}\n");
  ASSERT_NE(config, nullptr);
  ASSERT_EQ(config->health_monitors.size(), 3u);
  const HealthMonitor& t = config->health_monitors[0];
  EXPECT_EQ(t.name, "t");
  EXPECT_EQ(t.type, MonitorType::Tcp);
  EXPECT_EQ(t.line, 2);
  for (const HealthMonitor& m : config->health_monitors) {
    EXPECT_EQ(m.interval, seconds(5)) << m.name;
    EXPECT_EQ(m.timeout, seconds(2)) << m.name;
    EXPECT_EQ(m.rise, 2u) << m.name;
    EXPECT_EQ(m.fall, 3u) << m.name;
    EXPECT_EQ(m.method, "GET") << m.name;
    EXPECT_EQ(m.path, "/") << m.name;
    EXPECT_EQ(m.host, "") << m.name;
    EXPECT_THAT(m.expect, ElementsAre(std::make_pair(200, 299))) << m.name;
    EXPECT_EQ(m.body, "") << m.name;
    EXPECT_EQ(m.port, 0) << m.name;
  }
  EXPECT_EQ(config->health_monitors[1].type, MonitorType::Http);
  EXPECT_EQ(config->health_monitors[1].line, 4);
  EXPECT_EQ(config->health_monitors[2].type, MonitorType::Https);
}

TEST(LoadTest, EmptySectionsAreValid) {
  for (const char* yaml : {"{}", "se: {}", "se:\n", "store: {}", "store: {type: memory}",
                           "virtual_services: []", "virtual_services:\n", "pools: []",
                           "se: {}\nstore: {}\nvirtual_services: []\npools: []\n"}) {
    auto config = mustLoad(yaml);
    ASSERT_NE(config, nullptr) << yaml;
    EXPECT_TRUE(config->virtual_services.empty());
    EXPECT_TRUE(config->pools.empty());
    EXPECT_EQ(config->store.type, "memory");
  }
}

TEST(LoadTest, ReadsEveryKey) {
  auto config = mustLoad(doc(R"(
se:
  workers: 3
  admin: 127.0.0.1:9901
  drain_timeout: 0s
  buffer_size: 64KiB
store:
  type: memory
virtual_services:
  - name: web
    listen: "[::1]:8080"
    protocol: http
    pool: api
    max_connections: 10000000
    max_header_size: 32768
    max_headers: 1000
    x_forwarded_for: false
    timeouts:
      client_header: 2s
      idle: 1.5s
      client: 300ms
      connect: 1m
      server: 24h
  - name: raw
    listen: 0.0.0.0:9000
    protocol: tcp
    pool: api
    max_connections: 0
    timeouts: {idle: 10m, connect: 250ms}
pools:
  - name: api
    lb_algorithm: round_robin
    servers:
      - address: 127.0.0.1:9001
        weight: 256
        enabled: false
      - {address: "[::1]:9002", weight: 1, enabled: true}
      - address: localhost:9003
    connection_pool:
      max_idle_per_server: 0
      idle_timeout: 5m
)"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->se.workers, 3u);
  ASSERT_TRUE(config->se.admin.has_value());
  EXPECT_EQ(config->se.admin->toString(), "127.0.0.1:9901");
  EXPECT_EQ(config->se.admin_text, "127.0.0.1:9901");
  EXPECT_EQ(config->se.drain_timeout, Duration(0));
  EXPECT_EQ(config->se.buffer_size, 64u * 1024);

  ASSERT_EQ(config->virtual_services.size(), 2u);
  const VirtualService& web = config->virtual_services[0];
  EXPECT_EQ(web.line, 9);
  EXPECT_EQ(web.listen_text, "[::1]:8080");
  EXPECT_EQ(web.listen.family(), AF_INET6);
  EXPECT_EQ(web.listen.port(), 8080);
  EXPECT_EQ(web.max_connections, 10000000u);
  EXPECT_EQ(web.max_header_size, 32768u);
  EXPECT_EQ(web.max_headers, 1000u);
  EXPECT_FALSE(web.x_forwarded_for);
  EXPECT_EQ(web.timeouts.client_header, seconds(2));
  EXPECT_EQ(web.timeouts.idle, milliseconds(1500));
  EXPECT_EQ(web.timeouts.client, milliseconds(300));
  EXPECT_EQ(web.timeouts.connect, minutes(1));
  EXPECT_EQ(web.timeouts.server, hours(24));

  const VirtualService& raw = config->virtual_services[1];
  EXPECT_EQ(raw.line, 23);
  EXPECT_EQ(raw.protocol, Protocol::Tcp);
  EXPECT_EQ(raw.listen.toString(), "0.0.0.0:9000");
  EXPECT_EQ(raw.timeouts.idle, minutes(10));
  EXPECT_EQ(raw.timeouts.connect, milliseconds(250));
  EXPECT_EQ(raw.timeouts.client_header, seconds(10));  // untouched defaults

  ASSERT_EQ(config->pools.size(), 1u);
  const Pool& api = config->pools[0];
  EXPECT_EQ(api.line, 30);
  ASSERT_EQ(api.servers.size(), 3u);
  EXPECT_EQ(api.servers[0].weight, 256u);
  EXPECT_FALSE(api.servers[0].enabled);
  EXPECT_EQ(api.servers[1].address.toString(), "[::1]:9002");
  EXPECT_TRUE(api.servers[1].enabled);
  EXPECT_EQ(api.servers[2].address_text, "localhost:9003");
  EXPECT_EQ(api.servers[2].address.port(), 9003);
  EXPECT_EQ(api.connection_pool.max_idle_per_server, 0u);
  EXPECT_EQ(api.connection_pool.idle_timeout, minutes(5));
}

TEST(LoadTest, AcceptsQuotedScalarsAndYamlSpellingsOfBooleans) {
  auto config = mustLoad(withVs(kHttpVs + "x_forwarded_for: FALSE\nmax_headers: \"7\"\n"));
  ASSERT_NE(config, nullptr);
  EXPECT_FALSE(config->virtual_services[0].x_forwarded_for);
  EXPECT_EQ(config->virtual_services[0].max_headers, 7u);
}

TEST(LoadTest, PoolsMayBeDefinedAfterTheirVirtualServices) {
  auto config = mustLoad(doc(R"(
virtual_services:
  - {name: web, listen: 127.0.0.1:8080, protocol: http, pool: later}
pools:
  - {name: later, servers: [{address: 127.0.0.1:9001}]}
)"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->virtual_services[0].line, 2);
  EXPECT_EQ(config->pools[0].line, 4);
}

TEST(LoadTest, ReadsEveryKeyAddedForLoadBalancingAndHealth) {
  const std::string tmp = ::testing::TempDir();  // ends with "/"
  auto config = mustLoad("se:\n  control_socket: " + tmp + "ballast-test.sock\n" + doc(R"(
health_monitors:
  - name: tcp-check
    type: tcp
    interval: 100ms
    timeout: 100ms
    rise: 1
    fall: 100
    port: 65535
  - name: http-ok
    type: http
    interval: 1h
    timeout: 1h
    rise: 100
    fall: 1
    request: "HEAD /health?deep=1"
    host: health.example.com:8080
    expect: [200, 204, 3xx, "404"]
    body: '"status":"ok"'
    port: 1
  - {name: tls, type: https, request: "GET /", host: "[::1]", expect: [5xx, 2xx]}
pools:
  - name: api
    lb_algorithm: consistent_hash
    hash_key: {type: header, name: X-Client-Id}
    servers:
      - address: 127.0.0.1:9001
        drain: true
        max_connections: 1000000
      - {address: 127.0.0.1:9002, drain: false, max_connections: 0}
    health_monitors: [http-ok, tcp-check]
    outlier_detection:
      enabled: false
      consecutive_5xx: 0
      consecutive_gateway_failure: 1000
      base_ejection_time: 1ms
      max_ejection_time: 1ms
      max_ejection_percent: 100
      panic_threshold: 0
  - name: sticky
    lb_algorithm: consistent_hash
    hash_key: {type: cookie, name: JSESSIONID}
    servers: [{address: 127.0.0.1:9003}]
    health_monitors: []
  - name: by-path
    lb_algorithm: consistent_hash
    hash_key: {type: path}
    servers: [{address: 127.0.0.1:9004}]
    health_monitors:
  - name: by-ip
    lb_algorithm: consistent_hash
    hash_key: {type: client_ip}
    servers: [{address: 127.0.0.1:9005}]
    outlier_detection: {max_ejection_time: 24h, panic_threshold: 100}
virtual_services:
  - name: web
    listen: 127.0.0.1:8080
    protocol: http
    pool: api
    retries: 0
    access_log: stdout
    apdex_threshold: 50ms
  - name: raw
    listen: 127.0.0.1:8081
    protocol: tcp
    pool: by-ip
    retries: 10
)") +
                         "    access_log: " + tmp + "ballast-access.log\n");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->se.control_socket, tmp + "ballast-test.sock");

  ASSERT_EQ(config->health_monitors.size(), 3u);
  const HealthMonitor& tcp = config->health_monitors[0];
  EXPECT_EQ(tcp.line, 4);
  EXPECT_EQ(tcp.type, MonitorType::Tcp);
  EXPECT_EQ(tcp.interval, milliseconds(100));
  EXPECT_EQ(tcp.timeout, milliseconds(100));
  EXPECT_EQ(tcp.rise, 1u);
  EXPECT_EQ(tcp.fall, 100u);
  EXPECT_EQ(tcp.port, 65535);
  const HealthMonitor& http = config->health_monitors[1];
  EXPECT_EQ(http.type, MonitorType::Http);
  EXPECT_EQ(http.interval, hours(1));
  EXPECT_EQ(http.timeout, hours(1));
  EXPECT_EQ(http.rise, 100u);
  EXPECT_EQ(http.fall, 1u);
  EXPECT_EQ(http.method, "HEAD");
  EXPECT_EQ(http.path, "/health?deep=1");
  EXPECT_EQ(http.host, "health.example.com:8080");
  EXPECT_THAT(http.expect, ElementsAre(std::make_pair(200, 200), std::make_pair(204, 204),
                                       std::make_pair(300, 399), std::make_pair(404, 404)));
  EXPECT_EQ(http.body, "\"status\":\"ok\"");
  EXPECT_EQ(http.port, 1);
  const HealthMonitor& tls = config->health_monitors[2];
  EXPECT_EQ(tls.type, MonitorType::Https);
  EXPECT_EQ(tls.host, "[::1]");
  EXPECT_THAT(tls.expect, ElementsAre(std::make_pair(500, 599), std::make_pair(200, 299)));

  ASSERT_EQ(config->pools.size(), 4u);
  const Pool& api = config->pools[0];
  EXPECT_EQ(api.lb_algorithm, LbAlgorithm::ConsistentHash);
  EXPECT_EQ(api.hash_key.type, HashKeyType::Header);
  EXPECT_EQ(api.hash_key.name, "X-Client-Id");
  EXPECT_TRUE(api.servers[0].drain);
  EXPECT_EQ(api.servers[0].max_connections, 1000000u);
  EXPECT_FALSE(api.servers[1].drain);
  EXPECT_EQ(api.servers[1].max_connections, 0u);
  EXPECT_THAT(api.health_monitors, ElementsAre("http-ok", "tcp-check"));
  const OutlierDetection& od = api.outlier_detection;
  EXPECT_FALSE(od.enabled);
  EXPECT_EQ(od.consecutive_5xx, 0u);
  EXPECT_EQ(od.consecutive_gateway_failure, 1000u);
  EXPECT_EQ(od.base_ejection_time, milliseconds(1));
  EXPECT_EQ(od.max_ejection_time, milliseconds(1));
  EXPECT_EQ(od.max_ejection_percent, 100u);
  EXPECT_EQ(od.panic_threshold, 0u);
  EXPECT_EQ(config->pools[1].hash_key.type, HashKeyType::Cookie);
  EXPECT_EQ(config->pools[1].hash_key.name, "JSESSIONID");
  EXPECT_TRUE(config->pools[1].health_monitors.empty());
  EXPECT_EQ(config->pools[2].hash_key.type, HashKeyType::Path);
  EXPECT_EQ(config->pools[2].hash_key.name, "");
  EXPECT_TRUE(config->pools[2].health_monitors.empty());
  EXPECT_EQ(config->pools[3].hash_key.type, HashKeyType::ClientIp);
  EXPECT_EQ(config->pools[3].outlier_detection.base_ejection_time, seconds(30));
  EXPECT_EQ(config->pools[3].outlier_detection.max_ejection_time, hours(24));
  EXPECT_EQ(config->pools[3].outlier_detection.panic_threshold, 100u);
  EXPECT_TRUE(config->pools[3].outlier_detection.enabled);

  ASSERT_EQ(config->virtual_services.size(), 2u);
  EXPECT_EQ(config->virtual_services[0].retries, 0u);
  EXPECT_EQ(config->virtual_services[0].access_log, "stdout");
  EXPECT_EQ(config->virtual_services[0].apdex_threshold, milliseconds(50));
  EXPECT_EQ(config->virtual_services[1].retries, 10u);
  EXPECT_EQ(config->virtual_services[1].access_log, tmp + "ballast-access.log");
}

TEST(LoadTest, AcceptsEveryAlgorithm) {
  struct Case {
    const char* text;
    LbAlgorithm expected;
  };
  for (const Case& c : {Case{"round_robin", LbAlgorithm::RoundRobin},
                        Case{"least_connections", LbAlgorithm::LeastConnections},
                        Case{"least_response_time", LbAlgorithm::LeastResponseTime},
                        Case{"random_two_choices", LbAlgorithm::RandomTwoChoices},
                        Case{"consistent_hash", LbAlgorithm::ConsistentHash}}) {
    auto config = mustLoad(withVs(kTcpVs, std::string("lb_algorithm: ") + c.text));
    ASSERT_NE(config, nullptr) << c.text;
    EXPECT_EQ(config->pools[0].lb_algorithm, c.expected) << c.text;
    EXPECT_STREQ(toString(config->pools[0].lb_algorithm), c.text);
    // consistent_hash without hash_key hashes the client address, which tcp services have.
    EXPECT_EQ(config->pools[0].hash_key.type, HashKeyType::ClientIp) << c.text;
  }
}

// The line of DESIGN.md's configuration sketch, with a pool that names it before it is defined.
TEST(LoadTest, DesignHealthMonitorLoads) {
  auto config = mustLoad(doc(R"(
pools:
  - name: web-pool
    lb_algorithm: round_robin
    servers:
      - { address: 127.0.0.1:9001, weight: 1 }
    health_monitors: [http-ok]
health_monitors:
  - { name: http-ok, type: http, interval: 2s, timeout: 1s, rise: 2, fall: 3, request: "GET /health", expect: [200] }
)"));
  ASSERT_NE(config, nullptr);
  EXPECT_THAT(config->pools[0].health_monitors, ElementsAre("http-ok"));
  const HealthMonitor* m = config->findMonitor("http-ok");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->line, 8);
  EXPECT_EQ(m->type, MonitorType::Http);
  EXPECT_EQ(m->interval, seconds(2));
  EXPECT_EQ(m->timeout, seconds(1));
  EXPECT_EQ(m->rise, 2u);
  EXPECT_EQ(m->fall, 3u);
  EXPECT_EQ(m->method, "GET");
  EXPECT_EQ(m->path, "/health");
  EXPECT_THAT(m->expect, ElementsAre(std::make_pair(200, 200)));
}

// Defaults that follow another key so that a file setting only that key stays valid.
TEST(LoadTest, DerivedDefaults) {
  // timeout: 2s, or the interval when that is shorter.
  auto config = mustLoad(
      "health_monitors:\n  - {name: a, type: tcp, interval: 500ms}\n"
      "  - {name: b, type: tcp, interval: 1m}\n"
      "  - {name: c, type: tcp, interval: 2s}\n");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->health_monitors[0].timeout, milliseconds(500));
  EXPECT_EQ(config->health_monitors[1].timeout, seconds(2));
  EXPECT_EQ(config->health_monitors[2].timeout, seconds(2));
  // max_ejection_time: 300s, or base_ejection_time when that is longer (as Envoy).
  config = mustLoad(withPool(kPoolBase + "outlier_detection: {base_ejection_time: 10m}"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->pools[0].outlier_detection.max_ejection_time, minutes(10));
  config = mustLoad(withPool(kPoolBase + "outlier_detection: {base_ejection_time: 1s}"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->pools[0].outlier_detection.max_ejection_time, seconds(300));
}

TEST(LoadTest, HashKeysOnHttpServicesAndClientIpOnTcp) {
  for (const char* key : {"{type: header, name: X-User}", "{type: path}",
                          "{type: cookie, name: sid}", "{type: client_ip}"}) {
    std::string pool = std::string("lb_algorithm: consistent_hash\nhash_key: ") + key;
    EXPECT_NE(mustLoad(withVs(kHttpVs, pool)), nullptr) << key;
  }
  EXPECT_NE(mustLoad(withVs(kTcpVs, "lb_algorithm: consistent_hash\nhash_key: {type: client_ip}")),
            nullptr);
}

TEST(LoadTest, SameNameForAVirtualServiceAndAPoolIsFine) {
  EXPECT_NE(mustLoad(withVs("name: p\nlisten: 127.0.0.1:8080\nprotocol: tcp\npool: p\n")), nullptr);
}

TEST(LoadTest, SameListenAddressOnDifferentPortsIsFine) {
  EXPECT_NE(mustLoad(withVs(kHttpVs) + "  - name: w\n    listen: 127.0.0.1:8081\n"
                                       "    protocol: tcp\n    pool: p\n"),
            nullptr);
}

// ---------------------------------------------------------------------------------------------
// Full error messages, with lines

TEST(ErrorTest, ReportsFileLineKeyPathAndMessage) {
  EXPECT_THAT(errorsOf(doc(R"(
se:
  workers: 0
)")),
              ElementsAre("test.yaml:2: se.workers: expected an integer from 1 to 256"));
}

TEST(ErrorTest, CollectsEveryErrorInFileOrder) {
  // Pools are read before virtual services and references are checked last, yet the errors
  // come out sorted by line.
  EXPECT_THAT(
      errorsOf(doc(R"(
se:
  workers: many
  admin: "*:9901"
  drain_timeout: 30
  buffer_size: 16KB
store:
  type: etcd
virtual_services:
  - name: web
    listen: 127.0.0.1:8080
    protocol: http
    pool: missing
    colour: blue
  - name: web
    listen: 127.0.0.1:8080
    protocol: tcp
    pool: demo
    max_headers: 10
    timeouts:
      idle: 0s
pools:
  - name: demo
    lb_algorithm: fastest
    servers:
      - address: 127.0.0.1:9001
        weight: 0
      - address: 127.0.0.1:9001
  - name: empty
    servers: []
health_monitors: [{name: hc, type: ping}]
)")),
      ElementsAre("test.yaml:2: se.workers: expected an integer from 1 to 256",
                  "test.yaml:3: se.admin: expected an IP address, e.g. 0.0.0.0:8080",
                  "test.yaml:4: se.drain_timeout: expected a duration with a unit, e.g. 300ms, "
                  "2s, 5m",
                  "test.yaml:5: se.buffer_size: expected a size, e.g. 16384, 16KiB, 1MiB",
                  "test.yaml:7: store.type: expected one of: memory, redis",
                  "test.yaml:12: virtual_services[0].pool: no pool named \"missing\"",
                  "test.yaml:13: virtual_services[0].colour: unknown key (expected one of: name, "
                  "listen, protocol, pool, max_connections, max_header_size, max_headers, "
                  "x_forwarded_for, timeouts, retries, access_log, persistence, se_group, apdex_threshold)",
                  "test.yaml:14: virtual_services[1].name: virtual service \"web\" is already "
                  "defined on line 9",
                  "test.yaml:15: virtual_services[1].listen: 127.0.0.1:8080 is already used by "
                  "virtual service \"web\"",
                  "test.yaml:18: virtual_services[1].max_headers: only for protocol http",
                  "test.yaml:20: virtual_services[1].timeouts.idle: expected a duration greater "
                  "than 0 and at most 24h",
                  "test.yaml:23: pools[0].lb_algorithm: expected one of: round_robin, "
                  "least_connections, least_response_time, consistent_hash, random_two_choices",
                  "test.yaml:26: pools[0].servers[0].weight: expected an integer from 1 to 256",
                  "test.yaml:27: pools[0].servers[1].address: duplicate address 127.0.0.1:9001 "
                  "(same as servers[0])",
                  "test.yaml:29: pools[1].servers: at least one server is required",
                  "test.yaml:30: health_monitors[0].type: expected one of: tcp, http, https"));
}

TEST(ErrorTest, MissingRequiredKeysPointAtTheirMap) {
  EXPECT_THAT(errorsOf(doc(R"(
pools:
  - name: p
    servers:
      - weight: 2
virtual_services:
  - name: web
    listen: 127.0.0.1:8080
  -
    pool: p
  - {}
  - name: q
)")),
              ElementsAre("test.yaml:4: pools[0].servers[0].address: required key is missing",
                          "test.yaml:6: virtual_services[0].protocol: required key is missing",
                          "test.yaml:6: virtual_services[0].pool: required key is missing",
                          "test.yaml:9: virtual_services[1].name: required key is missing",
                          "test.yaml:9: virtual_services[1].listen: required key is missing",
                          "test.yaml:9: virtual_services[1].protocol: required key is missing",
                          "test.yaml:10: virtual_services[2].name: required key is missing",
                          "test.yaml:10: virtual_services[2].listen: required key is missing",
                          "test.yaml:10: virtual_services[2].protocol: required key is missing",
                          "test.yaml:10: virtual_services[2].pool: required key is missing",
                          "test.yaml:11: virtual_services[3].listen: required key is missing",
                          "test.yaml:11: virtual_services[3].protocol: required key is missing",
                          "test.yaml:11: virtual_services[3].pool: required key is missing"));
  EXPECT_THAT(errorsOf("pools:\n  - name: p\n"),
              ElementsAre("test.yaml:2: pools[0].servers: at least one server is required"));
  EXPECT_THAT(errorsOf("pools:\n  - servers: [{address: 127.0.0.1:1}]\n"),
              ElementsAre("test.yaml:2: pools[0].name: required key is missing"));
}

TEST(ErrorTest, DuplicateKeys) {
  EXPECT_THAT(errorsOf(doc(R"(
se:
  workers: 2
  workers: 3
virtual_services: []
se: {}
)")),
              ElementsAre("test.yaml:3: se.workers: duplicate key (first on line 2)",
                          "test.yaml:5: se: duplicate key (first on line 1)"));
  EXPECT_THAT(errorsOf(withVs(kHttpVs + "name: w\n")),
              ElementsAre("test.yaml:10: virtual_services[0].name: duplicate key (first on "
                          "line 6)"));
  // A repeated unknown or unsupported key is reported at each place.
  EXPECT_THAT(errorsOf("colour: 1\ncolour: 2\n"),
              ElementsAre("test.yaml:1: colour: unknown key (expected one of: se, store, "
                          "virtual_services, pools, health_monitors, se_groups)",
                          "test.yaml:2: colour: duplicate key (first on line 1)"));
}

TEST(ErrorTest, UnknownKeysListTheKnownOnes) {
  EXPECT_THAT(errorsOf("servers: []\n"),
              ElementsAre("test.yaml:1: servers: unknown key (expected one of: se, store, "
                          "virtual_services, pools, health_monitors, se_groups)"));
  EXPECT_EQ(onlyError("se: {threads: 4}"),
            "se.threads: unknown key (expected one of: workers, admin, drain_timeout, "
            "buffer_size, control_socket)");
  EXPECT_EQ(onlyError("store: {kind: memory}"),
            "store.kind: unknown key (expected one of: type, redis, cache_size)");
  EXPECT_EQ(onlyError("store: {type: redis, redis: {host: localhost}}"),
            "store.redis.host: unknown key (expected one of: address, password_file, prefix, "
            "connect_timeout, timeout)");
  EXPECT_EQ(onlyError(withVs(kHttpVs + "persistence: {type: client_ip, ttl: 5m}")),
            "virtual_services[0].persistence.ttl: unknown key (expected one of: type, timeout, "
            "header, cookie, ipv4_prefix, ipv6_prefix)");
  EXPECT_EQ(onlyError(withVs(kHttpVs + "timeouts: {read: 1s}")),
            "virtual_services[0].timeouts.read: unknown key (expected one of: client_header, "
            "idle, client, connect, server)");
  EXPECT_EQ(onlyError(withPool(kPoolBase + "algorithm: round_robin")),
            "pools[0].algorithm: unknown key (expected one of: name, lb_algorithm, hash_key, "
            "servers, connection_pool, health_monitors, outlier_detection)");
  EXPECT_EQ(onlyError(withPool("name: p\nservers: [{address: 127.0.0.1:1, port: 2}]")),
            "pools[0].servers[0].port: unknown key (expected one of: address, weight, enabled, "
            "drain, max_connections)");
  EXPECT_EQ(onlyError(withPool(kPoolBase + "connection_pool: {max_idle: 1}")),
            "pools[0].connection_pool.max_idle: unknown key (expected one of: "
            "max_idle_per_server, idle_timeout)");
  // Keys are case-sensitive.
  EXPECT_EQ(onlyError("SE: {}"),
            "SE: unknown key (expected one of: se, store, virtual_services, pools, "
            "health_monitors, se_groups)");
}

TEST(ErrorTest, NonStringKeys) {
  EXPECT_THAT(errorsOf("? [a, b]\n: 1\n"), ElementsAre("test.yaml:1: keys must be strings"));
  EXPECT_THAT(errorsOf("se:\n  ? {a: 1}\n  : 2\n"),
              ElementsAre("test.yaml:2: se: keys must be strings"));
}

TEST(ErrorTest, YamlSyntaxErrors) {
  EXPECT_THAT(errorsOf("se:\n  workers: [1\n"),
              ElementsAre("test.yaml:3: YAML syntax error: end of sequence flow not found"));
  EXPECT_THAT(errorsOf("se:\n  workers: 2\n admin: x\n"),
              ElementsAre("test.yaml:3: YAML syntax error: end of map not found"));
  EXPECT_THAT(errorsOf("a: *nothing\n"),
              ElementsAre("test.yaml:1: YAML syntax error: the referenced anchor is not defined"));
  // yaml-cpp 0.7 accepts a leading "," without an exception and, through YAML::LoadAll, loops
  // allocating memory forever (yaml-cpp issue #1040); the loader must report it instead.
  EXPECT_THAT(errorsOf(","), ElementsAre("test.yaml:1: YAML syntax error: unexpected \",\""));
  EXPECT_THAT(errorsOf("\n,se:\n  workers: 2\n"),
              ElementsAre("test.yaml:2: YAML syntax error: unexpected \",\""));
  EXPECT_THAT(errorsOf("se: {}\n---\n,\n"),
              ElementsAre("test.yaml:2: expected a single YAML document"));
  std::vector<std::string> errors = errorsOf("se: {workers: 2\n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_THAT(errors[0], StartsWith("test.yaml:"));
  EXPECT_THAT(errors[0], ::testing::HasSubstr("YAML syntax error: "));
}

TEST(ErrorTest, EmptyOrNonMapDocuments) {
  for (const char* yaml : {"", "\n\n", "# nothing here\n", "---\n", "~\n", "null\n"}) {
    EXPECT_THAT(errorsOf(yaml), ElementsAre("test.yaml: the configuration is empty")) << yaml;
  }
  EXPECT_THAT(errorsOf("- se\n- pools\n"),
              ElementsAre("test.yaml:1: expected a map at the top level (keys: se, store, "
                          "virtual_services, pools, health_monitors, se_groups)"));
  EXPECT_THAT(errorsOf("\n\nhello\n"),
              ElementsAre("test.yaml:3: expected a map at the top level (keys: se, store, "
                          "virtual_services, pools, health_monitors, se_groups)"));
  EXPECT_THAT(errorsOf("se: {}\n---\nse: {}\n"),
              ElementsAre("test.yaml:2: expected a single YAML document"));
  // The first document is still checked.
  EXPECT_THAT(errorsOf("se: {workers: 0}\n---\nse: {}\n"),
              ElementsAre("test.yaml:1: se.workers: expected an integer from 1 to 256",
                          "test.yaml:2: expected a single YAML document"));
}

TEST(ErrorTest, WrongContainerTypes) {
  EXPECT_THAT(errorsOf("se: 4\nstore: [memory]\nvirtual_services: {}\npools: web\n"),
              ElementsAre("test.yaml:1: se: expected a map", "test.yaml:2: store: expected a map",
                          "test.yaml:3: virtual_services: expected a list",
                          "test.yaml:4: pools: expected a list"));
  EXPECT_THAT(errorsOf("virtual_services:\n  - web\n  - [a]\npools:\n  - 1\n"),
              ElementsAre("test.yaml:2: virtual_services[0]: expected a map",
                          "test.yaml:3: virtual_services[1]: expected a map",
                          "test.yaml:5: pools[0]: expected a map"));
  EXPECT_THAT(errorsOf(withPool("name: p\nservers:\n  - 127.0.0.1:9001\n")),
              ElementsAre("test.yaml:4: pools[0].servers[0]: expected a map"));
  EXPECT_THAT(errorsOf(withPool("name: p\nservers: 127.0.0.1:9001\n")),
              ElementsAre("test.yaml:3: pools[0].servers: expected a list"));
}

TEST(ErrorTest, NotSupportedYet) {
  // Supported since issue 4.
  EXPECT_NE(mustLoad("store:\n  type: redis\n  redis: {address: 127.0.0.1:6379}\n"), nullptr);
  EXPECT_NE(mustLoad(withVs(kHttpVs + "persistence: {type: client_ip}")), nullptr);
  EXPECT_THAT(errorsOf(withVs("name: v\nlisten: 127.0.0.1:443\nprotocol: https\npool: p\n")),
              ElementsAre("test.yaml:8: virtual_services[0].protocol: https is not supported yet"));
}

TEST(ErrorTest, HttpOnlyKeysOnATcpService) {
  EXPECT_THAT(errorsOf(withVs(kTcpVs + doc(R"(
max_header_size: 8KiB
max_headers: 50
x_forwarded_for: false
timeouts:
  client_header: 1s
  idle: 5s
  client: 1s
  connect: 1s
  server: 1s
)"))),
              ElementsAre("test.yaml:10: virtual_services[0].max_header_size: only for protocol "
                          "http",
                          "test.yaml:11: virtual_services[0].max_headers: only for protocol http",
                          "test.yaml:12: virtual_services[0].x_forwarded_for: only for protocol "
                          "http",
                          "test.yaml:14: virtual_services[0].timeouts.client_header: only for "
                          "protocol http",
                          "test.yaml:16: virtual_services[0].timeouts.client: only for protocol "
                          "http",
                          "test.yaml:18: virtual_services[0].timeouts.server: only for protocol "
                          "http"));
  // The protocol may come after the keys it governs.
  EXPECT_EQ(onlyError(withVs("name: v\nmax_headers: 5\nlisten: 127.0.0.1:1\nprotocol: tcp\n"
                             "pool: p\n")),
            "virtual_services[0].max_headers: only for protocol http");
}

// ---------------------------------------------------------------------------------------------
// Every validation rule: key path and message

struct RuleCase {
  std::string yaml;
  std::string expected;  // "key.path: message"
};

void expectRules(const std::vector<RuleCase>& cases) {
  for (const RuleCase& c : cases) {
    EXPECT_EQ(onlyError(c.yaml), c.expected) << "in:\n" << c.yaml;
  }
}

TEST(RuleTest, Se) {
  const std::string workers = "se.workers: expected an integer from 1 to 256";
  const std::string drain = "se.drain_timeout: expected a duration from 0s to 1h";
  const std::string buffer = "se.buffer_size: expected a size from 4KiB to 1MiB";
  expectRules({
      {"se: {workers: 0}", workers},
      {"se: {workers: 257}", workers},
      {"se: {workers: -1}", workers},
      {"se: {workers: 1.5}", workers},
      {"se: {workers: two}", workers},
      {"se: {workers: [2]}", workers},
      {"se: {workers: }", workers},
      {"se: {workers: 99999999999999999999999}", workers},
      {"se: {admin: \"*:9901\"}", "se.admin: expected an IP address, e.g. 0.0.0.0:8080"},
      {"se: {admin: localhost:9901}", "se.admin: expected an IP address, e.g. 0.0.0.0:8080"},
      {"se: {admin: 127.0.0.1}", "se.admin: expected host:port"},
      {"se: {admin: 127.0.0.1:0}", "se.admin: port must be 1-65535"},
      {"se: {admin: \"[::1\"}", "se.admin: expected [IPv6]:port"},
      {"se: {admin: \"[::x]:1\"}", "se.admin: invalid IPv6 address"},
      {"se: {admin: [127.0.0.1:9901]}", "se.admin: expected a string"},
      {"se: {drain_timeout: 2h}", drain},
      {"se: {drain_timeout: 61m}", drain},
      {"se: {drain_timeout: 30}",
       "se.drain_timeout: expected a duration with a unit, e.g. "
       "300ms, 2s, 5m"},
      {"se: {drain_timeout: 0.5ms}", "se.drain_timeout: durations have millisecond resolution"},
      {"se: {drain_timeout: {s: 1}}",
       "se.drain_timeout: expected a duration with a unit, e.g. "
       "300ms, 2s, 5m"},
      {"se: {buffer_size: 4095}", buffer},
      {"se: {buffer_size: 1KiB}", buffer},
      {"se: {buffer_size: 2MiB}", buffer},
      {"se: {buffer_size: 16KB}", "se.buffer_size: expected a size, e.g. 16384, 16KiB, 1MiB"},
      {"se: {buffer_size: 16 KiB}", "se.buffer_size: expected a size, e.g. 16384, 16KiB, 1MiB"},
  });
  // Bounds are inclusive.
  auto config = mustLoad("se: {workers: 256, drain_timeout: 1h, buffer_size: 4096}");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->se.workers, 256u);
  EXPECT_EQ(config->se.drain_timeout, hours(1));
  EXPECT_EQ(config->se.buffer_size, 4096u);
  config = mustLoad("se: {workers: 1, buffer_size: 1MiB, admin: \"[::1]:9901\"}");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->se.buffer_size, 1048576u);
  EXPECT_EQ(config->se.admin->toString(), "[::1]:9901");
}

TEST(RuleTest, Store) {
  const std::string cache = "store.cache_size: expected an integer from 0 to 10000000";
  expectRules({
      {"store: {type: etcd}", "store.type: expected one of: memory, redis"},
      {"store: {type: Memory}", "store.type: expected one of: memory, redis"},
      {"store: {type: REDIS}", "store.type: expected one of: memory, redis"},
      {"store: {type: \"\"}", "store.type: expected one of: memory, redis"},
      {"store: {type: [memory]}", "store.type: expected a string"},
      {"store: {type: }", "store.type: expected a string"},
      {"store: {cache_size: 10000001}", cache},
      {"store: {cache_size: -1}", cache},
      {"store: {cache_size: 1.5}", cache},
      {"store: {cache_size: 100KiB}", cache},
      {"store: {cache_size: }", cache},
      {"store: {type: redis, cache_size: 99999999999999999999}", cache},
  });
  // Bounds are inclusive; 0 turns the cache off.
  auto config = mustLoad("store: {cache_size: 0}");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->store.cache_size, 0u);
  config = mustLoad("store: {type: redis, cache_size: 10000000}");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->store.cache_size, 10000000u);
}

TEST(RuleTest, RedisOnlyWithTypeRedis) {
  expectRules({
      {"store: {redis: {}}", "store.redis: only for type redis"},
      {"store: {type: memory, redis: {address: 127.0.0.1:6379}}",
       "store.redis: only for type redis"},
      // Its content is not checked then.
      {"store: {type: memory, redis: {address: nowhere, prefix: \"a b\"}}",
       "store.redis: only for type redis"},
      // The type may come after the map it governs.
      {"store: {redis: {}, type: memory}", "store.redis: only for type redis"},
      {"store: {type: redis, redis: [127.0.0.1:6379]}", "store.redis: expected a map"},
      {"store: {type: redis, redis: 127.0.0.1:6379}", "store.redis: expected a map"},
  });
  // With an invalid type, redis is checked as if the type were redis.
  EXPECT_THAT(errorsOf("store:\n  type: valkey\n  redis: {timeout: 0s}\n"),
              ElementsAre("test.yaml:2: store.type: expected one of: memory, redis",
                          "test.yaml:3: store.redis.timeout: expected a duration greater than 0 "
                          "and at most 10s"));
  EXPECT_EQ(onlyError("store: {type: [redis], redis: {}}"), "store.type: expected a string");
}

TEST(RuleTest, Redis) {
  const std::string r = "store.redis.";
  auto redis = [](const std::string& fields) {
    return "store:\n  type: redis\n  redis: {" + fields + "}\n";
  };
  const std::string prefix =
      r + "prefix: expected a prefix of 1-64 characters from A-Z a-z 0-9 _ . - :";
  const std::string connect =
      r + "connect_timeout: expected a duration greater than 0 and at most 1m";
  const std::string timeout = r + "timeout: expected a duration greater than 0 and at most 10s";
  expectRules({
      {redis("address: 127.0.0.1"), r + "address: expected host:port"},
      {redis("address: \"\""), r + "address: expected host:port"},
      {redis("address: \"127.0.0.1:0\""), r + "address: port must be 1-65535"},
      {redis("address: \"127.0.0.1:65536\""), r + "address: port must be 1-65535"},
      {redis("address: \"10.1:6379\""), r + "address: invalid IPv4 address"},
      {redis("address: \"[::1\""), r + "address: expected [IPv6]:port"},
      {redis("address: [127.0.0.1:6379]"), r + "address: expected a string"},
      {redis("address: "), r + "address: expected a string"},
      {redis("password_file: [a]"), r + "password_file: expected a string"},
      {redis("password_file: "), r + "password_file: expected a string"},
      {redis("password_file: /nonexistent-ballast-dir/redis.pass"),
       r + "password_file: cannot read \"/nonexistent-ballast-dir/redis.pass\": No such file or "
           "directory"},
      {redis("prefix: \"\""), prefix},
      {redis("prefix: " + std::string(65, 'p')), prefix},
      {redis("prefix: \"a b\""), prefix},
      {redis("prefix: \"a/b\""), prefix},
      {redis("prefix: \"a{b}\""), prefix},
      {redis("prefix: \"a*\""), prefix},
      {redis("prefix: [ballast]"), prefix},
      {redis("prefix: "), prefix},
      {redis("connect_timeout: 0s"), connect},
      {redis("connect_timeout: 61s"), connect},
      {redis("connect_timeout: 2m"), connect},
      {redis("connect_timeout: 1"),
       r + "connect_timeout: expected a duration with a unit, e.g. 300ms, 2s, 5m"},
      {redis("timeout: 0ms"), timeout},
      {redis("timeout: 10001ms"), timeout},
      {redis("timeout: 200"), r + "timeout: expected a duration with a unit, e.g. 300ms, 2s, 5m"},
      {redis("timeout: 0.5ms"), r + "timeout: durations have millisecond resolution"},
  });
  std::string error = onlyError(redis("address: \"nohost.invalid:6379\""));
  EXPECT_THAT(error, StartsWith(r + "address: cannot resolve \"nohost.invalid\": "));

  // Bounds are inclusive.
  auto config = mustLoad(redis("connect_timeout: 1m, timeout: 10s, prefix: " +
                               std::string(64, 'p')));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->store.redis.connect_timeout, minutes(1));
  EXPECT_EQ(config->store.redis.timeout, seconds(10));
  EXPECT_EQ(config->store.redis.prefix, std::string(64, 'p'));
  config = mustLoad(redis("connect_timeout: 1ms, timeout: 1ms, prefix: x"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->store.redis.connect_timeout, milliseconds(1));
  EXPECT_EQ(config->store.redis.timeout, milliseconds(1));
  EXPECT_EQ(config->store.redis.prefix, "x");
}

TEST(LoadTest, ReadsEveryStoreKey) {
  auto config = mustLoad(doc(R"(
store:
  type: redis
  cache_size: 5000
  redis:
    address: localhost:6380
    password_file: ""
    prefix: "shop:eu-1"
    connect_timeout: 500ms
    timeout: 50ms
)"));
  ASSERT_NE(config, nullptr);
  const StoreSettings& store = config->store;
  EXPECT_EQ(store.type, "redis");
  EXPECT_EQ(store.cache_size, 5000u);
  EXPECT_EQ(store.redis.address_text, "localhost:6380");  // resolved at load
  EXPECT_EQ(store.redis.address.port(), 6380);
  EXPECT_TRUE(store.redis.address.valid());
  EXPECT_EQ(store.redis.password_file, "");  // "": no AUTH
  EXPECT_EQ(store.redis.password, "");
  EXPECT_EQ(store.redis.prefix, "shop:eu-1");
  EXPECT_EQ(store.redis.connect_timeout, milliseconds(500));
  EXPECT_EQ(store.redis.timeout, milliseconds(50));

  config = mustLoad("store: {type: redis, redis: {address: \"[::1]:7000\"}}");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->store.redis.address.toString(), "[::1]:7000");
  EXPECT_EQ(config->store.redis.address_text, "[::1]:7000");
}

TEST(LoadTest, RedisDefaults) {
  // The map may be left out, empty or null: every key has a default.
  for (const char* yaml : {"store: {type: redis}", "store: {type: redis, redis: {}}",
                           "store:\n  type: redis\n  redis:\n",
                           // DESIGN.md's schema, as written.
                           "store:\n  type: redis\n  redis: { address: 127.0.0.1:6379, "
                           "password_file: \"\", prefix: ballast }\n"}) {
    auto config = mustLoad(yaml);
    ASSERT_NE(config, nullptr) << yaml;
    const StoreSettings& store = config->store;
    EXPECT_EQ(store.type, "redis") << yaml;
    EXPECT_EQ(store.cache_size, 100000u) << yaml;
    EXPECT_EQ(store.redis.address_text, "127.0.0.1:6379") << yaml;
    EXPECT_EQ(store.redis.address.toString(), "127.0.0.1:6379") << yaml;
    EXPECT_EQ(store.redis.password_file, "") << yaml;
    EXPECT_EQ(store.redis.password, "") << yaml;
    EXPECT_EQ(store.redis.prefix, "ballast") << yaml;
    EXPECT_EQ(store.redis.connect_timeout, seconds(1)) << yaml;
    EXPECT_EQ(store.redis.timeout, milliseconds(200)) << yaml;
  }
}

TEST(LoadTest, ReadsEveryPersistenceType) {
  auto config = mustLoad(doc(R"(
pools:
  - {name: p, servers: [{address: 127.0.0.1:9001}]}
virtual_services:
  - {name: ip, listen: 127.0.0.1:8080, protocol: http, pool: p, persistence: {type: client_ip}}
  - name: net
    listen: 127.0.0.1:8081
    protocol: tcp
    pool: p
    persistence: {type: client_ip, timeout: 1h, ipv4_prefix: 24, ipv6_prefix: 64}
  - name: header
    listen: 127.0.0.1:8082
    protocol: http
    pool: p
    persistence:
      type: http_header
      header: X-Client-Id
      timeout: 30m
  - name: cookie
    listen: 127.0.0.1:8083
    protocol: http
    pool: p
    persistence: {type: http_cookie}
  - name: named-cookie
    listen: 127.0.0.1:8084
    protocol: http
    pool: p
    persistence: {type: http_cookie, cookie: srv, timeout: 1s}
  - name: app
    listen: 127.0.0.1:8085
    protocol: http
    pool: p
    persistence: {type: app_cookie, cookie: JSESSIONID, timeout: 720h}
  - {name: none, listen: 127.0.0.1:8086, protocol: http, pool: p}
)"));
  ASSERT_NE(config, nullptr);
  ASSERT_EQ(config->virtual_services.size(), 7u);
  auto persistence = [&](size_t i) { return config->virtual_services[i].persistence; };

  EXPECT_EQ(persistence(0).type, PersistenceType::ClientIp);
  EXPECT_EQ(persistence(0).timeout, seconds(300));
  EXPECT_EQ(persistence(0).ipv4_prefix, 32u);
  EXPECT_EQ(persistence(0).ipv6_prefix, 128u);
  EXPECT_EQ(persistence(0).header, "");
  EXPECT_EQ(persistence(0).cookie, "");

  EXPECT_EQ(persistence(1).type, PersistenceType::ClientIp);
  EXPECT_EQ(persistence(1).timeout, hours(1));
  EXPECT_EQ(persistence(1).ipv4_prefix, 24u);
  EXPECT_EQ(persistence(1).ipv6_prefix, 64u);

  EXPECT_EQ(persistence(2).type, PersistenceType::HttpHeader);
  EXPECT_EQ(persistence(2).header, "X-Client-Id");  // as written; matched without regard to case
  EXPECT_EQ(persistence(2).timeout, minutes(30));
  EXPECT_EQ(persistence(2).cookie, "");

  EXPECT_EQ(persistence(3).type, PersistenceType::HttpCookie);
  EXPECT_EQ(persistence(3).cookie, "BALLAST_SERVER");  // the default cookie name
  EXPECT_EQ(persistence(3).timeout, seconds(300));
  EXPECT_EQ(persistence(3).header, "");

  EXPECT_EQ(persistence(4).type, PersistenceType::HttpCookie);
  EXPECT_EQ(persistence(4).cookie, "srv");
  EXPECT_EQ(persistence(4).timeout, seconds(1));

  EXPECT_EQ(persistence(5).type, PersistenceType::AppCookie);
  EXPECT_EQ(persistence(5).cookie, "JSESSIONID");
  EXPECT_EQ(persistence(5).timeout, hours(720));

  EXPECT_EQ(persistence(6).type, PersistenceType::None);

  // Prefix bounds are inclusive.
  config = mustLoad(withVs(kTcpVs + "persistence: {type: client_ip, ipv4_prefix: 1, "
                                    "ipv6_prefix: 1}"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->virtual_services[0].persistence.ipv4_prefix, 1u);
  EXPECT_EQ(config->virtual_services[0].persistence.ipv6_prefix, 1u);
  config = mustLoad(withVs(kTcpVs + "persistence: {type: client_ip, ipv4_prefix: 32, "
                                    "ipv6_prefix: 128}"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->virtual_services[0].persistence.ipv6_prefix, 128u);
}

TEST(RuleTest, Persistence) {
  const std::string p = "virtual_services[0].persistence";
  auto vs = [](const std::string& persistence) {
    return withVs(kHttpVs + "persistence: " + persistence);
  };
  const std::string types =
      p + ".type: expected one of: client_ip, http_header, http_cookie, app_cookie";
  const std::string timeout = p + ".timeout: expected a duration from 1s to 720h";
  const std::string header_name =
      p + ".header: expected a header field name (a token of A-Z a-z 0-9 !#$%&'*+-.^_`|~)";
  const std::string cookie_name =
      p + ".cookie: expected a cookie name (a token of A-Z a-z 0-9 !#$%&'*+-.^_`|~)";
  const std::string v4 = p + ".ipv4_prefix: expected an integer from 1 to 32";
  const std::string v6 = p + ".ipv6_prefix: expected an integer from 1 to 128";
  expectRules({
      {vs("client_ip"), p + ": expected a map"},
      {vs("[client_ip]"), p + ": expected a map"},
      {vs(""), p + ".type: required key is missing"},
      {vs("{}"), p + ".type: required key is missing"},
      {vs("{timeout: 5m}"), p + ".type: required key is missing"},
      {vs("{type: cookie}"), types},
      {vs("{type: source_ip}"), types},
      {vs("{type: Client_IP}"), types},
      {vs("{type: none}"), types},
      {vs("{type: \"\"}"), types},
      {vs("{type: [client_ip]}"), p + ".type: expected a string"},
      {vs("{type: }"), p + ".type: expected a string"},
      // timeout: every type
      {vs("{type: client_ip, timeout: 999ms}"), timeout},
      {vs("{type: client_ip, timeout: 0s}"), timeout},
      {vs("{type: http_cookie, timeout: 721h}"), timeout},
      {vs("{type: client_ip, timeout: 300}"),
       p + ".timeout: expected a duration with a unit, e.g. 300ms, 2s, 5m"},
      {vs("{type: client_ip, timeout: 1d}"),
       p + ".timeout: expected a duration with a unit, e.g. 300ms, 2s, 5m"},
      // header: http_header only, required there
      {vs("{type: http_header}"), p + ".header: required key is missing"},
      {vs("{type: http_header, header: \"X Client\"}"), header_name},
      {vs("{type: http_header, header: \"X-Client:\"}"), header_name},
      {vs("{type: http_header, header: \"\"}"), header_name},
      {vs("{type: http_header, header: [X]}"), header_name},
      {vs("{type: http_header, header: }"), header_name},
      {vs("{type: client_ip, header: X}"), p + ".header: only for type http_header"},
      {vs("{type: http_cookie, header: X}"), p + ".header: only for type http_header"},
      {vs("{type: app_cookie, cookie: s, header: X}"), p + ".header: only for type http_header"},
      // cookie: http_cookie (optional) and app_cookie (required)
      {vs("{type: app_cookie}"), p + ".cookie: required key is missing"},
      {vs("{type: app_cookie, cookie: \"a=b\"}"), cookie_name},
      {vs("{type: app_cookie, cookie: \"a;b\"}"), cookie_name},
      {vs("{type: http_cookie, cookie: \"\"}"), cookie_name},
      {vs("{type: http_cookie, cookie: \"a b\"}"), cookie_name},
      {vs("{type: http_cookie, cookie: [a]}"), cookie_name},
      {vs("{type: http_cookie, cookie: __Host-SRV}"),
       p + ".cookie: a __Host- or __Secure- cookie needs the Secure attribute, which needs HTTPS: "
           "browsers would drop it"},
      {vs("{type: http_cookie, cookie: __secure-srv}"),
       p + ".cookie: a __Host- or __Secure- cookie needs the Secure attribute, which needs HTTPS: "
           "browsers would drop it"},
      {vs("{type: client_ip, cookie: X}"), p + ".cookie: only for type http_cookie or app_cookie"},
      {vs("{type: http_header, header: X, cookie: Y}"),
       p + ".cookie: only for type http_cookie or app_cookie"},
      // ipv4_prefix, ipv6_prefix: client_ip only
      {vs("{type: client_ip, ipv4_prefix: 0}"), v4},
      {vs("{type: client_ip, ipv4_prefix: 33}"), v4},
      {vs("{type: client_ip, ipv4_prefix: 24.5}"), v4},
      {vs("{type: client_ip, ipv4_prefix: /24}"), v4},
      {vs("{type: client_ip, ipv4_prefix: -1}"), v4},
      {vs("{type: client_ip, ipv6_prefix: 0}"), v6},
      {vs("{type: client_ip, ipv6_prefix: 129}"), v6},
      {vs("{type: client_ip, ipv6_prefix: }"), v6},
      {vs("{type: http_header, header: X, ipv4_prefix: 24}"),
       p + ".ipv4_prefix: only for type client_ip"},
      {vs("{type: app_cookie, cookie: s, ipv6_prefix: 64}"),
       p + ".ipv6_prefix: only for type client_ip"},
      {vs("{type: http_cookie, ipv4_prefix: 24}"), p + ".ipv4_prefix: only for type client_ip"},
  });

  // A block map: each error on the line of its key, in file order (type first, wherever it is).
  EXPECT_THAT(errorsOf(withVs(kHttpVs + doc(R"(
persistence:
  ipv4_prefix: 24
  cookie: "a b"
  timeout: 0s
  type: app_cookie
)"))),
              ElementsAre("test.yaml:11: " + p + ".ipv4_prefix: only for type client_ip",
                          "test.yaml:12: " + cookie_name, "test.yaml:13: " + timeout));
  // "persistence:" with nothing: the line of the key.
  EXPECT_THAT(errorsOf(withVs(kHttpVs + "persistence:\nretries: 1\n")),
              ElementsAre("test.yaml:10: " + p + ".type: required key is missing"));
  // With an invalid or missing type, every key is checked for its syntax only.
  EXPECT_THAT(errorsOf(withVs(kHttpVs + "persistence: {type: sticky, header: \"a b\", "
                                        "cookie: c, ipv4_prefix: 24, ipv6_prefix: 0}")),
              ElementsAre("test.yaml:10: " + types, "test.yaml:10: " + header_name,
                          "test.yaml:10: " + v6));
  EXPECT_THAT(errorsOf(withVs(kHttpVs + "persistence: {header: X, cookie: \"a;b\"}")),
              ElementsAre("test.yaml:10: " + p + ".type: required key is missing",
                          "test.yaml:10: " + cookie_name));
  // Names are kept as written.
  auto config = mustLoad(vs("{type: http_header, header: \"x-USER_id!\"}"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->virtual_services[0].persistence.header, "x-USER_id!");
}

TEST(ErrorTest, OnlyClientIpPersistenceOnATcpService) {
  const std::string p = "virtual_services[0].persistence";
  const std::string tcp_only = p + ".type: only client_ip persistence works for protocol tcp";
  expectRules({
      {withVs(kTcpVs + "persistence: {type: http_header, header: X-Client}"), tcp_only},
      {withVs(kTcpVs + "persistence: {type: http_cookie}"), tcp_only},
      {withVs(kTcpVs + "persistence: {type: app_cookie, cookie: JSESSIONID}"), tcp_only},
      // The protocol may come after the persistence it governs.
      {withVs("name: v\npersistence: {type: http_cookie}\nlisten: 127.0.0.1:1\nprotocol: tcp\n"
              "pool: p\n"),
       tcp_only},
      // With an unknown protocol, persistence is checked as if for http.
      {withVs("name: v\nlisten: 127.0.0.1:1\nprotocol: udp\npool: p\n"
              "persistence: {type: http_cookie}\n"),
       "virtual_services[0].protocol: expected one of: tcp, http, https"},
  });
  // The keys of the type are still checked (and allowed).
  EXPECT_THAT(errorsOf(withVs(kTcpVs + "persistence:\n  type: http_header\n  header: \"a b\"\n")),
              ElementsAre("test.yaml:11: " + tcp_only,
                          "test.yaml:12: " + p +
                              ".header: expected a header field name (a token of A-Z a-z 0-9 "
                              "!#$%&'*+-.^_`|~)"));
  auto config = mustLoad(withVs(kTcpVs + "persistence: {type: client_ip, ipv4_prefix: 16}"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->virtual_services[0].persistence.type, PersistenceType::ClientIp);
  EXPECT_EQ(config->virtual_services[0].persistence.ipv4_prefix, 16u);
}

TEST(RuleTest, VirtualServiceIdentity) {
  const std::string name_rule =
      "virtual_services[0].name: expected a name of 1-64 characters from A-Z a-z 0-9 _ . -";
  expectRules({
      {withVs("name: bad name\nlisten: 127.0.0.1:1\nprotocol: tcp\npool: p"), name_rule},
      {withVs("name: \"\"\nlisten: 127.0.0.1:1\nprotocol: tcp\npool: p"), name_rule},
      {withVs("name: " + std::string(65, 'n') + "\nlisten: 127.0.0.1:1\nprotocol: tcp\npool: p"),
       name_rule},
      {withVs("name: [a]\nlisten: 127.0.0.1:1\nprotocol: tcp\npool: p"), name_rule},
      {withVs("name: a/b\nlisten: 127.0.0.1:1\nprotocol: tcp\npool: p"), name_rule},
      {withVs("name: v\nlisten: \"*:8080\"\nprotocol: tcp\npool: p"),
       "virtual_services[0].listen: expected an IP address, e.g. 0.0.0.0:8080"},
      {withVs("name: v\nlisten: localhost:8080\nprotocol: tcp\npool: p"),
       "virtual_services[0].listen: expected an IP address, e.g. 0.0.0.0:8080"},
      {withVs("name: v\nlisten: 127.0.0.1:65536\nprotocol: tcp\npool: p"),
       "virtual_services[0].listen: port must be 1-65535"},
      {withVs("name: v\nlisten: 8080\nprotocol: tcp\npool: p"),
       "virtual_services[0].listen: expected host:port"},
      {withVs("name: v\nlisten: \"::1:8080\"\nprotocol: tcp\npool: p"),
       "virtual_services[0].listen: an IPv6 address needs brackets, e.g. [::1]:8080"},
      {withVs("name: v\nlisten: {ip: 127.0.0.1}\nprotocol: tcp\npool: p"),
       "virtual_services[0].listen: expected a string"},
      {withVs("name: v\nlisten: 127.0.0.1:1\nprotocol: udp\npool: p"),
       "virtual_services[0].protocol: expected one of: tcp, http, https"},
      {withVs("name: v\nlisten: 127.0.0.1:1\nprotocol: HTTP\npool: p"),
       "virtual_services[0].protocol: expected one of: tcp, http, https"},
      {withVs("name: v\nlisten: 127.0.0.1:1\nprotocol: [tcp]\npool: p"),
       "virtual_services[0].protocol: expected a string"},
      {withVs("name: v\nlisten: 127.0.0.1:1\nprotocol: tcp\npool: nope"),
       "virtual_services[0].pool: no pool named \"nope\""},
      {withVs("name: v\nlisten: 127.0.0.1:1\nprotocol: tcp\npool: [p]"),
       "virtual_services[0].pool: expected a string"},
  });
}

TEST(RuleTest, VirtualServicesAreUnique) {
  const std::string second_web =
      "  - name: web\n    listen: 127.0.0.1:8081\n    protocol: tcp\n"
      "    pool: p\n";
  EXPECT_THAT(
      errorsOf(withVs("name: web\nlisten: 127.0.0.1:8080\nprotocol: http\npool: p\n") + second_web),
      ElementsAre("test.yaml:10: virtual_services[1].name: virtual service \"web\" is "
                  "already defined on line 6"));
  // Equal addresses conflict however they are spelled.
  EXPECT_THAT(errorsOf(withVs("name: a\nlisten: \"[::1]:8080\"\nprotocol: http\npool: p\n") +
                       "  - {name: b, listen: \"[0::1]:8080\", protocol: tcp, pool: p}\n"),
              ElementsAre("test.yaml:10: virtual_services[1].listen: [::1]:8080 is already used "
                          "by virtual service \"a\""));
  // The pool name is its own namespace, and so is the pool list.
  EXPECT_THAT(
      errorsOf(withPool(kPoolBase) + "  - name: p\n    servers: [{address: 127.0.0.1:2}]\n"),
      ElementsAre("test.yaml:5: pools[1].name: pool \"p\" is already defined on line 2"));
}

TEST(RuleTest, VirtualServiceLimits) {
  expectRules({
      {withVs(kHttpVs + "max_connections: 10000001"),
       "virtual_services[0].max_connections: expected an integer from 0 to 10000000"},
      {withVs(kHttpVs + "max_connections: -1"),
       "virtual_services[0].max_connections: expected an integer from 0 to 10000000"},
      {withVs(kHttpVs + "max_header_size: 1023"),
       "virtual_services[0].max_header_size: expected a size from 1KiB to 1MiB"},
      {withVs(kHttpVs + "max_header_size: 2MiB"),
       "virtual_services[0].max_header_size: expected a size from 1KiB to 1MiB"},
      {withVs(kHttpVs + "max_header_size: 8kb"),
       "virtual_services[0].max_header_size: expected a size, e.g. 16384, 16KiB, 1MiB"},
      {withVs(kHttpVs + "max_headers: 0"),
       "virtual_services[0].max_headers: expected an integer from 1 to 1000"},
      {withVs(kHttpVs + "max_headers: 1001"),
       "virtual_services[0].max_headers: expected an integer from 1 to 1000"},
      {withVs(kHttpVs + "x_forwarded_for: yes"),
       "virtual_services[0].x_forwarded_for: expected true or false"},
      {withVs(kHttpVs + "x_forwarded_for: 1"),
       "virtual_services[0].x_forwarded_for: expected true or false"},
      {withVs(kHttpVs + "x_forwarded_for: \"on\""),
       "virtual_services[0].x_forwarded_for: expected true or false"},
  });
  auto config = mustLoad(withVs(kHttpVs + "max_header_size: 1KiB\nmax_headers: 1"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->virtual_services[0].max_header_size, 1024u);
  EXPECT_EQ(config->virtual_services[0].max_headers, 1u);
  config = mustLoad(withVs(kHttpVs + "max_header_size: 1MiB"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->virtual_services[0].max_header_size, 1048576u);
}

TEST(RuleTest, VirtualServiceTimeouts) {
  const std::string range = ": expected a duration greater than 0 and at most 24h";
  const std::string unit = ": expected a duration with a unit, e.g. 300ms, 2s, 5m";
  const std::string p = "virtual_services[0].timeouts.";
  expectRules({
      {withVs(kHttpVs + "timeouts: {client_header: 0s}"), p + "client_header" + range},
      {withVs(kHttpVs + "timeouts: {idle: 25h}"), p + "idle" + range},
      {withVs(kHttpVs + "timeouts: {client: 0ms}"), p + "client" + range},
      {withVs(kHttpVs + "timeouts: {connect: 86400001ms}"), p + "connect" + range},
      {withVs(kHttpVs + "timeouts: {server: 0h}"), p + "server" + range},
      {withVs(kHttpVs + "timeouts: {connect: 5}"), p + "connect" + unit},
      {withVs(kHttpVs + "timeouts: {server: fast}"), p + "server" + unit},
      {withVs(kHttpVs + "timeouts: {idle: -1s}"), p + "idle: a duration cannot be negative"},
      {withVs(kHttpVs + "timeouts: 10s"), "virtual_services[0].timeouts: expected a map"},
  });
  auto config = mustLoad(withVs(kTcpVs + "timeouts: {idle: 24h, connect: 1ms}"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->virtual_services[0].timeouts.idle, hours(24));
  EXPECT_EQ(config->virtual_services[0].timeouts.connect, milliseconds(1));
  config = mustLoad(withVs(kHttpVs + "timeouts:\n"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->virtual_services[0].timeouts.idle, seconds(60));
}

TEST(RuleTest, Pools) {
  const std::string name_rule =
      "pools[0].name: expected a name of 1-64 characters from A-Z a-z 0-9 _ . -";
  const std::string lb_other =
      "pools[0].lb_algorithm: expected one of: round_robin, least_connections, "
      "least_response_time, consistent_hash, random_two_choices";
  const std::string servers = "name: p\nservers: [{address: 127.0.0.1:9001}]\n";
  expectRules({
      {withPool("name: web pool\nservers: [{address: 127.0.0.1:9001}]"), name_rule},
      {withPool("name: {a: 1}\nservers: [{address: 127.0.0.1:9001}]"), name_rule},
      {withPool(servers + "lb_algorithm: roundrobin"), lb_other},
      {withPool(servers + "lb_algorithm: Least_Connections"), lb_other},
      {withPool(servers + "lb_algorithm: maglev"), lb_other},
      {withPool(servers + "lb_algorithm: [round_robin]"),
       "pools[0].lb_algorithm: expected a string"},
      {withPool("name: p"), "pools[0].servers: at least one server is required"},
      {withPool("name: p\nservers: []"), "pools[0].servers: at least one server is required"},
      {withPool("name: p\nservers:"), "pools[0].servers: at least one server is required"},
      {withPool("name: p\nservers: {address: 127.0.0.1:1}"), "pools[0].servers: expected a list"},
      {withPool(servers + "connection_pool: {max_idle_per_server: 100001}"),
       "pools[0].connection_pool.max_idle_per_server: expected an integer from 0 to 100000"},
      {withPool(servers + "connection_pool: {max_idle_per_server: lots}"),
       "pools[0].connection_pool.max_idle_per_server: expected an integer from 0 to 100000"},
      {withPool(servers + "connection_pool: {idle_timeout: 0s}"),
       "pools[0].connection_pool.idle_timeout: expected a duration greater than 0 and at most "
       "24h"},
      {withPool(servers + "connection_pool: {idle_timeout: 30}"),
       "pools[0].connection_pool.idle_timeout: expected a duration with a unit, e.g. 300ms, 2s, "
       "5m"},
      {withPool(servers + "connection_pool: [1]"), "pools[0].connection_pool: expected a map"},
  });
  auto config = mustLoad(withPool(servers + "connection_pool: {max_idle_per_server: 100000, "
                                            "idle_timeout: 24h}"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->pools[0].connection_pool.max_idle_per_server, 100000u);
  EXPECT_EQ(config->pools[0].connection_pool.idle_timeout, hours(24));
}

TEST(RuleTest, Servers) {
  const std::string p = "pools[0].servers[0].";
  expectRules({
      {withPool("name: p\nservers: [{weight: 1}]"), p + "address: required key is missing"},
      {withPool("name: p\nservers: [{address: 127.0.0.1}]"), p + "address: expected host:port"},
      {withPool("name: p\nservers: [{address: \"localhost:0\"}]"),
       p + "address: port must be 1-65535"},
      {withPool("name: p\nservers: [{address: \"10.1:80\"}]"), p + "address: invalid IPv4 address"},
      {withPool("name: p\nservers: [{address: \"[::1\"}]"), p + "address: expected [IPv6]:port"},
      {withPool("name: p\nservers: [{address: [127.0.0.1:80]}]"), p + "address: expected a string"},
      {withPool("name: p\nservers: [{address: 127.0.0.1:1, weight: 0}]"),
       p + "weight: expected an integer from 1 to 256"},
      {withPool("name: p\nservers: [{address: 127.0.0.1:1, weight: 257}]"),
       p + "weight: expected an integer from 1 to 256"},
      {withPool("name: p\nservers: [{address: 127.0.0.1:1, weight: 0.5}]"),
       p + "weight: expected an integer from 1 to 256"},
      {withPool("name: p\nservers: [{address: 127.0.0.1:1, enabled: no}]"),
       p + "enabled: expected true or false"},
      {withPool("name: p\nservers: [{address: 127.0.0.1:1, enabled: }]"),
       p + "enabled: expected true or false"},
  });
  std::string error = onlyError(withPool("name: p\nservers: [{address: \"nohost.invalid:80\"}]"));
  EXPECT_THAT(error, StartsWith(p + "address: cannot resolve \"nohost.invalid\": "));
}

TEST(RuleTest, DuplicateServersInAPool) {
  EXPECT_THAT(errorsOf(doc(R"(
pools:
  - name: p
    servers:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1:9002
      - address: "[::1]:9001"
      - address: "[0::1]:9001"
      - address: 127.0.0.1:9002
  - name: q
    servers:
      - address: 127.0.0.1:9001
)")),
              ElementsAre("test.yaml:7: pools[0].servers[3].address: duplicate address "
                          "[::1]:9001 (same as servers[2])",
                          "test.yaml:8: pools[0].servers[4].address: duplicate address "
                          "127.0.0.1:9002 (same as servers[1])"));
  // A host name that resolves to an address already listed is the same server.
  std::string error;
  auto localhost = SocketAddress::resolve("localhost:9001", &error);
  ASSERT_TRUE(localhost.has_value()) << error;
  EXPECT_THAT(errorsOf(withPool("name: p\nservers:\n  - address: " + localhost->toString() +
                                "\n  - address: localhost:9001\n")),
              ElementsAre("test.yaml:5: pools[0].servers[1].address: duplicate address " +
                          localhost->toString() + " (same as servers[0])"));
}

TEST(RuleTest, ServerDrainAndLimits) {
  const std::string p = "pools[0].servers[0].";
  expectRules({
      {withPool("name: p\nservers: [{address: 127.0.0.1:1, drain: yes}]"),
       p + "drain: expected true or false"},
      {withPool("name: p\nservers: [{address: 127.0.0.1:1, drain: }]"),
       p + "drain: expected true or false"},
      {withPool("name: p\nservers: [{address: 127.0.0.1:1, max_connections: 1000001}]"),
       p + "max_connections: expected an integer from 0 to 1000000"},
      {withPool("name: p\nservers: [{address: 127.0.0.1:1, max_connections: -1}]"),
       p + "max_connections: expected an integer from 0 to 1000000"},
      {withPool("name: p\nservers: [{address: 127.0.0.1:1, max_connections: unlimited}]"),
       p + "max_connections: expected an integer from 0 to 1000000"},
  });
  // A server may be both disabled and draining.
  auto config =
      mustLoad(withPool("name: p\nservers: [{address: 127.0.0.1:1, enabled: false, drain: true}]"));
  ASSERT_NE(config, nullptr);
  EXPECT_FALSE(config->pools[0].servers[0].enabled);
  EXPECT_TRUE(config->pools[0].servers[0].drain);
}

TEST(RuleTest, HashKey) {
  const std::string servers = "name: p\nservers: [{address: 127.0.0.1:9001}]\n";
  const std::string ch = servers + "lb_algorithm: consistent_hash\n";
  const std::string p = "pools[0].hash_key";
  const std::string header_name =
      p + ".name: expected a header field name (a token of A-Z a-z 0-9 !#$%&'*+-.^_`|~)";
  const std::string cookie_name =
      p + ".name: expected a cookie name (a token of A-Z a-z 0-9 !#$%&'*+-.^_`|~)";
  expectRules({
      {withPool(servers + "hash_key: {type: client_ip}"),
       p + ": only for lb_algorithm consistent_hash"},
      {withPool(servers + "lb_algorithm: least_connections\nhash_key: {type: path}"),
       p + ": only for lb_algorithm consistent_hash"},
      {withPool(ch + "hash_key: {type: url}"),
       p + ".type: expected one of: client_ip, header, path, cookie"},
      {withPool(ch + "hash_key: {type: Header, name: X}"),
       p + ".type: expected one of: client_ip, header, path, cookie"},
      {withPool(ch + "hash_key: {type: [header]}"), p + ".type: expected a string"},
      {withPool(ch + "hash_key: {name: X}"), p + ".type: required key is missing"},
      {withPool(ch + "hash_key: {}"), p + ".type: required key is missing"},
      {withPool(ch + "hash_key:"), p + ".type: required key is missing"},
      {withPool(ch + "hash_key: client_ip"), p + ": expected a map"},
      {withPool(ch + "hash_key: {type: header}"), p + ".name: required key is missing"},
      {withPool(ch + "hash_key: {type: cookie}"), p + ".name: required key is missing"},
      {withPool(ch + "hash_key: {type: header, name: \"X Client\"}"), header_name},
      {withPool(ch + "hash_key: {type: header, name: \"X-Client:\"}"), header_name},
      {withPool(ch + "hash_key: {type: header, name: \"\"}"), header_name},
      {withPool(ch + "hash_key: {type: header, name: [X]}"), header_name},
      {withPool(ch + "hash_key: {type: cookie, name: \"a=b\"}"), cookie_name},
      {withPool(ch + "hash_key: {type: cookie, name: \"a;b\"}"), cookie_name},
      {withPool(ch + "hash_key: {type: client_ip, name: X}"),
       p + ".name: only for type header or cookie"},
      {withPool(ch + "hash_key: {type: path, name: X}"),
       p + ".name: only for type header or cookie"},
      {withPool(ch + "hash_key: {type: header, name: X, header: Y}"),
       p + ".header: unknown key (expected one of: type, name)"},
      // With an invalid algorithm or type, the rest is checked as if it were valid.
      {withPool(servers + "lb_algorithm: hash\nhash_key: {type: header, name: X}"),
       "pools[0].lb_algorithm: expected one of: round_robin, least_connections, "
       "least_response_time, consistent_hash, random_two_choices"},
      {withPool(ch + "hash_key: {type: ip, name: X-Client}"),
       p + ".type: expected one of: client_ip, header, path, cookie"},
  });
  EXPECT_THAT(
      errorsOf(withPool(ch + "hash_key: {type: ip, name: \"a b\"}")),
      ElementsAre("test.yaml:5: " + p + ".type: expected one of: client_ip, header, path, cookie",
                  "test.yaml:5: " + header_name));
  // Header and cookie names are kept as written (header names match case-insensitively).
  auto config = mustLoad(withPool(ch + "hash_key: {type: header, name: \"x-USER_id!\"}"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->pools[0].hash_key.name, "x-USER_id!");
}

TEST(ErrorTest, TcpServiceOnAPoolThatHashesOnHttp) {
  const std::string ch = "lb_algorithm: consistent_hash\nhash_key: ";
  EXPECT_THAT(errorsOf(withVs(kTcpVs, ch + "{type: header, name: X-Client}")),
              ElementsAre("test.yaml:11: virtual_services[0].pool: pool \"p\" hashes on a "
                          "header, which a tcp virtual service does not have"));
  EXPECT_EQ(onlyError(withVs(kTcpVs, ch + "{type: path}")),
            "virtual_services[0].pool: pool \"p\" hashes on the URI path, which a tcp virtual "
            "service does not have");
  EXPECT_EQ(onlyError(withVs(kTcpVs, ch + "{type: cookie, name: sid}")),
            "virtual_services[0].pool: pool \"p\" hashes on a cookie, which a tcp virtual "
            "service does not have");
  // Only the tcp service of two sharing the pool; the pool may come after the services.
  EXPECT_THAT(errorsOf(doc(R"(
virtual_services:
  - {name: web, listen: 127.0.0.1:8080, protocol: http, pool: p}
  - {name: raw, listen: 127.0.0.1:8081, protocol: tcp, pool: p}
pools:
  - name: p
    lb_algorithm: consistent_hash
    hash_key: {type: header, name: X-Client}
    servers: [{address: 127.0.0.1:9001}]
)")),
              ElementsAre("test.yaml:3: virtual_services[1].pool: pool \"p\" hashes on a "
                          "header, which a tcp virtual service does not have"));
}

TEST(RuleTest, PoolHealthMonitors) {
  const std::string monitors =
      "health_monitors:\n  - {name: a, type: tcp}\n"
      "  - {name: b, type: http}\n";
  const std::string servers = "name: p\nservers: [{address: 127.0.0.1:9001}]\n";
  const std::string p = "pools[0].health_monitors";
  expectRules({
      {monitors + withPool(servers + "health_monitors: [a, c]"),
       p + "[1]: no health monitor named \"c\""},
      {withPool(servers + "health_monitors: [a]"), p + "[0]: no health monitor named \"a\""},
      {monitors + withPool(servers + "health_monitors: [A]"),
       p + "[0]: no health monitor named \"A\""},
      {monitors + withPool(servers + "health_monitors: [a, b, a]"),
       p + "[2]: duplicate health monitor \"a\" (same as health_monitors[0])"},
      {monitors + withPool(servers + "health_monitors: [[a]]"), p + "[0]: expected a string"},
      {monitors + withPool(servers + "health_monitors: [{name: a}]"), p + "[0]: expected a string"},
      {monitors + withPool(servers + "health_monitors: a"), p + ": expected a list"},
      {monitors + withPool(servers + "health_monitors: {a: 1}"), p + ": expected a list"},
  });
  // A name that is both unknown and repeated is reported once as each.
  EXPECT_THAT(errorsOf(monitors + withPool(servers + "health_monitors: [c, b, c]")),
              ElementsAre("test.yaml:7: " + p + "[0]: no health monitor named \"c\"",
                          "test.yaml:7: " + p +
                              "[2]: duplicate health monitor \"c\" (same as health_monitors[0])"));
  // A monitor with errors of its own still counts as defined: one error, not two.
  EXPECT_EQ(onlyError("health_monitors:\n  - {name: a, type: ping}\n" +
                      withPool(servers + "health_monitors: [a]")),
            "health_monitors[0].type: expected one of: tcp, http, https");
  EXPECT_THAT(errorsOf(monitors + withPool(servers + "health_monitors:\n  - b\n  - x\n  - b\n")),
              ElementsAre("test.yaml:9: pools[0].health_monitors[1]: no health monitor named "
                          "\"x\"",
                          "test.yaml:10: pools[0].health_monitors[2]: duplicate health monitor "
                          "\"b\" (same as health_monitors[0])"));
  // Pools may share monitors.
  auto config = mustLoad(monitors + withPool(servers + "health_monitors: [b, a]") +
                         "  - name: q\n    servers: [{address: 127.0.0.1:9002}]\n"
                         "    health_monitors: [a]\n");
  ASSERT_NE(config, nullptr);
  EXPECT_THAT(config->pools[0].health_monitors, ElementsAre("b", "a"));
  EXPECT_THAT(config->pools[1].health_monitors, ElementsAre("a"));
}

TEST(RuleTest, OutlierDetection) {
  const std::string p = "pools[0].outlier_detection";
  auto od = [](const std::string& fields) {
    return withPool(kPoolBase + "outlier_detection: {" + fields + "}");
  };
  const std::string range = ": expected a duration greater than 0 and at most 24h";
  expectRules({
      {od("enabled: 1"), p + ".enabled: expected true or false"},
      {od("consecutive_5xx: 1001"), p + ".consecutive_5xx: expected an integer from 0 to 1000"},
      {od("consecutive_5xx: -1"), p + ".consecutive_5xx: expected an integer from 0 to 1000"},
      {od("consecutive_gateway_failure: 1001"),
       p + ".consecutive_gateway_failure: expected an integer from 0 to 1000"},
      {od("base_ejection_time: 0s"), p + ".base_ejection_time" + range},
      {od("base_ejection_time: 25h"), p + ".base_ejection_time" + range},
      {od("base_ejection_time: 30"),
       p + ".base_ejection_time: expected a duration with a unit, e.g. 300ms, 2s, 5m"},
      {od("max_ejection_time: 0s"),
       p + ".max_ejection_time: expected a duration from base_ejection_time (30s) to 24h"},
      {od("max_ejection_time: 10s"),
       p + ".max_ejection_time: expected a duration from base_ejection_time (30s) to 24h"},
      {od("max_ejection_time: 25h"),
       p + ".max_ejection_time: expected a duration from base_ejection_time (30s) to 24h"},
      {od("base_ejection_time: 1m, max_ejection_time: 59s"),
       p + ".max_ejection_time: expected a duration from base_ejection_time (1m) to 24h"},
      // An invalid base is not compared with.
      {od("base_ejection_time: 0s, max_ejection_time: 1s"), p + ".base_ejection_time" + range},
      {od("max_ejection_percent: 101"),
       p + ".max_ejection_percent: expected an integer from 0 to 100"},
      {od("panic_threshold: 101"), p + ".panic_threshold: expected an integer from 0 to 100"},
      {od("panic_threshold: 50%"), p + ".panic_threshold: expected an integer from 0 to 100"},
      {od("interval: 10s"),
       p + ".interval: unknown key (expected one of: enabled, consecutive_5xx, "
           "consecutive_gateway_failure, base_ejection_time, max_ejection_time, "
           "max_ejection_percent, panic_threshold)"},
      {withPool(kPoolBase + "outlier_detection: true"), p + ": expected a map"},
  });
  EXPECT_THAT(errorsOf(od("base_ejection_time: x, max_ejection_time: 0s")),
              ElementsAre("test.yaml:5: " + p +
                              ".base_ejection_time: expected a duration with a unit, e.g. 300ms, "
                              "2s, 5m",
                          "test.yaml:5: " + p + ".max_ejection_time" + range));
  auto config = mustLoad(od("base_ejection_time: 24h, max_ejection_time: 24h"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->pools[0].outlier_detection.max_ejection_time, hours(24));
  config = mustLoad(withPool(kPoolBase + "outlier_detection:\n"));
  ASSERT_NE(config, nullptr);
  EXPECT_TRUE(config->pools[0].outlier_detection.enabled);
}

// One health monitor with `fields` (and no pools).
std::string withMonitor(const std::string& fields) {
  return "health_monitors:\n  - " + indent(fields, 4).substr(4);
}

TEST(RuleTest, HealthMonitors) {
  const std::string m = "health_monitors[0].";
  const std::string name_rule =
      m + "name: expected a name of 1-64 characters from A-Z a-z 0-9 _ . -";
  const std::string interval = m + "interval: expected a duration from 100ms to 1h";
  const std::string status = ": expected a status code from 100 to 599 or a class from 2xx to 5xx";
  const std::string http = "name: h\ntype: http\n";
  expectRules({
      {withMonitor("type: tcp"), m + "name: required key is missing"},
      {withMonitor("name: a b\ntype: tcp"), name_rule},
      {withMonitor("name: " + std::string(65, 'a') + "\ntype: tcp"), name_rule},
      {withMonitor("name: h"), m + "type: required key is missing"},
      {withMonitor("name: h\ntype: udp"), m + "type: expected one of: tcp, http, https"},
      {withMonitor("name: h\ntype: HTTP"), m + "type: expected one of: tcp, http, https"},
      {withMonitor("name: h\ntype: [tcp]"), m + "type: expected a string"},
      {withMonitor(http + "interval: 99ms"), interval},
      {withMonitor(http + "interval: 0s"), interval},
      {withMonitor(http + "interval: 61m"), interval},
      {withMonitor(http + "interval: 5"),
       m + "interval: expected a duration with a unit, e.g. 300ms, 2s, 5m"},
      {withMonitor(http + "timeout: 0s"),
       m + "timeout: expected a duration greater than 0 and at most the interval (5s)"},
      {withMonitor(http + "timeout: 5001ms"),
       m + "timeout: expected a duration greater than 0 and at most the interval (5s)"},
      {withMonitor(http + "interval: 1s\ntimeout: 2s"),
       m + "timeout: expected a duration greater than 0 and at most the interval (1s)"},
      {withMonitor(http + "timeout: 1s\ninterval: 500ms"),
       m + "timeout: expected a duration greater than 0 and at most the interval (500ms)"},
      // An invalid interval is not compared with.
      {withMonitor(http + "interval: 2h\ntimeout: 1h"), interval},
      {withMonitor(http + "rise: 0"), m + "rise: expected an integer from 1 to 100"},
      {withMonitor(http + "rise: 101"), m + "rise: expected an integer from 1 to 100"},
      {withMonitor(http + "fall: 0"), m + "fall: expected an integer from 1 to 100"},
      {withMonitor(http + "fall: 101"), m + "fall: expected an integer from 1 to 100"},
      {withMonitor(http + "port: 0"), m + "port: expected an integer from 1 to 65535"},
      {withMonitor(http + "port: 65536"), m + "port: expected an integer from 1 to 65535"},
      {withMonitor(http + "port: \"127.0.0.1:80\""),
       m + "port: expected an integer from 1 to 65535"},
      {withMonitor(http + "request: GET"),
       m + "request: expected \"METHOD /path\", e.g. \"GET /health\""},
      {withMonitor(http + "request: /health"),
       m + "request: expected \"METHOD /path\", e.g. \"GET /health\""},
      {withMonitor(http + "request: \"G(T /\""),
       m + "request: the method must be a token, e.g. GET or HEAD"},
      {withMonitor(http + "request: \"GET health\""),
       m + "request: the path must start with / and contain only visible ASCII characters, no "
           "spaces or #"},
      {withMonitor(http + "request: \"GET /health HTTP/1.1\""),
       m + "request: the path must start with / and contain only visible ASCII characters, no "
           "spaces or #"},
      {withMonitor(http + "request: [GET, /]"), m + "request: expected a string"},
      {withMonitor(http + "host: \"a b\""),
       m + "host: expected a host name or IP address and an optional port, e.g. "
           "health.example.com or 10.0.0.1:8080"},
      {withMonitor(http + "host: \"::1\""),
       m + "host: expected a host name or IP address and an optional port, e.g. "
           "health.example.com or 10.0.0.1:8080"},
      {withMonitor(http + "host: \"example.com:0\""),
       m + "host: expected a host name or IP address and an optional port, e.g. "
           "health.example.com or 10.0.0.1:8080"},
      {withMonitor(http + "expect: []"), m + "expect: expected at least one status code or class"},
      {withMonitor(http + "expect:"), m + "expect: expected at least one status code or class"},
      {withMonitor(http + "expect: 200"), m + "expect: expected a list"},
      {withMonitor(http + "expect: [200, 600]"), m + "expect[1]" + status},
      {withMonitor(http + "expect: [1xx]"), m + "expect[0]" + status},
      {withMonitor(http + "expect: [2XX]"), m + "expect[0]" + status},
      {withMonitor(http + "expect: [[200]]"), m + "expect[0]" + status},
      {withMonitor(http + "expect: [200-299]"), m + "expect[0]" + status},
      {withMonitor(http + "body: \"\""),
       m + "body: expected a non-empty string (leave the key out to accept any body)"},
      {withMonitor(http + "body: [ok]"), m + "body: expected a string"},
      {withMonitor(http + "path: /x"),
       m + "path: unknown key (expected one of: name, type, interval, timeout, rise, fall, "
           "request, host, expect, body, port)"},
      {"health_monitors: {name: a, type: tcp}", "health_monitors: expected a list"},
      {"health_monitors: [tcp]", "health_monitors[0]: expected a map"},
  });
  // Bounds are inclusive.
  auto config = mustLoad(withMonitor("name: h\ntype: tcp\ninterval: 1h\ntimeout: 1h"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->health_monitors[0].timeout, hours(1));
  config = mustLoad(withMonitor("name: h\ntype: https\nexpect: [100, 599]"));
  ASSERT_NE(config, nullptr);
  EXPECT_THAT(config->health_monitors[0].expect,
              ElementsAre(std::make_pair(100, 100), std::make_pair(599, 599)));
  // An empty list of monitors is valid.
  EXPECT_NE(mustLoad("health_monitors: []"), nullptr);
  EXPECT_NE(mustLoad("health_monitors:\n"), nullptr);
}

TEST(ErrorTest, HealthMonitorNamesAreUnique) {
  EXPECT_THAT(errorsOf(doc(R"(
health_monitors:
  - {name: a, type: tcp}
  - {name: a, type: http}
)")),
              ElementsAre("test.yaml:3: health_monitors[1].name: health monitor \"a\" is already "
                          "defined on line 2"));
  // Monitors, pools and virtual services have separate names.
  EXPECT_NE(mustLoad("health_monitors: [{name: p, type: tcp}]\n" + withVs(kHttpVs)), nullptr);
}

TEST(ErrorTest, HttpKeysOnATcpMonitor) {
  EXPECT_THAT(errorsOf(doc(R"(
health_monitors:
  - name: t
    type: tcp
    request: "GET /"
    host: example.com
    expect: [200]
    body: ok
    port: 8080
    interval: 1s
)")),
              ElementsAre("test.yaml:4: health_monitors[0].request: only for type http or https",
                          "test.yaml:5: health_monitors[0].host: only for type http or https",
                          "test.yaml:6: health_monitors[0].expect: only for type http or https",
                          "test.yaml:7: health_monitors[0].body: only for type http or https"));
  // The type may come after the keys it governs; an invalid type checks them as for http.
  EXPECT_EQ(onlyError("health_monitors: [{body: ok, name: t, type: tcp}]"),
            "health_monitors[0].body: only for type http or https");
  EXPECT_THAT(errorsOf("health_monitors: [{name: t, type: ping, request: \"GET x\"}]"),
              ElementsAre("test.yaml:1: health_monitors[0].type: expected one of: tcp, http, https",
                          "test.yaml:1: health_monitors[0].request: the path must start with / "
                          "and contain only visible ASCII characters, no spaces or #"));
}

TEST(RuleTest, Retries) {
  expectRules({
      {withVs(kHttpVs + "retries: 11"),
       "virtual_services[0].retries: expected an integer from 0 "
       "to 10"},
      {withVs(kTcpVs + "retries: -1"),
       "virtual_services[0].retries: expected an integer from 0 "
       "to 10"},
      {withVs(kHttpVs + "retries: many"),
       "virtual_services[0].retries: expected an integer from "
       "0 to 10"},
  });
  auto config = mustLoad(withVs(kTcpVs + "retries: 10"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->virtual_services[0].retries, 10u);
}

TEST(RuleTest, AccessLog) {
  const std::string p = "virtual_services[0].access_log: ";
  expectRules({
      {withVs(kHttpVs + "access_log: \"\""), p + "expected stdout or a file path"},
      {withVs(kHttpVs + "access_log:"), p + "expected a string"},
      {withVs(kHttpVs + "access_log: [stdout]"), p + "expected a string"},
      {withVs(kHttpVs + "access_log: stderr"),
       p + "expected stdout or a file path (stderr is not supported)"},
      {withVs(kHttpVs + "access_log: /nonexistent-ballast-dir/access.log"),
       p + "directory \"/nonexistent-ballast-dir\" does not exist"},
      {withVs(kHttpVs + "access_log: nonexistent-ballast-dir/access.log"),
       p + "directory \"nonexistent-ballast-dir\" does not exist"},
      {withVs(kHttpVs + "access_log: /"), p + "expected a file path, not a directory"},
      {withVs(kHttpVs + "access_log: logs/"), p + "expected a file path, not a directory"},
      {withVs(kHttpVs + "access_log: \"a\\tb.log\""), p + "the path contains a control character"},
  });
  // Relative paths are relative to the working directory, which exists.
  auto config = mustLoad(withVs(kTcpVs + "access_log: ballast-access.log"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->virtual_services[0].access_log, "ballast-access.log");
  EXPECT_NE(mustLoad(withVs(kHttpVs + "access_log: ./a.log")), nullptr);
  EXPECT_NE(mustLoad(withVs(kHttpVs + "access_log: /a.log")), nullptr);  // in "/"
}

TEST(RuleTest, ControlSocket) {
  expectRules({
      {"se: {control_socket: \"\"}", "se.control_socket: expected the path of a Unix socket"},
      {"se: {control_socket: [a]}", "se.control_socket: expected a string"},
      {"se: {control_socket: /" + std::string(107, 's') + "}",
       "se.control_socket: expected a path of at most 107 bytes (the limit of a Unix socket "
       "address)"},
      {"se: {control_socket: /nonexistent-ballast-dir/ctl.sock}",
       "se.control_socket: directory \"/nonexistent-ballast-dir\" does not exist"},
      {"se: {control_socket: /}", "se.control_socket: expected a file path, not a directory"},
  });
  auto config = mustLoad("se: {control_socket: ballast.sock}");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->se.control_socket, "ballast.sock");
}

// ---------------------------------------------------------------------------------------------
// Files

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "ballast_config_XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    ASSERT_NE(mkdtemp(buffer.data()), nullptr);
    dir_ = buffer.data();
  }
  void TearDown() override {
    for (const std::string& file : files_) unlink(file.c_str());
    rmdir(dir_.c_str());
  }
  std::string write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    files_.push_back(path);
    return path;
  }

  std::string dir_;
  std::vector<std::string> files_;
};

TEST_F(FileTest, LoadsAFileAndRecordsItsPath) {
  std::string path = write("ok.yaml", withVs(kHttpVs));
  LoadResult result = loadFile(path);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.config->source, path);
}

TEST_F(FileTest, ErrorsNameTheFile) {
  std::string path = write("bad.yaml", "se:\n  workers: 0\n");
  LoadResult result = loadFile(path);
  ASSERT_FALSE(result.ok());
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].file, path);
  EXPECT_EQ(result.errors[0].line, 2);
  EXPECT_EQ(result.errors[0].toString(),
            path + ":2: se.workers: expected an integer from 1 to 256");
}

TEST_F(FileTest, UnreadableFiles) {
  LoadResult missing = loadFile(dir_ + "/missing.yaml");
  ASSERT_FALSE(missing.ok());
  ASSERT_EQ(missing.errors.size(), 1u);
  EXPECT_EQ(missing.errors[0].line, 0);
  EXPECT_EQ(missing.errors[0].toString(),
            dir_ + "/missing.yaml: cannot read: No such file or directory");

  LoadResult directory = loadFile(dir_);
  ASSERT_FALSE(directory.ok());
  ASSERT_EQ(directory.errors.size(), 1u);
  EXPECT_EQ(directory.errors[0].toString(), dir_ + ": cannot read: Is a directory");
}

// Paths of files the service engine creates at startup: only their directory must exist.
TEST_F(FileTest, AccessLogAndControlSocketDirectories) {
  auto config = mustLoad("se: {control_socket: " + dir_ + "/ctl.sock}\n" +
                         withVs(kHttpVs + "access_log: " + dir_ + "/access.log"));
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->se.control_socket, dir_ + "/ctl.sock");
  EXPECT_EQ(config->virtual_services[0].access_log, dir_ + "/access.log");
  // An existing file is fine (the log is appended to).
  std::string existing = write("old.log", "x\n");
  EXPECT_NE(mustLoad(withVs(kHttpVs + "access_log: " + existing)), nullptr);

  const std::string p = "virtual_services[0].access_log: ";
  EXPECT_EQ(onlyError(withVs(kHttpVs + "access_log: " + dir_)),
            p + "\"" + dir_ + "\" is a directory");
  EXPECT_EQ(onlyError(withVs(kHttpVs + "access_log: " + dir_ + "/missing/access.log")),
            p + "directory \"" + dir_ + "/missing\" does not exist");
  EXPECT_EQ(onlyError(withVs(kHttpVs + "access_log: " + existing + "/access.log")),
            p + "\"" + existing + "\" is not a directory");
  EXPECT_EQ(onlyError(withVs(kHttpVs + "access_log: " + existing + "/sub/access.log")),
            p + "directory \"" + existing + "/sub\" does not exist");
  EXPECT_EQ(onlyError("se: {control_socket: " + dir_ + "/missing/ctl.sock}"),
            "se.control_socket: directory \"" + dir_ + "/missing\" does not exist");

  // A socket path of exactly 107 bytes is accepted.
  std::string longest = dir_ + "/";
  longest += std::string(107 - longest.size(), 's');
  ASSERT_EQ(longest.size(), 107u);
  config = mustLoad("se: {control_socket: " + longest + "}");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->se.control_socket, longest);
  EXPECT_EQ(onlyError("se: {control_socket: " + longest + "s}"),
            "se.control_socket: expected a path of at most 107 bytes (the limit of a Unix socket "
            "address)");
}

// store.redis.password_file is read when the file is loaded.
TEST_F(FileTest, RedisPasswordFile) {
  auto withPassword = [](const std::string& path) {
    return "store:\n  type: redis\n  redis:\n    password_file: \"" + path + "\"\n";
  };
  struct Good {
    std::string content;
    std::string password;
  };
  int n = 0;
  for (const Good& c : {Good{"s3cret\n", "s3cret"}, Good{"s3cret", "s3cret"},
                        Good{"s3cret\r\n", "s3cret"}, Good{"s3cret \t\n\n", "s3cret"},
                        // Only trailing whitespace is removed.
                        Good{"  pass word\n", "  pass word"}, Good{"a\nb\n", "a\nb"},
                        Good{std::string(4096, 'p') + "\n", std::string(4096, 'p')},
                        Good{"p" + std::string(5000, ' ') + "\n", "p"}}) {
    std::string path = write("good" + std::to_string(n++) + ".pass", c.content);
    auto config = mustLoad(withPassword(path));
    ASSERT_NE(config, nullptr) << c.content;
    EXPECT_EQ(config->store.redis.password_file, path);
    EXPECT_EQ(config->store.redis.password, c.password);
  }

  const std::string p = "store.redis.password_file: ";
  std::string empty = write("empty.pass", "");
  EXPECT_EQ(onlyError(withPassword(empty)), p + "\"" + empty + "\" is empty");
  std::string blank = write("blank.pass", " \n\t\r\n");
  EXPECT_EQ(onlyError(withPassword(blank)), p + "\"" + blank + "\" is empty");
  std::string big = write("big.pass", std::string(4097, 'p') + "\n");
  EXPECT_EQ(onlyError(withPassword(big)),
            p + "\"" + big + "\" is too long for a password (at most 4096 bytes)");
  EXPECT_EQ(onlyError(withPassword(dir_ + "/missing.pass")),
            p + "cannot read \"" + dir_ + "/missing.pass\": No such file or directory");
  EXPECT_EQ(onlyError(withPassword(dir_)), p + "cannot read \"" + dir_ + "\": Is a directory");
  if (access("/dev/zero", R_OK) == 0) {  // endless: not read to the end
    EXPECT_EQ(onlyError(withPassword("/dev/zero")),
              p + "\"/dev/zero\" is too long for a password (at most 4096 bytes)");
  }
  // The file of a redis map that is not used is not read.
  EXPECT_EQ(onlyError("store: {redis: {password_file: " + dir_ + "/missing.pass}}"),
            "store.redis: only for type redis");
  // A message never shows the password.
  std::string secret = write("secret.pass", "TOPSECRET" + std::string(5000, 'x'));
  EXPECT_THAT(onlyError(withPassword(secret)), ::testing::Not(::testing::HasSubstr("TOPSECRET")));
}

TEST_F(FileTest, EmptyFile) {
  std::string path = write("empty.yaml", "");
  EXPECT_EQ(loadFile(path).errors.at(0).toString(), path + ": the configuration is empty");
}

// The repository's own examples must stay valid.
std::string repoFile(const std::string& relative) {
  std::string here = __FILE__;  // <repo>/tests/unit/config/config_test.cc
  std::string root = here.substr(0, here.rfind("/tests/unit/config/"));
  return root + "/" + relative;
}

TEST(ExamplesTest, QuickstartLoads) {
  LoadResult result = loadFile(repoFile("examples/quickstart.yaml"));
  for (const ConfigError& error : result.errors) ADD_FAILURE() << error.toString();
  ASSERT_TRUE(result.ok());
  const Config& config = *result.config;
  EXPECT_EQ(config.se.workers, 2u);
  EXPECT_EQ(config.se.admin_text, "127.0.0.1:9901");
  ASSERT_EQ(config.virtual_services.size(), 2u);
  EXPECT_EQ(config.virtual_services[0].name, "web");
  EXPECT_EQ(config.virtual_services[0].protocol, Protocol::Http);
  EXPECT_EQ(config.virtual_services[0].listen.toString(), "127.0.0.1:8080");
  EXPECT_EQ(config.virtual_services[1].name, "web-tcp");
  EXPECT_EQ(config.virtual_services[1].protocol, Protocol::Tcp);
  EXPECT_EQ(config.virtual_services[1].listen.toString(), "127.0.0.1:8081");
  ASSERT_EQ(config.pools.size(), 1u);
  EXPECT_EQ(config.pools[0].name, "demo");
  ASSERT_EQ(config.pools[0].servers.size(), 2u);
  EXPECT_EQ(config.pools[0].servers[0].address.toString(), "127.0.0.1:9001");
  EXPECT_EQ(config.pools[0].servers[1].address.toString(), "127.0.0.1:9002");
  for (const VirtualService& vs : config.virtual_services) EXPECT_EQ(vs.pool, "demo");
}

// Every examples/*.yaml loads (they are meant to be copied).
TEST(ExamplesTest, EveryExampleFileLoads) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(repoFile("examples"))) {
    if (entry.is_regular_file() && entry.path().extension() == ".yaml") {
      files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  EXPECT_GE(files.size(), 2u);  // at least quickstart.yaml and pools.yaml
  for (const std::string& file : files) {
    LoadResult result = loadFile(file);
    for (const ConfigError& error : result.errors) ADD_FAILURE() << error.toString();
    EXPECT_TRUE(result.ok()) << file;
  }
}

// examples/pools.yaml shows every algorithm and the health settings.
TEST(ExamplesTest, PoolsExampleShowsEveryFeature) {
  LoadResult result = loadFile(repoFile("examples/pools.yaml"));
  for (const ConfigError& error : result.errors) ADD_FAILURE() << error.toString();
  ASSERT_TRUE(result.ok());
  const Config& config = *result.config;
  std::vector<LbAlgorithm> algorithms;
  std::vector<HashKeyType> keys;
  bool drain = false;
  bool limit = false;
  bool monitored = false;
  bool outlier = false;
  for (const Pool& pool : config.pools) {
    algorithms.push_back(pool.lb_algorithm);
    if (pool.lb_algorithm == LbAlgorithm::ConsistentHash) keys.push_back(pool.hash_key.type);
    for (const Server& server : pool.servers) {
      drain = drain || server.drain;
      limit = limit || server.max_connections != 0;
    }
    monitored = monitored || !pool.health_monitors.empty();
    outlier = outlier || pool.outlier_detection.consecutive_5xx != 5;
  }
  for (LbAlgorithm a :
       {LbAlgorithm::RoundRobin, LbAlgorithm::LeastConnections, LbAlgorithm::LeastResponseTime,
        LbAlgorithm::RandomTwoChoices, LbAlgorithm::ConsistentHash}) {
    EXPECT_NE(std::find(algorithms.begin(), algorithms.end(), a), algorithms.end()) << toString(a);
  }
  EXPECT_FALSE(keys.empty());
  EXPECT_TRUE(drain);
  EXPECT_TRUE(limit);
  EXPECT_TRUE(monitored);
  EXPECT_TRUE(outlier);
  std::vector<MonitorType> types;
  for (const HealthMonitor& m : config.health_monitors) types.push_back(m.type);
  for (MonitorType t : {MonitorType::Tcp, MonitorType::Http, MonitorType::Https}) {
    EXPECT_NE(std::find(types.begin(), types.end(), t), types.end()) << toString(t);
  }
  EXPECT_TRUE(std::any_of(config.virtual_services.begin(), config.virtual_services.end(),
                          [](const VirtualService& vs) { return !vs.access_log.empty(); }));
}

// examples/persistence.yaml shows the Redis store and every persistence type.
TEST(ExamplesTest, PersistenceExampleShowsEveryType) {
  LoadResult result = loadFile(repoFile("examples/persistence.yaml"));
  for (const ConfigError& error : result.errors) ADD_FAILURE() << error.toString();
  ASSERT_TRUE(result.ok());
  const Config& config = *result.config;
  EXPECT_EQ(config.store.type, "redis");
  std::vector<PersistenceType> types;
  bool tcp = false;
  bool grouped = false;
  for (const VirtualService& vs : config.virtual_services) {
    types.push_back(vs.persistence.type);
    tcp = tcp || (vs.protocol == Protocol::Tcp && vs.persistence.type == PersistenceType::ClientIp);
    grouped = grouped || vs.persistence.ipv4_prefix != 32;
  }
  for (PersistenceType t : {PersistenceType::ClientIp, PersistenceType::HttpHeader,
                            PersistenceType::HttpCookie, PersistenceType::AppCookie}) {
    EXPECT_NE(std::find(types.begin(), types.end(), t), types.end()) << toString(t);
  }
  EXPECT_TRUE(tcp);
  EXPECT_TRUE(grouped);
}

// docs/configuration.md's "Full example" is loaded as written, so the reference cannot drift
// from the loader.
TEST(ExamplesTest, DocumentationFullExampleLoads) {
  std::ifstream in(repoFile("docs/configuration.md"));
  ASSERT_TRUE(in) << "cannot open docs/configuration.md";
  std::stringstream text;
  text << in.rdbuf();
  std::string md = text.str();
  size_t heading = md.find("\n## Full example");
  ASSERT_NE(heading, std::string::npos);
  size_t start = md.find("```yaml\n", heading);
  ASSERT_NE(start, std::string::npos);
  start += 8;
  size_t end = md.find("\n```", start);
  ASSERT_NE(end, std::string::npos);
  auto config = mustLoad(md.substr(start, end - start + 1));
  ASSERT_NE(config, nullptr);
  EXPECT_FALSE(config->virtual_services.empty());
  EXPECT_FALSE(config->pools.empty());
  EXPECT_FALSE(config->health_monitors.empty());
  // It shows the Redis store and every persistence type.
  EXPECT_EQ(config->store.type, "redis");
  for (PersistenceType t : {PersistenceType::ClientIp, PersistenceType::HttpHeader,
                            PersistenceType::HttpCookie, PersistenceType::AppCookie}) {
    EXPECT_TRUE(std::any_of(config->virtual_services.begin(), config->virtual_services.end(),
                            [&](const VirtualService& vs) { return vs.persistence.type == t; }))
        << toString(t);
  }
}


// ---------------------------------------------------------------------------------------------
// SE groups (the controller places virtual services on the SEs of a group)

TEST(SeGroupsTest, DefaultsAndReferences) {
  auto config = mustLoad(withVs(kHttpVs) + "se_groups:\n  - name: edge\n");
  ASSERT_EQ(config->se_groups.size(), 1u);
  const SeGroup& g = config->se_groups[0];
  EXPECT_EQ(g.name, "edge");
  EXPECT_EQ(g.max_vs_per_se, 10u);
  EXPECT_EQ(g.min_se_per_vs, 1u);
  EXPECT_EQ(g.ha_mode, "n_plus_m");
  EXPECT_EQ(g.spares, 0u);
  EXPECT_EQ(config->virtual_services[0].se_group, "default");  // implied, needs no entry

  config = mustLoad(withVs(kHttpVs + "se_group: edge\n") +
                    "se_groups:\n  - { name: edge, max_vs_per_se: 3, min_se_per_vs: 2, spares: 1 }\n");
  EXPECT_EQ(config->virtual_services[0].se_group, "edge");
  EXPECT_EQ(config->se_groups[0].max_vs_per_se, 3u);
  EXPECT_EQ(config->se_groups[0].min_se_per_vs, 2u);
  EXPECT_EQ(config->se_groups[0].spares, 1u);
}

TEST(SeGroupsTest, Errors) {
  EXPECT_EQ(onlyError(withVs(kHttpVs + "se_group: nowhere\n")),
            "virtual_services[0].se_group: no SE group named \"nowhere\"");
  EXPECT_EQ(onlyError("se_groups:\n  - { name: a }\n  - { name: a }\n"),
            "se_groups[1].name: SE group \"a\" is already defined on line 2");
  EXPECT_EQ(onlyError("se_groups:\n  - { name: a, min_se_per_vs: 0 }\n"),
            "se_groups[0].min_se_per_vs: expected an integer from 1 to 1000");
  EXPECT_EQ(onlyError("se_groups:\n  - { name: a, ha_mode: active_standby }\n"),
            "se_groups[0].ha_mode: expected n_plus_m (the only HA mode for now)");
  EXPECT_EQ(onlyError("se_groups:\n  - { name: a, colour: red }\n"),
            "se_groups[0].colour: unknown key (expected one of: name, max_vs_per_se, "
            "min_se_per_vs, ha_mode, spares)");
  EXPECT_EQ(onlyError("se_groups:\n  - { max_vs_per_se: 2 }\n"), "se_groups[0].name: required key is missing");
}

}  // namespace
}  // namespace ballast::config
