// Session persistence through the shared store (DESIGN.md, "Synchronized LB state"): a client's key
// maps to a server, the same on every engine. The first engine to see a key proposes the server
// its algorithm picks and creates the entry atomically; every other engine gets that entry. A
// persisted server that can no longer be used is replaced with compare-and-set, so all engines
// converge on one replacement. When the store cannot be reached, decisions fall back to a
// consistent hash of the key over the usable servers (engines still agree), are remembered, and are
// written when the store is back (create-if-absent: an entry made meanwhile wins).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/event_loop.h"
#include "core/inline_callback.h"
#include "lb/pool.h"
#include "proxy/entry_cache.h"
#include "state/state_store.h"

namespace ballast::proxy {

struct Service;

// Where a decision came from (counters in /state and /metrics).
enum class PersistOutcome : uint8_t {
  CacheHit,   // this engine's cache knew the key
  Existing,   // the store had the entry
  Created,    // this engine created the entry
  Replaced,   // the entry's server could not be used; replaced (by this engine or another)
  Degraded,   // the store could not answer: consistent hash of the key
  Unknown,    // app_cookie: a session the store does not know; the algorithm decides
  kCount,
};
const char* persistOutcomeName(PersistOutcome o);
constexpr size_t kPersistOutcomes = static_cast<size_t>(PersistOutcome::kCount);

// One per engine, shared by its workers.
class PersistenceShared {
 public:
  PersistenceShared(state::StoreBackend& backend, size_t cache_size)
      : backend(backend), cache(cache_size) {}

  state::StoreBackend& backend;
  EntryCache cache;

  // Decisions made without the store, to write when it is back (bounded; the oldest go first).
  struct Pending {
    std::string key;
    std::string server_id;
    uint64_t ttl_ms;
    // What a call of this engine that timed out proposed for the key: the store may still carry
    // it out late (a stalled Redis runs the commands it had queued). Found in the store at
    // resync, it is replaced by the decision made meanwhile, which clients have been sent to.
    std::string stale;
  };
  void remember(Pending p);
  std::vector<Pending> takePending();
  size_t pending() const;
  bool hasPending() const { return pending_count_.load(std::memory_order_relaxed) != 0; }
  std::atomic<uint64_t> pending_dropped{0};
  std::atomic<uint64_t> resynced{0};       // pending decisions written back
  std::atomic<uint64_t> resync_conflicts{0};  // ... of which the store already had another server

 private:
  static constexpr size_t kMaxPending = 100000;
  mutable std::mutex mutex_;
  std::deque<Pending> pending_;
  std::atomic<size_t> pending_count_{0};
};

// One per worker: resolves keys with that worker's store connection.
class PersistenceResolver {
 public:
  PersistenceResolver(EventLoop& loop, state::StateStore& store, PersistenceShared& shared)
      : loop_(loop), store_(store), shared_(shared) {}
  ~PersistenceResolver();
  PersistenceResolver(const PersistenceResolver&) = delete;
  PersistenceResolver& operator=(const PersistenceResolver&) = delete;

  // The server this engine's cache knows for `key` (a relative store key, "persist:{vs}:{client
  // key}") when it can be used: decided at once, without allocating. nullptr: ask resolve().
  const lb::Server* fromCache(Service& service, std::string_view key);

  using Done = InlineCallback<const lb::Server*>;
  // Asks the store for the server of `key` (after fromCache() had none) and calls done(server) on
  // this worker, possibly before returning. With `create`, an unknown key gets the algorithm's
  // pick, stored; without (app_cookie), it gets nullptr and nothing is stored. nullptr also when
  // no server of the pool can be used. A known entry whose server cannot be used is replaced.
  // Allocates nothing in the steady state (the call's record is reused).
  void resolve(const std::shared_ptr<Service>& service, std::string_view key, bool create,
               Done done);
  // Records that key maps to server (app_cookie: the server issued a session cookie).
  void learn(Service& service, const std::string& key, const lb::Server& server);
  // Writes the decisions made while the store was unreachable (create-if-absent), a window of
  // calls at a time; what fails is remembered for the next resync. Called when the store is
  // reachable again, and by the resolver itself when the store answers again after errors.
  void resync();
  // with_cache: the cached entries are written back too (the store may have lost them).
  void resync(bool with_cache);

 private:
  // A resolution waiting for the store (records are reused; the store's callback holds only the
  // resolver and the record, so it needs no allocation either).
  struct Call {
    std::shared_ptr<Service> service;  // holds the pool and its servers until the answer
    std::string key;
    uint64_t hash = 0;  // the key's, for the cache
    Done done;
    const lb::Server* proposed = nullptr;     // getOrCreate: the server proposed
    const lb::Server* replacement = nullptr;  // compareAndSet: the server proposed
    uint64_t epoch = 0;  // the cache's when the call was made (see EntryCache::epoch)
    Call* next_free = nullptr;
  };
  Call* acquire();
  // Calls done(server), then recycles the call.
  void complete(Call* c, const lb::Server* server);

  void created(Call* c, const state::Reply& r);
  void got(Call* c, const state::Reply& r);
  void fromStore(Call* c, std::optional<std::string_view> id);
  void replace(Call* c, const lb::Server* gone, std::string_view gone_id);
  void replaced(Call* c, const state::Reply& r);
  // stale: what a call that failed had proposed (Pending::stale).
  const lb::Server* degraded(Service& service, std::string_view key, bool create,
                             const lb::Server* stale = nullptr);
  void decided(Service& service, PersistOutcome outcome);
  // The store answered: after errors, the decisions made meanwhile may be written now.
  void answered() {
    if (shared_.hasPending() && resync_in_flight_ == 0 && loop_.now() >= next_resync_ms_)
      resync(false);
  }
  // One decision (or cached entry) to write back.
  struct Writeback {
    PersistenceShared::Pending p;
    bool decision;      // a pending decision (counted in resynced), not a cached entry
    uint64_t epoch = 0;  // the cache's when it was sent (see EntryCache::epoch)
  };
  void pumpResync();
  void wroteBack(const Writeback& w, const state::Reply& r);
  // The store holds `value` for p.key, not this engine's decision: the cache takes it, unless a
  // change was announced since `epoch` (then the copy goes, and the next use reads afresh).
  void adopt(const PersistenceShared::Pending& p, std::string_view value, uint64_t epoch);
  static constexpr size_t kResyncWindow = 256;  // write-backs in flight at once
  static constexpr uint64_t kResyncRetryMs = 1000;

  EventLoop& loop_;
  state::StateStore& store_;
  PersistenceShared& shared_;
  EntryCache::Entry scratch_;  // fromCache()'s copy of an entry (its storage is reused)
  std::deque<Writeback> resync_queue_;
  size_t resync_in_flight_ = 0;
  uint64_t next_resync_ms_ = 0;  // answered() does not start one before
  bool pumping_ = false;
  std::vector<std::unique_ptr<Call>> calls_;  // every record made
  Call* free_ = nullptr;                      // those not in use
};

// The key of a client under the service's persistence type ("" when the request has none).
std::string clientIpKey(const SocketAddress& peer, uint32_t ipv4_prefix, uint32_t ipv6_prefix);
// The opaque cookie value naming a server (http_cookie): stable across engines and restarts.
std::string serverCookieValue(const lb::Server& server);

}  // namespace ballast::proxy
