// This engine's cache of persistence entries (key -> server id), so a returning client costs no
// store round trip. Bounded, entries expire, and another engine's change of an entry drops it
// (invalidate). Shared by the workers.
//
// Layout, for the data path: set-associative. A key's hash picks a shard (one mutex), a set of
// kWays slots within it and a 32-bit tag; a lookup reads one cache line of tags and then the one
// slot whose tag matches. A new entry takes a free or expired slot of its set, else the set's least
// recently used one. A slot holds its key and value inline (up to kInline bytes). Sets are
// allocated once per shard, on first use: the steady state allocates nothing.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace ballast::proxy {

class EntryCache {
 public:
  // Holds at least `capacity` entries (rounded up to whole sets); 0 caches nothing.
  explicit EntryCache(size_t capacity);

  struct Entry {
    std::string value;
    uint64_t expires_ms = 0;    // monotonic
    uint64_t refreshed_ms = 0;  // when the store's copy was last given a new lifetime
  };
  // Copies the live entry for key into *out (reusing its storage) and marks it recently used;
  // false when there is none.
  bool lookup(std::string_view key, uint64_t now_ms, Entry* out);
  void insert(std::string_view key, std::string_view value, uint64_t expires_ms, uint64_t now_ms);
  // The store's copy got a new lifetime: so does this one.
  void refreshed(std::string_view key, uint64_t expires_ms, uint64_t now_ms);
  void invalidate(std::string_view key);
  // Every live entry (key, value, expiry), for writing them back to a store that lost them.
  struct Item {
    std::string key;
    std::string value;
    uint64_t expires_ms;
  };
  std::vector<Item> items(uint64_t now_ms) const;

  size_t size() const;  // entries held (expired ones not yet met included)
  size_t capacity() const { return capacity_; }  // as configured (the sets may hold a few more)
  uint64_t hits() const;
  uint64_t misses() const;

 private:
  static constexpr size_t kShards = 16;
  static constexpr size_t kWays = 8;
  static constexpr size_t kInline = 160;  // key and value bytes kept in the slot itself
  // An entry's key and value, stored one after the other in the slot (or, when longer than
  // kInline together, in a heap block of the slot's), so that reading it touches one place.
  struct Slot {
    uint64_t expires_ms = 0;
    uint64_t refreshed_ms = 0;
    uint32_t key_len = 0;
    uint32_t value_len = 0;
    std::unique_ptr<char[]> spill;  // used when key + value > kInline
    size_t spill_capacity = 0;
    char bytes[kInline];

    const char* data() const { return key_len + value_len > kInline ? spill.get() : bytes; }
    std::string_view key() const { return {data(), key_len}; }
    std::string_view value() const { return {data() + key_len, value_len}; }
    void assign(std::string_view key, std::string_view value);
  };
  // A set: which of its slots hold what (tag 0: free), when each was last used, and the slots,
  // together (a lookup reads the first cache line and one slot).
  struct alignas(64) Set {
    uint32_t tag[kWays] = {};
    uint32_t used[kWays] = {};
    Slot slots[kWays];
  };
  struct Shard {
    mutable std::mutex mutex;
    std::unique_ptr<Set[]> sets;  // null until the first insert
    uint32_t clock = 0;           // ticks on every use: the sets' recency order
    size_t entries = 0;
    // Written under the mutex, read without it.
    std::atomic<uint64_t> hits{0};
    std::atomic<uint64_t> misses{0};
  };
  // Where a key lives: its shard, the index of its set there, its tag.
  struct Place {
    Shard* shard;
    size_t set;
    uint32_t tag;
  };
  Place place(std::string_view key) const;
  // The way of the slot holding key in its set, or -1.
  static int find(const Shard& s, const Place& p, std::string_view key);
  static void vacate(Shard& s, Set& set, int way);
  static void count(std::atomic<uint64_t>& counter) {
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  size_t sets_per_shard_;
  size_t capacity_;
  std::unique_ptr<Shard[]> shards_;
};

}  // namespace ballast::proxy
