// Connections from a worker to servers, and the per-worker pool of idle ones kept for reuse.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "config/config.h"
#include "core/event_loop.h"
#include "core/stats.h"
#include "lb/server_state.h"

namespace ballast::proxy {

class UpstreamPool;

// Whoever is using an upstream connection gets its events.
class UpstreamUser {
 public:
  virtual ~UpstreamUser() = default;
  virtual void onUpstreamEvents(uint32_t events) = 0;
};

class UpstreamConn final : public IoHandler, public TimerHandler, public Deferred {
 public:
  int fd() const { return fd_; }
  uint32_t serverKey() const { return server_key_; }
  uint32_t serverIndex() const { return server_index_; }
  bool reused() const { return uses_ > 1; }
  void setUser(UpstreamUser* user) { user_ = user; }

  void onIoEvents(uint32_t events) override;
  void onTimer(int) override;

 private:
  friend class UpstreamPool;
  UpstreamConn(UpstreamPool& pool, int fd, std::shared_ptr<lb::ServerState> state, uint32_t index,
               size_t worker);
  UpstreamPool& pool_;
  int fd_;
  std::shared_ptr<lb::ServerState> state_;  // keeps the counters alive across reloads
  ServerCounters& counters_;
  uint32_t server_key_;
  uint32_t server_index_;
  uint32_t uses_ = 0;
  UpstreamUser* user_ = nullptr;        // null while idle in the pool
  Timer idle_timer_;
  // Idle list links.
  UpstreamConn* prev_ = nullptr;
  UpstreamConn* next_ = nullptr;
};

class UpstreamPool {
 public:
  UpstreamPool(EventLoop& loop, size_t worker) : loop_(loop), worker_(worker) {}
  ~UpstreamPool();

  // Starts a connection to a server. Returns null with errno set when it fails at once.
  UpstreamConn* connect(const SocketAddress& address, std::shared_ptr<lb::ServerState> state,
                        uint32_t server_index, UpstreamUser* user);
  // The most recently released idle connection to the server, or null. With check_open, a
  // connection the server has closed since the last events were read (its FIN or RST is already
  // here) is closed and the next one tried: one recv(MSG_PEEK) each, for requests that must not be
  // sent twice (a request lost in that race could not be replayed).
  UpstreamConn* take(uint32_t server_key, uint32_t server_index, UpstreamUser* user,
                     bool check_open = false);
  // Keeps a connection whose last exchange ended cleanly for reuse (or closes it if the pool for
  // its server is full).
  void release(UpstreamConn* conn, const config::ConnectionPoolSettings& settings);
  // Closes a connection (orderly, or with a reset when abort).
  void close(UpstreamConn* conn, bool abort = false);
  // Closes every idle connection (drain, shutdown).
  void closeIdle();
  size_t idleCount() const { return idle_count_; }

 private:
  friend class UpstreamConn;
  void unlinkIdle(UpstreamConn* conn);
  EventLoop& loop_;
  size_t worker_;
  std::vector<UpstreamConn*> idle_heads_;  // by server key: most recently released first
  std::vector<uint32_t> idle_per_server_;
  size_t idle_count_ = 0;
};

}  // namespace ballast::proxy
