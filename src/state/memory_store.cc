// The embedded store of one engine: a map shared by the engine's workers, with Redis's semantics
// (entries expire; get-or-create is atomic). Sharded by key, one mutex per shard; callbacks run
// before the call returns, on the calling thread, after the shard's lock is released (so a
// callback may call the store again).
//
// A reply's value is a copy made under the shard's lock, on the calling frame's stack (no
// allocation for the short values stores hold; a nested call has its own).
//
// Expiry: an expired entry is treated as absent by every call and removed when a call meets it;
// besides, every kSweepEvery-th call on a shard examines the next kSweepBuckets buckets of that
// shard and removes what expired there (bounded work per call, the whole shard in turn), so
// entries nobody asks for again do not stay forever.
#include <array>
#include <atomic>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "state/state_store.h"

namespace ballast::state {
namespace {

constexpr size_t kShards = 16;
constexpr uint32_t kSweepEvery = 16;  // calls on a shard between two sweep steps
constexpr size_t kSweepBuckets = 16;  // buckets examined by one sweep step

uint64_t ttlMs(Duration ttl) { return ttl.count() < 1 ? 1 : static_cast<uint64_t>(ttl.count()); }

// Not noexcept on purpose: libstdc++ then keeps each node's hash code, so a lookup compares keys
// only on a full hash match instead of reading every colliding key's bytes.
struct KeyHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Where a reply's value is copied to: inline when short, else on the heap.
class ValueCopy {
 public:
  std::string_view set(std::string_view v) {
    if (v.size() <= sizeof inline_) {
      std::memcpy(inline_, v.data(), v.size());
      return {inline_, v.size()};
    }
    heap_.assign(v);
    return heap_;
  }

 private:
  char inline_[128];
  std::string heap_;
};

class MemoryMap {
 public:
  struct Entry {
    std::string value;
    uint64_t expires_ms = 0;
  };

  Reply getOrCreate(std::string_view key, std::string_view proposed, Duration ttl,
                    ValueCopy& copy) {
    uint64_t now = monotonicMs();
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mutex);
    maybeSweep(s, now);
    auto it = s.map.find(key);
    if (it != s.map.end() && it->second.expires_ms > now)
      return Reply{true, copy.set(it->second.value), false, false};
    if (it == s.map.end()) it = s.map.emplace(std::string(key), Entry{}).first;
    it->second.value.assign(proposed);
    it->second.expires_ms = now + ttlMs(ttl);
    return Reply{true, copy.set(it->second.value), true, false};
  }

  Reply get(std::string_view key, ValueCopy& copy) {
    uint64_t now = monotonicMs();
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mutex);
    maybeSweep(s, now);
    auto it = findLive(s, key, now);
    if (it == s.map.end()) return Reply{true, std::nullopt, false, false};
    return Reply{true, copy.set(it->second.value), false, false};
  }

  Reply compareAndSet(std::string_view key, std::string_view expected, std::string_view replacement,
                      Duration ttl, ValueCopy& copy) {
    uint64_t now = monotonicMs();
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mutex);
    maybeSweep(s, now);
    auto it = findLive(s, key, now);
    if (it == s.map.end()) return Reply{true, std::nullopt, false, false};
    if (it->second.value != expected) return Reply{true, copy.set(it->second.value), false, false};
    it->second.value.assign(replacement);
    it->second.expires_ms = now + ttlMs(ttl);
    return Reply{true, copy.set(it->second.value), false, true};
  }

  void touch(std::string_view key, Duration ttl) {
    uint64_t now = monotonicMs();
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mutex);
    maybeSweep(s, now);
    auto it = findLive(s, key, now);
    if (it != s.map.end()) it->second.expires_ms = now + ttlMs(ttl);
  }

  void erase(std::string_view key) {
    uint64_t now = monotonicMs();
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mutex);
    maybeSweep(s, now);
    auto it = s.map.find(key);
    if (it != s.map.end()) s.map.erase(it);
  }

  StoreBackend::Inspection inspect(std::string_view key) {
    uint64_t now = monotonicMs();
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mutex);
    StoreBackend::Inspection out;
    out.ok = true;
    auto it = findLive(s, key, now);
    if (it != s.map.end()) {
      out.value = it->second.value;
      out.ttl_ms = static_cast<int64_t>(it->second.expires_ms - now);
    }
    return out;
  }

  // Entries held, expired ones not yet removed included.
  uint64_t size() {
    uint64_t n = 0;
    for (Shard& s : shards_) {
      std::lock_guard<std::mutex> lock(s.mutex);
      n += s.map.size();
    }
    return n;
  }

 private:
  using Map = std::unordered_map<std::string, Entry, KeyHash, std::equal_to<>>;
  struct alignas(64) Shard {
    std::mutex mutex;
    Map map;
    uint32_t calls = 0;
    size_t sweep_cursor = 0;           // next bucket to examine
    std::vector<std::string> expired;  // scratch for the sweep
  };

  Shard& shard(std::string_view key) {
    // The map itself uses the hash's low bits (modulo its bucket count): pick shards by high bits.
    size_t h = KeyHash{}(key);
    return shards_[(h >> 57) % kShards];
  }

  // The live entry, removing it if it expired.
  static Map::iterator findLive(Shard& s, std::string_view key, uint64_t now) {
    auto it = s.map.find(key);
    if (it != s.map.end() && it->second.expires_ms <= now) {
      s.map.erase(it);
      return s.map.end();
    }
    return it;
  }

  static void maybeSweep(Shard& s, uint64_t now) {
    if (++s.calls % kSweepEvery != 0 || s.map.empty()) return;
    size_t buckets = s.map.bucket_count();
    for (size_t i = 0; i < kSweepBuckets && i < buckets; ++i) {
      size_t b = s.sweep_cursor++ % buckets;
      for (auto it = s.map.begin(b); it != s.map.end(b); ++it)
        if (it->second.expires_ms <= now) s.expired.push_back(it->first);
    }
    for (const std::string& key : s.expired) s.map.erase(key);
    s.expired.clear();
  }

  std::array<Shard, kShards> shards_;
};

class MemoryStore final : public StateStore {
 public:
  explicit MemoryStore(std::shared_ptr<MemoryMap> map) : map_(std::move(map)) {}

  void getOrCreate(std::string_view key, std::string_view proposed, Duration ttl,
                   Callback done) override {
    ValueCopy copy;
    Reply reply = map_->getOrCreate(key, proposed, ttl, copy);
    if (done) done(reply);
  }
  void get(std::string_view key, Callback done) override {
    ValueCopy copy;
    Reply reply = map_->get(key, copy);
    if (done) done(reply);
  }
  void compareAndSet(std::string_view key, std::string_view expected, std::string_view replacement,
                     Duration ttl, Callback done) override {
    ValueCopy copy;
    Reply reply = map_->compareAndSet(key, expected, replacement, ttl, copy);
    if (done) done(reply);
  }
  void touch(std::string_view key, Duration ttl) override { map_->touch(key, ttl); }
  void erase(std::string_view key) override { map_->erase(key); }
  bool available() const override { return true; }

 private:
  std::shared_ptr<MemoryMap> map_;
};

class MemoryBackend final : public StoreBackend {
 public:
  std::unique_ptr<StateStore> forWorker(EventLoop&, size_t) override {
    return std::make_unique<MemoryStore>(map_);
  }
  // One engine: nobody else changes entries, and the store is never unreachable.
  void onChange(std::function<void(std::string_view key)>) override {}
  void onReconnect(std::function<void()>) override {}
  void start() override {}
  void stop() override {}
  StoreStatus status() const override {
    StoreStatus s;
    s.type = "memory";
    s.connected = true;
    s.entries = map_->size();
    return s;
  }
  Inspection inspect(std::string_view key) override { return map_->inspect(key); }

 private:
  std::shared_ptr<MemoryMap> map_ = std::make_shared<MemoryMap>();
};

}  // namespace

std::unique_ptr<StoreBackend> makeMemoryBackend() { return std::make_unique<MemoryBackend>(); }

}  // namespace ballast::state
