// Thin helpers over the BSD socket calls the proxy needs. All sockets are non-blocking and
// close-on-exec.
#pragma once

#include <string>

#include "core/address.h"

namespace ballast {

struct ListenOptions {
  bool reuse_port = true;  // one socket per worker on the same address
  bool freebind = true;    // bind a VIP that is not (yet) on an interface
  int backlog = 4096;
  // Seconds the kernel may hold a new connection until its first bytes arrive (TCP_DEFER_ACCEPT):
  // a client-speaks-first protocol then wakes the proxy once, with data to read. 0: off.
  int defer_accept_seconds = 0;
};

// Returns a listening socket, or -1 with *error set ("bind 127.0.0.1:80: Address in use").
int listenTcp(const SocketAddress& address, const ListenOptions& options, std::string* error);

// Whether a socket already listens on the address, in this process or another: a plain bind
// (without SO_REUSEPORT) fails then. SO_REUSEPORT would otherwise let a second engine started by
// mistake share the port silently.
bool addressInUse(const SocketAddress& address);

// Starts a non-blocking connect. Returns the fd (connected or in progress) or -1 with errno set.
int connectTcp(const SocketAddress& address);

// The pending error of a socket (SO_ERROR), 0 if none.
int socketError(int fd);

void setNoDelay(int fd);

// TCP_DEFER_ACCEPT on a listening socket (see ListenOptions); 0 turns it off.
void setDeferAccept(int fd, int seconds);

// Closes a socket so that the peer sees a reset rather than an orderly close.
void closeWithReset(int fd);

// Raises RLIMIT_NOFILE to its hard limit; returns the new soft limit.
long raiseFileLimit();

}  // namespace ballast
