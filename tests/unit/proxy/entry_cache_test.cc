#include "proxy/entry_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

namespace ballast::proxy {
namespace {

std::string key(int i) { return "persist:web:client-" + std::to_string(i); }

TEST(EntryCache, MissThenHitCopiesTheEntry) {
  EntryCache cache(1000);
  EntryCache::Entry e;
  EXPECT_FALSE(cache.lookup("persist:web:a", 10, &e));
  cache.insert("persist:web:a", "web/10.0.0.1:80", 5000, 10);
  ASSERT_TRUE(cache.lookup("persist:web:a", 20, &e));
  EXPECT_EQ(e.value, "web/10.0.0.1:80");
  EXPECT_EQ(e.expires_ms, 5000u);
  EXPECT_EQ(e.refreshed_ms, 10u);
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(cache.misses(), 1u);
  EXPECT_EQ(cache.size(), 1u);
}

TEST(EntryCache, InsertReplacesTheValueOfAKnownKey) {
  EntryCache cache(1000);
  cache.insert("k", "a-long-server-id/192.168.100.200:8080", 100, 0);
  cache.insert("k", "b", 200, 5);
  EntryCache::Entry e;
  ASSERT_TRUE(cache.lookup("k", 1, &e));
  EXPECT_EQ(e.value, "b");
  EXPECT_EQ(e.expires_ms, 200u);
  EXPECT_EQ(cache.size(), 1u);
}

TEST(EntryCache, ExpiredEntriesAreMissesAndGo) {
  EntryCache cache(1000);
  cache.insert("k", "v", 100, 0);
  EntryCache::Entry e;
  EXPECT_TRUE(cache.lookup("k", 99, &e));
  EXPECT_FALSE(cache.lookup("k", 100, &e));
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_TRUE(cache.items(100).empty());
}

TEST(EntryCache, RefreshedExtendsTheLifetime) {
  EntryCache cache(1000);
  cache.insert("k", "v", 100, 0);
  cache.refreshed("k", 500, 90);
  cache.refreshed("unknown", 500, 90);  // nothing to refresh: no entry appears
  EntryCache::Entry e;
  ASSERT_TRUE(cache.lookup("k", 300, &e));
  EXPECT_EQ(e.refreshed_ms, 90u);
  EXPECT_FALSE(cache.lookup("unknown", 300, &e));
}

TEST(EntryCache, InvalidateDropsOnlyThatKey) {
  EntryCache cache(1000);
  cache.insert("a", "1", 100, 0);
  cache.insert("b", "2", 100, 0);
  cache.invalidate("a");
  cache.invalidate("never-there");
  EntryCache::Entry e;
  EXPECT_FALSE(cache.lookup("a", 1, &e));
  EXPECT_TRUE(cache.lookup("b", 1, &e));
  EXPECT_EQ(cache.size(), 1u);
}

TEST(EntryCache, CapacityZeroCachesNothing) {
  EntryCache cache(0);
  cache.insert("a", "1", 100, 0);
  EntryCache::Entry e;
  EXPECT_FALSE(cache.lookup("a", 1, &e));
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.capacity(), 0u);
}

TEST(EntryCache, StaysWithinItsCapacity) {
  EntryCache cache(1000);
  EXPECT_EQ(cache.capacity(), 1000u);
  for (int i = 0; i < 20000; ++i) cache.insert(key(i), "s", 1'000'000, 0);
  EXPECT_LT(cache.size(), 1000u + 128u);  // rounded up to whole sets only
  EXPECT_GT(cache.size(), 1000u * 9 / 10);  // the sets fill evenly
  // The newest entries are there.
  EntryCache::Entry e;
  for (int i = 19990; i < 20000; ++i) EXPECT_TRUE(cache.lookup(key(i), 1, &e)) << i;
}

TEST(EntryCache, RecentlyUsedEntriesSurviveAFloodOfNewOnes) {
  EntryCache cache(1024);
  const int hot = 100;
  for (int i = 0; i < hot; ++i) cache.insert("hot-" + std::to_string(i), "h", 1'000'000, 0);
  EntryCache::Entry e;
  for (int i = 0; i < 20000; ++i) {
    cache.insert(key(i), "cold", 1'000'000, 0);
    if (i % 10 != 0) continue;
    for (int h = 0; h < hot; ++h) {
      ASSERT_TRUE(cache.lookup("hot-" + std::to_string(h), 1, &e)) << h;
    }
  }
  // ... while most of the flood went again.
  int cold_left = 0;
  for (int i = 0; i < 19000; ++i) cold_left += cache.lookup(key(i), 1, &e) ? 1 : 0;
  EXPECT_LT(cold_left, 1024);
}

TEST(EntryCache, ExpiredSlotsAreReusedBeforeLiveOnes) {
  EntryCache cache(128);  // one set of 8 per shard
  // Fill everything with entries that expire at 100, then one live entry per insert after it.
  for (int i = 0; i < 2000; ++i) cache.insert(key(i), "old", 100, 0);
  for (int i = 0; i < 64; ++i) cache.insert("live-" + std::to_string(i), "new", 1'000'000, 200);
  EntryCache::Entry e;
  int live = 0;
  for (int i = 0; i < 64; ++i) live += cache.lookup("live-" + std::to_string(i), 300, &e) ? 1 : 0;
  // Each shard's set holds 8; a shard receiving more than 8 of the 64 live keys loses some.
  EXPECT_GE(live, 40);
}

// An entry whose lifetime was extended is not taken for an expired one when its set needs room.
TEST(EntryCache, RefreshedEntriesAreNotReusedAsExpired) {
  EntryCache cache(128);  // one set of 8 per shard
  for (int i = 0; i < 2000; ++i) cache.insert(key(i), "old", 100, 0);
  EntryCache::Entry e;
  std::vector<int> refreshed;
  for (int i = 0; i < 2000; ++i) {
    if (!cache.lookup(key(i), 1, &e)) continue;
    if (i % 2 == 0) {  // every other entry still held gets a new lifetime
      cache.refreshed(key(i), 1'000'000, 50);
      refreshed.push_back(i);
    }
  }
  ASSERT_GT(refreshed.size(), 40u);
  // About two new entries per shard: the expired entries (about four per set) make room for them.
  for (int i = 0; i < 32; ++i) cache.insert("new-" + std::to_string(i), "n", 1'000'000, 200);
  // (Only a shard that receives more new entries than it holds expired ones loses refreshed
  // entries; taking refreshed entries for expired ones would lose about half of them.)
  int lost = 0;
  for (int i : refreshed) lost += cache.lookup(key(i), 300, &e) ? 0 : 1;
  EXPECT_LE(lost, 8) << "of " << refreshed.size();
}

TEST(EntryCache, LongKeysAndValuesAreKept) {
  EntryCache cache(1000);
  std::string long_key = "persist:web:" + std::string(500, 'k');
  std::string long_value = std::string(300, 'v');
  cache.insert(long_key, long_value, 100, 0);
  cache.insert("short", "s", 100, 0);
  EntryCache::Entry e;
  ASSERT_TRUE(cache.lookup(long_key, 1, &e));
  EXPECT_EQ(e.value, long_value);
  // The same key shortened and lengthened again.
  cache.insert(long_key, "x", 100, 0);
  ASSERT_TRUE(cache.lookup(long_key, 1, &e));
  EXPECT_EQ(e.value, "x");
  cache.insert(long_key, long_value + "!", 100, 0);
  ASSERT_TRUE(cache.lookup(long_key, 1, &e));
  EXPECT_EQ(e.value, long_value + "!");
  EXPECT_FALSE(cache.lookup(long_key.substr(0, long_key.size() - 1), 1, &e));
}

TEST(EntryCache, ItemsListsTheLiveEntries) {
  EntryCache cache(1000);
  cache.insert("a", "1", 100, 0);
  cache.insert("b", "2", 50, 0);
  cache.insert("c", "3", 100, 0);
  std::vector<EntryCache::Item> items = cache.items(60);
  std::vector<std::string> keys;
  for (auto& i : items) keys.push_back(i.key + "=" + i.value);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"a=1", "c=3"}));
}

TEST(EntryCache, WorkersShareIt) {
  EntryCache cache(100000);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&cache, t] {
      EntryCache::Entry e;
      for (int i = 0; i < 5000; ++i) {
        std::string k = key(t * 100000 + i);
        cache.insert(k, std::to_string(t), 1'000'000, 0);
        if (!cache.lookup(k, 1, &e) || e.value != std::to_string(t)) ADD_FAILURE() << k;
      }
    });
  for (auto& th : threads) th.join();
  // Sets of 8: now and then one is full before the cache is (then its oldest entry goes).
  EXPECT_GE(cache.size(), 19900u);
  EXPECT_LE(cache.size(), 20000u);
  EXPECT_EQ(cache.hits(), 20000u);
}

TEST(EntryCache, AValueReadBeforeAnInvalidationIsNotKept) {
  // A store reply that left before another engine's change announced by an invalidation may
  // carry the old value: it is used for its request but not cached.
  EntryCache cache(1000);
  EntryCache::Entry e;
  uint64_t before = cache.epoch();
  cache.invalidate("persist:web:a");  // nothing cached: still counts
  cache.insertUnlessInvalidated("persist:web:a", EntryCache::hash("persist:web:a"), "web/old", 5000,
                                10, before);
  EXPECT_FALSE(cache.lookup("persist:web:a", 20, &e));
  uint64_t now = cache.epoch();
  EXPECT_NE(now, before);
  cache.insertUnlessInvalidated("persist:web:a", EntryCache::hash("persist:web:a"), "web/new", 5000,
                                10, now);
  ASSERT_TRUE(cache.lookup("persist:web:a", 20, &e));
  EXPECT_EQ(e.value, "web/new");
}

}  // namespace
}  // namespace ballast::proxy
