// One check against real sockets: the verdict and its reason for each kind of server behaviour.
#include "health/probe.h"

#include <gtest/gtest.h>

#include <optional>

#include "core/socket.h"
#include "health_test_util.h"
#include "health/tls.h"

namespace ballast::health {
namespace {

using namespace std::chrono_literals;
using testing::TestServer;

struct ProbeRun {
  ProbeResult result;
  uint64_t elapsed_ms = 0;
};

// Stops the loop if a probe never reports (a bug): the test then fails instead of hanging.
struct Guard : TimerHandler {
  explicit Guard(EventLoop& l) : loop(l) {}
  void onTimer(int) override {
    fired = true;
    loop.stop();
  }
  EventLoop& loop;
  bool fired = false;
};

ProbeRun runProbe(const ProbeSpec& spec, SSL_CTX* ctx = nullptr) {
  EventLoop loop;
  Guard guard(loop);
  Timer guard_timer(loop, &guard);
  guard_timer.armAfter(10'000);
  std::optional<ProbeResult> result;
  int calls = 0;
  const uint64_t start = testing::nowMs();
  auto probe = std::make_unique<Probe>(loop, ctx, spec, [&](const ProbeResult& r) {
    result = r;
    ++calls;
    loop.stop();
  });
  probe->start();
  loop.run();
  ProbeRun run;
  run.elapsed_ms = testing::nowMs() - start;
  EXPECT_FALSE(guard.fired) << "the probe never reported";
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(probe->finished());
  if (result) run.result = *result;
  return run;
}

config::HealthMonitor monitor(config::MonitorType type) {
  config::HealthMonitor m;
  m.name = "m";
  m.type = type;
  m.timeout = 1000ms;
  m.interval = 100ms;
  return m;
}

lb::Server serverAt(uint16_t port) {
  lb::Server s;
  s.address_text = "127.0.0.1:" + std::to_string(port);
  s.address = testing::loopback(port);
  s.id = "p/" + s.address_text;
  return s;
}

ProbeRun check(const config::HealthMonitor& m, uint16_t port, SSL_CTX* ctx = nullptr) {
  return runProbe(makeProbeSpec(serverAt(port), m), ctx);
}

// ---- spec -------------------------------------------------------------------------------------

TEST(ProbeSpec, RequestLineHostAndPort) {
  config::HealthMonitor m = monitor(config::MonitorType::Http);
  m.method = "HEAD";
  m.path = "/health?x=1";
  ProbeSpec s = makeProbeSpec(serverAt(9001), m);
  EXPECT_EQ(s.request,
            "HEAD /health?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nUser-Agent: ballast-health/1\r\n"
            "Connection: close\r\n\r\n");
  EXPECT_EQ(s.method, http::Method::Head);
  EXPECT_EQ(s.address.toString(), "127.0.0.1:9001");

  m.port = 9100;  // the server's IP, the monitor's port
  s = makeProbeSpec(serverAt(9001), m);
  EXPECT_EQ(s.address.toString(), "127.0.0.1:9100");
  EXPECT_NE(s.request.find("\r\nHost: 127.0.0.1:9100\r\n"), std::string::npos);

  m.host = "api.example.com";
  s = makeProbeSpec(serverAt(9001), m);
  EXPECT_NE(s.request.find("\r\nHost: api.example.com\r\n"), std::string::npos);
  EXPECT_EQ(s.sni, "");  // http: no TLS
}

TEST(ProbeSpec, SniIsTheHostUnlessAnIpLiteral) {
  config::HealthMonitor m = monitor(config::MonitorType::Https);
  EXPECT_EQ(makeProbeSpec(serverAt(1), m).sni, "");
  m.host = "api.example.com:8443";
  EXPECT_EQ(makeProbeSpec(serverAt(1), m).sni, "api.example.com");
  m.host = "10.1.2.3";
  EXPECT_EQ(makeProbeSpec(serverAt(1), m).sni, "");
  m.host = "[::1]:443";
  EXPECT_EQ(makeProbeSpec(serverAt(1), m).sni, "");
}

// ---- tcp --------------------------------------------------------------------------------------

TEST(Probe, TcpPassesWhenTheServerListens) {
  TestServer server(TestServer::acceptAndClose());
  ProbeRun r = check(monitor(config::MonitorType::Tcp), server.port());
  EXPECT_TRUE(r.result.pass) << r.result.reason;
  EXPECT_TRUE(testing::waitUntil([&] { return server.connections() == 1; }));
}

TEST(Probe, TcpFailsOnAClosedPort) {
  testing::ClosedPort closed;
  ProbeRun r = check(monitor(config::MonitorType::Tcp), closed.port());
  EXPECT_FALSE(r.result.pass);
  EXPECT_EQ(r.result.reason, "connect refused");
  EXPECT_LT(r.elapsed_ms, 500u);
}

TEST(Probe, TcpConnectTimeoutWhenTheAcceptQueueIsFull) {
  // A listener that never accepts, with its queue filled: further SYNs are dropped.
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
  ASSERT_EQ(::listen(lfd, 0), 0);
  socklen_t len = sizeof sin;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&sin), &len);
  const uint16_t port = ntohs(sin.sin_port);
  std::vector<int> fillers;
  for (int i = 0; i < 3; ++i) {
    int fd = connectTcp(testing::loopback(port));
    if (fd >= 0) fillers.push_back(fd);
  }
  std::this_thread::sleep_for(50ms);
  config::HealthMonitor m = monitor(config::MonitorType::Tcp);
  m.timeout = 200ms;
  ProbeRun r = check(m, port);
  for (int fd : fillers) ::close(fd);
  ::close(lfd);
  if (r.result.pass) GTEST_SKIP() << "this kernel completed the connect with a full accept queue";
  EXPECT_EQ(r.result.reason, "connect timeout");
  EXPECT_GE(r.elapsed_ms, 190u);
  EXPECT_LT(r.elapsed_ms, 1000u);
}

// ---- http -------------------------------------------------------------------------------------

const std::string kOk = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

TEST(Probe, HttpSendsTheRequestAndPassesOn200) {
  std::string request;
  std::mutex mutex;
  TestServer server(TestServer::respond(kOk, &request, &mutex));
  config::HealthMonitor m = monitor(config::MonitorType::Http);
  m.path = "/health";
  ProbeRun r = check(m, server.port());
  EXPECT_TRUE(r.result.pass) << r.result.reason;
  EXPECT_EQ(r.result.reason, "");
  std::lock_guard<std::mutex> lock(mutex);
  EXPECT_EQ(request, "GET /health HTTP/1.1\r\nHost: " + server.address() +
                         "\r\nUser-Agent: ballast-health/1\r\nConnection: close\r\n\r\n");
}

TEST(Probe, HttpFailsOnAStatusOutsideTheExpectedRanges) {
  TestServer server(
      TestServer::respond("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"));
  ProbeRun r = check(monitor(config::MonitorType::Http), server.port());
  EXPECT_FALSE(r.result.pass);
  EXPECT_EQ(r.result.reason, "HTTP 500");
}

TEST(Probe, HttpExpectListAndRanges) {
  struct Case {
    int status;
    std::vector<std::pair<int, int>> expect;
    bool pass;
  };
  const std::vector<Case> cases = {
      {200, {{200, 299}}, true},  {204, {{200, 299}}, true},         {301, {{200, 299}}, false},
      {302, {{200, 200}, {302, 302}}, true},  {404, {{200, 200}, {302, 302}}, false},
      {404, {{200, 499}}, true},  {503, {{500, 502}, {504, 599}}, false},
  };
  TestServer server(nullptr);
  for (const Case& c : cases) {
    server.setHandler(TestServer::respond("HTTP/1.1 " + std::to_string(c.status) +
                                          " X\r\nContent-Length: 0\r\n\r\n"));
    config::HealthMonitor m = monitor(config::MonitorType::Http);
    m.expect = c.expect;
    ProbeRun r = check(m, server.port());
    EXPECT_EQ(r.result.pass, c.pass) << c.status;
    if (!c.pass) {
      EXPECT_EQ(r.result.reason, "HTTP " + std::to_string(c.status));
    }
  }
}

TEST(Probe, HttpBodySubstring) {
  struct Case {
    std::string response;
    bool pass;
    std::string reason;
  };
  const std::string no = "body does not contain \"ok\"";
  const std::vector<Case> cases = {
      {"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nstatus: ok\n", true, ""},
      {"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nstatus: k", false, no},
      {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, no},
      {"HTTP/1.1 204 No Content\r\n\r\n", false, no},
      // chunked, the substring split across chunks
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
       "3\r\nis \r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n",
       true, ""},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n0\r\n\r\n", false, no},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n", false,
       "malformed response"},
      // close-delimited
      {"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall ok here", true, ""},
      {"HTTP/1.0 200 OK\r\n\r\nnothing", false, no},
      // the body ends early
      {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nnot yet", false, "closed in response body"},
  };
  TestServer server(nullptr);
  for (const Case& c : cases) {
    server.setHandler(TestServer::respond(c.response));
    config::HealthMonitor m = monitor(config::MonitorType::Http);
    m.body = "ok";
    ProbeRun r = check(m, server.port());
    EXPECT_EQ(r.result.pass, c.pass) << c.response;
    EXPECT_EQ(r.result.reason, c.reason) << c.response;
  }
}

TEST(Probe, HttpBodyIsKeptUpTo64KiB) {
  TestServer server(nullptr);
  config::HealthMonitor m = monitor(config::MonitorType::Http);
  m.body = "needle";
  // Ends within the first 64 KiB: found.
  std::string body(kMaxBodyKept - 6, 'x');
  body += "needle";
  server.setHandler(TestServer::respond("HTTP/1.1 200 OK\r\nContent-Length: " +
                                        std::to_string(body.size()) + "\r\n\r\n" + body));
  EXPECT_TRUE(check(m, server.port()).result.pass);
  // One byte further: not looked at.
  body = std::string(kMaxBodyKept - 5, 'x') + "needle" + std::string(100'000, 'y');
  server.setHandler(TestServer::respond("HTTP/1.1 200 OK\r\nContent-Length: " +
                                        std::to_string(body.size()) + "\r\n\r\n" + body));
  ProbeRun r = check(m, server.port());
  EXPECT_FALSE(r.result.pass);
  EXPECT_EQ(r.result.reason, "body does not contain \"needle\"");
}

TEST(Probe, HttpMalformedResponses) {
  TestServer server(nullptr);
  for (const std::string response :
       {"hello\r\n\r\n", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", "HTTP/2 200\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n"}) {
    server.setHandler(TestServer::respond(response));
    ProbeRun r = check(monitor(config::MonitorType::Http), server.port());
    EXPECT_FALSE(r.result.pass) << response;
    EXPECT_EQ(r.result.reason, "malformed response") << response;
  }
}

TEST(Probe, HttpInterimResponseThenFinal) {
  TestServer server(TestServer::respond("HTTP/1.1 100 Continue\r\n\r\n" + kOk));
  config::HealthMonitor m = monitor(config::MonitorType::Http);
  m.body = "ok";
  EXPECT_TRUE(check(m, server.port()).result.pass);
}

TEST(Probe, HttpHeadResponseHasNoBody) {
  // Content-Length of the representation, no body: judged on the status alone.
  TestServer server(TestServer::hang());
  server.setHandler([](int fd) {
    testing::readHead(fd);
    testing::sendAll(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    return false;  // keeps the connection open: the verdict must not wait for a body
  });
  config::HealthMonitor m = monitor(config::MonitorType::Http);
  m.method = "HEAD";
  ProbeRun r = check(m, server.port());
  EXPECT_TRUE(r.result.pass) << r.result.reason;
  EXPECT_LT(r.elapsed_ms, 500u);
  m.body = "ok";  // a HEAD response has no body to find it in
  r = check(m, server.port());
  EXPECT_EQ(r.result.reason, "body does not contain \"ok\"");
  EXPECT_LT(r.elapsed_ms, 500u);
}

TEST(Probe, HttpClosedBeforeResponse) {
  TestServer server(TestServer::closeAfterRequest());
  ProbeRun r = check(monitor(config::MonitorType::Http), server.port());
  EXPECT_FALSE(r.result.pass);
  EXPECT_EQ(r.result.reason, "closed before response");
  server.setHandler(TestServer::respond("HTTP/1.1 200 OK\r\nContent-"));
  r = check(monitor(config::MonitorType::Http), server.port());
  EXPECT_EQ(r.result.reason, "closed in response head");
}

TEST(Probe, HttpResetBeforeResponse) {
  TestServer server([](int fd) {
    testing::readHead(fd);
    linger lg{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    return true;
  });
  ProbeRun r = check(monitor(config::MonitorType::Http), server.port());
  EXPECT_FALSE(r.result.pass);
  EXPECT_EQ(r.result.reason, "connection reset");
}

TEST(Probe, HttpTimeoutWhenTheServerNeverAnswers) {
  TestServer server(TestServer::hang());
  config::HealthMonitor m = monitor(config::MonitorType::Http);
  m.timeout = 150ms;
  ProbeRun r = check(m, server.port());
  EXPECT_FALSE(r.result.pass);
  EXPECT_EQ(r.result.reason, "timeout");
  EXPECT_GE(r.elapsed_ms, 145u);
  EXPECT_LT(r.elapsed_ms, 1000u);
}

TEST(Probe, HttpTimeoutCountsFromTheConnectStart) {
  // Answers slowly, a byte at a time: each byte is progress, but the deadline does not move.
  TestServer server([](int fd) {
    testing::readHead(fd);
    const uint64_t start = testing::nowMs();
    for (char c : std::string("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) {
      if (testing::nowMs() - start > 300) break;  // the probe gave up long ago
      testing::sendAll(fd, std::string(1, c));
      std::this_thread::sleep_for(20ms);
    }
    return true;
  });
  config::HealthMonitor m = monitor(config::MonitorType::Http);
  m.timeout = 200ms;
  ProbeRun r = check(m, server.port());
  EXPECT_EQ(r.result.reason, "timeout");
  EXPECT_LT(r.elapsed_ms, 600u);
}

// ---- https ------------------------------------------------------------------------------------

struct Tls {
  Tls() {
    std::string error;
    client = makeClientContext(&error);
  }
  testing::TlsServerContext server;
  SslCtxPtr client;
};

TEST(Probe, HttpsAgainstASelfSignedServer) {
  Tls tls;
  std::string sni = "unset";
  std::mutex mutex;
  TestServer server(tls.server.respond(kOk, &sni, &mutex));
  config::HealthMonitor m = monitor(config::MonitorType::Https);
  m.body = "ok";
  ProbeRun r = check(m, server.port(), tls.client.get());
  EXPECT_TRUE(r.result.pass) << r.result.reason;
  EXPECT_EQ(tls.server.handshakes.load(), 1);
  {
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_EQ(sni, "");  // no host: no SNI
  }
  m.host = "backend.example";
  r = check(m, server.port(), tls.client.get());
  EXPECT_TRUE(r.result.pass) << r.result.reason;
  std::lock_guard<std::mutex> lock(mutex);
  EXPECT_EQ(sni, "backend.example");
}

TEST(Probe, HttpsStatusAndBodyAsForHttp) {
  Tls tls;
  TestServer server(tls.server.respond("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"));
  ProbeRun r = check(monitor(config::MonitorType::Https), server.port(), tls.client.get());
  EXPECT_EQ(r.result.reason, "HTTP 503");
  server.setHandler(tls.server.respond("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall fine"));
  config::HealthMonitor m = monitor(config::MonitorType::Https);
  m.body = "fine";
  r = check(m, server.port(), tls.client.get());
  EXPECT_TRUE(r.result.pass) << r.result.reason;
  m.body = "ok";
  r = check(m, server.port(), tls.client.get());
  EXPECT_EQ(r.result.reason, "body does not contain \"ok\"");
}

TEST(Probe, HttpsAgainstAPlainHttpServerFailsTheHandshake) {
  Tls tls;
  TestServer server([](int fd) {  // answers whatever arrives (a ClientHello) as HTTP would
    char buf[512];
    [[maybe_unused]] ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    testing::sendAll(fd, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    return true;
  });
  ProbeRun r = check(monitor(config::MonitorType::Https), server.port(), tls.client.get());
  EXPECT_FALSE(r.result.pass);
  EXPECT_EQ(r.result.reason.rfind("TLS handshake failed: ", 0), 0u) << r.result.reason;
}

TEST(Probe, HttpsHandshakeTimeout) {
  Tls tls;
  TestServer server(TestServer::hang());
  config::HealthMonitor m = monitor(config::MonitorType::Https);
  m.timeout = 150ms;
  ProbeRun r = check(m, server.port(), tls.client.get());
  EXPECT_EQ(r.result.reason, "TLS handshake timeout");
}

TEST(Probe, HttpsWithoutAContextFails) {
  TestServer server(TestServer::acceptAndClose());
  ProbeRun r = check(monitor(config::MonitorType::Https), server.port(), nullptr);
  EXPECT_EQ(r.result.reason, "TLS unavailable");
}

TEST(Probe, CancelClosesWithoutAVerdict) {
  TestServer server(TestServer::hang());
  EventLoop loop;
  int calls = 0;
  const ProbeSpec spec = makeProbeSpec(serverAt(server.port()), monitor(config::MonitorType::Http));
  auto probe = std::make_unique<Probe>(loop, nullptr, spec, [&](const ProbeResult&) { ++calls; });
  probe->start();
  probe->cancel();
  EXPECT_TRUE(probe->finished());
  probe.reset();
  EXPECT_EQ(calls, 0);
}

}  // namespace
}  // namespace ballast::health
