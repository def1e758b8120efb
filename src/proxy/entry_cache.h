// This engine's cache of persistence entries (key -> server id), so a returning client costs no
// store round trip. Bounded, entries expire, and another engine's change of an entry drops it
// (invalidate). Shared by the workers.
//
// Layout, for the data path: set-associative. A key's hash picks a shard (one mutex), a set of
// kWays slots within it and a 32-bit tag. A set's head (two cache lines, fetched together) holds
// the tags, the recency ticks and the expiry times of its ways: a lookup reads it and then the one
// slot whose tag matches; an insert chooses its slot (a free or expired one, else the least
// recently used) from the head alone and writes only that slot, without reading it first. A slot
// holds its key and value inline (up to kInline bytes).
//
// The sets of all shards are one region of memory, reserved at construction and asked to be
// backed by huge pages (random accesses over it then rarely miss the TLB, which under
// virtualization costs a walk of two page tables); each shard's part is initialized (and so
// committed) on its first insert: the steady state allocates nothing. Callers that keep a key for
// a while can keep its hash() too and pass it on.
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
  ~EntryCache();
  EntryCache(const EntryCache&) = delete;
  EntryCache& operator=(const EntryCache&) = delete;

  struct Entry {
    std::string value;
    uint64_t expires_ms = 0;    // monotonic
    uint64_t refreshed_ms = 0;  // when the store's copy was last given a new lifetime
  };
  // The hash the calls below take (the key's; each call computes it when not given).
  static uint64_t hash(std::string_view key);
  // Copies the live entry for key into *out (reusing its storage) and marks it recently used;
  // false when there is none.
  bool lookup(std::string_view key, uint64_t now_ms, Entry* out) {
    return lookup(key, hash(key), now_ms, out);
  }
  bool lookup(std::string_view key, uint64_t hash, uint64_t now_ms, Entry* out);
  void insert(std::string_view key, std::string_view value, uint64_t expires_ms, uint64_t now_ms) {
    insert(key, hash(key), value, expires_ms, now_ms);
  }
  void insert(std::string_view key, uint64_t hash, std::string_view value, uint64_t expires_ms,
              uint64_t now_ms) {
    insertIf(key, hash, value, expires_ms, now_ms, nullptr);
  }
  // Invalidations so far. A value read from the store before an invalidation may be older than
  // the change it announced: insertUnlessInvalidated() does not keep it.
  uint64_t epoch() const { return epoch_.load(std::memory_order_acquire); }
  // insert(), unless invalidate() was called since epoch() returned `epoch`: false then.
  bool insertUnlessInvalidated(std::string_view key, uint64_t hash, std::string_view value,
                               uint64_t expires_ms, uint64_t now_ms, uint64_t epoch) {
    return insertIf(key, hash, value, expires_ms, now_ms, &epoch);
  }
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
  // Three cache lines; a short entry is written without reading the slot first (whether the slot
  // owns a heap block is known from its shard's `spilled` bits).
  struct Slot {
    uint64_t refreshed_ms = 0;
    uint32_t key_len = 0;
    uint32_t value_len = 0;
    char bytes[kInline];
    std::unique_ptr<char[]> spill;  // used when key + value > kInline
    size_t spill_capacity = 0;

    const char* data() const { return key_len + value_len > kInline ? spill.get() : bytes; }
    std::string_view key() const { return {data(), key_len}; }
    std::string_view value() const { return {data() + key_len, value_len}; }
  };
  // A set: which of its slots hold what (tag 0: free), when each was last used and when each
  // expires (the head: 128 bytes, aligned so that the hardware fetches both lines at once), then
  // the slots.
  struct alignas(128) Set {
    uint32_t tag[kWays] = {};
    uint32_t used[kWays] = {};
    uint64_t expires_ms[kWays] = {};  // monotonic
    Slot slots[kWays];
  };
  static_assert(sizeof(Slot) == 192);
  struct Shard {
    mutable std::mutex mutex;
    Set* sets = nullptr;                 // its part of the region; null until the first insert
    std::unique_ptr<uint8_t[]> spilled;  // per set: the ways whose slot owns a heap block
    uint32_t clock = 0;                  // ticks on every use: the sets' recency order
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
  Place place(uint64_t hash) const;
  // The way of the slot holding key in its set, or -1.
  static int find(const Shard& s, const Place& p, std::string_view key);
  static void vacate(Shard& s, const Place& p, int way);
  // Stores key and value in a slot.
  static void write(Shard& s, size_t set, int way, std::string_view key, std::string_view value);
  static void count(std::atomic<uint64_t>& counter) {
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  bool insertIf(std::string_view key, uint64_t hash, std::string_view value, uint64_t expires_ms,
                uint64_t now_ms, const uint64_t* unless_past_epoch);

  // Counted before an invalidation takes its shard's lock, and read under that lock by an insert
  // that must not bring back what was invalidated.
  std::atomic<uint64_t> epoch_{0};
  size_t sets_per_shard_;
  size_t capacity_;
  std::unique_ptr<Shard[]> shards_;
  char* region_ = nullptr;  // kShards * sets_per_shard_ sets (mmap)
  size_t region_size_ = 0;
};

}  // namespace ballast::proxy
