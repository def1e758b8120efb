#include "proxy/upstream.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "core/socket.h"

namespace ballast::proxy {

UpstreamConn::UpstreamConn(UpstreamPool& pool, int fd, std::shared_ptr<lb::ServerState> state,
                           uint32_t index, size_t worker)
    : pool_(pool),
      fd_(fd),
      state_(std::move(state)),
      counters_(state_->stats.per_worker[worker]),
      server_key_(state_->key()),
      server_index_(index),
      idle_timer_(pool.loop_, this) {}

void UpstreamConn::onIoEvents(uint32_t events) {
  if (fd_ < 0) return;  // closed earlier in this batch of events
  if (user_ != nullptr) {
    user_->onUpstreamEvents(events);
    return;
  }
  // Idle: the only thing a server may do now is close; anything else is a protocol error too.
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) pool_.close(this);
}

void UpstreamConn::onTimer(int) {
  if (fd_ >= 0 && user_ == nullptr) pool_.close(this);
}

UpstreamPool::~UpstreamPool() { closeIdle(); }

UpstreamConn* UpstreamPool::connect(const SocketAddress& address, std::shared_ptr<lb::ServerState> state,
                                    uint32_t server_index, UpstreamUser* user) {
  int fd = connectTcp(address);
  if (fd < 0) return nullptr;
  auto* conn = new UpstreamConn(*this, fd, std::move(state), server_index, worker_);
  conn->uses_ = 1;
  conn->user_ = user;
  loop_.addConnection(fd, conn);
  conn->counters_.connections_total.add();
  conn->counters_.connections_active.add();
  return conn;
}

namespace {

// An idle connection is still open when reading it would block: no FIN, RST or stray byte came.
bool stillOpen(int fd) {
  char byte;
  for (;;) {
    ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
}

}  // namespace

UpstreamConn* UpstreamPool::take(uint32_t server_key, uint32_t server_index, UpstreamUser* user,
                                 bool check_open) {
  if (server_key >= idle_heads_.size()) return nullptr;
  UpstreamConn* conn = idle_heads_[server_key];
  while (conn != nullptr && check_open && !stillOpen(conn->fd_)) {
    close(conn);
    conn = idle_heads_[server_key];
  }
  if (conn == nullptr) return nullptr;
  unlinkIdle(conn);
  conn->idle_timer_.cancel();
  conn->uses_++;
  conn->server_index_ = server_index;
  conn->user_ = user;
  return conn;
}

void UpstreamPool::release(UpstreamConn* conn, const config::ConnectionPoolSettings& settings) {
  uint32_t key = conn->server_key_;
  if (key >= idle_heads_.size()) {
    idle_heads_.resize(key + 1, nullptr);
    idle_per_server_.resize(key + 1, 0);
  }
  if (idle_per_server_[key] >= settings.max_idle_per_server) {
    close(conn);
    return;
  }
  conn->user_ = nullptr;
  conn->prev_ = nullptr;
  conn->next_ = idle_heads_[key];
  if (conn->next_ != nullptr) conn->next_->prev_ = conn;
  idle_heads_[key] = conn;
  ++idle_per_server_[key];
  ++idle_count_;
  conn->counters_.connections_idle.add();
  conn->idle_timer_.armAfter(static_cast<uint64_t>(settings.idle_timeout.count()));
}

void UpstreamPool::unlinkIdle(UpstreamConn* conn) {
  uint32_t key = conn->server_key_;
  if (conn->prev_ != nullptr) {
    conn->prev_->next_ = conn->next_;
  } else {
    idle_heads_[key] = conn->next_;
  }
  if (conn->next_ != nullptr) conn->next_->prev_ = conn->prev_;
  conn->prev_ = conn->next_ = nullptr;
  --idle_per_server_[key];
  --idle_count_;
  conn->counters_.connections_idle.sub();
}

void UpstreamPool::close(UpstreamConn* conn, bool abort) {
  if (conn->fd_ < 0) return;
  if (conn->user_ == nullptr) unlinkIdle(conn);
  conn->user_ = nullptr;
  conn->idle_timer_.cancel();
  if (abort) {
    closeWithReset(conn->fd_);
  } else {
    ::close(conn->fd_);
  }
  conn->fd_ = -1;
  conn->counters_.connections_active.sub();
  loop_.deferDelete(std::unique_ptr<Deferred>(conn));
}

void UpstreamPool::closeIdle() {
  for (UpstreamConn* head : idle_heads_) {
    while (head != nullptr) {
      UpstreamConn* next = head->next_;
      close(head);
      head = next;
    }
  }
}

}  // namespace ballast::proxy
