// consistent_hash: the Maglev table and lookups over it.
#include "lb/maglev.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "lb/balancer.h"
#include "test_pool.h"

namespace ballast::lb {
namespace {

using testing::makePool;
using testing::makeServer;
using testing::serverId;

constexpr int kKeys = 100'000;

uint64_t keyHash(int k) { return hashKey("10.1." + std::to_string(k / 256) + "." + std::to_string(k % 256)); }

PickContext hashed(uint64_t h, std::span<const uint32_t> excluded = {}) {
  PickContext ctx;
  ctx.excluded = excluded;
  ctx.has_hash = true;
  ctx.hash = h;
  return ctx;
}

// Servers with ids serverId(n) for each n, weight 1 unless given.
Pool poolOf(const std::vector<uint32_t>& ids, const std::map<uint32_t, uint32_t>& weights = {}) {
  std::vector<Server> servers;
  for (uint32_t n : ids) servers.push_back(makeServer(n, weights.count(n) ? weights.at(n) : 1));
  return makePool(servers);
}

std::vector<uint32_t> range(uint32_t n) {
  std::vector<uint32_t> v(n);
  for (uint32_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

// The id of the server each key goes to.
std::vector<std::string> owners(const Pool& pool, int keys = kKeys) {
  ConsistentHash lb(pool);
  std::vector<std::string> ids(keys);
  for (int k = 0; k < keys; ++k) {
    const Server* s = lb.pick(hashed(keyHash(k)));
    ids[k] = s ? s->id : "";
  }
  return ids;
}

// The table as server ids.
std::vector<std::string> tableIds(const Pool& pool) {
  std::vector<std::string> ids;
  for (uint32_t index : pool.maglev) ids.push_back(pool.servers[index].id);
  return ids;
}

bool isPrime(uint64_t n) {
  if (n < 2) return false;
  for (uint64_t d = 2; d * d <= n; ++d)
    if (n % d == 0) return false;
  return true;
}

TEST(Maglev, TableSizeIsPrimeAndComesInSteps) {
  EXPECT_EQ(maglevTableSize(0), 65537u);
  EXPECT_EQ(maglevTableSize(9), 65537u);
  EXPECT_EQ(maglevTableSize(655), 65537u);
  uint32_t next = maglevTableSize(656);
  EXPECT_GT(next, 131072u);
  EXPECT_LT(next, 131072u + 200);
  EXPECT_TRUE(isPrime(next));
  EXPECT_EQ(maglevTableSize(999), next);
  EXPECT_EQ(maglevTableSize(1000), next);  // adding a server does not resize (and reshuffle)
  EXPECT_EQ(maglevTableSize(1310), next);
  EXPECT_GT(maglevTableSize(1311), 262144u);
  EXPECT_TRUE(isPrime(maglevTableSize(1311)));
  EXPECT_EQ(poolOf(range(3)).maglev.size(), 65537u);
}

TEST(Maglev, EveryMemberOwnsItsShareOfEntries) {
  Pool pool = poolOf(range(7));
  std::map<uint32_t, int> entries;
  for (uint32_t index : pool.maglev) entries[index]++;
  ASSERT_EQ(entries.size(), 7u);
  for (auto [index, n] : entries) EXPECT_NEAR(n, 65537 / 7, 65537 / 7 / 100) << index;
}

TEST(Maglev, WeightsHonoured) {
  Pool pool = poolOf(range(4), {{1, 2}, {3, 3}});  // 1, 2, 1, 3
  std::map<uint32_t, int> entries;
  for (uint32_t index : pool.maglev) entries[index]++;
  EXPECT_NEAR(entries[0], 65537 / 7, 100);
  EXPECT_NEAR(entries[1], 65537 * 2 / 7, 100);
  EXPECT_NEAR(entries[2], 65537 / 7, 100);
  EXPECT_NEAR(entries[3], 65537 * 3 / 7, 100);
  // And so are the keys.
  std::map<std::string, int> keys;
  for (const std::string& id : owners(pool)) keys[id]++;
  EXPECT_NEAR(keys[serverId(1)] / static_cast<double>(keys[serverId(0)]), 2.0, 0.1);
  EXPECT_NEAR(keys[serverId(3)] / static_cast<double>(keys[serverId(2)]), 3.0, 0.15);
}

TEST(Maglev, SameTableWhateverTheOrderOrTheBuild) {
  Pool a = poolOf(range(10));
  Pool b = poolOf(range(10));
  EXPECT_EQ(a.maglev, b.maglev);
  std::vector<uint32_t> shuffled = {7, 2, 9, 0, 4, 1, 8, 3, 6, 5};
  Pool c = poolOf(shuffled);
  EXPECT_NE(c.maglev, a.maglev);  // other indexes...
  EXPECT_EQ(tableIds(c), tableIds(a));  // ...for the same servers
  EXPECT_EQ(buildMaglev(a.servers), a.maglev);
}

TEST(Maglev, AddingATenthServerMovesATenthOfTheKeysToIt) {
  std::vector<std::string> before = owners(poolOf(range(9)));
  std::vector<std::string> after = owners(poolOf(range(10)));
  int moved = 0, elsewhere = 0;
  for (int k = 0; k < kKeys; ++k) {
    if (before[k] == after[k]) continue;
    ++moved;
    if (after[k] != serverId(9)) ++elsewhere;
  }
  EXPECT_GE(moved, kKeys * 8 / 100);
  EXPECT_LE(moved, kKeys * 12 / 100);
  // Maglev is nearly, not perfectly, minimal: a few keys shift between the other servers as the
  // newcomer takes its turns (about 0.3% of all keys here).
  EXPECT_LT(elsewhere, kKeys / 200);
}

TEST(Maglev, RemovingAServerMovesItsKeys) {
  Pool ten = poolOf(range(10));
  std::vector<uint32_t> nine_ids = range(10);
  nine_ids.erase(nine_ids.begin() + 4);
  std::vector<std::string> before = owners(ten);
  std::vector<std::string> after = owners(poolOf(nine_ids));
  int owned = 0, others_moved = 0;
  std::set<std::string> heirs;
  for (int k = 0; k < kKeys; ++k) {
    if (before[k] == serverId(4)) {
      ++owned;
      heirs.insert(after[k]);
    } else if (before[k] != after[k]) {
      ++others_moved;
    }
  }
  EXPECT_NEAR(owned, kKeys / 10, kKeys / 100);
  EXPECT_EQ(heirs.size(), 9u);  // its keys spread over all the others
  EXPECT_LT(others_moved, kKeys / 200);  // nearly none of the others' (about 0.2%)
}

TEST(Maglev, DisabledAndDrainingServersAreNotInTheTable) {
  std::vector<Server> servers;
  for (uint32_t n = 0; n < 10; ++n) servers.push_back(makeServer(n, 1));
  Pool all = makePool(servers);
  servers[3].enabled = false;
  servers[5].drain = true;
  servers[7].weight = 0;
  Pool some = makePool(servers);
  std::set<uint32_t> in_table(some.maglev.begin(), some.maglev.end());
  EXPECT_EQ(in_table, (std::set<uint32_t>{0, 1, 2, 4, 6, 8, 9}));
  // The same table as a pool without them (the table size follows the configured servers).
  std::vector<Server> without;
  for (const Server& s : servers)
    if (s.enabled && !s.drain && s.weight > 0) without.push_back(s);
  EXPECT_EQ(tableIds(makePool(without)), tableIds(some));
  // Enabled again: the very same table as before.
  servers[3].enabled = true;
  servers[5].drain = false;
  servers[7].weight = 1;
  EXPECT_EQ(makePool(servers).maglev, all.maglev);
}

TEST(ConsistentHash, KeyGoesToItsTableEntry) {
  Pool pool = poolOf(range(5));
  ConsistentHash lb(pool);
  for (int k = 0; k < 1000; ++k) {
    uint64_t h = keyHash(k);
    EXPECT_EQ(lb.pick(hashed(h))->index, pool.maglev[h % pool.maglev.size()]);
  }
}

TEST(ConsistentHash, UnusableServerKeysGoToOneReplacementAndComeBack) {
  Pool pool = poolOf(range(10));
  ConsistentHash worker0(pool), worker1(pool);  // two workers (or two engines)
  const int keys = 20000;
  std::vector<uint32_t> before(keys);
  for (int k = 0; k < keys; ++k) before[k] = worker0.pick(hashed(keyHash(k)))->index;

  auto check = [&](const char* why) {
    std::set<uint32_t> heirs;
    std::vector<uint32_t> now(keys);
    for (int k = 0; k < keys; ++k) {
      const Server* a = worker0.pick(hashed(keyHash(k)));
      const Server* b = worker1.pick(hashed(keyHash(k)));
      if (a == nullptr || a != b) {
        ADD_FAILURE() << why << ": every worker picks the same replacement (key " << k << ")";
        continue;
      }
      now[k] = a->index;
      if (before[k] == 2) {
        EXPECT_NE(a->index, 2u) << why;
        heirs.insert(a->index);
      } else {
        EXPECT_EQ(a->index, before[k]) << why << ": other keys stay";
      }
    }
    EXPECT_GE(heirs.size(), 8u) << why << ": its keys spread over the others";
    return now;
  };

  pool.servers[2].state->healthy = false;
  std::vector<uint32_t> down = check("down");
  pool.servers[2].state->healthy = true;
  pool.servers[2].state->ejected_until_ms = 1000;
  std::vector<uint32_t> ejected = check("ejected");
  EXPECT_EQ(down, ejected);
  pool.servers[2].state->ejected_until_ms = 0;
  // A retry that excludes the server it tried goes where the key goes when that one is down.
  for (int k = 0; k < keys; ++k) {
    if (before[k] != 2) continue;
    std::vector<uint32_t> tried{2};
    EXPECT_EQ(worker1.pick(hashed(keyHash(k), tried))->index, down[k]);
  }
  // Usable again: every key is back.
  for (int k = 0; k < keys; ++k) EXPECT_EQ(worker0.pick(hashed(keyHash(k)))->index, before[k]);
}

TEST(ConsistentHash, WalksPastSeveralUnusableServers) {
  Pool pool = poolOf(range(6));
  for (uint32_t i : {0u, 1u, 3u, 4u}) pool.servers[i].state->healthy = false;
  ConsistentHash lb(pool);
  std::map<uint32_t, int> counts;
  for (int k = 0; k < 10000; ++k) counts[lb.pick(hashed(keyHash(k)))->index]++;
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_NEAR(counts[2], 5000, 500);
  EXPECT_NEAR(counts[5], 5000, 500);
  for (const Server& s : pool.servers) s.state->healthy = false;
  EXPECT_EQ(lb.pick(hashed(keyHash(1))), nullptr);
}

TEST(ConsistentHash, WithoutAKeyItIsRoundRobin) {
  Pool pool = poolOf(range(2), {{1, 3}});
  ConsistentHash lb(pool);
  std::map<uint32_t, int> counts;
  for (int i = 0; i < 400; ++i) counts[lb.pick({})->index]++;
  EXPECT_EQ(counts[0], 100);
  EXPECT_EQ(counts[1], 300);
}

}  // namespace
}  // namespace ballast::lb
