#include "proxy/entry_cache.h"

#include <sys/mman.h>

#include <cstring>
#include <functional>
#include <memory>
#include <new>

namespace ballast::proxy {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}

EntryCache::EntryCache(size_t capacity)
    : sets_per_shard_(capacity == 0 ? 0 : (capacity + kShards * kWays - 1) / (kShards * kWays)),
      capacity_(capacity),
      shards_(std::make_unique<Shard[]>(kShards)) {
  if (sets_per_shard_ == 0) return;
  // Reserved (not committed) with room to start it on a huge page boundary.
  size_t bytes = kShards * sets_per_shard_ * sizeof(Set);
  region_size_ = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  size_t reserve = region_size_ + kHugePage;
  void* p = mmap(nullptr, reserve, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  char* base = static_cast<char*>(p);
  char* aligned = reinterpret_cast<char*>(
      (reinterpret_cast<uintptr_t>(base) + kHugePage - 1) / kHugePage * kHugePage);
  if (aligned > base) munmap(base, static_cast<size_t>(aligned - base));
  size_t tail = static_cast<size_t>(base + reserve - (aligned + region_size_));
  if (tail > 0) munmap(aligned + region_size_, tail);
  region_ = aligned;
  madvise(region_, region_size_, MADV_HUGEPAGE);  // a hint: fine if huge pages are off
}

EntryCache::~EntryCache() {
  if (region_ == nullptr) return;
  for (size_t i = 0; i < kShards; ++i)
    if (shards_[i].sets != nullptr) std::destroy_n(shards_[i].sets, sets_per_shard_);
  munmap(region_, region_size_);
}

uint64_t EntryCache::hash(std::string_view key) { return std::hash<std::string_view>{}(key); }

EntryCache::Place EntryCache::place(uint64_t h) const {
  // Different bits for the shard, the set (multiply-shift onto the set count) and the tag.
  Shard* shard = &shards_[h % kShards];
  size_t set = static_cast<size_t>(((h >> 4) & 0xffffffffu) * sets_per_shard_ >> 32);
  uint32_t tag = static_cast<uint32_t>(h >> 32) | 1u;  // never 0 (free)
  return {shard, set, tag};
}

void EntryCache::write(Shard& s, size_t set, int way, std::string_view key,
                       std::string_view value) {
  Slot& slot = s.sets[set].slots[way];
  const uint8_t bit = static_cast<uint8_t>(1u << way);
  size_t n = key.size() + value.size();
  char* out = slot.bytes;
  if (n > kInline) {
    if (!(s.spilled[set] & bit) || slot.spill_capacity < n) {
      slot.spill = std::make_unique<char[]>(n);
      slot.spill_capacity = n;
      s.spilled[set] |= bit;
    }
    out = slot.spill.get();
  } else if ((s.spilled[set] & bit) && slot.spill_capacity > 4 * kInline) {
    slot.spill.reset();  // a big one-off entry does not pin its block
    slot.spill_capacity = 0;
    s.spilled[set] &= static_cast<uint8_t>(~bit);
  }
  std::memcpy(out, key.data(), key.size());
  std::memcpy(out + key.size(), value.data(), value.size());
  slot.key_len = static_cast<uint32_t>(key.size());
  slot.value_len = static_cast<uint32_t>(value.size());
}

int EntryCache::find(const Shard& s, const Place& p, std::string_view key) {
  if (!s.sets) return -1;
  const Set& set = s.sets[p.set];
  for (size_t w = 0; w < kWays; ++w)
    if (set.tag[w] == p.tag && set.slots[w].key() == key) return static_cast<int>(w);
  return -1;
}

void EntryCache::vacate(Shard& s, const Place& p, int way) {
  s.sets[p.set].tag[way] = 0;
  --s.entries;
}

bool EntryCache::lookup(std::string_view key, uint64_t hash, uint64_t now_ms, Entry* out) {
  if (capacity_ == 0) return false;
  Place p = place(hash);
  Shard& s = *p.shard;
  std::lock_guard<std::mutex> lock(s.mutex);
  int w = find(s, p, key);
  if (w < 0) {
    count(s.misses);
    return false;
  }
  Set& set = s.sets[p.set];
  if (set.expires_ms[w] <= now_ms) {
    vacate(s, p, w);
    count(s.misses);
    return false;
  }
  const Slot& slot = set.slots[w];
  set.used[w] = ++s.clock;
  out->value.assign(slot.value());
  out->expires_ms = set.expires_ms[w];
  out->refreshed_ms = slot.refreshed_ms;
  count(s.hits);
  return true;
}

bool EntryCache::insertIf(std::string_view key, uint64_t hash, std::string_view value,
                          uint64_t expires_ms, uint64_t now_ms, const uint64_t* unless_past_epoch) {
  if (capacity_ == 0) return true;
  Place p = place(hash);
  Shard& s = *p.shard;
  std::lock_guard<std::mutex> lock(s.mutex);
  if (unless_past_epoch != nullptr && epoch_.load(std::memory_order_acquire) != *unless_past_epoch)
    return false;
  if (!s.sets) {
    Set* sets = reinterpret_cast<Set*>(region_ + (p.shard - shards_.get()) * sets_per_shard_ *
                                                     sizeof(Set));
    std::uninitialized_value_construct_n(sets, sets_per_shard_);
    s.sets = sets;
    s.spilled = std::make_unique<uint8_t[]>(sets_per_shard_);
  }
  Set& set = s.sets[p.set];
  int w = find(s, p, key);
  if (w < 0) {
    // A free slot, else an expired one, else the least recently used (the oldest tick): chosen
    // from the set's head, without reading any slot.
    int expired = -1, oldest = 0;
    for (int i = 0; i < static_cast<int>(kWays); ++i) {
      if (set.tag[i] == 0) {
        w = i;
        break;
      }
      if (expired < 0 && set.expires_ms[i] <= now_ms) expired = i;
      if (s.clock - set.used[i] > s.clock - set.used[oldest]) oldest = i;
    }
    if (w < 0) {
      w = expired >= 0 ? expired : oldest;
    } else {
      ++s.entries;
    }
    set.tag[w] = p.tag;
  }
  write(s, p.set, w, key, value);
  set.slots[w].refreshed_ms = now_ms;
  set.expires_ms[w] = expires_ms;
  set.used[w] = ++s.clock;
  return true;
}

void EntryCache::refreshed(std::string_view key, uint64_t expires_ms, uint64_t now_ms) {
  if (capacity_ == 0) return;
  Place p = place(hash(key));
  Shard& s = *p.shard;
  std::lock_guard<std::mutex> lock(s.mutex);
  int w = find(s, p, key);
  if (w < 0) return;
  s.sets[p.set].expires_ms[w] = expires_ms;
  s.sets[p.set].slots[w].refreshed_ms = now_ms;
}

void EntryCache::invalidate(std::string_view key) {
  if (capacity_ == 0) return;
  epoch_.fetch_add(1, std::memory_order_acq_rel);  // before the lock: see insertIf()
  Place p = place(hash(key));
  Shard& s = *p.shard;
  std::lock_guard<std::mutex> lock(s.mutex);
  int w = find(s, p, key);
  if (w >= 0) vacate(s, p, w);
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
        uint64_t expires_ms = s.sets[i].expires_ms[w];
        if (s.sets[i].tag[w] != 0 && expires_ms > now_ms)
          out.push_back({std::string(slot.key()), std::string(slot.value()), expires_ms});
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
