// The checker as a whole, against real servers on 127.0.0.1: state machine (initial state, fall,
// rise), events and their reasons, pools, apply(), spreading and stopping.
#include "health/health_checker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <optional>

#include "health_test_util.h"

namespace ballast::health {
namespace {

using namespace std::chrono_literals;
using testing::TestServer;
using testing::waitUntil;
using Fields = std::vector<std::pair<std::string, std::string>>;

class RecordingSink : public EventSink {
 public:
  void emit(Event event) override {
    std::function<void(const Event&)> hook;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      events_.push_back(event);
      hook = hook_;
    }
    if (hook) hook(event);
  }
  // Called on the checker's thread at each event (the state of the world at that instant).
  void setHook(std::function<void(const Event&)> hook) {
    std::lock_guard<std::mutex> lock(mutex_);
    hook_ = std::move(hook);
  }
  std::vector<Event> events() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return events_;
  }
  size_t count(const std::string& type, const std::string& server = "") const {
    std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<size_t>(std::count_if(events_.begin(), events_.end(), [&](const Event& e) {
      return e.type == type && (server.empty() || field(e, "server") == server);
    }));
  }
  // The last event of this type (for this server), waiting up to timeout_ms for `n` of them.
  std::optional<Event> waitFor(const std::string& type, const std::string& server = "",
                               size_t n = 1, uint64_t timeout_ms = 3000) const {
    if (!waitUntil([&] { return count(type, server) >= n; }, timeout_ms)) return std::nullopt;
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = events_.rbegin(); it != events_.rend(); ++it)
      if (it->type == type && (server.empty() || field(*it, "server") == server)) return *it;
    return std::nullopt;
  }
  static std::string field(const Event& e, const std::string& key) {
    for (const auto& [k, v] : e.fields)
      if (k == key) return v;
    return "";
  }

 private:
  mutable std::mutex mutex_;
  std::vector<Event> events_;
  std::function<void(const Event&)> hook_;
};

config::HealthMonitor makeMonitor(std::string name, config::MonitorType type, uint32_t rise = 2,
                                  uint32_t fall = 3, config::Duration interval = 50ms) {
  config::HealthMonitor m;
  m.name = std::move(name);
  m.type = type;
  m.interval = interval;
  m.timeout = 500ms;
  m.rise = rise;
  m.fall = fall;
  return m;
}

// Pools built as the service engine builds them: server state found again by id.
struct World {
  struct PoolDef {
    std::string name;
    std::vector<std::string> servers;  // addresses as written
    std::vector<const config::HealthMonitor*> monitors;
  };

  std::shared_ptr<const std::vector<lb::Pool>> pools(const std::vector<PoolDef>& defs) {
    auto pools = std::make_shared<std::vector<lb::Pool>>();
    for (const PoolDef& d : defs) {
      lb::Pool pool;
      pool.name = d.name;
      for (const std::string& address : d.servers) {
        lb::Server s;
        s.address_text = address;
        std::string error;
        s.address = *SocketAddress::parseLiteral(address, &error);
        s.id = d.name + "/" + address;
        s.index = static_cast<uint32_t>(pool.servers.size());
        auto& st = states[s.id];
        if (!st) st = std::make_shared<lb::ServerState>(s.id, 1, s.index);
        s.state = st;
        pool.servers.push_back(std::move(s));
      }
      pool.monitors = d.monitors;
      lb::preparePool(pool);
      pools->push_back(std::move(pool));
    }
    return pools;
  }
  lb::ServerState& state(const std::string& pool, const std::string& address) {
    return *states.at(pool + "/" + address);
  }

  std::map<std::string, std::shared_ptr<lb::ServerState>> states;
};

// An HTTP server whose answer the test switches; counts what it served since the last switch.
class SwitchableServer {
 public:
  explicit SwitchableServer(int status = 200)
      : status_(status), server_([this](int fd) { return handle(fd); }) {}

  void switchTo(int status) {
    std::lock_guard<std::mutex> lock(mutex_);
    status_ = status;
    served_since_switch_ = 0;
  }
  int servedSinceSwitch() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return served_since_switch_;
  }
  std::string address() const { return server_.address(); }

 private:
  bool handle(int fd) {
    testing::readHead(fd);
    int status;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      status = status_;
      ++served_since_switch_;
    }
    testing::sendAll(fd, "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Length: 0\r\n\r\n");
    return true;
  }

  mutable std::mutex mutex_;
  int status_;
  int served_since_switch_ = 0;
  TestServer server_;
};

TEST(HealthChecker, InitialStateGoesDownOnTheFirstFailure) {
  RecordingSink sink;
  World world;
  auto tcp = makeMonitor("tcp-check", config::MonitorType::Tcp, 2, 3);
  testing::ClosedPort closed;
  const std::string dead = closed.address();
  HealthChecker checker(sink);
  checker.start();
  const uint64_t start = testing::nowMs();
  checker.apply(world.pools({{"web", {dead}, {&tcp}}}));
  auto down = sink.waitFor("server_down", dead);
  ASSERT_TRUE(down);
  EXPECT_LT(testing::nowMs() - start, 500u);  // one check, within the first interval
  EXPECT_EQ(down->fields, (Fields{{"pool", "web"},
                                  {"server", dead},
                                  {"monitor", "tcp-check"},
                                  {"reason", "fall 1/1 (initial): connect refused"}}));
  EXPECT_FALSE(world.state("web", dead).healthy.load());
  EXPECT_EQ(world.state("web", dead).healthNote().reason, "fall 1/1 (initial): connect refused");
  EXPECT_NE(world.state("web", dead).healthNote().changed_ms, 0u);
  auto pool_down = sink.waitFor("pool_down");
  ASSERT_TRUE(pool_down);
  EXPECT_EQ(pool_down->fields, (Fields{{"pool", "web"}, {"reason", "no server is up"}}));
  // Order: the server, then its pool.
  auto events = sink.events();
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[0].type, "server_down");
  EXPECT_EQ(events[1].type, "pool_down");
}

TEST(HealthChecker, TcpPassingServerStaysUpWithoutEvents) {
  RecordingSink sink;
  World world;
  TestServer server(TestServer::acceptAndClose());
  auto tcp = makeMonitor("tcp", config::MonitorType::Tcp);
  HealthChecker checker(sink);
  checker.start();
  checker.apply(world.pools({{"web", {server.address()}, {&tcp}}}));
  EXPECT_TRUE(waitUntil([&] { return server.connections() >= 4; }));
  EXPECT_TRUE(world.state("web", server.address()).healthy.load());
  EXPECT_TRUE(sink.events().empty());
}

TEST(HealthChecker, DownAfterExactlyFallFailuresUpAfterExactlyRiseSuccesses) {
  RecordingSink sink;
  World world;
  SwitchableServer server(200);
  auto http = makeMonitor("http-ok", config::MonitorType::Http, 2, 3, 60ms);
  std::mutex mutex;
  std::map<std::string, int> served_at;  // event type -> responses since the switch, at the event
  sink.setHook([&](const Event& e) {
    std::lock_guard<std::mutex> lock(mutex);
    served_at[e.type] = server.servedSinceSwitch();
  });
  HealthChecker checker(sink);
  checker.start();
  checker.apply(world.pools({{"web", {server.address()}, {&http}}}));
  ASSERT_TRUE(waitUntil([&] { return server.servedSinceSwitch() >= 2; }));

  server.switchTo(500);
  auto down = sink.waitFor("server_down");
  ASSERT_TRUE(down);
  EXPECT_EQ(RecordingSink::field(*down, "reason"), "fall 3/3: HTTP 500");
  EXPECT_EQ(RecordingSink::field(*down, "monitor"), "http-ok");
  EXPECT_FALSE(world.state("web", server.address()).healthy.load());
  {
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_EQ(served_at["server_down"], 3);
  }

  server.switchTo(200);
  auto up = sink.waitFor("server_up");
  ASSERT_TRUE(up);
  EXPECT_EQ(up->fields, (Fields{{"pool", "web"},
                                {"server", server.address()},
                                {"monitor", "http-ok"},
                                {"reason", "rise 2/2"}}));
  EXPECT_TRUE(world.state("web", server.address()).healthy.load());
  EXPECT_EQ(world.state("web", server.address()).healthNote().reason, "rise 2/2");
  {
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_EQ(served_at["server_up"], 2);
  }
  // A failure after rising again is one of `fall` again, not the initial one-strike state.
  server.switchTo(500);
  ASSERT_TRUE(sink.waitFor("server_down", "", 2));
  std::lock_guard<std::mutex> lock(mutex);
  EXPECT_EQ(served_at["server_down"], 3);
}

TEST(HealthChecker, PoolDownWhenTheLastServerGoesAndUpWhenOneComesBack) {
  RecordingSink sink;
  World world;
  SwitchableServer a(200), b(200);
  auto http = makeMonitor("http", config::MonitorType::Http, 1, 1, 40ms);
  HealthChecker checker(sink);
  checker.start();
  checker.apply(world.pools({{"web", {a.address(), b.address()}, {&http}}}));
  ASSERT_TRUE(waitUntil([&] { return a.servedSinceSwitch() >= 1 && b.servedSinceSwitch() >= 1; }));
  a.switchTo(500);
  ASSERT_TRUE(sink.waitFor("server_down", a.address()));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(sink.count("pool_down"), 0u);
  b.switchTo(503);
  auto pool_down = sink.waitFor("pool_down");
  ASSERT_TRUE(pool_down);
  EXPECT_EQ(pool_down->fields, (Fields{{"pool", "web"}, {"reason", "no server is up"}}));
  a.switchTo(200);
  auto pool_up = sink.waitFor("pool_up");
  ASSERT_TRUE(pool_up);
  EXPECT_EQ(pool_up->fields, (Fields{{"pool", "web"}}));
  std::vector<std::string> sequence;
  for (const Event& e : sink.events())
    sequence.push_back(e.type + " " + RecordingSink::field(e, "server"));
  EXPECT_EQ(sequence, (std::vector<std::string>{"server_down " + a.address(),
                                                "server_down " + b.address(), "pool_down ",
                                                "server_up " + a.address(), "pool_up "}));
  EXPECT_EQ(RecordingSink::field(*sink.waitFor("server_down", b.address()), "reason"),
            "fall 1/1: HTTP 503");
}

TEST(HealthChecker, EveryMonitorOfThePoolMustPass) {
  RecordingSink sink;
  World world;
  SwitchableServer server(500);
  auto tcp = makeMonitor("tcp", config::MonitorType::Tcp);
  auto http = makeMonitor("http", config::MonitorType::Http, 1, 1);
  HealthChecker checker(sink);
  checker.start();
  checker.apply(world.pools({{"web", {server.address()}, {&tcp, &http}}}));
  auto down = sink.waitFor("server_down");
  ASSERT_TRUE(down);
  EXPECT_EQ(RecordingSink::field(*down, "monitor"), "http");
  EXPECT_EQ(RecordingSink::field(*down, "reason"), "fall 1/1 (initial): HTTP 500");
  server.switchTo(200);
  auto up = sink.waitFor("server_up");
  ASSERT_TRUE(up);
  EXPECT_EQ(RecordingSink::field(*up, "reason"), "rise 1/1");
  EXPECT_EQ(sink.count("server_down"), 1u);  // the tcp monitor never failed
}

TEST(HealthChecker, HttpsMonitor) {
  RecordingSink sink;
  World world;
  testing::TlsServerContext tls;
  TestServer good(tls.respond("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nhealthy"));
  TestServer bad(tls.respond("HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"));
  auto https = makeMonitor("https", config::MonitorType::Https);
  https.body = "healthy";
  HealthChecker checker(sink);
  checker.start();
  checker.apply(world.pools({{"secure", {good.address(), bad.address()}, {&https}}}));
  auto down = sink.waitFor("server_down", bad.address());
  ASSERT_TRUE(down);
  EXPECT_EQ(RecordingSink::field(*down, "reason"), "fall 1/1 (initial): HTTP 500");
  EXPECT_TRUE(waitUntil([&] { return tls.handshakes.load() >= 5; }));
  EXPECT_TRUE(world.state("secure", good.address()).healthy.load());
  EXPECT_EQ(sink.count("server_down", good.address()), 0u);
}

TEST(HealthChecker, ApplyKeepsStateAndDropsRemovedServers) {
  RecordingSink sink;
  World world;
  TestServer alive(TestServer::acceptAndClose());
  testing::ClosedPort closed, closed2;
  const std::string dead = closed.address();
  const std::string dead2 = closed2.address();
  auto tcp = makeMonitor("tcp", config::MonitorType::Tcp, 2, 3, 40ms);
  HealthChecker checker(sink);
  checker.start();
  checker.apply(world.pools({{"web", {dead, alive.address()}, {&tcp}}}));
  ASSERT_TRUE(sink.waitFor("server_down", dead));

  // The same servers (same ServerState) in a new snapshot, plus one: no event for the kept ones.
  checker.apply(world.pools({{"web", {dead, alive.address(), dead2}, {&tcp}}}));
  auto down2 = sink.waitFor("server_down", dead2);
  ASSERT_TRUE(down2);
  EXPECT_EQ(RecordingSink::field(*down2, "reason"), "fall 1/1 (initial): connect refused");
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(sink.count("server_down", dead), 1u);
  EXPECT_EQ(sink.count("server_up"), 0u);
  EXPECT_FALSE(world.state("web", dead).healthy.load());

  // Without the live server: it is no longer checked, and the pool is down.
  checker.apply(world.pools({{"web", {dead, dead2}, {&tcp}}}));
  auto pool_down = sink.waitFor("pool_down");
  ASSERT_TRUE(pool_down);
  // A check in flight may still land, and the test server may accept late under load.
  std::this_thread::sleep_for(150ms);
  const int connections = alive.connections();
  std::this_thread::sleep_for(300ms);  // 7 intervals
  EXPECT_EQ(alive.connections(), connections);

  // The pool loses its monitors: its servers are healthy, and the pool is up.
  checker.apply(world.pools({{"web", {dead, dead2}, {}}}));
  auto up = sink.waitFor("server_up", dead);
  ASSERT_TRUE(up);
  EXPECT_EQ(up->fields,
            (Fields{{"pool", "web"}, {"server", dead}, {"reason", "health monitors removed"}}));
  ASSERT_TRUE(sink.waitFor("server_up", dead2));
  ASSERT_TRUE(sink.waitFor("pool_up"));
  EXPECT_TRUE(world.state("web", dead).healthy.load());
  EXPECT_TRUE(world.state("web", dead2).healthy.load());
  EXPECT_EQ(world.state("web", dead).healthNote().reason, "no health monitor");
}

TEST(HealthChecker, ChangedMonitorRestartsItsCheckButKeepsTheState) {
  RecordingSink sink;
  World world;
  SwitchableServer server(500);
  auto expect200 = makeMonitor("http", config::MonitorType::Http, 2, 3);
  auto expect500 = expect200;
  expect500.expect = {{500, 500}};
  HealthChecker checker(sink);
  checker.start();
  checker.apply(world.pools({{"web", {server.address()}, {&expect200}}}));
  ASSERT_TRUE(sink.waitFor("server_down"));
  // Same monitor name, new definition: the server is still down and must rise.
  checker.apply(world.pools({{"web", {server.address()}, {&expect500}}}));
  auto up = sink.waitFor("server_up");
  ASSERT_TRUE(up);
  EXPECT_EQ(RecordingSink::field(*up, "reason"), "rise 2/2");
}

TEST(HealthChecker, MonitorAddedToADownServerAndRemovedAgain) {
  RecordingSink sink;
  World world;
  SwitchableServer server(500);
  auto tcp = makeMonitor("tcp", config::MonitorType::Tcp);
  auto http = makeMonitor("http", config::MonitorType::Http, 1, 1);
  HealthChecker checker(sink);
  checker.start();
  checker.apply(world.pools({{"web", {server.address()}, {&http}}}));
  ASSERT_TRUE(sink.waitFor("server_down"));
  // The failing monitor removed, a passing one remains: the server is up at once.
  checker.apply(world.pools({{"web", {server.address()}, {&tcp}}}));
  auto up = sink.waitFor("server_up");
  ASSERT_TRUE(up);
  EXPECT_EQ(up->fields, (Fields{{"pool", "web"},
                                {"server", server.address()},
                                {"reason", "health monitors changed"}}));
  EXPECT_TRUE(world.state("web", server.address()).healthy.load());
}

TEST(HealthChecker, PoolsWithoutMonitorsAreNotChecked) {
  RecordingSink sink;
  World world;
  TestServer server(TestServer::acceptAndClose());
  HealthChecker checker(sink);
  checker.start();
  checker.apply(world.pools({{"plain", {server.address()}, {}}}));
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(server.connections(), 0);
  EXPECT_TRUE(world.state("plain", server.address()).healthy.load());
  EXPECT_TRUE(sink.events().empty());
}

TEST(HealthChecker, ChecksAreSpreadOverTheInterval) {
  RecordingSink sink;
  World world;
  TestServer server(TestServer::acceptAndClose());
  auto tcp = makeMonitor("tcp", config::MonitorType::Tcp, 2, 3, 400ms);
  std::vector<World::PoolDef> defs;
  for (int i = 0; i < 20; ++i)
    defs.push_back({"pool" + std::to_string(i), {server.address()}, {&tcp}});
  HealthChecker checker(sink);
  checker.start();
  const uint64_t start = testing::nowMs();
  checker.apply(world.pools(defs));
  ASSERT_TRUE(waitUntil([&] { return server.connections() >= 20; }));
  std::vector<uint64_t> times = server.acceptTimes();
  times.resize(20);
  std::sort(times.begin(), times.end());
  EXPECT_LT(times.back() - start, 520u);        // all first checks within the interval
  EXPECT_GT(times.back() - times.front(), 150u);  // and not all at once
  size_t max_same_10ms = 0;
  for (size_t i = 0; i < times.size(); ++i) {
    size_t j = i;
    while (j < times.size() && times[j] - times[i] < 10) ++j;
    max_same_10ms = std::max(max_same_10ms, j - i);
  }
  EXPECT_LE(max_same_10ms, 6u);
}

TEST(HealthChecker, StopsPromptlyWithChecksInFlight) {
  RecordingSink sink;
  World world;
  TestServer server(TestServer::hang());
  auto http = makeMonitor("http", config::MonitorType::Http);
  http.timeout = 5000ms;
  auto checker = std::make_unique<HealthChecker>(sink);
  checker->start();
  checker->apply(world.pools({{"web", {server.address()}, {&http}}}));
  ASSERT_TRUE(waitUntil([&] { return server.connections() >= 1; }));
  const uint64_t start = testing::nowMs();
  checker.reset();
  EXPECT_LT(testing::nowMs() - start, 500u);
  EXPECT_TRUE(sink.events().empty());
}

TEST(HealthChecker, ApplyBeforeStartAndRepeatedStop) {
  RecordingSink sink;
  World world;
  testing::ClosedPort closed;
  const std::string dead = closed.address();
  auto tcp = makeMonitor("tcp", config::MonitorType::Tcp);
  HealthChecker checker(sink);
  checker.apply(world.pools({{"web", {dead}, {&tcp}}}));
  checker.start();
  checker.start();
  ASSERT_TRUE(sink.waitFor("server_down", dead));
  checker.stop();
  checker.stop();
  HealthChecker never_started(sink);
  never_started.apply(world.pools({{"web", {dead}, {&tcp}}}));
}

}  // namespace
}  // namespace ballast::health
