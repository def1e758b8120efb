// This engine's cache of persistence entries (key -> server id), so a returning client costs no
// store round trip. Bounded (least recently used entries go first), entries expire, and another
// engine's change of an entry drops it (invalidate). Shared by the workers: sharded, one short
// critical section per operation.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ballast::proxy {

class EntryCache {
 public:
  explicit EntryCache(size_t capacity);  // 0: caches nothing

  struct Entry {
    std::string value;
    uint64_t expires_ms = 0;    // monotonic
    uint64_t refreshed_ms = 0;  // when the store's copy was last given a new lifetime
  };
  // The live entry for key (and it becomes the most recently used), or nullopt.
  std::optional<Entry> lookup(std::string_view key, uint64_t now_ms);
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

  size_t size() const;
  size_t capacity() const { return capacity_; }
  uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }
  uint64_t misses() const { return misses_.load(std::memory_order_relaxed); }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Node {
    std::string key;
    Entry entry;
  };
  struct Shard {
    std::mutex mutex;
    std::list<Node> lru;  // most recently used first
    std::unordered_map<std::string, std::list<Node>::iterator, StringHash, std::equal_to<>> index;
  };
  static constexpr size_t kShards = 16;
  Shard& shardFor(std::string_view key) { return shards_[StringHash{}(key) % kShards]; }

  size_t capacity_;
  size_t per_shard_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
};

}  // namespace ballast::proxy
