#include "core/socket.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ballast {

namespace {
void setFlag(int fd, int level, int option) {
  int one = 1;
  setsockopt(fd, level, option, &one, sizeof one);
}
}  // namespace

int listenTcp(const SocketAddress& address, const ListenOptions& options, std::string* error) {
  int fd = ::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + strerror(errno);
    return -1;
  }
  setFlag(fd, SOL_SOCKET, SO_REUSEADDR);
  if (options.reuse_port) setFlag(fd, SOL_SOCKET, SO_REUSEPORT);
  if (options.freebind) setFlag(fd, address.family() == AF_INET6 ? SOL_IPV6 : SOL_IP,
                                address.family() == AF_INET6 ? IPV6_FREEBIND : IP_FREEBIND);
  if (address.family() == AF_INET6) setFlag(fd, IPPROTO_IPV6, IPV6_V6ONLY);
  if (::bind(fd, address.sockaddrPtr(), address.length()) != 0) {
    *error = "bind " + address.toString() + ": " + strerror(errno);
    ::close(fd);
    return -1;
  }
  if (options.defer_accept_seconds > 0) setDeferAccept(fd, options.defer_accept_seconds);
  if (::listen(fd, options.backlog) != 0) {
    *error = "listen " + address.toString() + ": " + strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

bool addressInUse(const SocketAddress& address) {
  int fd = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  setFlag(fd, SOL_SOCKET, SO_REUSEADDR);
  setFlag(fd, address.family() == AF_INET6 ? SOL_IPV6 : SOL_IP,
          address.family() == AF_INET6 ? IPV6_FREEBIND : IP_FREEBIND);
  if (address.family() == AF_INET6) setFlag(fd, IPPROTO_IPV6, IPV6_V6ONLY);
  bool in_use = ::bind(fd, address.sockaddrPtr(), address.length()) != 0 && errno == EADDRINUSE;
  ::close(fd);
  return in_use;
}

int connectTcp(const SocketAddress& address) {
  int fd = ::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  setNoDelay(fd);
  if (::connect(fd, address.sockaddrPtr(), address.length()) != 0 && errno != EINPROGRESS) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

int socketError(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

void setNoDelay(int fd) { setFlag(fd, IPPROTO_TCP, TCP_NODELAY); }

void setDeferAccept(int fd, int seconds) {
  setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, sizeof seconds);
}

void closeWithReset(int fd) {
  linger lg{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  ::close(fd);
}

long raiseFileLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  return static_cast<long>(rl.rlim_cur);
}

}  // namespace ballast
