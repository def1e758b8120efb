// The embedded store of one engine: a map shared by the engine's workers, with Redis's semantics
// (entries expire; get-or-create is atomic). Sharded by key, one mutex per shard; callbacks run
// before the call returns, on the calling thread, after the shard's lock is released (so a
// callback may call the store again).
//
// Each shard is a FlatTable: open addressing with linear probing over slots that keep the key's
// hash, its expiry and one heap block holding the key and the value. A key that is absent (every
// new client) costs the read of one or two adjacent slots, without touching any key's bytes; a
// present one, that and its block; growing moves slots, never the blocks. (A node-based map cost
// three dependent cache misses per lookup and three allocations per new key.)
//
// A reply's value is a copy made under the shard's lock, on the calling frame's stack (no
// allocation for the short values stores hold; a nested call has its own).
//
// Expiry: an expired entry is treated as absent by every call and removed when a call meets it;
// besides, every kSweepEvery-th call on a shard examines the next kSweepSlots slots of that shard
// and removes what expired there (bounded work per call, the whole shard in turn), so entries
// nobody asks for again do not stay forever.
#include <array>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "state/state_store.h"

namespace ballast::state {
namespace {

constexpr size_t kShards = 16;
constexpr uint32_t kSweepEvery = 16;  // calls on a shard between two sweep steps
constexpr size_t kSweepSlots = 32;    // slots examined by one sweep step

uint64_t ttlMs(Duration ttl) { return ttl.count() < 1 ? 1 : static_cast<uint64_t>(ttl.count()); }

uint64_t hashKey(std::string_view key) {
  uint64_t h = std::hash<std::string_view>{}(key);
  return h == 0 ? 1 : h;  // 0 marks an empty slot
}

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

// key -> (value, expiry): open addressing, linear probing, deletion by backward shift (no
// tombstones, so probe lengths stay those of the live entries). At most 70% full.
class FlatTable {
 public:
  static constexpr size_t kNone = SIZE_MAX;

  FlatTable() = default;
  FlatTable(const FlatTable&) = delete;
  FlatTable& operator=(const FlatTable&) = delete;
  ~FlatTable() {
    for (size_t i = 0; i < capacity_; ++i) delete[] slots_[i].bytes;
  }

  size_t size() const { return size_; }

  // The slot of key, or kNone.
  size_t find(std::string_view key, uint64_t hash) const {
    if (size_ == 0) return kNone;
    for (size_t i = hash & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.hash == 0) return kNone;
      if (s.hash == hash && s.key() == key) return i;
    }
  }
  // Adds key, which must be absent; returns its slot.
  size_t insert(std::string_view key, uint64_t hash, std::string_view value, uint64_t expires_ms) {
    if ((size_ + 1) * 10 > capacity_ * 7) grow();
    size_t i = hash & mask_;
    while (slots_[i].hash != 0) i = (i + 1) & mask_;
    Slot& s = slots_[i];
    s.hash = hash;
    s.key_len = static_cast<uint32_t>(key.size());
    s.value_len = static_cast<uint32_t>(value.size());
    s.bytes = new char[key.size() + value.size()];
    std::memcpy(s.bytes, key.data(), key.size());
    std::memcpy(s.bytes + key.size(), value.data(), value.size());
    s.expires_ms = expires_ms;
    ++size_;
    return i;
  }
  void assign(size_t i, std::string_view value, uint64_t expires_ms) {
    Slot& s = slots_[i];
    if (value.size() != s.value_len) {
      char* bytes = new char[s.key_len + value.size()];
      std::memcpy(bytes, s.bytes, s.key_len);
      delete[] s.bytes;
      s.bytes = bytes;
      s.value_len = static_cast<uint32_t>(value.size());
    }
    std::memcpy(s.bytes + s.key_len, value.data(), value.size());
    s.expires_ms = expires_ms;
  }
  std::string_view value(size_t i) const { return slots_[i].value(); }
  uint64_t expires(size_t i) const { return slots_[i].expires_ms; }
  void setExpires(size_t i, uint64_t expires_ms) { slots_[i].expires_ms = expires_ms; }

  // Removes the entry of slot i. Entries after it in its run move back into the hole when their
  // home slot allows, so every entry stays reachable from its home without a gap.
  void erase(size_t i) {
    delete[] slots_[i].bytes;
    size_t hole = i;
    for (size_t j = (i + 1) & mask_; slots_[j].hash != 0; j = (j + 1) & mask_) {
      size_t home = slots_[j].hash & mask_;
      if (((j - home) & mask_) >= ((j - hole) & mask_)) {  // home is not after the hole
        slots_[hole] = slots_[j];
        hole = j;
      }
    }
    slots_[hole] = Slot{};
    --size_;
  }

  // Examines the next `count` slots (in turn, the whole table) and removes the expired entries.
  void sweep(size_t count, uint64_t now_ms) {
    for (size_t n = 0; n < count && size_ > 0; ++n) {
      size_t i = cursor_ & mask_;
      if (slots_[i].hash != 0 && slots_[i].expires_ms <= now_ms) {
        erase(i);  // a later entry may have moved into slot i: look at it again
        continue;
      }
      ++cursor_;
    }
  }

 private:
  struct Slot {
    uint64_t hash = 0;  // 0: empty
    uint64_t expires_ms = 0;  // monotonic
    char* bytes = nullptr;  // the key, then the value (owned)
    uint32_t key_len = 0;
    uint32_t value_len = 0;
    std::string_view key() const { return {bytes, key_len}; }
    std::string_view value() const { return {bytes + key_len, value_len}; }
  };

  void grow() {
    size_t capacity = capacity_ == 0 ? 64 : capacity_ * 2;
    auto slots = std::make_unique<Slot[]>(capacity);
    size_t mask = capacity - 1;
    for (size_t i = 0; i < capacity_; ++i) {
      if (slots_[i].hash == 0) continue;
      size_t j = slots_[i].hash & mask;
      while (slots[j].hash != 0) j = (j + 1) & mask;
      slots[j] = slots_[i];
    }
    slots_ = std::move(slots);
    capacity_ = capacity;
    mask_ = mask;
  }

  std::unique_ptr<Slot[]> slots_;
  size_t capacity_ = 0;  // a power of two
  size_t mask_ = 0;
  size_t size_ = 0;
  size_t cursor_ = 0;  // the sweep's next slot
};

class MemoryMap {
 public:
  Reply getOrCreate(std::string_view key, std::string_view proposed, Duration ttl,
                    ValueCopy& copy) {
    uint64_t now = monotonicMs();
    uint64_t h = hashKey(key);
    Shard& s = shard(h);
    std::lock_guard<std::mutex> lock(s.mutex);
    maybeSweep(s, now);
    FlatTable& t = s.table;
    size_t i = t.find(key, h);
    if (i != FlatTable::kNone && t.expires(i) > now)
      return Reply{true, copy.set(t.value(i)), false, false};
    if (i == FlatTable::kNone) {
      i = t.insert(key, h, proposed, now + ttlMs(ttl));
    } else {
      t.assign(i, proposed, now + ttlMs(ttl));  // it had expired
    }
    return Reply{true, copy.set(t.value(i)), true, false};
  }

  Reply get(std::string_view key, ValueCopy& copy) {
    uint64_t now = monotonicMs();
    uint64_t h = hashKey(key);
    Shard& s = shard(h);
    std::lock_guard<std::mutex> lock(s.mutex);
    maybeSweep(s, now);
    size_t i = findLive(s.table, key, h, now);
    if (i == FlatTable::kNone) return Reply{true, std::nullopt, false, false};
    return Reply{true, copy.set(s.table.value(i)), false, false};
  }

  Reply compareAndSet(std::string_view key, std::string_view expected, std::string_view replacement,
                      Duration ttl, ValueCopy& copy) {
    uint64_t now = monotonicMs();
    uint64_t h = hashKey(key);
    Shard& s = shard(h);
    std::lock_guard<std::mutex> lock(s.mutex);
    maybeSweep(s, now);
    FlatTable& t = s.table;
    size_t i = findLive(t, key, h, now);
    if (i == FlatTable::kNone) return Reply{true, std::nullopt, false, false};
    if (t.value(i) != expected) return Reply{true, copy.set(t.value(i)), false, false};
    t.assign(i, replacement, now + ttlMs(ttl));
    return Reply{true, copy.set(t.value(i)), false, true};
  }

  void touch(std::string_view key, Duration ttl) {
    uint64_t now = monotonicMs();
    uint64_t h = hashKey(key);
    Shard& s = shard(h);
    std::lock_guard<std::mutex> lock(s.mutex);
    maybeSweep(s, now);
    size_t i = findLive(s.table, key, h, now);
    if (i != FlatTable::kNone) s.table.setExpires(i, now + ttlMs(ttl));
  }

  void erase(std::string_view key) {
    uint64_t now = monotonicMs();
    uint64_t h = hashKey(key);
    Shard& s = shard(h);
    std::lock_guard<std::mutex> lock(s.mutex);
    maybeSweep(s, now);
    size_t i = s.table.find(key, h);
    if (i != FlatTable::kNone) s.table.erase(i);
  }

  StoreBackend::Inspection inspect(std::string_view key) {
    uint64_t now = monotonicMs();
    uint64_t h = hashKey(key);
    Shard& s = shard(h);
    std::lock_guard<std::mutex> lock(s.mutex);
    StoreBackend::Inspection out;
    out.ok = true;
    size_t i = findLive(s.table, key, h, now);
    if (i != FlatTable::kNone) {
      out.value = std::string(s.table.value(i));
      out.ttl_ms = static_cast<int64_t>(s.table.expires(i) - now);
    }
    return out;
  }

  // Entries held, expired ones not yet removed included.
  uint64_t size() {
    uint64_t n = 0;
    for (Shard& s : shards_) {
      std::lock_guard<std::mutex> lock(s.mutex);
      n += s.table.size();
    }
    return n;
  }

 private:
  struct alignas(64) Shard {
    std::mutex mutex;
    FlatTable table;
    uint32_t calls = 0;
  };

  // A table's slot comes from the hash's low bits: shards are picked by high bits.
  Shard& shard(uint64_t h) { return shards_[(h >> 57) % kShards]; }

  // The live entry's slot, removing the entry if it expired.
  static size_t findLive(FlatTable& t, std::string_view key, uint64_t h, uint64_t now) {
    size_t i = t.find(key, h);
    if (i != FlatTable::kNone && t.expires(i) <= now) {
      t.erase(i);
      return FlatTable::kNone;
    }
    return i;
  }

  static void maybeSweep(Shard& s, uint64_t now) {
    if (++s.calls % kSweepEvery == 0) s.table.sweep(kSweepSlots, now);
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
