// The data store that service engines share load-balancing state through (DESIGN.md, "Data store
// layout"). One interface, two implementations: the embedded in-memory store (one engine) and
// Redis (many engines). Workers use it from their event loops without ever blocking: every call
// completes through a callback run on the calling worker's loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/event_loop.h"

namespace ballast::state {

using Duration = std::chrono::milliseconds;

// The answer to a call. `value` points into the store's own memory and is valid only while the
// callback runs: copy it to keep it.
struct Reply {
  bool ok = false;                        // false: the store could not answer (down, timeout...)
  std::optional<std::string_view> value;  // the entry's value after the call (nullopt: none)
  bool created = false;                   // getOrCreate: this call created the entry
  bool swapped = false;                   // compareAndSet: this call replaced the value
};
// A callable of at most 16 bytes that is trivially copyable (a lambda capturing two pointers)
// is held without allocating; the data path's calls use such callbacks.
using Callback = std::function<void(const Reply&)>;

// Keys given to a store are relative ("persist:web:1.2.3.4"); a store may add a namespace
// (Redis: "{prefix}:v1:"). Values are short strings (server ids).
//
// One StateStore per worker: it is used only from that worker's thread. Callbacks run on the same
// thread, possibly before the call returns (the memory store answers at once; any store fails a
// call at once when it is not available). Each callback runs exactly once, except that destroying
// a store discards the callbacks of its calls still in flight without calling them. A store must
// not be destroyed from inside one of its callbacks, and its loop must outlive it.
class StateStore {
 public:
  virtual ~StateStore() = default;

  // The entry's value, creating it with `proposed` and `ttl` if there is none: atomically, so
  // that of several engines racing on a new key exactly one creates it and all get its value.
  // Redis: one round trip (SET key proposed NX GET PX ttl).
  virtual void getOrCreate(std::string_view key, std::string_view proposed, Duration ttl,
                           Callback done) = 0;
  virtual void get(std::string_view key, Callback done) = 0;
  // Replaces the value with `replacement` (and sets `ttl`) only if it is `expected` now; the reply
  // carries the value after the call either way. Other engines are notified of a replacement.
  virtual void compareAndSet(std::string_view key, std::string_view expected,
                             std::string_view replacement, Duration ttl, Callback done) = 0;
  // Extends the entry's lifetime (fire and forget).
  virtual void touch(std::string_view key, Duration ttl) = 0;
  // Removes the entry (fire and forget); other engines are notified.
  virtual void erase(std::string_view key) = 0;
  // Whether calls can be expected to succeed now (a hint: calls fail fast when it is false).
  virtual bool available() const = 0;
};

// What /state and /metrics show of a store.
struct StoreStatus {
  std::string type;                  // "memory" | "redis"
  std::string address;               // redis: host:port
  bool connected = false;            // every worker's connection is up (memory: always)
  uint64_t round_trips = 0;          // commands answered
  uint64_t errors = 0;               // commands that failed (error replies, lost connections)
  uint64_t timeouts = 0;             // commands that took longer than the command timeout
  uint64_t reconnects = 0;           // connections (re)established after the first
  uint64_t notifications = 0;        // change notifications received (this engine's own too)
  std::optional<uint64_t> entries;   // memory: entries held; redis: unknown on the data path
};

// The store of one engine: makes the per-worker stores and carries the change notifications
// (another engine replaced or removed an entry) to whoever caches entries.
class StoreBackend {
 public:
  virtual ~StoreBackend() = default;
  // Called once per worker, before the workers start.
  virtual std::unique_ptr<StateStore> forWorker(EventLoop& loop, size_t worker) = 0;
  // `changed(key)` is called, on any thread, for every entry another engine changed or removed.
  virtual void onChange(std::function<void(std::string_view key)> changed) = 0;
  // `reachable()` is called, on any thread, each time the store becomes reachable again after
  // being unreachable (to write the decisions made meanwhile).
  virtual void onReconnect(std::function<void()> reachable) = 0;
  virtual void start() = 0;  // after every forWorker(); starts the notification channel
  virtual void stop() = 0;
  virtual StoreStatus status() const = 0;
  // For /state?key= (admin thread, may block briefly): the entry and its remaining lifetime.
  struct Inspection {
    bool ok = false;
    std::optional<std::string> value;
    int64_t ttl_ms = -1;             // -1: no expiry or no entry
    std::string error;
  };
  virtual Inspection inspect(std::string_view key) = 0;
};

struct RedisSettings {
  std::string host = "127.0.0.1";
  uint16_t port = 6379;
  std::string password;              // read from password_file at load; "" = none
  std::string prefix = "ballast";    // keys: "{prefix}:v1:{relative key}"
  Duration connect_timeout = std::chrono::seconds(1);
  Duration command_timeout = std::chrono::milliseconds(200);
  size_t workers = 1;
  // Back-off between connection attempts after a loss or a failure: starts at reconnect_min,
  // doubles up to reconnect_max (each delay drawn in [d/2, d]).
  Duration reconnect_min = std::chrono::milliseconds(100);
  Duration reconnect_max = std::chrono::seconds(5);
};

std::unique_ptr<StoreBackend> makeMemoryBackend();
std::unique_ptr<StoreBackend> makeRedisBackend(const RedisSettings& settings);

}  // namespace ballast::state
