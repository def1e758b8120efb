// What only the Redis store does, against real redis-server processes: key layout, scripts,
// notifications between engines, passwords, and failures (Redis killed, Redis stopped with
// SIGSTOP, Redis absent at start, a store destroyed with calls in flight).
#include <gtest/gtest.h>

#include <set>

#include "state/redis_scripts.h"
#include "state/state_store.h"
#include "state_test_util.h"

namespace ballast::state {
namespace {

using namespace std::chrono_literals;
using testing::callOn;
using testing::Engine;
using testing::LogCapture;
using testing::msSince;
using testing::RawRedis;
using testing::RedisServer;
using testing::sharedRedis;
using testing::testSettings;
using testing::waitUntil;
using Clock = std::chrono::steady_clock;

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
  ASSERT_TRUE(waitUntil([&] { return s.getOrCreate("persist:web:g", "a").value_or(Reply{}).ok; }));
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
  std::vector<Reply> replies(kCalls);
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

}  // namespace
}  // namespace ballast::state
