#include "health/probe.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>

#include "core/socket.h"
#include "health/tls.h"

namespace ballast::health {

namespace {

constexpr size_t kReadChunk = 16 * 1024;

http::Method methodOf(const std::string& m) {
  using http::Method;
  if (m == "GET") return Method::Get;
  if (m == "HEAD") return Method::Head;
  if (m == "POST") return Method::Post;
  if (m == "PUT") return Method::Put;
  if (m == "DELETE") return Method::Delete;
  if (m == "OPTIONS") return Method::Options;
  if (m == "CONNECT") return Method::Connect;
  if (m == "TRACE") return Method::Trace;
  if (m == "PATCH") return Method::Patch;
  return Method::Other;
}

SocketAddress withPort(const SocketAddress& address, uint16_t port) {
  sockaddr_storage storage{};
  std::memcpy(&storage, address.sockaddrPtr(), address.length());
  if (address.family() == AF_INET6) {
    reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port = htons(port);
  } else {
    reinterpret_cast<sockaddr_in*>(&storage)->sin_port = htons(port);
  }
  return SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&storage), address.length());
}

// "10.0.0.1:80" -> "10.0.0.1", "[::1]:80" -> "[::1]", "name:80" -> "name".
std::string hostPart(const std::string& address_text) {
  if (!address_text.empty() && address_text[0] == '[') {
    size_t close = address_text.find(']');
    return close == std::string::npos ? address_text : address_text.substr(0, close + 1);
  }
  size_t colon = address_text.rfind(':');
  return colon == std::string::npos ? address_text : address_text.substr(0, colon);
}

// The server name to send for a Host value: without a port, and none for an IP literal
// (RFC 6066 3: literal addresses are not permitted in server_name).
std::string sniFor(const std::string& host) {
  if (host.empty() || host[0] == '[') return "";
  std::string name = host;
  size_t colon = name.find(':');
  if (colon != std::string::npos) {
    if (name.find(':', colon + 1) != std::string::npos) return "";  // bare IPv6 literal
    name.resize(colon);
  }
  in_addr v4;
  if (name.empty() || inet_pton(AF_INET, name.c_str(), &v4) == 1) return "";
  return name;
}

std::string connectError(int err) {
  switch (err) {
    case ECONNREFUSED:
      return "connect refused";
    case ETIMEDOUT:
      return "connect timeout";
    default:
      return std::string("connect error: ") + strerror(err);
  }
}

}  // namespace

ProbeSpec makeProbeSpec(const lb::Server& server, const config::HealthMonitor& monitor) {
  ProbeSpec spec;
  spec.type = monitor.type;
  spec.address = monitor.port != 0 ? withPort(server.address, monitor.port) : server.address;
  spec.timeout_ms = static_cast<uint64_t>(std::max<int64_t>(1, monitor.timeout.count()));
  spec.interval_ms = static_cast<uint64_t>(std::max<int64_t>(1, monitor.interval.count()));
  if (monitor.type == config::MonitorType::Tcp) return spec;

  std::string host = monitor.host;
  if (host.empty()) {
    host = monitor.port != 0 ? hostPart(server.address_text) + ":" + std::to_string(monitor.port)
                             : server.address_text;
  }
  const std::string method = monitor.method.empty() ? "GET" : monitor.method;
  const std::string path = monitor.path.empty() ? "/" : monitor.path;
  spec.request = method + " " + path + " HTTP/1.1\r\nHost: " + host +
                 "\r\nUser-Agent: ballast-health/1\r\nConnection: close\r\n\r\n";
  spec.method = methodOf(method);
  spec.expect = monitor.expect;
  spec.body = monitor.body;
  if (monitor.type == config::MonitorType::Https) spec.sni = sniFor(monitor.host);
  return spec;
}

Probe::Probe(EventLoop& loop, SSL_CTX* ssl_ctx, const ProbeSpec& spec, Done done)
    : loop_(loop), ssl_ctx_(ssl_ctx), spec_(spec), done_(std::move(done)), timer_(loop, this) {}

Probe::~Probe() { cancel(); }

void Probe::start() {
  timer_.armAfter(spec_.timeout_ms);
  fd_ = connectTcp(spec_.address);
  if (fd_ < 0) {
    early_ = ProbeResult{false, connectError(errno)};
    loop_.callSoon(this);
    return;
  }
  try {
    loop_.addConnection(fd_, this);
  } catch (const std::exception& e) {  // epoll_ctl failed (out of memory, descriptor limits)
    ::close(fd_);
    fd_ = -1;
    early_ = ProbeResult{false, e.what()};
    loop_.callSoon(this);
  }
}

void Probe::cancel() {
  if (finished_) return;
  finished_ = true;
  phase_ = Phase::Done;
  timer_.cancel();
  loop_.cancelSoon(this);
  closeConnection();
  done_ = nullptr;
}

void Probe::onTimer(int) {
  switch (phase_) {
    case Phase::Connecting:
      fail("connect timeout");
      break;
    case Phase::Handshake:
      fail("TLS handshake timeout");
      break;
    default:
      fail("timeout");
      break;
  }
}

void Probe::onIoEvents(uint32_t events) {
  if (finished_) return;
  if (early_) {
    ProbeResult result = std::move(*early_);
    early_.reset();
    finish(std::move(result));
    return;
  }
  if (events == 0) return;
  if (phase_ == Phase::Connecting) {
    if (int err = socketError(fd_); err != 0) return fail(connectError(err));
    if ((events & EPOLLOUT) == 0) {
      if ((events & (EPOLLERR | EPOLLHUP)) != 0) fail("connect error");
      return;
    }
    switch (spec_.type) {
      case config::MonitorType::Tcp:
        return pass();
      case config::MonitorType::Http:
        phase_ = Phase::Sending;
        break;
      case config::MonitorType::Https: {
        if (ssl_ctx_ == nullptr) return fail("TLS unavailable");
        ERR_clear_error();
        ssl_ = SSL_new(ssl_ctx_);
        BIO* bio = ssl_ != nullptr ? newSocketBio(fd_) : nullptr;
        if (bio == nullptr) return fail("TLS setup failed: " + takeTlsError());
        SSL_set_bio(ssl_, bio, bio);
        SSL_set_connect_state(ssl_);
        if (!spec_.sni.empty() && SSL_set_tlsext_host_name(ssl_, spec_.sni.c_str()) != 1)
          return fail("TLS setup failed: " + takeTlsError());
        phase_ = Phase::Handshake;
        break;
      }
    }
  }
  drive();
}

void Probe::drive() {
  while (!finished_) {
    bool progressed = false;
    switch (phase_) {
      case Phase::Handshake:
        progressed = handshake();
        break;
      case Phase::Sending:
        progressed = sendRequest();
        break;
      case Phase::Head:
      case Phase::Body:
        progressed = receive();
        break;
      case Phase::Connecting:
      case Phase::Done:
        break;
    }
    if (!progressed) return;
  }
}

std::string Probe::ioError(const char* what, int err) const {
  if (err == ECONNRESET || err == EPIPE) return "connection reset";
  return std::string(what) + " error: " + strerror(err);
}

// True once the handshake is complete (the phase moved on).
bool Probe::handshake() {
  ERR_clear_error();
  errno = 0;
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    phase_ = Phase::Sending;
    return true;
  }
  const int err = SSL_get_error(ssl_, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return false;
  const int saved_errno = errno;
  tls_failed_ = true;
  std::string detail = takeTlsError();
  if (detail.empty()) {
    detail = err == SSL_ERROR_SYSCALL && saved_errno != 0
                 ? (saved_errno == ECONNRESET ? "connection reset" : strerror(saved_errno))
                 : "connection closed";
  }
  fail("TLS handshake failed: " + detail);
  return false;
}

// True once the whole request is sent.
bool Probe::sendRequest() {
  while (sent_ < spec_.request.size()) {
    const char* data = spec_.request.data() + sent_;
    const size_t left = spec_.request.size() - sent_;
    if (ssl_ != nullptr) {
      ERR_clear_error();
      errno = 0;
      int n = SSL_write(ssl_, data, static_cast<int>(left));
      if (n <= 0) {
        const int err = SSL_get_error(ssl_, n);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return false;
        const int saved_errno = errno;
        tls_failed_ = true;
        std::string detail = takeTlsError();
        fail(!detail.empty() ? "TLS error: " + detail
                             : ioError("write", saved_errno != 0 ? saved_errno : EPIPE));
        return false;
      }
      sent_ += static_cast<size_t>(n);
    } else {
      ssize_t n = ::send(fd_, data, left, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return false;
        fail(ioError("write", errno));
        return false;
      }
      sent_ += static_cast<size_t>(n);
    }
  }
  phase_ = Phase::Head;
  return true;
}

// Reads until the socket has nothing more (false) or a verdict is given (false).
bool Probe::receive() {
  char buf[kReadChunk];
  while (!finished_) {
    ssize_t n;
    if (ssl_ != nullptr) {
      ERR_clear_error();
      errno = 0;
      int rc = SSL_read(ssl_, buf, sizeof buf);
      if (rc <= 0) {
        const int err = SSL_get_error(ssl_, rc);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return false;
        if (err == SSL_ERROR_ZERO_RETURN) {
          onEof();
          return false;
        }
        const int saved_errno = errno;
        tls_failed_ = true;
        std::string detail = takeTlsError();
        if (!detail.empty()) {
          fail("TLS error: " + detail);
        } else if (saved_errno != 0) {
          fail(ioError("read", saved_errno));
        } else {
          onEof();
        }
        return false;
      }
      n = rc;
    } else {
      n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return false;
        fail(ioError("read", errno));
        return false;
      }
      if (n == 0) {
        onEof();
        return false;
      }
    }
    received_any_ = true;
    in_.append(buf, static_cast<size_t>(n));
    if (!onData()) return false;
  }
  return false;
}

bool Probe::onData() { return phase_ == Phase::Head ? onHead() : onBody(); }

bool Probe::onHead() {
  while (true) {
    const http::ParseStatus status = parser_.parse(in_.data(), in_.size(), spec_.method);
    if (status == http::ParseStatus::Incomplete) return true;
    if (status == http::ParseStatus::Error) {
      fail("malformed response");
      return false;
    }
    const http::ResponseHead& head = parser_.head();
    const int code = head.status;
    if (code >= 100 && code < 200 && code != 101) {  // interim response: the final one follows
      in_.erase(0, parser_.headLength());
      parser_.reset();
      continue;
    }
    const bool expected =
        std::any_of(spec_.expect.begin(), spec_.expect.end(),
                    [code](const auto& r) { return code >= r.first && code <= r.second; });
    if (!expected) {
      fail("HTTP " + std::to_string(code));
      return false;
    }
    if (spec_.body.empty()) {  // the body is not looked at
      pass();
      return false;
    }
    body_kind_ = head.body;
    body_remaining_ = head.content_length;
    in_.erase(0, parser_.headLength());
    phase_ = Phase::Body;
    if (body_kind_ == http::BodyKind::None) {
      fail("body does not contain \"" + spec_.body + "\"");
      return false;
    }
    return onBody();
  }
}

bool Probe::bodyHasNeedle(size_t old_size) const {
  const size_t overlap = spec_.body.size() - 1;
  const size_t from = old_size > overlap ? old_size - overlap : 0;
  return body_.find(spec_.body, from) != std::string::npos;
}

// Consumes body bytes from in_ per the framing; false once a verdict is given.
bool Probe::onBody() {
  bool complete = false;
  auto keep = [this](const char* data, size_t n) {
    const size_t old_size = body_.size();
    body_.append(data, std::min(n, kMaxBodyKept - old_size));
    return bodyHasNeedle(old_size);
  };
  bool found = false;
  switch (body_kind_) {
    case http::BodyKind::ContentLength: {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(in_.size(), body_remaining_));
      found = keep(in_.data(), take);
      body_remaining_ -= take;
      in_.clear();  // anything after the body is not ours to read
      complete = body_remaining_ == 0;
      break;
    }
    case http::BodyKind::UntilClose:
      found = keep(in_.data(), in_.size());
      in_.clear();
      break;
    case http::BodyKind::Chunked: {
      size_t offset = 0;
      while (!found && !complete) {
        size_t consumed = 0;
        std::string_view payload;
        const auto st =
            chunked_.decode(in_.data() + offset, in_.size() - offset, &consumed, &payload);
        offset += consumed;
        if (st == http::ChunkedDecoder::Status::Error) {
          fail("malformed response");
          return false;
        }
        if (st == http::ChunkedDecoder::Status::NeedMore) break;
        if (st == http::ChunkedDecoder::Status::Done) complete = true;
        if (st == http::ChunkedDecoder::Status::Data) found = keep(payload.data(), payload.size());
        if (body_.size() >= kMaxBodyKept) break;
      }
      in_.erase(0, offset);
      break;
    }
    case http::BodyKind::None:
      complete = true;
      break;
  }
  if (found) {
    pass();
    return false;
  }
  if (complete || body_.size() >= kMaxBodyKept) {
    fail("body does not contain \"" + spec_.body + "\"");
    return false;
  }
  return true;
}

void Probe::onEof() {
  if (phase_ == Phase::Head) {
    fail(in_.empty() ? "closed before response" : "closed in response head");
  } else if (phase_ == Phase::Body && body_kind_ == http::BodyKind::UntilClose) {
    fail("body does not contain \"" + spec_.body + "\"");  // found would have passed already
  } else {
    fail("closed in response body");
  }
}

void Probe::pass() { finish(ProbeResult{true, ""}); }

void Probe::fail(std::string reason) { finish(ProbeResult{false, std::move(reason)}); }

void Probe::finish(ProbeResult result) {
  if (finished_) return;
  finished_ = true;
  phase_ = Phase::Done;
  timer_.cancel();
  loop_.cancelSoon(this);
  closeConnection();
  Done done = std::move(done_);
  done_ = nullptr;
  if (done) done(result);
}

void Probe::closeConnection() {
  if (ssl_ != nullptr) {
    if (!tls_failed_ && SSL_is_init_finished(ssl_)) {
      ERR_clear_error();
      SSL_shutdown(ssl_);  // close_notify, best effort, never waited for
    }
    ERR_clear_error();
    SSL_free(ssl_);  // frees the BIO too
    ssl_ = nullptr;
  }
  if (fd_ >= 0) {
    loop_.remove(fd_);
    ::close(fd_);
    fd_ = -1;
  }
}

}  // namespace ballast::health
