#include "proxy/entry_cache.h"

namespace ballast::proxy {

EntryCache::EntryCache(size_t capacity)
    : capacity_(capacity),
      per_shard_(capacity == 0 ? 0 : (capacity + kShards - 1) / kShards),
      shards_(std::make_unique<Shard[]>(kShards)) {}

std::optional<EntryCache::Entry> EntryCache::lookup(std::string_view key, uint64_t now_ms) {
  if (capacity_ == 0) return std::nullopt;
  Shard& shard = shardFor(key);
  std::lock_guard<std::mutex> lock(shard.mutex);
  auto it = shard.index.find(key);
  if (it == shard.index.end()) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  if (it->second->entry.expires_ms <= now_ms) {
    shard.lru.erase(it->second);
    shard.index.erase(it);
    misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  shard.lru.splice(shard.lru.begin(), shard.lru, it->second);
  hits_.fetch_add(1, std::memory_order_relaxed);
  return it->second->entry;
}

void EntryCache::insert(std::string_view key, std::string_view value, uint64_t expires_ms,
                        uint64_t now_ms) {
  if (capacity_ == 0) return;
  Shard& shard = shardFor(key);
  std::lock_guard<std::mutex> lock(shard.mutex);
  auto it = shard.index.find(key);
  if (it != shard.index.end()) {
    Entry& e = it->second->entry;
    e.value.assign(value);
    e.expires_ms = expires_ms;
    e.refreshed_ms = now_ms;
    shard.lru.splice(shard.lru.begin(), shard.lru, it->second);
    return;
  }
  if (shard.lru.size() >= per_shard_) {
    shard.index.erase(shard.lru.back().key);
    shard.lru.pop_back();
  }
  shard.lru.push_front(Node{std::string(key), Entry{std::string(value), expires_ms, now_ms}});
  shard.index.emplace(shard.lru.front().key, shard.lru.begin());
}

void EntryCache::refreshed(std::string_view key, uint64_t expires_ms, uint64_t now_ms) {
  if (capacity_ == 0) return;
  Shard& shard = shardFor(key);
  std::lock_guard<std::mutex> lock(shard.mutex);
  auto it = shard.index.find(key);
  if (it == shard.index.end()) return;
  it->second->entry.expires_ms = expires_ms;
  it->second->entry.refreshed_ms = now_ms;
}

void EntryCache::invalidate(std::string_view key) {
  if (capacity_ == 0) return;
  Shard& shard = shardFor(key);
  std::lock_guard<std::mutex> lock(shard.mutex);
  auto it = shard.index.find(key);
  if (it == shard.index.end()) return;
  shard.lru.erase(it->second);
  shard.index.erase(it);
}

std::vector<EntryCache::Item> EntryCache::items(uint64_t now_ms) const {
  std::vector<Item> out;
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard<std::mutex> lock(shards_[i].mutex);
    for (const Node& n : shards_[i].lru)
      if (n.entry.expires_ms > now_ms) out.push_back({n.key, n.entry.value, n.entry.expires_ms});
  }
  return out;
}

size_t EntryCache::size() const {
  size_t n = 0;
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard<std::mutex> lock(shards_[i].mutex);
    n += shards_[i].lru.size();
  }
  return n;
}

}  // namespace ballast::proxy
