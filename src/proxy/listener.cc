#include "proxy/listener.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/socket.h"
#include "proxy/http_session.h"
#include "proxy/tcp_session.h"

namespace ballast::proxy {

namespace {
constexpr int kAcceptsPerEvent = 64;
constexpr uint64_t kPauseAfterFdExhaustionMs = 100;
}  // namespace

Listener::Listener(WorkerContext& ctx, std::shared_ptr<Service> service, int fd)
    : ctx_(ctx), slot_(std::make_shared<ServiceSlot>(ServiceSlot{std::move(service), false})),
      fd_(fd),
      resume_timer_(ctx.loop, this) {
  ctx_.loop.addReader(fd_, this);
}

Listener::~Listener() { close(); }

void Listener::close() {
  if (fd_ < 0) return;
  resume_timer_.cancel();
  if (!paused_) ctx_.loop.remove(fd_);
  ::close(fd_);
  fd_ = -1;
}

void Listener::setService(std::shared_ptr<Service> service) {
  if (fd_ >= 0 && service->config.protocol != slot_->current->config.protocol) {
    // HTTP listeners defer accept until the request arrives; TCP ones must not (a server may
    // speak first).
    setDeferAccept(fd_, service->config.protocol == config::Protocol::Http ? 1 : 0);
  }
  slot_->current = std::move(service);
}

void Listener::retire() {
  slot_->retired = true;
  close();
}

void Listener::onTimer(int) {
  if (fd_ < 0 || !paused_) return;
  paused_ = false;
  ctx_.loop.addReader(fd_, this);
}

void Listener::onIoEvents(uint32_t) {
  for (int i = 0; i < kAcceptsPerEvent && fd_ >= 0; ++i) {
    sockaddr_storage addr;
    socklen_t len = sizeof addr;
    int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      accepted(fd, SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&addr), len));
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      // Out of descriptors or memory: the socket stays readable, so stop listening to it for a
      // moment instead of spinning; pending clients wait in the backlog.
      spdlog::warn("virtual service {}: accept: {}; pausing accepts for {} ms",
                   slot_->current->config.name, strerror(errno), kPauseAfterFdExhaustionMs);
      ctx_.loop.remove(fd_);
      paused_ = true;
      resume_timer_.armAfter(kPauseAfterFdExhaustionMs);
      return;
    }
    spdlog::error("virtual service {}: accept: {}", slot_->current->config.name, strerror(errno));
    return;
  }
}

void Listener::accepted(int fd, const SocketAddress& peer) {
  Service& service = *slot_->current;
  const config::VirtualService& vs = service.config;
  int64_t open = service.stats.open_connections.fetch_add(1, std::memory_order_relaxed);
  bool over_limit = vs.max_connections != 0 && open >= static_cast<int64_t>(vs.max_connections);
  if (vs.protocol == config::Protocol::Tcp) {
    if (over_limit) {
      service.stats.open_connections.fetch_sub(1, std::memory_order_relaxed);
      service.counters.errors[static_cast<size_t>(ErrorKind::MaxConnections)].add();
      closeWithReset(fd);
      return;
    }
    setNoDelay(fd);  // interactive protocols must not wait on Nagle's algorithm
    auto* session = new TcpSession(ctx_, slot_, fd, peer);
    session->start();
    return;
  }
  auto* session = new HttpSession(ctx_, slot_, fd, peer);
  if (over_limit) {
    session->startRejected();
  } else {
    session->start();
  }
}

}  // namespace ballast::proxy
