#include "proxy/tcp_session.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "core/socket.h"
#include "proxy/access_record.h"

namespace ballast::proxy {


TcpSession::TcpSession(WorkerContext& ctx, std::shared_ptr<ServiceSlot> slot, int client_fd,
                       const SocketAddress& peer)
    : Session(ctx, std::move(slot)),
      client_fd_(client_fd),
      peer_(peer),
      to_server_(ctx.buffers),
      to_client_(ctx.buffers),
      idle_timer_(ctx.loop, this, kIdleTimer),
      connect_timer_(ctx.loop, this, kConnectTimer) {}

TcpSession::~TcpSession() {
  // finish() has run (sessions are destroyed only through it); this is a safety net for fds.
  if (client_fd_ >= 0) ::close(client_fd_);
}

void TcpSession::start() {
  start_us_ = ctx_.loop.nowUs();
  ctx_.loop.addConnection(client_fd_, this);
  idle_timer_.armAfter(static_cast<uint64_t>(service_->config.timeouts.idle.count()));
  const config::Persistence& p = service_->config.persistence;
  if (p.type == config::PersistenceType::ClientIp && ctx_.persistence != nullptr) {
    // The client's server may take a store round trip to learn; what it sends meanwhile waits in
    // the buffer.
    std::string key = "persist:" + service_->config.name + ":" +
                      clientIpKey(peer_, p.ipv4_prefix, p.ipv6_prefix);
    resolving_ = true;
    ctx_.persistence->resolve(service_, key, true, [this, alive = alive_](const lb::Server* s) {
      if (!*alive || !resolving_) return;
      resolving_ = false;
      preferred_ = s;
      connectNext();
    });
    return;
  }
  connectNext();
}

void TcpSession::connectNext() {
  const uint32_t max_attempts = 1 + service_->config.retries;
  lb::PickContext pick{tried_, ctx_.loop.now(), false, 0};
  if (service_->pool.config->lb_algorithm == config::LbAlgorithm::ConsistentHash) {
    pick.has_hash = true;  // a TCP virtual service hashes on the client address only
    pick.hash = lb::hashKey(peer_.hostString());
  }
  while (attempts_ < max_attempts) {
    pick.excluded = tried_;
    // Persistence beats the algorithm while its server can be used (first attempt only).
    const lb::Server* server = preferred_ != nullptr && lb::usable(*preferred_, pick) ? preferred_ : nullptr;
    preferred_ = nullptr;
    if (server == nullptr) server = service_->balancer->pick(pick);
    if (server == nullptr) break;
    tried_.push_back(server->index);
    if (!attempt_.begin(ctx_, *service_, *server)) continue;  // at its connection limit
    if (attempts_++ > 0) {
      service_->counters.retries.add();
      if (failed_server_ != nullptr) failed_server_->retries.add();
      ++retries_;
    }
    server_ = attempt_.counters();
    connect_start_us_ = ctx_.loop.nowUs();
    upstream_ = ctx_.upstreams.connect(server->address, server->state, server->index, this);
    if (upstream_ != nullptr) {
      connect_timer_.armAfter(static_cast<uint64_t>(service_->config.timeouts.connect.count()));
      return;
    }
    connectFailed(ErrorKind::ConnectRefused);
  }
  // No server could be reached: refuse the client the way a closed port would.
  service_->counters.errors[static_cast<size_t>(ErrorKind::NoServer)].add();
  error_ = ErrorKind::NoServer;
  finish(true);
}

void TcpSession::connectFailed(ErrorKind kind) {
  server_->errors[static_cast<size_t>(kind)].add();
  failed_server_ = server_;
  attempt_.end(lb::Outcome::GatewayFailure);
  if (upstream_ != nullptr) {
    ctx_.upstreams.close(upstream_, kind == ErrorKind::ConnectTimeout);
    upstream_ = nullptr;
  }
  to_client_.resetFlags();  // nothing of the failed attempt carries over
}

void TcpSession::onConnectResult(int error) {
  connect_timer_.cancel();
  if (error != 0) {
    connectFailed(ErrorKind::ConnectRefused);
    connectNext();
    return;
  }
  connected_ = true;
  connect_us_ = ctx_.loop.nowUs() - connect_start_us_;
  service_->counters.phases.connect.observeMicros(connect_us_);
  server_->phases.connect.observeMicros(connect_us_);
  attempt_.report(lb::Outcome::Success);  // stays in flight until the connection ends
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
    connectFailed(ErrorKind::ConnectTimeout);
    connectNext();
    return;
  }
  service_->counters.errors[static_cast<size_t>(ErrorKind::ClientTimeout)].add();
  error_ = ErrorKind::ClientTimeout;
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
        error_ = ErrorKind::ClientAbort;
      } else {
        server_->errors[static_cast<size_t>(ErrorKind::ServerReset)].add();
        error_ = ErrorKind::ServerReset;
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
        error_ = ErrorKind::ServerReset;
      } else {
        service_->counters.errors[static_cast<size_t>(ErrorKind::ClientAbort)].add();
        error_ = ErrorKind::ClientAbort;
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

void TcpSession::logAccess() {
  AccessLog* log = service_->access_log;
  if (log == nullptr) return;
  AccessRecord r;
  r.vs = service_->config.name;
  std::string client = peer_.toString();
  r.client = client;
  if (connected_ && attempt_.server() != nullptr) r.server = attempt_.server()->address_text;
  r.bytes_in = to_server_.buf.totalProduced();
  r.bytes_out = to_client_.buf.totalConsumed();
  r.connect_us = connect_us_;
  r.total_us = ctx_.loop.nowUs() - start_us_;
  r.retries = retries_;
  if (error_) r.error = errorKindName(*error_);
  std::string line;
  formatAccessRecord(r, line);
  log->write(service_->worker, line);
}

void TcpSession::finish(bool reset) {
  if (closed_) return;
  closed_ = true;
  *alive_ = false;
  ctx_.loop.cancelSoon(this);
  idle_timer_.cancel();
  connect_timer_.cancel();
  attempt_.end(std::nullopt);
  if (start_us_ != 0) service_->counters.phases.total.observeMicros(ctx_.loop.nowUs() - start_us_);
  logAccess();
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
