#include "proxy/http_session.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "core/socket.h"
#include "http/cookie.h"
#include "http/serializer.h"
#include "proxy/access_record.h"

namespace ballast::proxy {

namespace {
// A field that may come in several lines, as one list (RFC 9110 5.3: "X: a" + "X: b" means
// "X: a, b"): the non-empty values joined with ", " into *joined when there are several.
std::string_view fieldList(const http::RequestHead& head, std::string_view name,
                           std::string* joined) {
  std::string_view first;
  bool several = false;
  for (const http::Field& f : head.fields) {
    if (f.value.empty() || !http::equalsIgnoreCase(f.name, name)) continue;
    if (first.empty()) {
      first = f.value;
    } else {
      if (!several) joined->assign(first);
      several = true;
      joined->append(", ").append(f.value);
    }
  }
  return several ? std::string_view(*joined) : first;
}

constexpr uint64_t kLingerMs = 2000;
constexpr int kRoundsPerEvent = 16;
// Room kept free in cout_/uout_ for chunk framing around a payload span.
constexpr size_t kChunkFraming = 32;
// A request body up to this size, already received whole, is kept for a retry.
constexpr uint64_t kMaxReplayBody = 64 * 1024;
// Draining: how long a connection idle between requests may still send one.
constexpr uint64_t kDrainIdleGraceMs = 1000;
// A fresh client socket joins the event loop only if its exchange takes longer than this.
constexpr uint64_t kWatchClientAfterMs = 100;

size_t kindIndex(ErrorKind kind) { return static_cast<size_t>(kind); }
uint64_t ms(config::Duration d) { return static_cast<uint64_t>(d.count()); }
}  // namespace

HttpSession::HttpSession(WorkerContext& ctx, std::shared_ptr<ServiceSlot> slot, int client_fd,
                         const SocketAddress& peer)
    : Session(ctx, std::move(slot)),
      client_fd_(client_fd),
      peer_(peer),
      client_ip_(peer.hostString()),
      cin_(ctx.buffers),
      cout_(ctx.buffers),
      uin_(ctx.buffers),
      uout_(ctx.buffers),
      request_parser_(service_->limits),
      response_parser_(service_->limits),
      request_chunks_(service_->limits),
      response_chunks_(service_->limits),
      client_timer_(ctx.loop, this, kClientTimer),
      server_timer_(ctx.loop, this, kServerTimer) {}

HttpSession::~HttpSession() {
  // Sessions end through finish(); this only guards against leaking the descriptor.
  if (client_fd_ >= 0) ::close(client_fd_);
}

void HttpSession::start() {
  connection_start_ms_ = client_activity_ms_ = ctx_.loop.now();
  // Listeners defer accept until data arrives, so the request is most likely here already: read
  // it now. The socket joins the event loop only once we have to wait for the client (a
  // short exchange on a fresh connection never needs it).
  client_.readable = true;
  run();
}

void HttpSession::startRejected() {
  connection_start_ms_ = client_activity_ms_ = ctx_.loop.now();
  respondError(503, ErrorKind::MaxConnections);
  run();
}

void HttpSession::drain() {
  if (closed_) return;
  // The response in flight, or the next one, carries "Connection: close". A connection idle
  // between requests is not closed at once: a client may be sending its next request right now,
  // and closing under it would fail that request. It gets a short grace to send one (answered
  // with "Connection: close"), then is closed.
  keep_alive_ = false;
  drain_deadline_ms_ = ctx_.loop.now() + kDrainIdleGraceMs;
  updateTimers();
}

void HttpSession::abort() { finish(true); }

// ---- events -------------------------------------------------------------------------------------

void HttpSession::onIoEvents(uint32_t events) {
  if (closed_) return;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) client_.readable = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) client_.hangup = true;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) client_.writable = true;
  run();
}

void HttpSession::onUpstreamEvents(uint32_t events) {
  if (closed_ || upstream_conn_ == nullptr) return;
  if (resp_ == Resp::Connecting) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int error = socketError(upstream_conn_->fd());
    if (error == 0 && (events & (EPOLLERR | EPOLLHUP))) error = ECONNREFUSED;
    if (error != 0) {
      attemptFailed(ErrorKind::ConnectRefused);
      run();
      return;
    }
    resp_ = Resp::Head;
    upstream_activity_ms_ = ctx_.loop.now();
    connect_us_ = ctx_.loop.nowUs() - attempt_start_us_;
    service_->counters.phases.connect.observeMicros(connect_us_);
    server_->phases.connect.observeMicros(connect_us_);
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) upstream_.readable = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) upstream_.hangup = true;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) upstream_.writable = true;
  run();
}

void HttpSession::onTimer(int tag) {
  if (closed_) return;
  if (tag == kServerTimer) {
    if (resp_ == Resp::Connecting) {
      attemptFailed(ErrorKind::ConnectTimeout);
    } else if (resp_ == Resp::Head || resp_ == Resp::Body) {
      attemptFailed(ErrorKind::ServerTimeout);
    }
    run();
    return;
  }
  // Client timer.
  if (!registered_ && waitingForServer()) {
    // The server takes its time: from now on, watch the client too, so that a client that goes
    // away is noticed (and its server connection freed) before the response comes.
    ctx_.loop.addConnection(client_fd_, this);
    registered_ = true;
    updateTimers();
    return;
  }
  if (lingering_) {
    finish(false);
  } else if (req_ == Req::Tunnel) {
    clientError(ErrorKind::ClientTimeout);
  } else if (req_ == Req::Head && resp_ == Resp::Idle && !closing_) {
    if (cin_.empty()) {
      // Nothing of a request arrived: an idle keep-alive connection (or one that never spoke)
      // is closed quietly.
      if (first_request_) service_->counters.errors[kindIndex(ErrorKind::HeaderTimeout)].add();
      finish(false);
      return;
    }
    respondError(408, ErrorKind::HeaderTimeout);
    run();
  } else if (closing_) {
    // The client does not read the response we want to close after.
    clientError(ErrorKind::ClientTimeout);
  } else if (!response_started_) {
    releaseUpstream(false);
    respondError(408, ErrorKind::ClientTimeout);
    run();
  } else {
    clientError(ErrorKind::ClientTimeout);
  }
}

// ---- the driver -----------------------------------------------------------------------------------

void HttpSession::run() {
  for (int round = 0; !closed_; ++round) {
    uint64_t before = progress_;
    if (!readClient()) return;
    processClient();
    if (closed_ || !flushUpstream()) return;
    if (!readUpstream()) return;
    processUpstream();
    if (closed_ || !flushClient()) return;
    if (progress_ == before) break;
    if (round + 1 == kRoundsPerEvent) {
      ctx_.loop.callSoon(this);  // be fair to the other connections of this worker
      break;
    }
  }
  if (closed_) return;
  if (!registered_) {
    // Events from the client are needed when it holds us up: we wait for bytes from it, or for
    // room to write to it. Waiting for a server, we learn of a client gone at the next write.
    bool wants_input = req_ == Req::Head || req_ == Req::Body || req_ == Req::Tunnel || lingering_;
    if (!client_.writable || (wants_input && !client_.readable)) {
      ctx_.loop.addConnection(client_fd_, this);
      registered_ = true;
    }
  }
  updateTimers();
  if (req_ == Req::Head && resp_ == Resp::Idle) {
    // Between requests: hold no buffer memory.
    cin_.releaseIfEmpty();
    cout_.releaseIfEmpty();
    uin_.releaseIfEmpty();
    uout_.releaseIfEmpty();
  }
}

bool HttpSession::readClient() {
  if (!client_.readable || client_.eof) return true;
  if (lingering_) {
    char sink[16384];
    for (int i = 0; i < 16; ++i) {
      ssize_t n = ::read(client_fd_, sink, sizeof sink);
      if (n > 0) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        client_.readable = false;
        return true;
      }
      if (n < 0 && errno == EINTR) continue;
      finish(false);  // EOF or error: the client has our response, or is gone
      return false;
    }
    ctx_.loop.callSoon(this);  // a client still sending a lot: go on later
    return true;
  }
  if (cin_.space() == 0) return true;  // backpressure: the request in flight must move first
  bool was_empty = cin_.empty();
  char* p = cin_.writePtr();
  size_t room = cin_.writable();
  ssize_t n = ::read(client_fd_, p, room);
  if (n > 0) {
    cin_.produced(static_cast<size_t>(n));
    service_->counters.bytes_in.add(static_cast<uint64_t>(n));
    client_activity_ms_ = ctx_.loop.now();
    if (was_empty && req_ == Req::Head && resp_ == Resp::Idle) request_start_us_ = ctx_.loop.nowUs();
    if (static_cast<size_t>(n) < room && !client_.hangup) client_.readable = false;
    ++progress_;
    return true;
  }
  if (n == 0) {
    client_.eof = true;
    ++progress_;
    onClientEof();
    return !closed_;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    client_.readable = false;
    return true;
  }
  if (errno == EINTR) return true;
  clientError(ErrorKind::ClientAbort);
  return false;
}

void HttpSession::onClientEof() {
  switch (req_) {
    case Req::Head:
      if (resp_ == Resp::Idle && !closing_) {
        // Closed between requests (the normal end of a keep-alive connection), or in the middle
        // of a request head, which can then never be answered.
        if (!cin_.empty()) service_->counters.errors[kindIndex(ErrorKind::ClientAbort)].add();
        finish(false);
        return;
      }
      keep_alive_ = false;
      return;
    case Req::Body:
      clientError(ErrorKind::ClientAbort);
      return;
    case Req::Done:
      // Half-close after a complete request: answer it, then close.
      keep_alive_ = false;
      return;
    case Req::Tunnel:
      tunnelShutdowns();
      return;
  }
}

bool HttpSession::readUpstream() {
  if (upstream_conn_ == nullptr || resp_ == Resp::Connecting) return true;
  if (!upstream_.readable || upstream_.eof) return true;
  if (uin_.space() == 0) return true;  // backpressure: the client must read first
  char* p = uin_.writePtr();
  size_t room = uin_.writable();
  ssize_t n = ::read(upstream_conn_->fd(), p, room);
  if (n > 0) {
    uin_.produced(static_cast<size_t>(n));
    server_->bytes_in.add(static_cast<uint64_t>(n));
    upstream_activity_ms_ = ctx_.loop.now();
    if (!response_bytes_seen_) {
      response_bytes_seen_ = true;
      response_first_byte_at_us_ = ctx_.loop.nowUs();
      if (request_sent_) {
        first_byte_us_ = response_first_byte_at_us_ - request_sent_us_;
        server_->response_duration.observeMicros(first_byte_us_);
        server_->phases.response.observeMicros(first_byte_us_);
        service_->counters.phases.response.observeMicros(first_byte_us_);
        recordResponseTime(*server_, first_byte_us_);
      }
    }
    if (static_cast<size_t>(n) < room && !upstream_.hangup) upstream_.readable = false;
    ++progress_;
    return true;
  }
  if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
    upstream_.eof = true;  // a reset is handled like a close: what arrived is all there is
    ++progress_;
    return true;
  }
  if (errno != EINTR) upstream_.readable = false;
  return true;
}

bool HttpSession::flushUpstream() {
  if (upstream_conn_ == nullptr || resp_ == Resp::Connecting || uout_.empty() || !upstream_.writable ||
      upstream_write_failed_)
    return true;
  ssize_t n = ::send(upstream_conn_->fd(), uout_.readPtr(), uout_.readable(), MSG_NOSIGNAL);
  if (n > 0) {
    bool all = static_cast<size_t>(n) == uout_.readable();
    uout_.consume(static_cast<size_t>(n));
    server_->bytes_out.add(static_cast<uint64_t>(n));
    upstream_activity_ms_ = ctx_.loop.now();
    if (!all) upstream_.writable = false;
    if (!request_sent_ && uout_.empty()) {
      request_sent_ = true;
      request_sent_us_ = ctx_.loop.nowUs();
    }
    ++progress_;
    return true;
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    upstream_.writable = false;
    return true;
  }
  if (n < 0 && errno == EINTR) return true;
  // The server stopped taking the request. It may have answered already (413, say): read what it
  // sent; the read then also reports the close.
  upstream_write_failed_ = true;
  upstream_.readable = true;
  uout_.clear();
  ++progress_;
  return true;
}

bool HttpSession::flushClient() {
  if (!cout_.empty() && client_.writable) {
    // A response that takes several writes (streamed body, interim response first) must not
    // have its small pieces held back by Nagle's algorithm; a one-write response never needs it.
    if (!nodelay_ && resp_ != Resp::Idle) {
      setNoDelay(client_fd_);
      nodelay_ = true;
    }
    ssize_t n = ::send(client_fd_, cout_.readPtr(), cout_.readable(), MSG_NOSIGNAL);
    if (n > 0) {
      bool all = static_cast<size_t>(n) == cout_.readable();
      cout_.consume(static_cast<size_t>(n));
      service_->counters.bytes_out.add(static_cast<uint64_t>(n));
      client_activity_ms_ = ctx_.loop.now();
      if (response_started_) response_sent_ = true;
      if (!all) client_.writable = false;
      ++progress_;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      client_.writable = false;
    } else if (!(n < 0 && errno == EINTR)) {
      clientError(ErrorKind::ClientAbort);
      return false;
    }
  }
  if (cout_.empty() && closing_ && !lingering_) {
    // Close at once when the client has nothing more in flight; otherwise linger, so that
    // what it still sends does not turn our close into a reset that destroys the response.
    if (linger_ || !cin_.empty() || client_.readable || req_ == Req::Body) {
      startLinger();
    } else {
      finish(false);
    }
  }
  return !closed_;
}

// ---- requests -----------------------------------------------------------------------------------

void HttpSession::processClient() {
  if (closing_) return;  // answered already: what the client still sends is dropped
  switch (req_) {
    case Req::Head:
      if (resp_ == Resp::Idle && !closing_ && !cin_.empty()) parseRequest();
      return;
    case Req::Body:
      forwardRequestBody();
      return;
    case Req::Done:
      return;  // a pipelined request waits in cin_ until this exchange ends
    case Req::Tunnel:
      relay(cin_, uout_);
      tunnelShutdowns();
      return;
  }
}

void HttpSession::parseRequest() {
  http::ParseStatus status = request_parser_.parse(cin_.readPtr(), cin_.readable());
  if (status == http::ParseStatus::Incomplete) {
    if (cin_.space() == 0) respondError(431, ErrorKind::HeadTooLarge);
    return;
  }
  if (status == http::ParseStatus::Error) {
    const http::ParseError& e = request_parser_.error();
    bool too_large = e.status == 431 || e.status == 414;
    respondError(e.status, too_large ? ErrorKind::HeadTooLarge : ErrorKind::BadRequest);
    return;
  }
  startExchange();
}

void HttpSession::startExchange() {
  const http::RequestHead& head = request_parser_.head();
  // Each request is served by the configuration current when it arrives (an HTTP listener stays
  // HTTP across reloads: a change of protocol keeps the old version for this connection).
  if (slot_->current->config.protocol == config::Protocol::Http) followSlot();
  service_->counters.requests.add();
  ++progress_;
  first_request_ = false;
  method_ = head.method_id;
  client_http10_ = head.version == http::Version::Http10;
  // A virtual service gone with a reload answers this request, then closes.
  keep_alive_ = head.keep_alive && !ctx_.draining && !slot_->retired;
  upgrade_requested_ = head.upgrade;
  if (head.upgrade) upgrade_offer_.assign(head.upgrade_value);
  request_body_ = head.body;
  request_left_ = head.content_length;
  response_started_ = false;
  response_bytes_seen_ = false;
  request_sent_ = false;
  dechunk_ = false;
  retried_ = false;
  status_ = 0;
  tried_.clear();
  attempts_ = 0;
  retries_ = 0;
  connect_us_ = 0;
  first_byte_us_ = 0;
  head_us_ = request_start_us_ != 0 ? ctx_.loop.nowUs() - request_start_us_ : 0;
  if (request_start_us_ != 0) service_->counters.phases.header.observeMicros(head_us_);
  error_kind_ = nullptr;
  server_ref_ = nullptr;
  exchange_parsed_ = true;
  in_mark_ = cin_.totalConsumed();
  out_mark_ = cout_.totalProduced();
  if (service_->access_log) {
    log_method_.assign(head.method);
    log_target_.assign(head.target);
  }
  has_hash_ = false;
  if (service_->pool.config->lb_algorithm == config::LbAlgorithm::ConsistentHash)
    has_hash_ = hashRequest(head, &hash_);
  preferred_ = nullptr;
  persistenceKey(head);

  // The head views cin_: serialize it (and take it out of cin_) before anything can wait.
  http::RequestForwarding fwd;
  fwd.client_ip = client_ip_;
  fwd.add_forwarded = service_->config.x_forwarded_for;
  uout_.compact();
  size_t n = http::serializeRequestHead(head, fwd, uout_.writePtr(), uout_.writable());
  if (n == 0) {
    respondError(431, ErrorKind::HeadTooLarge);
    return;
  }
  uout_.produced(n);
  cin_.consume(request_parser_.headLength());
  request_parser_.reset();
  response_parser_.reset();
  if (request_body_ == http::BodyKind::Chunked) request_chunks_.reset();
  bool has_body = request_body_ == http::BodyKind::Chunked ||
                  (request_body_ == http::BodyKind::ContentLength && request_left_ > 0);
  req_ = has_body ? Req::Body : Req::Done;
  // Kept to send again on another connection (a retry, or a pooled connection the server had
  // closed already): the head, with the body when it is small and already here whole. A body
  // still streaming from the client cannot be sent twice.
  replay_.clear();
  if (!has_body) {
    replay_.assign(uout_.readPtr(), uout_.readable());
  } else if (request_body_ == http::BodyKind::ContentLength && request_left_ <= kMaxReplayBody &&
             request_left_ <= cin_.readable()) {
    replay_.assign(uout_.readPtr(), uout_.readable());
    replay_.append(cin_.readPtr(), request_left_);
  }
  forwardRequestBody();
  if (persist_key_.empty() || ctx_.persistence == nullptr) return connectExchange();
  if (const lb::Server* s = ctx_.persistence->fromCache(*service_, persist_key_)) {
    preferred_ = s;
    return connectExchange();
  }

  // Which server this client persists to: maybe known at once (the cache), maybe after a store
  // round trip, during which the request waits here (the worker does not).
  resp_ = Resp::Resolving;
  uint64_t id = ++exchange_id_;
  // The answer may come before resolve() returns (memory store, store down): then this function
  // carries on; later, the callback does (and drives the session itself).
  resolve_waiting_ = false;
  bool create = service_->config.persistence.type != config::PersistenceType::AppCookie;
  ctx_.persistence->resolve(service_, persist_key_, create,
                            [this, alive = alive_, id](const lb::Server* s) {
                              if (!*alive || exchange_id_ != id || resp_ != Resp::Resolving) return;
                              preferred_ = s;
                              resp_ = Resp::Idle;
                              if (!resolve_waiting_) return;
                              connectExchange();
                              run();
                            });
  if (resp_ == Resp::Resolving) {
    resolve_waiting_ = true;
    return;
  }
  connectExchange();
}

// Persistence's part in a response: http_cookie tells the client its server (unless its cookie
// does already); app_cookie learns the session cookie the server issues. Returns the field lines
// to add.
std::string HttpSession::persistenceOnResponse(const http::ResponseHead& head) {
  const config::Persistence& p = service_->config.persistence;
  if (server_ref_ == nullptr) return {};
  if (p.type == config::PersistenceType::HttpCookie) {
    std::string value = serverCookieValue(*server_ref_);
    // A client whose cookie names a server that can be used keeps it, also when this request went
    // elsewhere (that server was at its max_connections, or a retry): a passing overflow must not
    // move the session for good.
    if (value == presented_cookie_ || cookie_server_usable_) return {};
    return "Set-Cookie: " + p.cookie + "=" + value + "; Path=/; HttpOnly\r\n";
  }
  if (p.type == config::PersistenceType::AppCookie && ctx_.persistence != nullptr) {
    for (const http::Field& f : head.fields) {
      if (!http::equalsIgnoreCase(f.name, "set-cookie")) continue;
      std::optional<http::SetCookie> c = http::parseSetCookie(f.value, std::time(nullptr));
      // A cookie the server deletes (Max-Age=0, an Expires in the past) names no session.
      if (!c || c->name != p.cookie || c->value.empty() || c->expires_now) continue;
      ctx_.persistence->learn(
          *service_, "persist:" + service_->config.name + ":" + std::string(c->value), *server_ref_);
    }
  }
  return {};
}

void HttpSession::connectExchange() {
  if (!acquireUpstream(true)) respondError(503, ErrorKind::NoServer);
}

void HttpSession::persistenceKey(const http::RequestHead& head) {
  const config::Persistence& p = service_->config.persistence;
  persist_key_.clear();
  std::string_view key;
  std::string ip;  // the key's storage when it is built (a client address, a joined field)
  switch (p.type) {
    case config::PersistenceType::None:
      return;
    case config::PersistenceType::ClientIp:
      ip = clientIpKey(peer_, p.ipv4_prefix, p.ipv6_prefix);
      key = ip;
      break;
    case config::PersistenceType::HttpHeader:
      key = fieldList(head, p.header, &ip);
      break;
    case config::PersistenceType::HttpCookie: {
      // Our cookie names the server directly: no store needed while it can be used.
      presented_cookie_.assign(cookieValue(head, p.cookie));
      cookie_server_usable_ = false;
      if (!presented_cookie_.empty()) {
        const lb::PickContext now{{}, ctx_.loop.now()};
        for (const lb::Server& s : service_->pool.servers) {
          if (serverCookieValue(s) != presented_cookie_) continue;
          if (lb::usable(s, now)) {
            preferred_ = &s;
            cookie_server_usable_ = true;
            return;
          }
          if (lb::takesNewTraffic(s) && lb::usableNow(*s.state, 0, s.index, now, false)) {
            cookie_server_usable_ = true;  // only full (max_connections): balanced this time
            return;
          }
          break;
        }
      }
      // No cookie (or a stale one): the client's address keys a shared entry, so that a
      // cookie-less retry from the same client lands on the same server as this request.
      ip = clientIpKey(peer_, 32, 128);
      key = ip;
      break;
    }
    case config::PersistenceType::AppCookie:
      key = cookieValue(head, p.cookie);
      break;
  }
  if (key.empty()) return;
  persist_key_.append("persist:").append(service_->config.name).append(":").append(key);
}

bool HttpSession::hashRequest(const http::RequestHead& head, uint64_t* hash) const {
  const config::HashKey& key = service_->pool.config->hash_key;
  std::string_view value;
  std::string joined;
  switch (key.type) {
    case config::HashKeyType::ClientIp:
      value = client_ip_;
      break;
    case config::HashKeyType::Path:
      value = head.forward_target.substr(0, head.forward_target.find('?'));
      break;
    case config::HashKeyType::Header:
      value = fieldList(head, key.name, &joined);
      break;
    case config::HashKeyType::Cookie:
      value = cookieValue(head, key.name);
      break;
  }
  if (value.empty()) return false;
  *hash = lb::hashKey(value);
  return true;
}

std::string_view HttpSession::cookieValue(const http::RequestHead& head, std::string_view name) {
  // Cookie: a=1; b=2 (RFC 6265 5.4); several Cookie fields are possible: the first match counts.
  for (const http::Field& f : head.fields) {
    if (!http::equalsIgnoreCase(f.name, "cookie")) continue;
    if (std::optional<std::string_view> v = http::cookieIn(f.value, name)) return *v;
  }
  return {};
}

bool HttpSession::acquireUpstream(bool allow_pooled) {
  upstream_ = SocketState{};
  upstream_write_failed_ = false;
  const uint32_t max_attempts = 1 + service_->config.retries;
  while (attempts_ < max_attempts) {
    lb::PickContext pick{tried_, ctx_.loop.now(), has_hash_, hash_};
    // Persistence beats the algorithm while its server can be used (first attempt only: a retry
    // goes elsewhere).
    const lb::Server* server = preferred_ != nullptr && lb::usable(*preferred_, pick) ? preferred_ : nullptr;
    preferred_ = nullptr;
    if (server == nullptr) server = service_->balancer->pick(pick);
    if (server == nullptr) return false;
    tried_.push_back(server->index);
    if (!attempt_.begin(ctx_, *service_, *server)) continue;  // at its connection limit meanwhile
    ++attempts_;
    server_ref_ = server;
    server_ = attempt_.counters();
    attempt_start_us_ = ctx_.loop.nowUs();
    if (allow_pooled) {
      upstream_conn_ =
          ctx_.upstreams.take(server->state->key(), server->index, this, !idempotent(method_));
      if (upstream_conn_ != nullptr) {
        resp_ = Resp::Head;
        upstream_activity_ms_ = ctx_.loop.now();
        return true;
      }
    }
    upstream_conn_ = ctx_.upstreams.connect(server->address, server->state, server->index, this);
    if (upstream_conn_ != nullptr) {
      resp_ = Resp::Connecting;
      upstream_.writable = false;
      server_timer_.armAfter(ms(service_->config.timeouts.connect));
      return true;
    }
    server_->errors[kindIndex(ErrorKind::ConnectRefused)].add();
    attempt_.end(lb::Outcome::GatewayFailure);
  }
  return false;
}

void HttpSession::forwardRequestBody() {
  if (req_ != Req::Body) return;
  if (request_body_ == http::BodyKind::ContentLength) {
    size_t n = std::min<uint64_t>({cin_.readable(), request_left_, uout_.space()});
    if (n > 0) {
      uout_.append(cin_.readPtr(), n);
      cin_.consume(n);
      request_left_ -= n;
      ++progress_;
    }
    if (request_left_ == 0) req_ = Req::Done;
    return;
  }
  // Chunked: decode strictly, re-frame without extensions, drop trailers.
  while (!cin_.empty() && uout_.space() > kChunkFraming) {
    size_t consumed = 0;
    std::string_view payload;
    size_t len = std::min(cin_.readable(), uout_.space() - kChunkFraming);
    auto st = request_chunks_.decode(cin_.readPtr(), len, &consumed, &payload);
    if (st == http::ChunkedDecoder::Status::Error) {
      // The request is broken mid-body: nothing sensible reaches the server after this.
      releaseUpstream(false);
      respondError(400, ErrorKind::BadRequest);
      return;
    }
    if (st == http::ChunkedDecoder::Status::Data) {
      char line[24];
      size_t h = http::writeChunkHeader(payload.size(), line);
      uout_.append(line, h);
      uout_.append(payload);
      uout_.append(http::kChunkTrailer);
    } else if (st == http::ChunkedDecoder::Status::Done) {
      uout_.append(http::kLastChunk);
    }
    cin_.consume(consumed);
    if (consumed > 0) ++progress_;
    if (st == http::ChunkedDecoder::Status::Done) {
      req_ = Req::Done;
      return;
    }
    if (st == http::ChunkedDecoder::Status::NeedMore) return;
  }
}

// ---- responses ----------------------------------------------------------------------------------

void HttpSession::processUpstream() {
  switch (resp_) {
    case Resp::Idle:
    case Resp::Resolving:
    case Resp::Connecting:
      return;
    case Resp::Head:
      if (!uin_.empty()) {
        handleResponseHead();
        return;
      }
      if (upstream_.eof) onUpstreamClosed(ErrorKind::ServerReset);
      return;
    case Resp::Body:
      forwardResponseBody();
      return;
    case Resp::Tunnel:
      relay(uin_, cout_);
      tunnelShutdowns();
      return;
  }
}

void HttpSession::handleResponseHead() {
  http::ParseStatus st = response_parser_.parse(uin_.readPtr(), uin_.readable(), method_);
  if (st == http::ParseStatus::Incomplete) {
    if (uin_.space() == 0) {
      attemptFailed(ErrorKind::BadResponse);
    } else if (upstream_.eof) {
      attemptFailed(ErrorKind::BadResponse);  // closed in the middle of a head
    }
    return;
  }
  if (st == http::ParseStatus::Error) {
    attemptFailed(ErrorKind::BadResponse);
    return;
  }
  const http::ResponseHead& head = response_parser_.head();
  // When cout_ has no room for the head yet, it is parsed again once the client has read.
  auto wait_for_client = [this] { response_parser_.reset(); };
  int status = head.status;
  if (status == 101) {
    if (!upgrade_requested_ || !head.upgrade ||
        !http::upgradeChosenFromOffer(upgrade_offer_, head.upgrade_value)) {
      attemptFailed(ErrorKind::BadResponse);
      return;
    }
  } else if (status < 200) {
    // Interim response (100 Continue, 103 Early Hints): passed on to 1.1 clients only.
    if (!client_http10_) {
      http::ResponseForwarding fwd;
      cout_.compact();
      size_t n = http::serializeResponseHead(head, fwd, cout_.writePtr(), cout_.writable());
      if (n == 0) return wait_for_client();
      cout_.produced(n);
    }
    uin_.consume(response_parser_.headLength());
    response_parser_.reset();
    ++progress_;
    return;
  }

  response_body_ = head.body;
  response_left_ = head.content_length;
  server_keep_alive_ = head.keep_alive;
  // A response that ends with the connection, or that arrives before the request body was all
  // received, leaves the client connection in a state only a close resolves.
  if (req_ == Req::Body || response_body_ == http::BodyKind::UntilClose) keep_alive_ = false;
  if (ctx_.draining) keep_alive_ = false;
  // A 1.0 client knows no transfer coding (RFC 9112 6.1: none is sent to it). A close-delimited
  // body under one (gzip without chunked) could not be undone here.
  if (client_http10_ && response_body_ == http::BodyKind::UntilClose && head.has_transfer_encoding)
    return attemptFailed(ErrorKind::BadResponse);
  if (client_http10_ && response_body_ == http::BodyKind::Chunked) {
    // The body goes out unframed, ended by the close. Other codings under the chunked one could
    // not be undone here either.
    if (!head.transfer_codings_before_chunked.empty()) return attemptFailed(ErrorKind::BadResponse);
    dechunk_ = true;
    keep_alive_ = false;
  }
  http::ResponseForwarding fwd;
  fwd.close = !keep_alive_ && status != 101;
  fwd.client_http10 = client_http10_;
  fwd.dechunk = dechunk_;
  std::string set_cookie = persistenceOnResponse(head);
  fwd.extra_fields = set_cookie;
  if (service_->config.persistence.type == config::PersistenceType::HttpCookie)
    fwd.own_cookie = service_->config.persistence.cookie;
  cout_.compact();
  size_t n = http::serializeResponseHead(head, fwd, cout_.writePtr(), cout_.writable());
  if (n == 0) {
    if (cout_.empty()) return attemptFailed(ErrorKind::BadResponse);
    return wait_for_client();  // it has an interim response to read first
  }
  cout_.produced(n);
  uin_.consume(response_parser_.headLength());
  status_ = status;
  response_started_ = true;
  server_->responses[statusClassIndex(status)].add();
  ++progress_;
  if (status == 101) {
    // The upgrade worked: that is the outcome. The tunnel stays in flight at the server until it
    // closes (long-lived load counts for least_connections).
    attempt_.report(lb::Outcome::Success);
    resp_ = Resp::Tunnel;
    req_ = Req::Tunnel;
    relay(cin_, uout_);
    relay(uin_, cout_);
    return;
  }
  resp_ = Resp::Body;
  if (response_body_ == http::BodyKind::Chunked) response_chunks_.reset();
  forwardResponseBody();
}

void HttpSession::forwardResponseBody() {
  switch (response_body_) {
    case http::BodyKind::None:
      completeResponse();
      return;
    case http::BodyKind::ContentLength: {
      size_t n = std::min<uint64_t>({uin_.readable(), response_left_, cout_.space()});
      if (n > 0) {
        cout_.append(uin_.readPtr(), n);
        uin_.consume(n);
        response_left_ -= n;
        ++progress_;
      }
      if (response_left_ == 0) {
        completeResponse();
      } else if (upstream_.eof && uin_.empty()) {
        onUpstreamClosed(ErrorKind::ServerReset);  // truncated body
      }
      return;
    }
    case http::BodyKind::UntilClose: {
      size_t n = std::min(uin_.readable(), cout_.space());
      if (n > 0) {
        cout_.append(uin_.readPtr(), n);
        uin_.consume(n);
        ++progress_;
      }
      if (upstream_.eof && uin_.empty()) completeResponse();
      return;
    }
    case http::BodyKind::Chunked:
      break;
  }
  while (!uin_.empty() && cout_.space() > kChunkFraming) {
    size_t consumed = 0;
    std::string_view payload;
    size_t len = std::min(uin_.readable(), cout_.space() - kChunkFraming);
    auto st = response_chunks_.decode(uin_.readPtr(), len, &consumed, &payload);
    if (st == http::ChunkedDecoder::Status::Error) {
      attemptFailed(ErrorKind::BadResponse);
      return;
    }
    if (st == http::ChunkedDecoder::Status::Data) {
      if (!dechunk_) {
        char line[24];
        size_t h = http::writeChunkHeader(payload.size(), line);
        cout_.append(line, h);
      }
      cout_.append(payload);
      if (!dechunk_) cout_.append(http::kChunkTrailer);
    } else if (st == http::ChunkedDecoder::Status::Done && !dechunk_) {
      cout_.append(http::kLastChunk);
    }
    uin_.consume(consumed);
    if (consumed > 0) ++progress_;
    if (st == http::ChunkedDecoder::Status::Done) {
      completeResponse();
      return;
    }
    if (st == http::ChunkedDecoder::Status::NeedMore) break;
  }
  if (resp_ == Resp::Body && upstream_.eof && !closed_) onUpstreamClosed(ErrorKind::ServerReset);
}

void HttpSession::completeResponse() {
  VsCounters& vs = service_->counters;
  vs.responses[statusClassIndex(status_)].add();
  uint64_t now_us = ctx_.loop.nowUs();
  if (request_start_us_ != 0) {
    vs.request_duration.observeMicros(now_us - request_start_us_);
    vs.phases.total.observeMicros(now_us - request_start_us_);
  }
  // A response is parsed from bytes read, so its first byte was timed.
  vs.phases.transfer.observeMicros(now_us - response_first_byte_at_us_);
  attempt_.end(status_ >= 500 ? lb::Outcome::ServerError : lb::Outcome::Success);
  logAccess();
  bool reusable = server_keep_alive_ && req_ == Req::Done && uout_.empty() && uin_.empty() &&
                  !upstream_write_failed_ &&
                  !upstream_.eof && !upstream_.hangup && response_body_ != http::BodyKind::UntilClose;
  releaseUpstream(reusable);
  resp_ = Resp::Idle;
  response_started_ = false;
  response_sent_ = false;
  status_ = 0;
  ++progress_;
  if (!keep_alive_ || req_ != Req::Done) {
    closing_ = true;
    return;
  }
  req_ = Req::Head;
  request_start_us_ = cin_.empty() ? 0 : ctx_.loop.nowUs();
  // An EOF seen while this exchange was in flight ends the connection now that it is answered.
  if (client_.eof) closing_ = true;
}

// The server closed (or reset) before its response was complete.
void HttpSession::onUpstreamClosed(ErrorKind kind) {
  const lb::Server* same = server_ref_;
  if (!response_started_ && !response_bytes_seen_ && upstream_conn_ != nullptr &&
      upstream_conn_->reused() && !replay_.empty() && !retried_ && idempotent(method_) &&
      same != nullptr && lb::usable(*same, lb::PickContext{{}, ctx_.loop.now()})) {
    // A pooled connection the server had already closed (the keep-alive race): not the server's
    // failure, and not a retry; send the request again, once, on a new connection to the same
    // server (so that no more servers see it than `retries` allows). Only when sending it twice
    // is harmless (RFC 9110 9.2.2): a close after the request was written may also mean the
    // server took it and failed, and a POST must not be applied twice (RFC 9112 9.3.1). A request
    // that is not idempotent gets 502 instead; it only takes a pooled connection that was checked
    // to be still open just before, which leaves that race a few microseconds.
    retried_ = true;
    attempt_.end(std::nullopt);
    --attempts_;
    tried_.pop_back();
    releaseUpstream(false);
    prepareReplay();
    preferred_ = same;
    if (!acquireUpstream(false)) respondError(503, ErrorKind::NoServer);
    ++progress_;
    return;
  }
  attemptFailed(kind);
}

// An attempt failed on the server side. Before any of the response reached the client, another
// server may be tried (retries): always after a failed connect (nothing was sent), and after a
// reset, an early close or a timeout for idempotent requests kept whole. Otherwise the client gets
// 502/503/504, or, when part of the response was sent already, its connection is cut: the only
// way left to tell it the response is incomplete.
void HttpSession::attemptFailed(ErrorKind kind) {
  bool connect_failure = kind == ErrorKind::ConnectRefused || kind == ErrorKind::ConnectTimeout;
  if (server_ != nullptr) server_->errors[kindIndex(kind)].add();
  attempt_.end(lb::Outcome::GatewayFailure);
  releaseUpstream(false);
  discardUnsentResponse();
  if (response_started_) {
    service_->counters.errors[kindIndex(kind)].add();
    error_kind_ = errorKindName(kind);
    logAccess();
    finish(true);
    return;
  }
  bool replayable = connect_failure || (kind != ErrorKind::BadResponse && idempotent(method_) &&
                                        !replay_.empty());
  if (replayable && attempts_ < 1 + service_->config.retries) {
    service_->counters.retries.add();
    server_->retries.add();
    ++retries_;
    if (!connect_failure) prepareReplay();
    ++progress_;
    if (acquireUpstream(true)) return;
  }
  switch (kind) {
    case ErrorKind::ConnectRefused:
    case ErrorKind::ConnectTimeout:
      respondError(503, ErrorKind::NoServer);
      return;
    case ErrorKind::ServerTimeout:
      respondError(504, kind);
      return;
    default:
      respondError(502, kind);
      return;
  }
}

// Puts the kept request back in uout_ to be sent again.
void HttpSession::prepareReplay() {
  uout_.clear();
  uout_.append(replay_);
  req_ = Req::Done;
  request_sent_ = false;
  response_bytes_seen_ = false;
  response_parser_.reset();
}

bool HttpSession::idempotent(http::Method m) {
  switch (m) {
    case http::Method::Get:
    case http::Method::Head:
    case http::Method::Options:
    case http::Method::Put:
    case http::Method::Delete:
    case http::Method::Trace:
      return true;
    default:
      return false;
  }
}

void HttpSession::clientError(ErrorKind kind) {
  service_->counters.errors[kindIndex(kind)].add();
  if (req_ != Req::Head || !cin_.empty()) {  // an exchange was under way
    error_kind_ = errorKindName(kind);
    logAccess();
  }
  finish(true);
}

void HttpSession::respondError(int status, ErrorKind kind) {
  bool head_only = answeringHead();
  // A request that never started (a bad head, no server) is still all in cin_.
  uint64_t unconsumed = req_ == Req::Head ? cin_.readable() : 0;
  service_->counters.errors[kindIndex(kind)].add();
  error_kind_ = errorKindName(kind);
  discardUnsentResponse();
  if (response_started_) {
    logAccess();
    finish(true);
    return;
  }
  service_->counters.responses[statusClassIndex(status)].add();
  releaseUpstream(false);
  ++exchange_id_;  // a store answer still to come is for nobody now
  status_ = status;
  resp_ = Resp::Idle;
  req_ = Req::Done;
  keep_alive_ = false;
  closing_ = true;
  linger_ = true;  // the client may be sending still (the rest of a bad request, a body)
  response_started_ = true;
  cout_.clear();
  std::string_view response = http::errorResponse(status);
  if (head_only) response = response.substr(0, response.find("\r\n\r\n") + 4);  // no body
  size_t status_line = response.find("\r\n") + 2;
  cout_.append(response.substr(0, status_line));
  cout_.append(http::dateField());  // RFC 9110 6.6.1
  cout_.append(response.substr(status_line));
  logAccess(unconsumed);
  ++progress_;
}

// A response head (and maybe some body) that is still all in cout_ can be taken back and replaced
// by an error response: the client has seen nothing of it.
void HttpSession::discardUnsentResponse() {
  if (!response_started_ || response_sent_) return;
  cout_.clear();
  response_started_ = false;
}

bool HttpSession::waitingForServer() const {
  return req_ == Req::Done && resp_ != Resp::Idle && resp_ != Resp::Tunnel && cout_.empty();
}

bool HttpSession::answeringHead() const {
  // Between requests the method is that of the (partial, or malformed) head in cin_.
  if (req_ == Req::Head) return cin_.view().substr(0, 5) == "HEAD ";
  return method_ == http::Method::Head;
}

void HttpSession::logAccess(uint64_t unconsumed_request) {
  if (service_->access_log != nullptr) {
    AccessRecord r;
    r.vs = service_->config.name;
    std::string client = peer_.toString();
    r.client = client;
    if (exchange_parsed_) {
      r.method = log_method_;
      r.target = log_target_;
    }
    r.status = status_;
    if (server_ref_ != nullptr) r.server = server_ref_->address_text;
    // What the request took from cin_; for one that never started (a bad head, no server), the
    // bytes of it still there.
    r.bytes_in = cin_.totalConsumed() - in_mark_ + unconsumed_request;
    r.bytes_out = cout_.totalProduced() - out_mark_;
    r.header_us = head_us_;
    r.connect_us = connect_us_;
    r.first_byte_us = first_byte_us_;
    r.total_us = request_start_us_ != 0 ? monotonicUs() - request_start_us_ : 0;
    r.retries = retries_;
    if (error_kind_ != nullptr) r.error = error_kind_;
    log_line_.clear();
    formatAccessRecord(r, log_line_);
    service_->access_log->write(service_->worker, log_line_);
  }
  exchange_parsed_ = false;
  in_mark_ = cin_.totalConsumed();
  out_mark_ = cout_.totalProduced();
}

// ---- tunnels (after 101 Switching Protocols) ----------------------------------------------------

void HttpSession::relay(Buffer& from, Buffer& to) {
  size_t n = std::min(from.readable(), to.space());
  if (n == 0) return;
  to.append(from.readPtr(), n);
  from.consume(n);
  ++progress_;
}

void HttpSession::tunnelShutdowns() {
  if (req_ != Req::Tunnel || upstream_conn_ == nullptr) return;
  if (client_.eof && cin_.empty() && uout_.empty()) ::shutdown(upstream_conn_->fd(), SHUT_WR);
  if (upstream_.eof && uin_.empty() && cout_.empty()) ::shutdown(client_fd_, SHUT_WR);
  if (client_.eof && upstream_.eof && cin_.empty() && uin_.empty() && cout_.empty() && uout_.empty()) {
    logAccess();
    finish(false);
  }
}

// ---- endings --------------------------------------------------------------------------------------

void HttpSession::startLinger() {
  // Shut our side and read what the client still sends, so the close does not turn into a reset
  // that could destroy the response before the client read it (RFC 9112 section 9.6).
  lingering_ = true;
  ::shutdown(client_fd_, SHUT_WR);
  cin_.clear();
  client_timer_.armAfter(kLingerMs);
  if (client_.eof) finish(false);
}

void HttpSession::releaseUpstream(bool reusable) {
  attempt_.end(std::nullopt);
  server_timer_.cancel();
  // Bytes a server sent beyond its response belong to no exchange: they go with its connection.
  uin_.clear();
  if (upstream_conn_ == nullptr) return;
  if (reusable) {
    ctx_.upstreams.release(upstream_conn_, service_->pool.config->connection_pool);
  } else {
    ctx_.upstreams.close(upstream_conn_, !upstream_.eof);
  }
  upstream_conn_ = nullptr;
}

void HttpSession::updateTimers() {
  const config::VsTimeouts& t = service_->config.timeouts;
  // Server side: waiting for a connect is armed once in acquireUpstream; waiting for the server to
  // answer or to take the request counts from its last activity, unless the client holds us up.
  if (resp_ == Resp::Head || (resp_ == Resp::Body && uin_.space() > 0)) {
    server_timer_.armAt(upstream_activity_ms_ + ms(t.server));
  } else if (resp_ != Resp::Connecting) {
    server_timer_.cancel();
  }
  if (lingering_) return;  // armed once in startLinger
  uint64_t deadline = 0;
  if (req_ == Req::Tunnel) {
    deadline = std::max(client_activity_ms_, upstream_activity_ms_) + ms(t.idle);
  } else if (req_ == Req::Head && resp_ == Resp::Idle && !closing_) {
    if (!cin_.empty()) {
      deadline = request_start_us_ / 1000 + ms(t.client_header);
    } else if (first_request_) {
      deadline = connection_start_ms_ + ms(t.client_header);
      if (drain_deadline_ms_ != 0) deadline = std::min(deadline, drain_deadline_ms_);
    } else {
      deadline = client_activity_ms_ + ms(t.idle);
      if (drain_deadline_ms_ != 0) deadline = std::min(deadline, drain_deadline_ms_);
    }
  } else if (req_ == Req::Body || !cout_.empty()) {
    deadline = client_activity_ms_ + ms(t.client);
  } else if (!registered_ && waitingForServer()) {
    deadline = std::max(request_start_us_ / 1000, connection_start_ms_) + kWatchClientAfterMs;
  }
  if (deadline != 0) {
    client_timer_.armAt(deadline);
  } else {
    client_timer_.cancel();
  }
}

void HttpSession::finish(bool reset) {
  if (closed_) return;
  closed_ = true;
  *alive_ = false;
  ctx_.loop.cancelSoon(this);
  client_timer_.cancel();
  server_timer_.cancel();
  attempt_.end(std::nullopt);
  if (upstream_conn_ != nullptr) {
    ctx_.upstreams.close(upstream_conn_, true);
    upstream_conn_ = nullptr;
  }
  if (reset) {
    closeWithReset(client_fd_);
  } else {
    ::close(client_fd_);
  }
  client_fd_ = -1;
  cin_.clear();
  cout_.clear();
  uin_.clear();
  uout_.clear();
  ctx_.loop.deferDelete(std::unique_ptr<Deferred>(this));
}

}  // namespace ballast::proxy
