#include "proxy/persistence.h"

#include <arpa/inet.h>

#include <cstdio>
#include <unordered_set>

#include "lb/balancer.h"
#include "proxy/service.h"

namespace ballast::proxy {

static_assert(kPersistOutcomes == std::tuple_size_v<decltype(VsCounters::persistence)>);

const char* persistOutcomeName(PersistOutcome o) {
  switch (o) {
    case PersistOutcome::CacheHit: return "cache_hit";
    case PersistOutcome::Existing: return "existing";
    case PersistOutcome::Created: return "created";
    case PersistOutcome::Replaced: return "replaced";
    case PersistOutcome::Degraded: return "degraded";
    case PersistOutcome::Unknown: return "unknown";
    case PersistOutcome::kCount: break;
  }
  return "?";
}

// ---- PersistenceShared ----------------------------------------------------------------------------

void PersistenceShared::remember(Pending p) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (pending_.size() >= kMaxPending) {
    pending_.pop_front();
    pending_dropped.fetch_add(1, std::memory_order_relaxed);
  }
  pending_.push_back(std::move(p));
  pending_count_.store(pending_.size(), std::memory_order_relaxed);
}

std::vector<PersistenceShared::Pending> PersistenceShared::takePending() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<Pending> out(std::make_move_iterator(pending_.begin()),
                           std::make_move_iterator(pending_.end()));
  pending_.clear();
  pending_count_.store(0, std::memory_order_relaxed);
  return out;
}

size_t PersistenceShared::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pending_.size();
}

// ---- PersistenceResolver ------------------------------------------------------------------------

namespace {
uint64_t ttlMs(const Service& service) {
  return static_cast<uint64_t>(service.config.persistence.timeout.count());
}

lb::PickContext pickContext(uint64_t now_ms) {
  lb::PickContext ctx;
  ctx.now_ms = now_ms;
  return ctx;
}
}  // namespace

void PersistenceResolver::decided(Service& service, PersistOutcome outcome) {
  service.counters.persistence[static_cast<size_t>(outcome)].add();
}

const lb::Server* PersistenceResolver::fromCache(Service& service, std::string_view key) {
  const uint64_t now = loop_.now();
  if (!shared_.cache.lookup(key, now, &scratch_)) return nullptr;
  const lb::Server* s = service.pool.findServer(scratch_.value);
  // A cached server that cannot be used: the store decides its replacement (all engines alike).
  if (s == nullptr || !lb::usable(*s, pickContext(now))) return nullptr;
  // The store's copy lives as long as it is used, but is told so only now and then.
  const uint64_t ttl = ttlMs(service);
  if (now - scratch_.refreshed_ms > ttl / 4) {
    store_.touch(key, std::chrono::milliseconds(ttl));
    shared_.cache.refreshed(key, now + ttl, now);
  }
  decided(service, PersistOutcome::CacheHit);
  return s;
}

PersistenceResolver::~PersistenceResolver() = default;

PersistenceResolver::Call* PersistenceResolver::acquire() {
  if (free_ == nullptr) {
    calls_.push_back(std::make_unique<Call>());
    return calls_.back().get();
  }
  Call* c = free_;
  free_ = c->next_free;
  c->next_free = nullptr;
  return c;
}

void PersistenceResolver::complete(Call* c, const lb::Server* server) {
  c->done(server);
  // Only now: the session's completion may still use the service the call holds.
  c->done.reset();
  c->service.reset();
  c->proposed = nullptr;
  c->replacement = nullptr;
  c->next_free = free_;
  free_ = c;
}

void PersistenceResolver::resolve(const std::shared_ptr<Service>& svc, std::string_view key,
                                  bool create, Done done) {
  Service& service = *svc;
  const uint64_t now = loop_.now();
  if (!store_.available()) return done(degraded(service, key, create));
  const lb::Server* proposed = nullptr;
  if (create) {
    proposed = service.balancer->pick(pickContext(now));
    if (proposed == nullptr) return done(nullptr);
  }
  // The call's record holds the service (and through it the pool and its servers) until the
  // store answers; the store's callback holds the record.
  Call* c = acquire();
  c->service = svc;
  c->key.assign(key);
  c->hash = EntryCache::hash(key);
  c->done = std::move(done);
  c->proposed = proposed;
  c->epoch = shared_.cache.epoch();
  if (!create) {
    store_.get(key, [this, c](const state::Reply& r) { got(c, r); });
    return;
  }
  store_.getOrCreate(key, proposed->id, std::chrono::milliseconds(ttlMs(service)),
                     [this, c](const state::Reply& r) { created(c, r); });
}

void PersistenceResolver::created(Call* c, const state::Reply& r) {
  Service& service = *c->service;
  if (!r.ok) return complete(c, degraded(service, c->key, true, c->proposed));
  if (!r.created) {
    fromStore(c, r.value);
  } else {
    const uint64_t now = loop_.now();
    shared_.cache.insertUnlessInvalidated(c->key, c->hash, *r.value, now + ttlMs(service), now,
                                          c->epoch);
    decided(service, PersistOutcome::Created);
    complete(c, service.pool.findServer(*r.value));
  }
  answered();
}

void PersistenceResolver::got(Call* c, const state::Reply& r) {
  if (!r.ok) return complete(c, degraded(*c->service, c->key, false));
  fromStore(c, r.value);
  answered();
}

void PersistenceResolver::fromStore(Call* c, std::optional<std::string_view> id) {
  Service& service = *c->service;
  const uint64_t now = loop_.now();
  if (!id) {  // app_cookie: a session the store does not know (expired, or never learned)
    decided(service, PersistOutcome::Unknown);
    return complete(c, nullptr);
  }
  const lb::Server* s = service.pool.findServer(*id);
  if (s != nullptr && lb::usable(*s, pickContext(now))) {
    shared_.cache.insertUnlessInvalidated(c->key, c->hash, *id, now + ttlMs(service), now, c->epoch);
    decided(service, PersistOutcome::Existing);
    return complete(c, s);
  }
  replace(c, s, *id);
}

void PersistenceResolver::replace(Call* c, const lb::Server* gone, std::string_view gone_id) {
  Service& service = *c->service;
  // The persisted server is down, disabled, draining or no longer in the pool: pick another and
  // replace the entry only if it still names the old one, so that every engine ends up with the
  // first replacement made.
  lb::PickContext ctx = pickContext(loop_.now());
  uint32_t excluded[1];
  if (gone != nullptr) {
    excluded[0] = gone->index;
    ctx.excluded = std::span<const uint32_t>(excluded, 1);
  }
  const lb::Server* replacement = service.balancer->pick(ctx);
  if (replacement == nullptr) return complete(c, nullptr);
  c->replacement = replacement;
  store_.compareAndSet(c->key, gone_id, replacement->id, service.config.persistence.timeout,
                       [this, c](const state::Reply& r) { replaced(c, r); });
}

void PersistenceResolver::replaced(Call* c, const state::Reply& r) {
  Service& service = *c->service;
  if (!r.ok) return complete(c, degraded(service, c->key, true, c->replacement));
  const uint64_t now = loop_.now();
  const lb::Server* winner = r.value ? service.pool.findServer(*r.value) : nullptr;
  if (winner == nullptr || !lb::usable(*winner, pickContext(now))) winner = c->replacement;
  shared_.cache.insertUnlessInvalidated(c->key, c->hash, winner->id, now + ttlMs(service), now,
                                        c->epoch);
  decided(service, PersistOutcome::Replaced);
  complete(c, winner);
  answered();
}

// The decision without the store.
const lb::Server* PersistenceResolver::degraded(Service& service, std::string_view key,
                                                bool create, const lb::Server* stale) {
  if (!create) {  // app_cookie: nothing to agree on without the store
    decided(service, PersistOutcome::Unknown);
    return nullptr;
  }
  // Every engine computes the same server from the key alone.
  lb::PickContext ctx = pickContext(loop_.now());
  ctx.has_hash = true;
  ctx.hash = lb::hashKey(key);
  const lb::Server* s = service.hash_fallback->pick(ctx);
  if (s == nullptr) return nullptr;
  decided(service, PersistOutcome::Degraded);
  shared_.cache.insert(key, s->id, loop_.now() + ttlMs(service), loop_.now());
  shared_.remember({std::string(key), s->id, ttlMs(service),
                    stale != nullptr && stale != s ? stale->id : std::string()});
  return s;
}

void PersistenceResolver::learn(Service& service, const std::string& key, const lb::Server& server) {
  const uint64_t now = loop_.now();
  if (shared_.cache.lookup(key, now, &scratch_) && scratch_.value == server.id) return;  // known
  shared_.cache.insert(key, server.id, now + ttlMs(service), now);
  if (!store_.available()) {
    shared_.remember({key, server.id, ttlMs(service)});
    return;
  }
  // A session cookie belongs to the server that issued it last (a retry, or a session moved to
  // another server, makes a server issue a value another one had): the entry becomes this
  // server, and the other engines are told to drop their copies.
  const std::chrono::milliseconds ttl = service.config.persistence.timeout;
  store_.getOrCreate(key, server.id, ttl, [this, key, id = server.id, ttl](const state::Reply& r) {
    if (!r.ok || !r.value || *r.value == id) return;
    store_.compareAndSet(key, *r.value, id, ttl, [](const state::Reply&) {});
  });
}

void PersistenceResolver::resync() { resync(true); }

void PersistenceResolver::resync(bool with_cache) {
  next_resync_ms_ = loop_.now() + kResyncRetryMs;
  std::vector<PersistenceShared::Pending> pending = shared_.takePending();
  if (with_cache) {
    // What this engine knows may be gone from the store too (a restart that lost its data): the
    // cached entries are written back as well, create-if-absent, so the store knows them again
    // before other engines decide otherwise. Where the store has an entry already, it wins here
    // too. The keys decided without the store go as decisions only (below).
    std::unordered_set<std::string_view> decided_keys;
    for (const auto& p : pending) decided_keys.insert(p.key);
    const uint64_t now = loop_.now();
    for (auto& c : shared_.cache.items(now)) {
      if (decided_keys.count(c.key) != 0) continue;
      resync_queue_.push_back({{std::move(c.key), std::move(c.value), c.expires_ms - now, {}}, false});
    }
  }
  for (auto& p : pending) resync_queue_.push_back({std::move(p), true});
  pumpResync();
}

void PersistenceResolver::pumpResync() {
  if (pumping_) return;  // a store that answers at once calls back from inside the loop below
  pumping_ = true;
  while (resync_in_flight_ < kResyncWindow && !resync_queue_.empty()) {
    if (!store_.available()) {  // gone again: the decisions wait for the next time
      for (Writeback& w : resync_queue_) {
        if (w.decision) shared_.remember(std::move(w.p));
      }
      resync_queue_.clear();
      break;
    }
    Writeback w = std::move(resync_queue_.front());
    resync_queue_.pop_front();
    w.epoch = shared_.cache.epoch();
    ++resync_in_flight_;
    std::string key = w.p.key, mine = w.p.server_id;
    const auto ttl = std::chrono::milliseconds(w.p.ttl_ms);
    store_.getOrCreate(key, mine, ttl,
                       [this, w = std::move(w)](const state::Reply& r) { wroteBack(w, r); });
  }
  pumping_ = false;
}

void PersistenceResolver::adopt(const PersistenceShared::Pending& p, std::string_view value,
                                uint64_t epoch) {
  const uint64_t now = loop_.now();
  if (!shared_.cache.insertUnlessInvalidated(p.key, EntryCache::hash(p.key), value,
                                             now + p.ttl_ms, now, epoch))
    shared_.cache.invalidate(p.key);  // not this engine's decision any more, either
}

void PersistenceResolver::wroteBack(const Writeback& w, const state::Reply& r) {
  --resync_in_flight_;
  const PersistenceShared::Pending& p = w.p;
  if (!r.ok) {
    if (w.decision) shared_.remember(p);  // the next resync tries again
  } else if (r.value && *r.value != p.server_id) {
    if (w.decision && !p.stale.empty() && *r.value == p.stale) {
      // This engine's own proposal, carried out late by the store after the call had timed out:
      // the decision clients were sent to meanwhile replaces it (other engines are notified).
      ++resync_in_flight_;
      const uint64_t epoch = shared_.cache.epoch();
      store_.compareAndSet(p.key, p.stale, p.server_id, std::chrono::milliseconds(p.ttl_ms),
                           [this, p, epoch](const state::Reply& cas) {
                             --resync_in_flight_;
                             if (!cas.ok) {
                               shared_.remember(p);
                             } else {
                               shared_.resynced.fetch_add(1, std::memory_order_relaxed);
                               if (cas.value && *cas.value != p.server_id)  // changed meanwhile
                                 adopt(p, *cas.value, epoch);
                             }
                             pumpResync();
                           });
    } else {
      // Another engine decided first: its entry wins, here too (unless a change was announced
      // since this was sent: the entry may have moved on, and the next use reads it afresh).
      if (w.decision) {
        shared_.resynced.fetch_add(1, std::memory_order_relaxed);
        shared_.resync_conflicts.fetch_add(1, std::memory_order_relaxed);
      }
      adopt(p, *r.value, w.epoch);
    }
  } else if (w.decision) {
    shared_.resynced.fetch_add(1, std::memory_order_relaxed);  // written (or there already)
  }
  pumpResync();
}

// ---- keys -----------------------------------------------------------------------------------------

std::string clientIpKey(const SocketAddress& peer, uint32_t ipv4_prefix, uint32_t ipv6_prefix) {
  char text[INET6_ADDRSTRLEN + 8];
  if (peer.family() == AF_INET) {
    in_addr a = reinterpret_cast<const sockaddr_in*>(peer.sockaddrPtr())->sin_addr;
    uint32_t mask = ipv4_prefix >= 32 ? 0xffffffffu : ~(0xffffffffu >> ipv4_prefix);
    a.s_addr = htonl(ntohl(a.s_addr) & mask);
    inet_ntop(AF_INET, &a, text, sizeof text);
    if (ipv4_prefix >= 32) return text;
    return std::string(text) + "/" + std::to_string(ipv4_prefix);
  }
  if (peer.family() == AF_INET6) {
    in6_addr a = reinterpret_cast<const sockaddr_in6*>(peer.sockaddrPtr())->sin6_addr;
    for (uint32_t bit = ipv6_prefix; bit < 128; ++bit) a.s6_addr[bit / 8] &= ~(0x80u >> (bit % 8));
    inet_ntop(AF_INET6, &a, text, sizeof text);
    if (ipv6_prefix >= 128) return text;
    return std::string(text) + "/" + std::to_string(ipv6_prefix);
  }
  return {};
}

std::string serverCookieValue(const lb::Server& server) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx",
                static_cast<unsigned long long>(lb::hashKey(server.id)));
  return text;
}

}  // namespace ballast::proxy
