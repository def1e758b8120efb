// TLS for HTTPS health checks (internal to src/health). OpenSSL 3.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>

namespace ballast::health {

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

// The client context of one checker: TLS 1.2 or later, no certificate verification (backends
// behind a load balancer commonly use self-signed or internal certificates, and a health check
// asks "does it answer", not "is it who it claims to be"), no session cache. Null (with *error
// set) if OpenSSL cannot make one.
SslCtxPtr makeClientContext(std::string* error);

// A BIO over a non-blocking socket that sends with MSG_NOSIGNAL (a write to a socket the peer has
// closed must not raise SIGPIPE in a process that did not ignore it) and reports EAGAIN as a
// retry. It does not own the descriptor.
BIO* newSocketBio(int fd);

// The first error in this thread's OpenSSL error queue as a short phrase, and clears the queue.
// "" when the queue is empty.
std::string takeTlsError();

}  // namespace ballast::health
