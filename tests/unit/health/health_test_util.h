// Helpers for the health layer's tests: a tiny blocking test server on 127.0.0.1 (one thread,
// connections handled one after another by a replaceable handler), a TLS server context with a
// self-signed certificate made in memory, and a port nobody listens on.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/address.h"

namespace ballast::health::testing {

// Writes to a peer that has gone must not kill the test process.
inline const bool kSigpipeIgnored = [] {
  signal(SIGPIPE, SIG_IGN);
  return true;
}();

inline uint64_t nowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// Waits (polling) until pred() holds or timeout_ms pass; returns pred().
template <typename Pred>
bool waitUntil(Pred pred, uint64_t timeout_ms = 3000) {
  const uint64_t deadline = nowMs() + timeout_ms;
  while (!pred()) {
    if (nowMs() >= deadline) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

inline SocketAddress loopback(uint16_t port) {
  std::string error;
  auto a = SocketAddress::parseLiteral("127.0.0.1:" + std::to_string(port), &error);
  if (!a) throw std::runtime_error(error);
  return *a;
}

// A port on 127.0.0.1 where connects are refused: bound (so no other test, in this process or
// another, can take it meanwhile) but not listening.
class ClosedPort {
 public:
  ClosedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0)
      throw std::runtime_error("closed port: bind failed");
    socklen_t len = sizeof sin;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&sin), &len);
    port_ = ntohs(sin.sin_port);
  }
  ~ClosedPort() { ::close(fd_); }
  ClosedPort(const ClosedPort&) = delete;
  ClosedPort& operator=(const ClosedPort&) = delete;

  uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// Reads from a blocking socket until the end of a request head ("\r\n\r\n"), EOF or timeout.
inline std::string readHead(int fd) {
  std::string in;
  char buf[4096];
  while (in.find("\r\n\r\n") == std::string::npos) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
  }
  return in;
}

inline void sendAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

class TestServer {
 public:
  // Handles one accepted connection (a blocking socket with 2 s timeouts) on the server thread.
  // Returns true to have it closed, false to keep it open (a hung server) until the server stops.
  using Handler = std::function<bool(int fd)>;

  explicit TestServer(Handler handler, int backlog = 64) : handler_(std::move(handler)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 ||
        ::listen(fd_, backlog) != 0)
      throw std::runtime_error("test server: bind/listen failed");
    socklen_t len = sizeof sin;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&sin), &len);
    port_ = ntohs(sin.sin_port);
    thread_ = std::thread([this] { run(); });
  }

  ~TestServer() {
    stop_ = true;
    thread_.join();
    for (int fd : held_) ::close(fd);
    ::close(fd_);
  }

  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  void setHandler(Handler handler) {
    std::lock_guard<std::mutex> lock(mutex_);
    handler_ = std::move(handler);
  }

  uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  SocketAddress socketAddress() const { return loopback(port_); }
  int connections() const { return connections_.load(); }
  std::vector<uint64_t> acceptTimes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return accept_times_;
  }

  // Common handlers.
  static Handler respond(std::string response, std::string* request_out = nullptr,
                         std::mutex* request_mutex = nullptr) {
    return [response = std::move(response), request_out, request_mutex](int fd) {
      std::string request = readHead(fd);
      if (request_out != nullptr) {
        std::lock_guard<std::mutex> lock(*request_mutex);
        *request_out = request;
      }
      sendAll(fd, response);
      return true;
    };
  }
  static Handler hang() {
    return [](int) { return false; };
  }
  static Handler closeAfterRequest() {
    return [](int fd) {
      readHead(fd);
      return true;
    };
  }
  static Handler acceptAndClose() {
    return [](int) { return true; };
  }

 private:
  void run() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 10) <= 0) continue;
      int fd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      timeval tv{2, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      Handler handler;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        accept_times_.push_back(nowMs());
        handler = handler_;
      }
      ++connections_;
      if (handler && !handler(fd)) {
        held_.push_back(fd);
      } else {
        ::close(fd);
      }
    }
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  mutable std::mutex mutex_;
  Handler handler_;
  std::vector<uint64_t> accept_times_;
  std::vector<int> held_;  // server thread only, then the destructor
  std::thread thread_;
};

// A TLS server context with a self-signed P-256 certificate for CN=localhost, made in memory.
class TlsServerContext {
 public:
  TlsServerContext() {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    if (key == nullptr || cert == nullptr) throw std::runtime_error("key/cert allocation");
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    if (X509_sign(cert, key, EVP_sha256()) == 0) throw std::runtime_error("X509_sign");
    ctx_ = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate(ctx_, cert) != 1 || SSL_CTX_use_PrivateKey(ctx_, key) != 1)
      throw std::runtime_error("SSL_CTX_use_certificate/PrivateKey");
    X509_free(cert);
    EVP_PKEY_free(key);
  }
  ~TlsServerContext() { SSL_CTX_free(ctx_); }
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  SSL_CTX* get() const { return ctx_; }

  // A handler: TLS handshake, read the request head, send `response`, close_notify. Records the
  // server name the client sent (SNI) in *sni_out ("" for none) and counts handshakes.
  TestServer::Handler respond(std::string response, std::string* sni_out = nullptr,
                              std::mutex* sni_mutex = nullptr) {
    return [this, response = std::move(response), sni_out, sni_mutex](int fd) {
      SSL* ssl = SSL_new(ctx_);
      SSL_set_fd(ssl, fd);
      if (SSL_accept(ssl) == 1) {
        ++handshakes;
        if (sni_out != nullptr) {
          const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
          std::lock_guard<std::mutex> lock(*sni_mutex);
          *sni_out = sni != nullptr ? sni : "";
        }
        std::string in;
        char buf[4096];
        while (in.find("\r\n\r\n") == std::string::npos) {
          int n = SSL_read(ssl, buf, sizeof buf);
          if (n <= 0) break;
          in.append(buf, static_cast<size_t>(n));
        }
        SSL_write(ssl, response.data(), static_cast<int>(response.size()));
        SSL_shutdown(ssl);
      }
      SSL_free(ssl);
      return true;
    };
  }

  std::atomic<int> handshakes{0};

 private:
  SSL_CTX* ctx_ = nullptr;
};

}  // namespace ballast::health::testing
