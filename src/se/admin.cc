#include "se/admin.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "core/event_loop.h"
#include "core/socket.h"
#include "http/parser.h"
#include "http/serializer.h"

namespace ballast::se {

namespace {
constexpr uint64_t kRequestTimeoutMs = 10000;
// A /state?key= of a client key as long as a default head (16 KiB), percent-encoded, fits.
constexpr size_t kMaxRequest = 64 * 1024;
}  // namespace

// An admin connection: read a head (strictly, with the data path's parser), take a small body,
// answer; keep the connection for the next request unless the client asked to close.
class AdminServer::Connection final : public IoHandler, public TimerHandler, public Deferred {
 public:
  Connection(AdminServer& server, int fd)
      : server_(server), fd_(fd), parser_(limits()), timer_(server.loop_, this) {
    server_.connections_.insert(this);
    server_.loop_.addConnection(fd_, this);
    timer_.armAfter(kRequestTimeoutMs);
  }
  ~Connection() override {
    server_.connections_.erase(this);
    if (fd_ >= 0) ::close(fd_);
  }

  void onIoEvents(uint32_t events) override {
    if (fd_ < 0) return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) readRequest();
    if (fd_ >= 0 && (events & EPOLLOUT)) flush();
  }
  void onTimer(int) override { close(); }

 private:
  static http::Limits limits() {
    http::Limits l;
    l.max_head_size = kMaxRequest;
    l.max_fields = 64;
    return l;
  }

  void readRequest() {
    while (!answered_) {
      char buf[4096];
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        close();
        return;
      }
      if (n < 0) return;
      in_.append(buf, static_cast<size_t>(n));
      if (in_.size() > kMaxRequest) return fail(413);
      http::ParseStatus st = parser_.parse(in_.data(), in_.size());
      if (st == http::ParseStatus::Error) return fail(parser_.error().status);
      if (st == http::ParseStatus::Complete) {
        const http::RequestHead& h = parser_.head();
        // A body (there is no use for one) must have arrived whole before the answer.
        size_t need = parser_.headLength() + (h.body == http::BodyKind::ContentLength ? h.content_length : 0);
        if (h.body == http::BodyKind::Chunked) return fail(411);
        if (in_.size() < need) continue;
        consumed_ = need;
        keep_alive_ = h.keep_alive;
        std::string response;
        try {
          response = server_.route(h.method, h.forward_target, keep_alive_);
        } catch (const std::exception& e) {  // one bad request must not take the listener down
          spdlog::error("admin: {} {}: {}", h.method, h.forward_target, e.what());
          return fail(500);
        }
        return respond(std::move(response));
      }
    }
  }

  // Ballast's own error response; the connection closes after it.
  void fail(int status) {
    keep_alive_ = false;
    respond(std::string(http::errorResponse(status)));
  }

  void respond(std::string response) {
    answered_ = true;
    out_ = std::move(response);
    flush();
  }

  void flush() {
    while (sent_ < out_.size()) {
      ssize_t n = ::send(fd_, out_.data() + sent_, out_.size() - sent_, MSG_NOSIGNAL);
      if (n > 0) {
        sent_ += static_cast<size_t>(n);
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;
      } else if (!(n < 0 && errno == EINTR)) {
        break;
      }
    }
    if (!answered_) return;
    if (!keep_alive_) return close();
    // Ready for the next request (which may be here already).
    in_.erase(0, consumed_);
    parser_.reset();
    out_.clear();
    sent_ = consumed_ = 0;
    answered_ = false;
    timer_.armAfter(kRequestTimeoutMs);
    readRequest();
  }

  void close() {
    if (fd_ < 0) return;
    timer_.cancel();
    ::shutdown(fd_, SHUT_WR);
    ::close(fd_);
    fd_ = -1;
    server_.loop_.deferDelete(std::unique_ptr<Deferred>(this));
  }

  AdminServer& server_;
  int fd_;
  http::RequestParser parser_;
  Timer timer_;
  std::string in_;
  std::string out_;
  size_t sent_ = 0;
  size_t consumed_ = 0;      // bytes of in_ that the answered request took
  bool answered_ = false;
  bool keep_alive_ = false;
};

class AdminServer::Acceptor final : public IoHandler {
 public:
  explicit Acceptor(AdminServer& server) : server_(server) {}
  void onIoEvents(uint32_t) override {
    for (int i = 0; i < 16; ++i) {
      int fd = ::accept4(server_.listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      new Connection(server_, fd);  // owns itself; deleted through the loop when closed
    }
  }

 private:
  AdminServer& server_;
};

AdminServer::AdminServer(Handlers handlers) : handlers_(std::move(handlers)) {}

AdminServer::~AdminServer() { stop(); }

bool AdminServer::start(const SocketAddress& address, std::string* error) {
  // SO_REUSEPORT: a successor started for a binary upgrade binds the same admin address while
  // this engine drains.
  ListenOptions options;
  options.backlog = 64;
  listen_fd_ = listenTcp(address, options, error);
  if (listen_fd_ < 0) {
    *error = "admin: " + *error;
    return false;
  }
  acceptor_ = std::make_unique<Acceptor>(*this);
  loop_.addReader(listen_fd_, acceptor_.get());
  thread_ = std::thread([this] {
    try {
      loop_.run();
    } catch (const std::exception& e) {
      spdlog::error("admin: {}", e.what());
    }
  });
  return true;
}

void AdminServer::stop() {
  if (!thread_.joinable()) return;
  loop_.post([this] { loop_.stop(); });
  thread_.join();
  loop_.remove(listen_fd_);
  ::close(listen_fd_);
  listen_fd_ = -1;
  loop_.collectGarbage();
  while (!connections_.empty()) delete *connections_.begin();  // requests cut short by the stop
}

std::string AdminServer::route(std::string_view method, std::string_view target, bool keep_alive) {
  std::string_view path = target.substr(0, target.find('?'));
  auto answer = [keep_alive](int status, std::string_view type, const std::string& body,
                             std::string_view allow = {}) {
    return "HTTP/1.1 " + std::to_string(status) + " " + http::reasonPhrase(status) +
           (allow.empty() ? std::string() : "\r\nAllow: " + std::string(allow)) +
           "\r\nContent-Type: " + std::string(type) + "\r\nContent-Length: " +
           std::to_string(body.size()) + (keep_alive ? "" : "\r\nConnection: close") +
           "\r\n\r\n" + body;
  };
  bool get = method == "GET" || method == "HEAD";
  auto respond = [&](int status, std::string_view type, const std::string& body,
                     std::string_view allow = {}) {
    std::string r = answer(status, type, body, allow);
    if (method == "HEAD") r.resize(r.find("\r\n\r\n") + 4);
    return r;
  };
  if (path == "/status") {
    if (!get) return respond(405, "text/plain", "use GET\n", "GET, HEAD");
    return respond(200, "application/json", handlers_.status());
  }
  if (path == "/metrics") {
    if (!get) return respond(405, "text/plain", "use GET\n", "GET, HEAD");
    return respond(200, "text/plain; version=0.0.4; charset=utf-8", handlers_.metrics());
  }
  if (path == "/state") {
    if (!get) return respond(405, "text/plain", "use GET\n", "GET, HEAD");
    std::string_view query = target.size() > path.size() ? target.substr(path.size() + 1) : "";
    return respond(200, "application/json", handlers_.state(query));
  }
  if (path == "/reload") {
    if (method != "POST") return respond(405, "text/plain", "use POST\n", "POST");
    auto [ok, report] = handlers_.reload();
    // 422: the file is invalid; the running configuration stays.
    return respond(ok ? 200 : 422, "application/json", report);
  }
  return respond(404, "text/plain", "not found: try GET /status, GET /metrics, GET /state or POST /reload\n");
}

}  // namespace ballast::se
