// The semantics every store shares, run against both backends (memory, and Redis on a real
// redis-server): get-or-create, atomicity across workers, expiry, touch, compare-and-set, erase,
// binary keys, threads of the callbacks, status and inspection. Plus the memory store's sweep.
#include <gtest/gtest.h>

#include <latch>
#include <map>

#include "state/state_store.h"
#include "state_test_util.h"

namespace ballast::state {
namespace {

using namespace std::chrono_literals;
using testing::Engine;
using testing::OwnedReply;
using testing::RawRedis;
using testing::sharedRedis;
using testing::testSettings;

class StoreSemantics : public ::testing::TestWithParam<std::string> {
 protected:
  bool redis() const { return GetParam() == "redis"; }

  std::unique_ptr<Engine> makeEngine(size_t workers = 1) {
    if (!redis()) return std::make_unique<Engine>(makeMemoryBackend(), workers);
    testing::RedisServer& server = sharedRedis();
    EXPECT_TRUE(server.running());
    RawRedis(server.port()).command({"FLUSHALL"});
    auto engine =
        std::make_unique<Engine>(makeRedisBackend(testSettings(server.port(), workers)), workers);
    EXPECT_TRUE(engine->waitAvailable());
    return engine;
  }
};

TEST_P(StoreSemantics, GetOrCreateCreatesOnceThenReturnsTheWinner) {
  auto engine = makeEngine();
  auto s = engine->sync();
  auto first = s.getOrCreate("persist:web:1.2.3.4", "pool/10.0.0.1:80");
  ASSERT_TRUE(first && first->ok);
  EXPECT_TRUE(first->created);
  EXPECT_EQ(first->value, "pool/10.0.0.1:80");

  auto second = s.getOrCreate("persist:web:1.2.3.4", "pool/10.0.0.2:80");
  ASSERT_TRUE(second && second->ok);
  EXPECT_FALSE(second->created);
  EXPECT_EQ(second->value, "pool/10.0.0.1:80");

  auto got = s.get("persist:web:1.2.3.4");
  ASSERT_TRUE(got && got->ok);
  EXPECT_EQ(got->value, "pool/10.0.0.1:80");
  EXPECT_FALSE(got->created);

  auto missing = s.get("persist:web:9.9.9.9");
  ASSERT_TRUE(missing && missing->ok);
  EXPECT_EQ(missing->value, std::nullopt);
}

// Two workers (two loops on two threads) race on the same 1000 new keys: each key is created by
// exactly one of them and both get the same value.
TEST_P(StoreSemantics, ConcurrentGetOrCreateFromTwoWorkersAgrees) {
  constexpr int kKeys = 1000;
  auto engine = makeEngine(2);
  std::vector<OwnedReply> replies[2];
  replies[0].resize(kKeys);
  replies[1].resize(kKeys);
  std::atomic<int> answered{0};
  std::promise<void> all;
  std::latch go(2);
  for (size_t w = 0; w < 2; ++w) {
    engine->worker(w).post([&, w] {
      go.arrive_and_wait();
      for (int k = 0; k < kKeys; ++k) {
        engine->store(w).getOrCreate("persist:vs:client-" + std::to_string(k),
                                     "server-" + std::to_string(w), 60s, [&, w, k](const Reply& r) {
                                       replies[w][k] = r;
                                       if (answered.fetch_add(1) + 1 == 2 * kKeys) all.set_value();
                                     });
      }
    });
  }
  ASSERT_EQ(all.get_future().wait_for(10s), std::future_status::ready);
  std::map<std::string, int> winners;
  for (int k = 0; k < kKeys; ++k) {
    const OwnedReply& a = replies[0][k];
    const OwnedReply& b = replies[1][k];
    ASSERT_TRUE(a.ok && b.ok) << k;
    ASSERT_EQ(int(a.created) + int(b.created), 1) << "key " << k;
    ASSERT_TRUE(a.value.has_value());
    ASSERT_EQ(a.value, b.value) << "key " << k;
    EXPECT_EQ(*a.value, a.created ? "server-0" : "server-1") << "key " << k;
    ++winners[*a.value];
  }
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(answered.load(), 2 * kKeys);  // no callback ran twice
}

TEST_P(StoreSemantics, EntriesExpire) {
  auto engine = makeEngine();
  auto s = engine->sync();
  auto created = s.getOrCreate("persist:web:a", "s1", 150ms);
  ASSERT_TRUE(created && created->created);
  auto got = s.get("persist:web:a");
  ASSERT_TRUE(got && got->ok);
  EXPECT_EQ(got->value, "s1");

  std::this_thread::sleep_for(400ms);
  got = s.get("persist:web:a");
  ASSERT_TRUE(got && got->ok);
  EXPECT_EQ(got->value, std::nullopt);
  auto again = s.getOrCreate("persist:web:a", "s2", 150ms);
  ASSERT_TRUE(again && again->ok);
  EXPECT_TRUE(again->created);
  EXPECT_EQ(again->value, "s2");
}

TEST_P(StoreSemantics, TouchExtendsTheLifetime) {
  auto engine = makeEngine();
  auto s = engine->sync();
  ASSERT_TRUE(s.getOrCreate("persist:web:t", "s1", 300ms)->created);
  std::this_thread::sleep_for(100ms);
  s.touch("persist:web:t", 3s);
  std::this_thread::sleep_for(400ms);  // past the first lifetime
  auto got = s.get("persist:web:t");
  ASSERT_TRUE(got && got->ok);
  EXPECT_EQ(got->value, "s1");

  // Touching nothing creates nothing.
  s.touch("persist:web:none", 3s);
  got = s.get("persist:web:none");
  ASSERT_TRUE(got && got->ok);
  EXPECT_EQ(got->value, std::nullopt);
}

TEST_P(StoreSemantics, CompareAndSetSwapsOnlyTheExpectedValue) {
  auto engine = makeEngine();
  auto s = engine->sync();
  ASSERT_TRUE(s.getOrCreate("persist:web:c", "down-server")->created);

  auto wrong = s.compareAndSet("persist:web:c", "other-server", "new-server");
  ASSERT_TRUE(wrong && wrong->ok);
  EXPECT_FALSE(wrong->swapped);
  EXPECT_EQ(wrong->value, "down-server");  // the value now

  auto right = s.compareAndSet("persist:web:c", "down-server", "new-server");
  ASSERT_TRUE(right && right->ok);
  EXPECT_TRUE(right->swapped);
  EXPECT_EQ(right->value, "new-server");
  EXPECT_EQ(s.get("persist:web:c")->value, "new-server");

  // Two engines replacing the same dead server converge: the second sees the first's choice.
  auto late = s.compareAndSet("persist:web:c", "down-server", "third-server");
  ASSERT_TRUE(late && late->ok);
  EXPECT_FALSE(late->swapped);
  EXPECT_EQ(late->value, "new-server");

  auto absent = s.compareAndSet("persist:web:none", "x", "y");
  ASSERT_TRUE(absent && absent->ok);
  EXPECT_FALSE(absent->swapped);
  EXPECT_EQ(absent->value, std::nullopt);
  EXPECT_EQ(s.get("persist:web:none")->value, std::nullopt);

  // The replacement carries its own lifetime.
  ASSERT_TRUE(s.compareAndSet("persist:web:c", "new-server", "short-lived", 150ms)->swapped);
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(s.get("persist:web:c")->value, std::nullopt);
}

TEST_P(StoreSemantics, EraseRemovesTheEntry) {
  auto engine = makeEngine();
  auto s = engine->sync();
  ASSERT_TRUE(s.getOrCreate("persist:web:e", "s1")->created);
  s.erase("persist:web:e");
  auto got = s.get("persist:web:e");
  ASSERT_TRUE(got && got->ok);
  EXPECT_EQ(got->value, std::nullopt);
  auto again = s.getOrCreate("persist:web:e", "s2");
  ASSERT_TRUE(again && again->ok);
  EXPECT_TRUE(again->created);
  EXPECT_EQ(again->value, "s2");
  s.erase("persist:web:never-there");
  EXPECT_TRUE(s.get("persist:web:e")->ok);
}

TEST_P(StoreSemantics, BinaryKeysAndValues) {
  auto engine = makeEngine();
  auto s = engine->sync();
  const std::string key("persist:web:\0\r\n\xff \"*3\r\n", 23);
  const std::string truncated("persist:web:", 12);
  const std::string value("srv\0\r\n\xfe", 8);
  auto created = s.getOrCreate(key, value);
  ASSERT_TRUE(created && created->ok);
  EXPECT_TRUE(created->created);
  auto got = s.get(key);
  ASSERT_TRUE(got && got->ok);
  EXPECT_EQ(got->value, value);
  EXPECT_EQ(s.get(truncated)->value, std::nullopt);

  const std::string other("other\0", 6);
  auto swapped = s.compareAndSet(key, value, other);
  ASSERT_TRUE(swapped && swapped->ok);
  EXPECT_TRUE(swapped->swapped);
  EXPECT_EQ(swapped->value, other);
  s.erase(key);
  EXPECT_EQ(s.get(key)->value, std::nullopt);
}

TEST_P(StoreSemantics, CallbacksRunOnTheWorkersThread) {
  auto engine = makeEngine(2);
  for (size_t w = 0; w < 2; ++w) {
    std::thread::id seen;
    auto reply = testing::callOn(engine->worker(w), [&, w](Callback cb) {
      engine->store(w).getOrCreate("persist:web:thread", "s", 60s, [&, cb](const Reply& r) {
        seen = std::this_thread::get_id();
        cb(r);
      });
    });
    ASSERT_TRUE(reply && reply->ok);
    EXPECT_EQ(seen, engine->worker(w).threadId());
  }
}

TEST_P(StoreSemantics, StatusAndInspect) {
  auto engine = makeEngine();
  auto s = engine->sync();
  ASSERT_TRUE(s.getOrCreate("persist:web:i", "s1", 10s)->created);

  auto seen = engine->backend().inspect("persist:web:i");
  EXPECT_TRUE(seen.ok) << seen.error;
  EXPECT_EQ(seen.value, "s1");
  EXPECT_GT(seen.ttl_ms, 8000);
  EXPECT_LE(seen.ttl_ms, 10000);

  auto none = engine->backend().inspect("persist:web:none");
  EXPECT_TRUE(none.ok) << none.error;
  EXPECT_EQ(none.value, std::nullopt);
  EXPECT_EQ(none.ttl_ms, -1);

  StoreStatus status = engine->backend().status();
  EXPECT_EQ(status.type, GetParam());
  EXPECT_TRUE(status.connected);
  if (redis()) {
    EXPECT_EQ(status.address, "127.0.0.1:" + std::to_string(sharedRedis().port()));
    EXPECT_GE(status.round_trips, 1u);
    EXPECT_EQ(status.errors, 0u);
    EXPECT_EQ(status.timeouts, 0u);
    EXPECT_EQ(status.entries, std::nullopt);
  } else {
    EXPECT_EQ(status.entries, 1u);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreSemantics, ::testing::Values("memory", "redis"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// Entries nobody asks for again are removed by the bounded sweep that rides on other calls.
TEST(MemoryStore, SweepRemovesExpiredEntriesNobodyAsksFor) {
  Engine engine(makeMemoryBackend(), 1);
  constexpr int kEntries = 2000;
  engine.worker(0).run([&] {
    for (int i = 0; i < kEntries; ++i)
      engine.store(0).getOrCreate("persist:web:old-" + std::to_string(i), "s", 300ms, nullptr);
  });
  EXPECT_EQ(engine.backend().status().entries, uint64_t{kEntries});
  std::this_thread::sleep_for(400ms);
  // Calls on other keys (that create nothing) sweep the expired ones away, bit by bit.
  int calls = 0;
  engine.worker(0).run([&] {
    while (engine.backend().status().entries != 0u && calls < 200000) {
      for (int i = 0; i < 100; ++i, ++calls)
        engine.store(0).get("persist:web:absent-" + std::to_string(calls), nullptr);
    }
  });
  EXPECT_EQ(engine.backend().status().entries, 0u);
  EXPECT_LT(calls, 50 * kEntries);  // bounded work per call, yet it keeps up
  EXPECT_TRUE(engine.store(0).available());
}

// The memory store's table through growth, removals from the middle of probe runs (erase, expiry,
// the sweep) and values that change size: every live key stays reachable with its value.
TEST(MemoryStore, KeysStayReachableThroughGrowthRemovalAndExpiry) {
  Engine engine(makeMemoryBackend(), 1);
  constexpr int kKeys = 20000;
  auto key = [](int i) { return "persist:web:client-" + std::to_string(i); };
  auto original = [](int i) { return "pool/10.0.0." + std::to_string(i % 300) + ":80"; };
  auto replaced = [](int i) { return "pool/replacement-" + std::to_string(i) + ".example:8080"; };
  // i % 3: 0 erased, 1 replaced (a longer value), 2 kept.
  auto expected = [&](int i) -> std::optional<std::string> {
    if (i % 3 == 0) return std::nullopt;
    return i % 3 == 1 ? replaced(i) : original(i);
  };
  StateStore& store = engine.store(0);
  auto check = [&] {
    int wrong = 0;
    engine.worker(0).run([&] {
      for (int i = 0; i < kKeys; ++i) {
        store.get(key(i), [&](const Reply& r) {
          std::optional<std::string> got;
          if (r.value) got.emplace(*r.value);
          if (!r.ok || got != expected(i)) ++wrong;
        });
      }
    });
    return wrong;
  };
  engine.worker(0).run([&] {
    for (int i = 0; i < kKeys; ++i) store.getOrCreate(key(i), original(i), 60s, nullptr);
    for (int i = 0; i < kKeys; i += 3) store.erase(key(i));
    for (int i = 1; i < kKeys; i += 3)
      store.compareAndSet(key(i), original(i), replaced(i), 60s, nullptr);
    // Short-lived entries between the others, in the same probe runs.
    for (int i = 0; i < kKeys / 2; ++i) store.getOrCreate("persist:web:brief-" + std::to_string(i), "s", 50ms, nullptr);
  });
  const uint64_t live = kKeys - (kKeys + 2) / 3;
  EXPECT_EQ(engine.backend().status().entries, live + kKeys / 2);
  EXPECT_EQ(check(), 0);
  std::this_thread::sleep_for(120ms);
  // The sweep takes the expired ones out of the middle of runs; the rest must still be found.
  int calls = 0;
  engine.worker(0).run([&] {
    while (engine.backend().status().entries != live && calls < 400000) {
      for (int i = 0; i < 100; ++i, ++calls) store.get("persist:web:absent-" + std::to_string(calls), nullptr);
    }
  });
  EXPECT_EQ(engine.backend().status().entries, live);
  EXPECT_EQ(check(), 0);
}

}  // namespace
}  // namespace ballast::state
