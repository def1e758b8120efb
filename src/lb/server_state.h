// The state of one server that every worker shares and that outlives configuration snapshots
// (found again by the server's id): its counters, its health as the active monitors and the
// outlier detector see it, and what its connection limit needs.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "core/stats.h"

namespace ballast::lb {

class ServerState {
 public:
  ServerState(std::string id, size_t workers, uint32_t key) : id(std::move(id)), stats(workers, key) {}
  ServerState(const ServerState&) = delete;
  ServerState& operator=(const ServerState&) = delete;

  const std::string id;  // "<pool>/<address as written>"
  ServerStats stats;     // per-worker counters
  uint32_t key() const { return stats.key; }

  // What every pick reads, together on one cache line (written rarely, read always).
  // Active health, written by the health checker, read by workers. A server starts up.
  alignas(64) std::atomic<bool> healthy{true};
  // Passive health (outlier detection): monotonic ms; in the past = not ejected.
  std::atomic<uint64_t> ejected_until_ms{0};
  // Engine-wide connections (TCP) or requests in flight (HTTP), kept exact with an atomic only for
  // servers that have max_connections.
  std::atomic<int32_t> limited_in_use{0};

  // Outlier detection's bookkeeping, written on failures (and reset on a success after them).
  alignas(64) std::atomic<uint32_t> ejections{0};  // times ejected (the ejection time grows with it)
  std::atomic<uint32_t> consecutive_gateway_failures{0};
  std::atomic<uint32_t> consecutive_5xx{0};

  bool ejected(uint64_t now_ms) const {
    return ejected_until_ms.load(std::memory_order_relaxed) > now_ms;
  }

  // Why the server is in its health state, for /status (written rarely, under the mutex).
  struct HealthNote {
    std::string reason;          // "fall 3/3: HTTP 500", "rise 2/2", "ejected: 5 consecutive 5xx"
    uint64_t changed_ms = 0;     // monotonic ms of the last change, 0 = never
  };
  void setHealthNote(std::string reason, uint64_t now_ms) {
    std::lock_guard<std::mutex> lock(note_mutex_);
    note_.reason = std::move(reason);
    note_.changed_ms = now_ms;
  }
  HealthNote healthNote() const {
    std::lock_guard<std::mutex> lock(note_mutex_);
    return note_;
  }

 private:
  mutable std::mutex note_mutex_;
  HealthNote note_;
};

}  // namespace ballast::lb
