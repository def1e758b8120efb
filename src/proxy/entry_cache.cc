#include "proxy/entry_cache.h"

#include <cstring>
#include <functional>

namespace ballast::proxy {

EntryCache::EntryCache(size_t capacity)
    : sets_per_shard_(capacity == 0 ? 0 : (capacity + kShards * kWays - 1) / (kShards * kWays)),
      capacity_(capacity),
      shards_(std::make_unique<Shard[]>(kShards)) {}

EntryCache::Place EntryCache::place(std::string_view key) const {
  uint64_t h = std::hash<std::string_view>{}(key);
  // Different bits for the shard, the set (multiply-shift onto the set count) and the tag.
  Shard* shard = &shards_[h % kShards];
  size_t set = static_cast<size_t>(((h >> 4) & 0xffffffffu) * sets_per_shard_ >> 32);
  uint32_t tag = static_cast<uint32_t>(h >> 32) | 1u;  // never 0 (free)
  return {shard, set, tag};
}

void EntryCache::Slot::assign(std::string_view key, std::string_view value) {
  size_t n = key.size() + value.size();
  char* out = bytes;
  if (n > kInline) {
    if (spill_capacity < n) {
      spill = std::make_unique<char[]>(n);
      spill_capacity = n;
    }
    out = spill.get();
  } else if (spill_capacity > 4 * kInline) {
    spill.reset();  // a big one-off entry does not pin its block
    spill_capacity = 0;
  }
  std::memcpy(out, key.data(), key.size());
  std::memcpy(out + key.size(), value.data(), value.size());
  key_len = static_cast<uint32_t>(key.size());
  value_len = static_cast<uint32_t>(value.size());
}

int EntryCache::find(const Shard& s, const Place& p, std::string_view key) {
  if (!s.sets) return -1;
  const Set& set = s.sets[p.set];
  for (size_t w = 0; w < kWays; ++w)
    if (set.tag[w] == p.tag && set.slots[w].key() == key) return static_cast<int>(w);
  return -1;
}

void EntryCache::vacate(Shard& s, Set& set, int way) {
  set.tag[way] = 0;
  --s.entries;
}

bool EntryCache::lookup(std::string_view key, uint64_t now_ms, Entry* out) {
  if (capacity_ == 0) return false;
  Place p = place(key);
  Shard& s = *p.shard;
  std::lock_guard<std::mutex> lock(s.mutex);
  int w = find(s, p, key);
  if (w < 0) {
    count(s.misses);
    return false;
  }
  Set& set = s.sets[p.set];
  const Slot& slot = set.slots[w];
  if (slot.expires_ms <= now_ms) {
    vacate(s, set, w);
    count(s.misses);
    return false;
  }
  set.used[w] = ++s.clock;
  out->value.assign(slot.value());
  out->expires_ms = slot.expires_ms;
  out->refreshed_ms = slot.refreshed_ms;
  count(s.hits);
  return true;
}

void EntryCache::insert(std::string_view key, std::string_view value, uint64_t expires_ms,
                        uint64_t now_ms) {
  if (capacity_ == 0) return;
  Place p = place(key);
  Shard& s = *p.shard;
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.sets) s.sets = std::make_unique<Set[]>(sets_per_shard_);
  Set& set = s.sets[p.set];
  int w = find(s, p, key);
  if (w < 0) {
    // A free slot, else an expired one, else the least recently used (the oldest tick).
    int expired = -1, oldest = 0;
    for (int i = 0; i < static_cast<int>(kWays); ++i) {
      if (set.tag[i] == 0) {
        w = i;
        break;
      }
      if (expired < 0 && set.slots[i].expires_ms <= now_ms) expired = i;
      if (s.clock - set.used[i] > s.clock - set.used[oldest]) oldest = i;
    }
    if (w < 0) {
      w = expired >= 0 ? expired : oldest;
    } else {
      ++s.entries;
    }
    set.tag[w] = p.tag;
  }
  Slot& slot = set.slots[w];
  slot.assign(key, value);
  slot.expires_ms = expires_ms;
  slot.refreshed_ms = now_ms;
  set.used[w] = ++s.clock;
}

void EntryCache::refreshed(std::string_view key, uint64_t expires_ms, uint64_t now_ms) {
  if (capacity_ == 0) return;
  Place p = place(key);
  Shard& s = *p.shard;
  std::lock_guard<std::mutex> lock(s.mutex);
  int w = find(s, p, key);
  if (w < 0) return;
  Slot& slot = s.sets[p.set].slots[w];
  slot.expires_ms = expires_ms;
  slot.refreshed_ms = now_ms;
}

void EntryCache::invalidate(std::string_view key) {
  if (capacity_ == 0) return;
  Place p = place(key);
  Shard& s = *p.shard;
  std::lock_guard<std::mutex> lock(s.mutex);
  int w = find(s, p, key);
  if (w >= 0) vacate(s, s.sets[p.set], w);
}

std::vector<EntryCache::Item> EntryCache::items(uint64_t now_ms) const {
  std::vector<Item> out;
  for (size_t i = 0; i < kShards; ++i) {
    const Shard& s = shards_[i];
    std::lock_guard<std::mutex> lock(s.mutex);
    if (!s.sets) continue;
    for (size_t i = 0; i < sets_per_shard_; ++i)
      for (size_t w = 0; w < kWays; ++w) {
        const Slot& slot = s.sets[i].slots[w];
        if (s.sets[i].tag[w] != 0 && slot.expires_ms > now_ms)
          out.push_back({std::string(slot.key()), std::string(slot.value()), slot.expires_ms});
      }
  }
  return out;
}

size_t EntryCache::size() const {
  size_t n = 0;
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard<std::mutex> lock(shards_[i].mutex);
    n += shards_[i].entries;
  }
  return n;
}

uint64_t EntryCache::hits() const {
  uint64_t n = 0;
  for (size_t i = 0; i < kShards; ++i) n += shards_[i].hits.load(std::memory_order_relaxed);
  return n;
}

uint64_t EntryCache::misses() const {
  uint64_t n = 0;
  for (size_t i = 0; i < kShards; ++i) n += shards_[i].misses.load(std::memory_order_relaxed);
  return n;
}

}  // namespace ballast::proxy
