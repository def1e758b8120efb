#include "proxy/tcp_session.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "core/socket.h"

namespace ballast::proxy {

namespace {
constexpr size_t kMaxConnectAttempts = 3;
}

TcpSession::TcpSession(WorkerContext& ctx, std::shared_ptr<Service> service, int client_fd)
    : Session(ctx, std::move(service)),
      client_fd_(client_fd),
      to_server_(ctx.buffers),
      to_client_(ctx.buffers),
      idle_timer_(ctx.loop, this, kIdleTimer),
      connect_timer_(ctx.loop, this, kConnectTimer) {}

TcpSession::~TcpSession() {
  // finish() has run (sessions are destroyed only through it); this is a safety net for fds.
  if (client_fd_ >= 0) ::close(client_fd_);
}

void TcpSession::start() {
  ctx_.loop.addConnection(client_fd_, this);
  idle_timer_.armAfter(static_cast<uint64_t>(service_->config.timeouts.idle.count()));
  connectNext();
}

void TcpSession::connectNext() {
  while (tried_.size() < kMaxConnectAttempts) {
    lb::PickContext pick{tried_};
    const lb::Server* server = service_->balancer->pick(pick);
    if (server == nullptr) break;
    tried_.push_back(server->index);
    server_ = service_->server_counters[server->index];
    upstream_ = ctx_.upstreams.connect(server->address, server->state, server->index, this);
    if (upstream_ != nullptr) {
      connect_timer_.armAfter(static_cast<uint64_t>(service_->config.timeouts.connect.count()));
      return;
    }
    server_->errors[static_cast<size_t>(ErrorKind::ConnectRefused)].add();
  }
  // No server could be reached: refuse the client the way a closed port would.
  service_->counters.errors[static_cast<size_t>(ErrorKind::NoServer)].add();
  finish(true);
}

void TcpSession::onConnectResult(int error) {
  connect_timer_.cancel();
  if (error != 0) {
    server_->errors[static_cast<size_t>(ErrorKind::ConnectRefused)].add();
    ctx_.upstreams.close(upstream_);
    upstream_ = nullptr;
    to_client_.resetFlags();  // nothing of the failed attempt carries over
    connectNext();
    return;
  }
  connected_ = true;
  server_->requests.add();
  pump();
}

void TcpSession::onIoEvents(uint32_t events) {
  if (closed_) return;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) to_server_.readable = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) to_server_.hangup = true;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) to_client_.writable = true;
  pump();
}

void TcpSession::onUpstreamEvents(uint32_t events) {
  if (closed_) return;
  // Data and even the server's FIN can come in the same event as the connect's completion: take
  // every flag now, or the FIN (an edge already consumed) would never be read.
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) to_client_.readable = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) to_client_.hangup = true;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) to_server_.writable = true;
  if (!connected_) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int error = socketError(upstream_->fd());
    if (error == 0 && (events & (EPOLLERR | EPOLLHUP))) error = ECONNREFUSED;
    onConnectResult(error);
    return;
  }
  pump();
}

void TcpSession::onTimer(int tag) {
  if (closed_) return;
  if (tag == kConnectTimer) {
    if (connected_ || upstream_ == nullptr) return;
    server_->errors[static_cast<size_t>(ErrorKind::ConnectTimeout)].add();
    ctx_.upstreams.close(upstream_, true);
    upstream_ = nullptr;
    connectNext();
    return;
  }
  service_->counters.errors[static_cast<size_t>(ErrorKind::ClientTimeout)].add();
  finish(false);
}

void TcpSession::pump() {
  int server_fd = connected_ ? upstream_->fd() : -1;
  // Each round moves at most a buffer each way; after a few, let other connections run.
  constexpr int kRounds = 8;
  for (int round = 0;; ++round) {
    if (!move(client_fd_, server_fd, to_server_, true)) return;
    if (connected_ && !move(server_fd, client_fd_, to_client_, false)) return;
    bool more = (to_server_.readable && !to_server_.eof && to_server_.buf.space() > 0) ||
                (connected_ && to_client_.readable && !to_client_.eof && to_client_.buf.space() > 0);
    if (!more) break;
    if (round + 1 == kRounds) {
      ctx_.loop.callSoon(this);
      break;
    }
  }
  if (to_server_.shut && to_client_.shut) {
    finish(false);
    return;
  }
  idle_timer_.armAfter(static_cast<uint64_t>(service_->config.timeouts.idle.count()));
  // Nothing buffered: give the blocks back, so an idle stream holds no buffer memory.
  to_server_.buf.releaseIfEmpty();
  to_client_.buf.releaseIfEmpty();
}

bool TcpSession::move(int src, int dst, Pipe& pipe, bool from_client) {
  // Read while the source has bytes and the buffer has room (backpressure otherwise).
  while (pipe.readable && !pipe.eof && pipe.buf.space() > 0) {
    char* p = pipe.buf.writePtr();
    size_t room = pipe.buf.writable();
    ssize_t n = ::read(src, p, room);
    if (n > 0) {
      pipe.buf.produced(static_cast<size_t>(n));
      if (from_client) {
        service_->counters.bytes_in.add(static_cast<uint64_t>(n));
      } else {
        server_->bytes_in.add(static_cast<uint64_t>(n));
      }
      if (static_cast<size_t>(n) < room && !pipe.hangup) pipe.readable = false;
    } else if (n == 0) {
      pipe.eof = true;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      pipe.readable = false;
    } else if (errno != EINTR) {
      // A reset on one side is passed on as a reset to the other.
      if (from_client) {
        service_->counters.errors[static_cast<size_t>(ErrorKind::ClientAbort)].add();
      } else {
        server_->errors[static_cast<size_t>(ErrorKind::ServerReset)].add();
      }
      finish(true);
      return false;
    }
  }
  if (dst < 0) return true;  // not connected yet: keep what the client sent
  while (pipe.writable && !pipe.buf.empty()) {
    ssize_t n = ::send(dst, pipe.buf.readPtr(), pipe.buf.readable(), MSG_NOSIGNAL);
    if (n > 0) {
      pipe.buf.consume(static_cast<size_t>(n));
      if (from_client) {
        server_->bytes_out.add(static_cast<uint64_t>(n));
      } else {
        service_->counters.bytes_out.add(static_cast<uint64_t>(n));
      }
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pipe.writable = false;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      if (from_client) {
        server_->errors[static_cast<size_t>(ErrorKind::ServerReset)].add();
      } else {
        service_->counters.errors[static_cast<size_t>(ErrorKind::ClientAbort)].add();
      }
      finish(true);
      return false;
    }
  }
  if (pipe.eof && pipe.buf.empty() && !pipe.shut) {
    ::shutdown(dst, SHUT_WR);
    pipe.shut = true;
  }
  return true;
}

void TcpSession::finish(bool reset) {
  if (closed_) return;
  closed_ = true;
  ctx_.loop.cancelSoon(this);
  idle_timer_.cancel();
  connect_timer_.cancel();
  if (upstream_ != nullptr) {
    ctx_.upstreams.close(upstream_, reset);
    upstream_ = nullptr;
  }
  if (client_fd_ >= 0) {
    if (reset) {
      closeWithReset(client_fd_);
    } else {
      ::close(client_fd_);
    }
    client_fd_ = -1;
  }
  to_server_.buf.clear();
  to_client_.buf.clear();
  ctx_.loop.deferDelete(std::unique_ptr<Deferred>(this));
}

}  // namespace ballast::proxy
