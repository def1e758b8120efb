// What only the Redis store does, against real redis-server processes: key layout, scripts,
// notifications between engines, passwords, and failures (Redis killed, Redis stopped with
// SIGSTOP, Redis absent at start, a store destroyed with calls in flight).
#include <gtest/gtest.h>

#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>

#include <set>

#include "state/redis_scripts.h"
#include "state/resp.h"
#include "state/state_store.h"
#include "state_test_util.h"

namespace ballast::state {
namespace {

using namespace std::chrono_literals;
using testing::callOn;
using testing::Engine;
using testing::LogCapture;
using testing::msSince;
using testing::OwnedReply;
using testing::RawRedis;
using testing::RedisServer;
using testing::sharedRedis;
using testing::testSettings;
using testing::waitUntil;
using Clock = std::chrono::steady_clock;

// A Redis of the test's own on an ephemeral port: reads commands (RESP arrays of bulk strings)
// and answers each with what `answer` returns, written `chunk` bytes per send() (0: at once), so
// the store's reading of replies that arrive in pieces, or of replies that are not RESP, can be
// driven byte by byte. A thread per connection.
class FakeRedis {
 public:
  // The reply to a command read from the connection fd (the test may look at the socket).
  using Answer = std::function<std::string(const std::vector<std::string>& command, int fd)>;
  FakeRedis(Answer answer, size_t chunk) : answer_(std::move(answer)), chunk_(chunk) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        listen(listen_fd_, 16) != 0 ||
        getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      ADD_FAILURE() << "fake redis: cannot listen";
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeRedis() {
    stop_.store(true);
    thread_.join();
    close(listen_fd_);
  }
  uint16_t port() const { return port_; }
  // Worker connections that loaded the scripts (the subscriber's does not).
  int connections() const { return connections_.load(); }

  // The replies of the handshake (PING, then the two SCRIPT LOADs), else nullopt.
  static std::optional<std::string> handshake(const std::vector<std::string>& c) {
    if (c.size() == 1 && c[0] == "PING") return std::string("+PONG\r\n");
    if (c.size() == 3 && c[0] == "SCRIPT")
      return c[2] == scripts::kCompareAndSet ? bulk(scripts::kCompareAndSetSha)
                                             : bulk(scripts::kEraseSha);
    if (c.size() == 2 && c[0] == "SUBSCRIBE")
      return "*3\r\n$9\r\nsubscribe\r\n" + bulk(c[1]) + ":1\r\n";
    return std::nullopt;
  }
  static std::string bulk(std::string_view s) {
    return "$" + std::to_string(s.size()) + "\r\n" + std::string(s) + "\r\n";
  }

 private:
  bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return poll(&p, 1, 20) > 0;
  }
  void serve() {
    std::vector<std::thread> sessions;
    while (!stop_.load()) {
      if (!readable(listen_fd_)) continue;
      int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      sessions.emplace_back([this, fd] {
        session(fd);
        close(fd);
      });
    }
    for (auto& t : sessions) t.join();
  }
  void session(int fd) {
    std::string in;
    resp::Parser parser;
    while (!stop_.load()) {
      if (!readable(fd)) continue;
      char buf[65536];
      ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) return;
      in.append(buf, static_cast<size_t>(n));
      std::string out;
      for (;;) {
        size_t used = 0;
        if (parser.parse(in, &used) != resp::Parser::Status::Complete) break;
        std::vector<std::string> command;
        for (uint32_t i = 0; i < parser.root().count; ++i)
          command.emplace_back(parser.at(parser.root(), i).str);
        in.erase(0, used);
        if (command.size() == 3 && command[0] == "SCRIPT" && command[2] == scripts::kErase)
          connections_.fetch_add(1);
        out += answer_(command, fd);
      }
      size_t step = chunk_ == 0 ? out.size() : chunk_;
      for (size_t at = 0; at < out.size(); at += step) {
        if (send(fd, out.data() + at, std::min(step, out.size() - at), MSG_NOSIGNAL) < 0) return;
        if (chunk_ != 0) std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

  Answer answer_;
  size_t chunk_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
};

class RedisStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(sharedRedis().running());
    RawRedis(sharedRedis().port()).command({"FLUSHALL"});
  }
};

TEST_F(RedisStoreTest, KeysAreNamespacedWithThePrefix) {
  Engine engine(makeRedisBackend(testSettings(sharedRedis().port())), 1);
  ASSERT_TRUE(engine.waitAvailable());
  ASSERT_TRUE(engine.sync().getOrCreate("persist:web:1.2.3.4", "pool/10.0.0.1:80", 60s)->created);
  RawRedis raw(sharedRedis().port());
  EXPECT_EQ(raw.string({"GET", "ballast:v1:persist:web:1.2.3.4"}), "pool/10.0.0.1:80");
  long long pttl = raw.integer({"PTTL", "ballast:v1:persist:web:1.2.3.4"});
  EXPECT_GT(pttl, 50000);
  EXPECT_LE(pttl, 60000);
  EXPECT_EQ(raw.string({"GET", "persist:web:1.2.3.4"}), std::nullopt);

  // Binary keys reach Redis byte for byte.
  const std::string key("persist:web:\0\xff\r\n", 16);
  ASSERT_TRUE(engine.sync().getOrCreate(key, "s")->created);
  EXPECT_EQ(raw.string({"GET", "ballast:v1:" + key}), "s");

  RedisSettings other = testSettings(sharedRedis().port());
  other.prefix = "acme";
  Engine acme(makeRedisBackend(other), 1);
  ASSERT_TRUE(acme.waitAvailable());
  auto reply = acme.sync().getOrCreate("persist:web:1.2.3.4", "elsewhere");
  ASSERT_TRUE(reply && reply->ok);
  EXPECT_TRUE(reply->created);  // another namespace
  EXPECT_EQ(raw.string({"GET", "acme:v1:persist:web:1.2.3.4"}), "elsewhere");
}

TEST_F(RedisStoreTest, ScriptDigestsMatchRedis) {
  RawRedis raw(sharedRedis().port());
  EXPECT_EQ(raw.string({"SCRIPT", "LOAD", std::string(scripts::kCompareAndSet)}),
            std::string(scripts::kCompareAndSetSha));
  EXPECT_EQ(raw.string({"SCRIPT", "LOAD", std::string(scripts::kErase)}),
            std::string(scripts::kEraseSha));
}

// Each connection loads the scripts first. If Redis forgets them during a connection (SCRIPT
// FLUSH), EVALSHA fails with NOSCRIPT, the store sends the script itself and the call succeeds.
TEST_F(RedisStoreTest, ScriptsAreSentAgainAfterScriptFlush) {
  Engine engine(makeRedisBackend(testSettings(sharedRedis().port())), 1);
  ASSERT_TRUE(engine.waitAvailable());
  auto s = engine.sync();
  RawRedis raw(sharedRedis().port());
  ASSERT_TRUE(s.getOrCreate("persist:web:f", "a")->created);
  for (int round = 0; round < 2; ++round) {
    raw.command({"SCRIPT", "FLUSH"});
    auto swapped = s.compareAndSet("persist:web:f", round == 0 ? "a" : "b", round == 0 ? "b" : "c");
    ASSERT_TRUE(swapped && swapped->ok);
    EXPECT_TRUE(swapped->swapped);
  }
  raw.command({"SCRIPT", "FLUSH"});
  s.erase("persist:web:f");  // fire and forget: its retry may come after the next call
  EXPECT_TRUE(waitUntil([&] { return s.get("persist:web:f")->value == std::nullopt; }));
  EXPECT_EQ(engine.backend().status().errors, 0u);
  // A new connection loads the scripts first: no NOSCRIPT, and calls stay in order.
  raw.command({"SCRIPT", "FLUSH"});
  raw.command({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
  ASSERT_TRUE(
      waitUntil([&] { return s.getOrCreate("persist:web:g", "a").value_or(OwnedReply{}).ok; }));
  s.erase("persist:web:g");
  EXPECT_EQ(s.get("persist:web:g")->value, std::nullopt);
}

// Engine A replaces or removes an entry; engine B (its own backend, as another SE) hears of it.
TEST_F(RedisStoreTest, NotificationsReachAnotherEngine) {
  Engine a(makeRedisBackend(testSettings(sharedRedis().port())), 1);
  Engine b(makeRedisBackend(testSettings(sharedRedis().port())), 1);
  std::mutex mutex;
  std::vector<std::string> heard;
  b.backend().onChange([&](std::string_view key) {
    std::lock_guard<std::mutex> lock(mutex);
    heard.emplace_back(key);
  });
  auto count = [&](const std::string& key) {
    std::lock_guard<std::mutex> lock(mutex);
    return std::count(heard.begin(), heard.end(), key);
  };
  ASSERT_TRUE(a.waitAvailable());
  ASSERT_TRUE(b.waitAvailable());
  RawRedis raw(sharedRedis().port());
  // The subscriber is on its own connection: wait until Redis counts two subscribers.
  ASSERT_TRUE(waitUntil([&] {
    auto r = raw.command({"PUBSUB", "NUMSUB", "ballast:v1:changes"});
    return r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->integer == 2;
  }));

  auto s = a.sync();
  ASSERT_TRUE(s.getOrCreate("persist:web:n", "down")->created);
  ASSERT_TRUE(s.compareAndSet("persist:web:n", "down", "up")->swapped);
  ASSERT_TRUE(waitUntil([&] { return count("persist:web:n") == 1; }));

  EXPECT_FALSE(s.compareAndSet("persist:web:n", "down", "other")->swapped);  // no change: no news
  const std::string binary("persist:web:\0b", 14);
  ASSERT_TRUE(s.getOrCreate(binary, "x")->created);
  s.erase(binary);
  ASSERT_TRUE(waitUntil([&] { return count(binary) == 1; }));
  s.erase("persist:web:n");
  ASSERT_TRUE(waitUntil([&] { return count("persist:web:n") == 2; }));
  s.erase("persist:web:n");  // nothing left to remove: no news
  std::this_thread::sleep_for(100ms);
  {
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_EQ(heard.size(), 3u);
  }
  EXPECT_EQ(b.backend().status().notifications, 3u);
}

TEST(RedisPassword, RightPasswordConnects) {
  RedisServer server({"--requirepass", "s3cret pass"});
  ASSERT_TRUE(server.running());
  RedisSettings settings = testSettings(server.port(), 2);
  settings.password = "s3cret pass";
  Engine engine(makeRedisBackend(settings), 2);
  ASSERT_TRUE(engine.waitAvailable());
  ASSERT_TRUE(engine.sync(1).getOrCreate("persist:web:p", "s")->created);
  EXPECT_EQ(engine.sync(0).get("persist:web:p")->value, "s");
  auto seen = engine.backend().inspect("persist:web:p");
  EXPECT_TRUE(seen.ok) << seen.error;
  EXPECT_EQ(seen.value, "s");
  EXPECT_TRUE(engine.backend().status().connected);
}

// A wrong password is logged once, however many workers and attempts; the store stays unavailable
// and calls fail at once.
TEST(RedisPassword, WrongPasswordIsLoggedOnceAndTheStoreStaysUnavailable) {
  RedisServer server({"--requirepass", "s3cret"});
  ASSERT_TRUE(server.running());
  LogCapture logs;
  RedisSettings settings = testSettings(server.port(), 2);
  settings.password = "wrong";
  settings.reconnect_max = 50ms;  // several attempts during the test
  Engine engine(makeRedisBackend(settings), 2);
  ASSERT_TRUE(waitUntil([&] { return logs.count("authentication failed") >= 1; }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(logs.count("authentication failed"), 1u);
  EXPECT_FALSE(engine.allAvailable());
  auto start = Clock::now();
  auto reply = engine.sync(0).getOrCreate("persist:web:w", "s");
  ASSERT_TRUE(reply);
  EXPECT_FALSE(reply->ok);
  EXPECT_LT(msSince(start), 500u);
  StoreStatus status = engine.backend().status();
  EXPECT_FALSE(status.connected);
  EXPECT_GE(status.errors, 1u);
  auto seen = engine.backend().inspect("persist:web:w");
  EXPECT_FALSE(seen.ok);
  EXPECT_NE(seen.error, "");

  // No password at all against a server that wants one: unavailable too.
  Engine none(makeRedisBackend(testSettings(server.port())), 1);
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(none.allAvailable());
}

// Redis is killed: calls in flight and new calls fail at once (no hang), the store says it is
// unavailable; Redis comes back (empty): the store reconnects, onReconnect fires once, entries are
// created anew.
TEST(RedisFailure, KilledRedisFailsCallsFastAndReconnects) {
  RedisServer server;
  ASSERT_TRUE(server.running());
  RedisSettings settings = testSettings(server.port(), 2);
  settings.command_timeout = 5s;  // failures below come from the lost connection, not from timeouts
  Engine engine(makeRedisBackend(settings), 2);
  std::atomic<int> reconnected{0};
  engine.backend().onReconnect([&] { reconnected.fetch_add(1); });
  ASSERT_TRUE(engine.waitAvailable());
  ASSERT_TRUE(engine.sync(0).getOrCreate("persist:web:k", "s1")->created);
  EXPECT_TRUE(engine.backend().status().connected);

  // Calls in flight when Redis dies: stop it first so that they stay unanswered, then kill it.
  server.pause();
  std::atomic<int> failed{0};
  engine.worker(1).run([&] {
    for (int i = 0; i < 10; ++i)
      engine.store(1).get("persist:web:k", [&](const Reply& r) {
        if (!r.ok) failed.fetch_add(1);
      });
  });
  auto killed_at = Clock::now();
  server.kill();
  ASSERT_TRUE(waitUntil([&] { return failed.load() == 10; }, 2000));
  EXPECT_LT(msSince(killed_at), 2000u);
  ASSERT_TRUE(
      waitUntil([&] { return !engine.sync(0).available() && !engine.sync(1).available(); }));

  auto start = Clock::now();
  auto reply = engine.sync(0).getOrCreate("persist:web:k", "s2");
  ASSERT_TRUE(reply);
  EXPECT_FALSE(reply->ok);
  EXPECT_LT(msSince(start), 500u);
  StoreStatus down = engine.backend().status();
  EXPECT_FALSE(down.connected);
  EXPECT_GE(down.errors, 11u);
  EXPECT_EQ(reconnected.load(), 0);

  std::this_thread::sleep_for(300ms);  // a few failed attempts
  ASSERT_TRUE(server.restart());
  ASSERT_TRUE(engine.waitAvailable(3000));
  ASSERT_TRUE(waitUntil([&] { return reconnected.load() == 1; }));
  auto again = engine.sync(1).getOrCreate("persist:web:k", "s3");  // Redis restarted empty
  ASSERT_TRUE(again && again->ok);
  EXPECT_TRUE(again->created);
  StoreStatus up = engine.backend().status();
  EXPECT_TRUE(up.connected);
  EXPECT_GE(up.reconnects, 2u);  // both workers
  EXPECT_EQ(up.round_trips, down.round_trips + 1);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(reconnected.load(), 1);
}

// Redis stops answering (SIGSTOP): calls fail within about command_timeout, the connection is
// dropped (and cannot be re-established while Redis sleeps); SIGCONT: the store recovers.
TEST(RedisFailure, UnansweredCommandsTimeOutAndTheStoreRecovers) {
  RedisServer server;
  ASSERT_TRUE(server.running());
  RedisSettings settings = testSettings(server.port(), 1);
  settings.command_timeout = 150ms;
  settings.connect_timeout = 300ms;
  Engine engine(makeRedisBackend(settings), 1);
  std::atomic<int> reconnected{0};
  engine.backend().onReconnect([&] { reconnected.fetch_add(1); });
  ASSERT_TRUE(engine.waitAvailable());
  ASSERT_TRUE(engine.sync().getOrCreate("persist:web:t", "s1")->created);

  server.pause();
  std::atomic<int> failed{0};
  std::atomic<int> answered{0};
  auto start = Clock::now();
  engine.worker(0).run([&] {
    for (int i = 0; i < 20; ++i)
      engine.store(0).getOrCreate("persist:web:t" + std::to_string(i), "s", 60s,
                                  [&](const Reply& r) {
                                    answered.fetch_add(1);
                                    if (!r.ok) failed.fetch_add(1);
                                  });
  });
  ASSERT_TRUE(waitUntil([&] { return answered.load() == 20; }, 3000));
  uint64_t took = msSince(start);
  EXPECT_EQ(failed.load(), 20);
  EXPECT_GE(took, 100u);
  EXPECT_LT(took, 1000u);
  EXPECT_FALSE(engine.sync().available());
  StoreStatus status = engine.backend().status();
  EXPECT_GE(status.timeouts, 1u);
  EXPECT_FALSE(status.connected);

  // While Redis sleeps, reconnection attempts fail (the handshake times out): calls fail at once.
  std::this_thread::sleep_for(400ms);
  start = Clock::now();
  auto reply = engine.sync().get("persist:web:t");
  ASSERT_TRUE(reply);
  EXPECT_FALSE(reply->ok);
  EXPECT_LT(msSince(start), 500u);

  server.resume();
  ASSERT_TRUE(engine.waitAvailable(3000));
  auto got = engine.sync().get("persist:web:t");
  ASSERT_TRUE(got && got->ok);
  EXPECT_EQ(got->value, "s1");
  ASSERT_TRUE(waitUntil([&] { return reconnected.load() == 1; }));
  EXPECT_GE(engine.backend().status().reconnects, 1u);
  EXPECT_EQ(answered.load(), 20);  // nothing answered twice
}

// Redis is not there when the engine starts: calls fail at once; when it appears, the store
// connects and onReconnect fires (decisions were made meanwhile).
TEST(RedisFailure, AbsentAtStartThenAppears) {
  RedisServer server;
  ASSERT_TRUE(server.running());
  server.kill();
  Engine engine(makeRedisBackend(testSettings(server.port(), 2)), 2);
  std::atomic<int> reconnected{0};
  engine.backend().onReconnect([&] { reconnected.fetch_add(1); });
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(engine.allAvailable());
  auto start = Clock::now();
  auto reply = engine.sync(0).getOrCreate("persist:web:a", "s");
  ASSERT_TRUE(reply);
  EXPECT_FALSE(reply->ok);
  EXPECT_LT(msSince(start), 500u);
  auto seen = engine.backend().inspect("persist:web:a");
  EXPECT_FALSE(seen.ok);
  EXPECT_NE(seen.error.find("cannot connect"), std::string::npos) << seen.error;
  EXPECT_FALSE(engine.backend().status().connected);

  ASSERT_TRUE(server.restart());
  ASSERT_TRUE(engine.waitAvailable(3000));
  ASSERT_TRUE(waitUntil([&] { return reconnected.load() == 1; }));
  EXPECT_TRUE(engine.sync(1).getOrCreate("persist:web:a", "s")->created);
  EXPECT_EQ(engine.backend().status().reconnects, 0u);  // first connections: not re-connections
}

// Destroying a store discards its calls in flight: their callbacks are never called.
TEST(RedisFailure, DestroyedStoreNeverCallsItsCallbacksInFlight) {
  RedisServer server;
  ASSERT_TRUE(server.running());
  Engine engine(makeRedisBackend(testSettings(server.port(), 1)), 1);
  ASSERT_TRUE(engine.waitAvailable());
  server.pause();
  std::atomic<int> called{0};
  auto token = std::make_shared<int>(0);  // released with the discarded callbacks
  engine.worker(0).run([&] {
    for (int i = 0; i < 50; ++i)
      engine.store(0).getOrCreate("persist:web:d" + std::to_string(i), "s", 60s,
                                  [&, token](const Reply&) { called.fetch_add(1); });
  });
  EXPECT_EQ(token.use_count(), 51);
  engine.destroyStore(0);
  EXPECT_EQ(token.use_count(), 1);
  server.resume();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(called.load(), 0);
}

// Many commands written at once (more than a socket buffer holds): all answered, in order.
TEST_F(RedisStoreTest, PipelinesManyCommands) {
  constexpr int kCalls = 20000;
  Engine engine(makeRedisBackend(testSettings(sharedRedis().port())), 1);
  ASSERT_TRUE(engine.waitAvailable());
  std::vector<OwnedReply> replies(kCalls);
  std::atomic<int> answered{0};
  std::promise<void> all;
  const std::string big(200, 'v');
  engine.worker(0).run([&] {
    for (int i = 0; i < kCalls; ++i)
      engine.store(0).getOrCreate("persist:web:many-" + std::to_string(i), big + std::to_string(i),
                                  60s, [&, i](const Reply& r) {
                                    replies[i] = r;
                                    if (answered.fetch_add(1) + 1 == kCalls) all.set_value();
                                  });
  });
  ASSERT_EQ(all.get_future().wait_for(10s), std::future_status::ready);
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(replies[i].ok) << i;
    ASSERT_TRUE(replies[i].created) << i;
    ASSERT_EQ(replies[i].value, big + std::to_string(i));
  }
  EXPECT_GE(engine.backend().status().round_trips, uint64_t{kCalls});
  EXPECT_EQ(RawRedis(sharedRedis().port()).integer({"DBSIZE"}), kCalls);
}

// Values of any bytes and size reach Redis and come back whole (large replies arrive over many
// reads).
TEST_F(RedisStoreTest, LargeAndBinaryValuesRoundTrip) {
  Engine engine(makeRedisBackend(testSettings(sharedRedis().port())), 1);
  ASSERT_TRUE(engine.waitAvailable());
  auto s = engine.sync();
  std::string big(2 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 101) big[i] = static_cast<char>(i % 256);
  big += "\r\n$-1\r\n";
  auto created = s.getOrCreate("persist:web:big", big);
  ASSERT_TRUE(created && created->ok);
  EXPECT_TRUE(created->created);
  EXPECT_TRUE(created->value == big);
  auto existing = s.getOrCreate("persist:web:big", "other");
  ASSERT_TRUE(existing && existing->ok);
  EXPECT_FALSE(existing->created);
  EXPECT_TRUE(existing->value == big);
  auto got = s.get("persist:web:big");
  ASSERT_TRUE(got && got->ok);
  EXPECT_TRUE(got->value == big);
  EXPECT_TRUE(RawRedis(sharedRedis().port()).string({"GET", "ballast:v1:persist:web:big"}) == big);
  auto empty = s.getOrCreate("persist:web:empty", "");
  ASSERT_TRUE(empty && empty->ok);
  EXPECT_TRUE(empty->created);
  EXPECT_EQ(empty->value, "");
  EXPECT_EQ(s.get("persist:web:empty")->value, "");
  EXPECT_EQ(engine.backend().status().errors, 0u);
}

// Replies that come a few bytes at a time, pipelined calls included: every call gets its own
// reply, in order.
TEST(RedisFake, RepliesArrivingInPiecesAreMatchedInOrder) {
  for (size_t chunk : {1u, 3u, 7u}) {
    FakeRedis fake(
        [](const std::vector<std::string>& c, int) -> std::string {
          if (auto h = FakeRedis::handshake(c)) return *h;
          // SET key value NX GET PX ttl: keys ending in "new" are created, others exist.
          if (c.size() == 7 && c[0] == "SET")
            return c[1].ends_with("new") ? "$-1\r\n" : FakeRedis::bulk("had-" + c[1]);
          if (c.size() == 2 && c[0] == "GET") return "-ERR no such thing\r\n";
          return "-ERR unexpected\r\n";
        },
        chunk);
    Engine engine(makeRedisBackend(testSettings(fake.port())), 1);
    ASSERT_TRUE(engine.waitAvailable()) << chunk;
    std::vector<OwnedReply> replies(40);
    std::atomic<int> answered{0};
    engine.worker(0).run([&] {
      for (int i = 0; i < 40; ++i) {
        std::string key = "persist:web:" + std::to_string(i) + (i % 3 == 0 ? "new" : "old");
        auto keep = [&, i](const Reply& r) {
          replies[i] = r;
          answered.fetch_add(1);
        };
        if (i % 5 == 4) {
          engine.store(0).get(key, keep);
        } else {
          engine.store(0).getOrCreate(key, "mine-" + std::to_string(i), 60s, keep);
        }
      }
    });
    ASSERT_TRUE(waitUntil([&] { return answered.load() == 40; })) << chunk;
    for (int i = 0; i < 40; ++i) {
      std::string key = "persist:web:" + std::to_string(i) + (i % 3 == 0 ? "new" : "old");
      if (i % 5 == 4) {
        EXPECT_FALSE(replies[i].ok) << i;  // the error reply
      } else if (i % 3 == 0) {
        EXPECT_TRUE(replies[i].ok && replies[i].created) << i;
        EXPECT_EQ(replies[i].value, "mine-" + std::to_string(i));
      } else {
        EXPECT_TRUE(replies[i].ok && !replies[i].created) << i;
        EXPECT_EQ(replies[i].value, "had-ballast:v1:" + key);
      }
    }
    EXPECT_TRUE(engine.allAvailable());  // error replies do not cost the connection
    EXPECT_EQ(fake.connections(), 1);
  }
}

// A reply that is not RESP (or a reply to no command): the connection is dropped, the calls in
// flight fail, and the store connects again.
TEST(RedisFake, AReplyThatIsNotRespDropsTheConnection) {
  std::atomic<bool> garbage{true};
  FakeRedis fake(
      [&](const std::vector<std::string>& c, int) -> std::string {
        if (auto h = FakeRedis::handshake(c)) return *h;
        if (c[0] == "GET") return garbage.load() ? "?what\r\n" : "$1\r\nv\r\n";
        if (c[0] == "PEXPIRE") return ":1\r\n:1\r\n";  // one reply too many
        return "-ERR unexpected\r\n";
      },
      0);
  Engine engine(makeRedisBackend(testSettings(fake.port())), 1);
  ASSERT_TRUE(engine.waitAvailable());
  auto s = engine.sync();
  auto bad = s.get("persist:web:g");
  ASSERT_TRUE(bad);
  EXPECT_FALSE(bad->ok);
  ASSERT_TRUE(engine.waitAvailable());
  EXPECT_EQ(fake.connections(), 2);
  garbage.store(false);
  EXPECT_EQ(s.get("persist:web:g")->value, "v");

  s.touch("persist:web:g", 1s);
  ASSERT_TRUE(waitUntil([&] { return fake.connections() == 3; }));
  ASSERT_TRUE(engine.waitAvailable());
  EXPECT_EQ(s.get("persist:web:g")->value, "v");
  EXPECT_GE(engine.backend().status().reconnects, 2u);
}

// While Redis has not answered what was written, the calls made meanwhile wait and leave together
// when the answers are in (one batch in flight: fewer, larger writes on both sides).
TEST(RedisFake, CallsWaitForTheBatchInFlight) {
  std::atomic<int> pending_during_first{-1};
  FakeRedis fake(
      [&](const std::vector<std::string>& c, int fd) -> std::string {
        if (auto h = FakeRedis::handshake(c)) return *h;
        if (c[0] == "GET" && c[1].ends_with("slow")) {
          std::this_thread::sleep_for(150ms);
          int bytes = -1;  // what the store wrote while this command was unanswered
          if (ioctl(fd, FIONREAD, &bytes) == 0) pending_during_first.store(bytes);
        }
        return FakeRedis::bulk(c[1]);
      },
      0);
  Engine engine(makeRedisBackend(testSettings(fake.port())), 1);
  ASSERT_TRUE(engine.waitAvailable());
  std::mutex mutex;
  std::vector<std::string> answers;
  auto keep = [&](const Reply& r) {
    std::lock_guard<std::mutex> lock(mutex);
    answers.emplace_back(r.ok && r.value ? std::string(*r.value) : std::string("failed"));
  };
  engine.worker(0).run([&] { engine.store(0).get("persist:web:slow", keep); });
  for (int i = 0; i < 4; ++i) {  // each in a batch of events of its own
    std::this_thread::sleep_for(20ms);
    engine.worker(0).run([&, i] { engine.store(0).get("persist:web:" + std::to_string(i), keep); });
  }
  ASSERT_TRUE(waitUntil([&] {
    std::lock_guard<std::mutex> lock(mutex);
    return answers.size() == 5;
  }));
  EXPECT_EQ(pending_during_first.load(), 0);
  std::lock_guard<std::mutex> lock(mutex);
  const std::string ns = "ballast:v1:persist:web:";
  EXPECT_EQ(answers,
            (std::vector<std::string>{ns + "slow", ns + "0", ns + "1", ns + "2", ns + "3"}));
}

}  // namespace
}  // namespace ballast::state
