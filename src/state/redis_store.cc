// The Redis store: one connection per worker, driven by that worker's event loop; one more
// connection, on a thread of its own, subscribed to the change channel. Both speak RESP through
// state/resp.h: commands are encoded straight into the connection's output buffer and replies are
// parsed in place from its input buffer, so a call allocates nothing once the buffers and the
// FIFO of calls in flight have grown to their working size. (hiredis is used only by inspect(),
// a blocking call of the admin thread.)
//
// Connection life (Connection): connect (connect_timeout covers the TCP connect and the
// handshake: AUTH with the password, else PING; the connection is usable only once Redis answered
// it) -> ready -> lost (read error, EOF, a command timeout, a failed handshake, a reply that is not
// RESP) -> back off (100 ms doubling to 5 s, jittered) -> connect again. While not ready, calls
// complete at once with ok=false.
//
// I/O: the socket is registered once per connection, edge-triggered. Commands issued during a
// batch of events are appended to the output buffer and written with one send() after the batch
// (EventLoop::callSoon), with one batch in flight: while Redis has not answered everything written
// so far, new commands wait in the buffer, and all that waited leave with one send() when the last
// answer is in (Redis answers in order, so a waiting command loses at most the transit of one
// answer and one command; under load the batches grow with the load, and both sides make fewer,
// larger writes and reads). A short write waits for EPOLLOUT. Input is read until a short read (the
// socket is empty then) and every complete reply in it is handled before the next read. Replies
// are matched in order with the FIFO of calls in flight (a ring of records that are reused: their
// callbacks, and the strings kept for a call, keep their storage).
//
// Timeouts: every command in flight has its deadline (issue time + command_timeout; Redis answers
// in order, so the oldest is the first to expire). One timer watches the oldest. When it expires,
// the expired commands complete with ok=false (counted as timeouts) and the connection, now
// suspect, is dropped: every other command in flight completes with ok=false, and the connection
// is re-established after the back-off.
//
// Callbacks: each call's callback runs exactly once, on the worker's thread: with the reply, or
// with ok=false (not connected, timeout, connection lost, error reply). A reply's value points
// into the connection's buffers and is valid during the callback only. Destroying a store discards
// the callbacks of its calls still in flight WITHOUT calling them (the objects they point at may
// already be gone when an engine shuts down). A store must not be destroyed from inside one of its
// own callbacks (if it is, the connection stops touching itself at once, but that is all).
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "state/redis_scripts.h"
#include "state/resp.h"
#include "state/state_store.h"

namespace ballast::state {
namespace {

using namespace std::chrono_literals;

constexpr size_t kMaxInFlight = size_t{1} << 16;  // per worker: beyond, calls fail at once
constexpr size_t kInitialRing = 64;               // calls in flight before the FIFO grows
constexpr size_t kReadChunk = 16384;              // at least this much room for each read
constexpr size_t kKeepBuffer = size_t{1} << 20;   // buffers above this are freed when empty
constexpr uint64_t kNoDeadline = UINT64_MAX;
constexpr uint64_t kErrorLogIntervalMs = 10000;  // error replies: one log line per interval
// TCP keep-alive, as hiredis set it: probes after 15 s idle, every 5 s, 3 of them.
constexpr int kKeepAliveIdle = 15;
constexpr int kKeepAliveInterval = 5;
constexpr int kKeepAliveCount = 3;

uint64_t ttlMs(Duration ttl) { return ttl.count() < 1 ? 1 : static_cast<uint64_t>(ttl.count()); }

timeval toTimeval(Duration d) {
  timeval tv{};
  auto ms = std::max<int64_t>(d.count(), 1);
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

std::string errnoText(int err) { return std::strerror(err); }

// Counters of one connection (relaxed atomics: written by its thread, summed by status()).
struct alignas(64) Counters {
  std::atomic<uint64_t> round_trips{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> timeouts{0};
  std::atomic<uint64_t> reconnects{0};
  void add(std::atomic<uint64_t>& c) {
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // one writer
  }
};

// What every connection of one backend shares.
struct Shared {
  explicit Shared(const RedisSettings& s) : settings(s) {
    namespace_prefix = settings.prefix + ":v1:";
    channel = namespace_prefix + "changes";
    address = settings.host.find(':') != std::string::npos
                  ? "[" + settings.host + "]:" + std::to_string(settings.port)
                  : settings.host + ":" + std::to_string(settings.port);
    connect_host = resolve(settings.host);
  }

  // Resolve the name once here (on the engine's thread, at start-up) so that workers never block
  // on DNS. A name that does not resolve now is kept (and resolved at each attempt).
  static std::string resolve(const std::string& host) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) return host;
    const addrinfo* pick = res;
    for (const addrinfo* ai = res; ai != nullptr; ai = ai->ai_next)
      if (ai->ai_family == AF_INET) {
        pick = ai;
        break;
      }
    char buf[NI_MAXHOST];
    std::string out = host;
    if (getnameinfo(pick->ai_addr, pick->ai_addrlen, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST) ==
        0)
      out = buf;
    freeaddrinfo(res);
    return out;
  }

  // The address to connect to (numeric: no DNS; a name that did not resolve at start: resolved
  // now, as a blocking call, like any client library would).
  bool target(sockaddr_storage* addr, socklen_t* len, std::string* error) const {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    std::string port = std::to_string(settings.port);
    int rc = getaddrinfo(connect_host.c_str(), port.c_str(), &hints, &res);
    if (rc == EAI_NONAME) {
      hints.ai_flags = AI_NUMERICSERV;
      rc = getaddrinfo(connect_host.c_str(), port.c_str(), &hints, &res);
    }
    if (rc != 0 || res == nullptr) {
      *error = std::string("cannot resolve ") + connect_host + ": " + gai_strerror(rc);
      return false;
    }
    const addrinfo* pick = res;
    for (const addrinfo* ai = res; ai != nullptr; ai = ai->ai_next)
      if (ai->ai_family == AF_INET) {
        pick = ai;
        break;
      }
    std::memcpy(addr, pick->ai_addr, pick->ai_addrlen);
    *len = pick->ai_addrlen;
    freeaddrinfo(res);
    return true;
  }

  // A worker connection became ready. After an outage, when every worker's connection is up
  // again, onReconnect's callback runs (once).
  void linkUp() {
    int ready = links_ready.fetch_add(1) + 1;
    if (ready >= links_total.load() && outage.exchange(false)) {
      if (down_logged.exchange(false)) spdlog::info("redis {}: reachable again", address);
      fireReconnect();
    }
  }
  // One line per outage however many workers (each connection logs at debug level).
  void linkDown(bool was_ready, const std::string& who, const std::string& why, bool quiet) {
    if (was_ready) links_ready.fetch_sub(1);
    outage.store(true);
    if (quiet || down_logged.exchange(true)) return;
    spdlog::warn("redis {}: {} ({}, {}); calls fail until it is back", address,
                 was_ready ? "connection lost" : "cannot connect", who, why);
  }
  // A call failed because the store could not be reached: what was decided meanwhile must be
  // written when it is back.
  void noteFailure() {
    if (!outage.load(std::memory_order_relaxed)) outage.store(true);
  }
  void fireReconnect() {
    if (stopped.load()) return;
    std::function<void()> cb;
    {
      std::lock_guard<std::mutex> lock(mutex);
      cb = on_reconnect;
    }
    if (cb) cb();
  }
  void notify(std::string_view key) {
    if (stopped.load()) return;
    notifications.fetch_add(1, std::memory_order_relaxed);
    std::function<void(std::string_view)> cb;
    {
      std::lock_guard<std::mutex> lock(mutex);
      cb = on_change;
    }
    if (cb) cb(key);
  }

  const RedisSettings settings;
  std::string namespace_prefix;  // "{prefix}:v1:"
  std::string channel;           // "{prefix}:v1:changes"
  std::string address;           // for status() and logs
  std::string connect_host;      // numeric when the name resolved

  std::atomic<int> links_total{0};  // worker connections (one per live worker store)
  std::atomic<int> links_ready{0};
  std::atomic<bool> outage{false};
  std::atomic<bool> stopped{false};
  std::atomic<bool> auth_error_logged{false};
  std::atomic<bool> down_logged{false};
  std::atomic<uint64_t> notifications{0};

  std::mutex mutex;  // the callbacks and the list of counters
  std::function<void(std::string_view)> on_change;
  std::function<void()> on_reconnect;
  std::vector<std::shared_ptr<Counters>> counters;
};

enum class Op : uint8_t {
  kHandshake,
  kScriptLoad,
  kGetOrCreate,
  kGet,
  kCompareAndSet,
  kTouch,
  kErase
};

// One command in flight (a slot of the FIFO; slots are reused, with their strings' storage).
struct Pending {
  Callback done;
  uint64_t deadline = kNoDeadline;
  Op op = Op::kGet;
  bool finished = false;    // the callback ran (timed out)
  bool evalsha = false;     // sent as EVALSHA: on NOSCRIPT, sent again as EVAL
  std::string proposed;     // getOrCreate: the value if created
  std::string script_args;  // scripts: their key and arguments, encoded (for the EVAL retry)
};

// The calls in flight, oldest first: a ring that doubles when full (up to kMaxInFlight).
class PendingRing {
 public:
  PendingRing() : slots_(kInitialRing) {}
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  Pending& front() { return slots_[head_]; }
  Pending& at(size_t i) { return slots_[(head_ + i) & (slots_.size() - 1)]; }
  Pending& push() {
    if (count_ == slots_.size()) grow();
    Pending& p = slots_[(head_ + count_) & (slots_.size() - 1)];
    ++count_;
    p.deadline = kNoDeadline;
    p.finished = false;
    p.evalsha = false;
    return p;
  }
  void pop() {
    slots_[head_].done = nullptr;
    head_ = (head_ + 1) & (slots_.size() - 1);
    --count_;
  }
  // Forgets every call, without calling anything (their callbacks are destroyed).
  void clear() {
    while (!empty()) pop();
    head_ = 0;
  }

 private:
  void grow() {
    std::vector<Pending> bigger(slots_.size() * 2);
    for (size_t i = 0; i < count_; ++i) {
      Pending& from = at(i);
      Pending& to = bigger[i];
      to.done = std::move(from.done);
      to.deadline = from.deadline;
      to.op = from.op;
      to.finished = from.finished;
      to.evalsha = from.evalsha;
      to.proposed.swap(from.proposed);
      to.script_args.swap(from.script_args);
    }
    slots_.swap(bigger);
    head_ = 0;
  }

  std::vector<Pending> slots_;  // a power of two
  size_t head_ = 0;
  size_t count_ = 0;
};

// What a reply's handler gets of the call it answers (taken off the FIFO first, so that the
// handler may issue calls).
struct Answered {
  Callback done;
  Op op = Op::kGet;
  bool finished = false;
  bool evalsha = false;
};

const Reply kFailed{};

class Connection;

// The registration of one socket with the loop (a new one per connection attempt). It outlives
// its socket until the end of the batch of events (deferDelete), since an event of the same batch
// may still name it.
class Socket final : public IoHandler, public Deferred {
 public:
  Socket(EventLoop& loop, Connection* owner, int fd) : loop_(loop), owner_(owner), fd_(fd) {
    loop_.addConnection(fd_, this);  // may throw: the caller closes fd
  }
  int fd() const { return fd_; }
  void onIoEvents(uint32_t events) override;
  // Closes the socket; the object goes after this batch of events.
  void close() {
    owner_ = nullptr;
    loop_.remove(fd_);
    loop_.cancelSoon(this);
    ::close(fd_);
    fd_ = -1;
    loop_.deferDelete(std::unique_ptr<Deferred>(this));
  }

 private:
  EventLoop& loop_;
  Connection* owner_;
  int fd_;
};

// One connection to Redis on one loop, re-established after losses; the base of the worker store
// and of the subscriber.
class Connection : public TimerHandler {
 public:
  Connection(EventLoop& loop, std::shared_ptr<Shared> shared, std::shared_ptr<Counters> counters,
             std::string name)
      : loop_(loop),
        shared_(std::move(shared)),
        counters_(std::move(counters)),
        name_(std::move(name)),
        rng_(static_cast<uint32_t>(std::hash<std::string>{}(name_) ^ monotonicUs())) {}

  ~Connection() override {
    shutdown();
    if (guard_ != nullptr) *guard_ = true;
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // On the loop's thread.
  void start() {
    if (state_ == State::kIdle) connect();
  }
  bool ready() const { return state_ == State::kReady; }

 protected:
  friend class Socket;
  enum class State { kIdle, kConnecting, kReady, kDropping, kBackoff, kClosed };

  // Hooks for the derived classes (never called once shutdown() began).
  virtual void onReady() {}
  virtual void onDown(bool /*was_ready*/, const std::string& /*why*/) {}
  // The answer to one of the derived class's calls; reply nullptr: none will come (the
  // connection is lost). Called with the call off the FIFO; scratchValue() and scratchArgs() hold
  // what the call kept (its proposed value, its script arguments).
  virtual void onReply(Answered&, const resp::Value* /*reply*/) {}
  // A reply no call waits for (pub/sub messages). false: the connection is confused; drop it.
  virtual bool onUnsolicited(const resp::Value&) { return false; }

  // Closes the connection; the callbacks of the calls in flight are discarded uncalled.
  // Idempotent; derived classes call it first thing in their destructors.
  void shutdown() {
    if (state_ == State::kClosed) return;
    state_ = State::kClosed;
    closeSocket();
    ring_.clear();
  }

  size_t inFlight() const { return ring_.size(); }
  bool linkReady() const { return link_ready_; }

  // A record for a command about to be appended to output(); the caller checked ready() and
  // inFlight().
  Pending& push(Op op, uint64_t deadline) {
    Pending& p = ring_.push();
    ++unsent_;
    p.op = op;
    p.deadline = deadline;
    if (deadline != kNoDeadline && !command_timer_.armed()) command_timer_.armAt(deadline);
    return p;
  }
  resp::ByteQueue& output() { return out_; }
  // Writes the output after this batch of events.
  void flushSoon() {
    if (!flush_soon_ && socket_ != nullptr) {
      flush_soon_ = true;
      loop_.callSoon(socket_);
    }
  }
  uint64_t commandDeadline() const {
    return loop_.now() +
           static_cast<uint64_t>(std::max<int64_t>(shared_->settings.command_timeout.count(), 1));
  }
  const resp::Parser& parser() const { return parser_; }
  std::string& scratchValue() { return scratch_value_; }
  std::string& scratchArgs() { return scratch_args_; }
  // Error replies are logged at most once per kErrorLogIntervalMs.
  void logErrorReply(std::string_view text) {
    uint64_t now = loop_.now();
    if (last_error_log_ms_ != 0 && now - last_error_log_ms_ < kErrorLogIntervalMs) return;
    last_error_log_ms_ = now;
    spdlog::warn("redis {} {}: error reply: {}", shared_->address, name_, text);
  }
  static void finish(Answered& a, const Reply& reply) {
    if (a.done) a.done(reply);
  }

  EventLoop& loop_;
  std::shared_ptr<Shared> shared_;
  std::shared_ptr<Counters> counters_;
  std::string name_;
  State state_ = State::kIdle;
  bool load_scripts_ = false;  // SCRIPT LOAD the store's scripts on every connection
  bool auth_failed_ = false;   // the last handshake was refused (logged once per backend)

 private:
  enum TimerTag { kConnectTimer, kCommandTimer, kBackoffTimer };

  // Set while a callback may run: tells the caller that the connection was destroyed meanwhile
  // (nested guards pass it on outwards).
  class Guard {
   public:
    explicit Guard(Connection* c) : c_(c), outer_(c->guard_) { c->guard_ = &gone; }
    ~Guard() {
      if (!gone) {
        c_->guard_ = outer_;
      } else if (outer_ != nullptr) {
        *outer_ = true;
      }
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    bool gone = false;

   private:
    Connection* c_;
    bool* outer_;
  };

  void connect() {
    state_ = State::kConnecting;
    auth_failed_ = false;
    sockaddr_storage addr{};
    socklen_t len = 0;
    std::string error;
    if (!shared_->target(&addr, &len, &error)) return down(false, error);
    int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return down(false, errnoText(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), len);
    if (rc != 0 && errno != EINPROGRESS) {
      int err = errno;
      ::close(fd);
      return down(false, errnoText(err));
    }
    try {
      socket_ = new Socket(loop_, this, fd);
    } catch (const std::exception& e) {
      ::close(fd);
      return down(false, e.what());
    }
    may_write_ = false;
    tcp_connected_ = false;
    connect_timer_.armAfter(
        static_cast<uint64_t>(std::max<int64_t>(shared_->settings.connect_timeout.count(), 1)));
    if (rc == 0) connected();
  }

  // The TCP connect finished (or failed).
  void connected() {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(socket_->fd(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) return drop(errnoText(err));
    tcp_connected_ = true;
    may_write_ = true;
    int fd = socket_->fd();
    int on = 1, idle = kKeepAliveIdle, interval = kKeepAliveInterval, count = kKeepAliveCount;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
    sendHandshake();
    flush();
  }

  // AUTH (or PING): the connection is ready only once Redis answered. Within connect_timeout.
  void sendHandshake() {
    push(Op::kHandshake, kNoDeadline);
    const std::string& password = shared_->settings.password;
    if (password.empty()) {
      resp::appendCommand(out_, {"PING"});
    } else {
      resp::appendCommand(out_, {"AUTH", password});
    }
    if (!load_scripts_) return;
    // Pipelined behind the handshake, so ahead of every EVALSHA on this connection: EVALSHA finds
    // the scripts (NOSCRIPT only after a SCRIPT FLUSH during the connection).
    for (std::string_view script : {scripts::kCompareAndSet, scripts::kErase}) {
      push(Op::kScriptLoad, kNoDeadline);
      resp::appendCommand(out_, {"SCRIPT", "LOAD", script});
    }
  }

  void handshakeReply(const resp::Value& r) {
    if (state_ != State::kConnecting) return;
    if (r.type == resp::Type::Error) {
      std::string msg(r.str);
      bool auth = msg.find("AUTH") != std::string::npos ||
                  msg.find("WRONGPASS") != std::string::npos ||
                  msg.find("password") != std::string::npos;
      if (auth) {
        auth_failed_ = true;
        if (!shared_->auth_error_logged.exchange(true))
          spdlog::error("redis {}: authentication failed ({}); the store stays unavailable",
                        shared_->address, msg);
      }
      return drop(msg);
    }
    becomeReady();
  }

  void becomeReady() {
    state_ = State::kReady;
    link_ready_ = true;
    connect_timer_.cancel();
    attempt_ = 0;
    if (ever_ready_) counters_->add(counters_->reconnects);
    spdlog::debug("redis {} {}: {}", shared_->address, name_,
                  ever_ready_ ? "connected again" : "connected");
    ever_ready_ = true;
    shared_->auth_error_logged.store(false);
    onReady();
  }

  // From the socket.
  void onSocketEvents(uint32_t events) {
    if (events == 0) {  // callSoon: write what the batch queued
      flush_soon_ = false;
      // One batch in flight: while Redis has not answered all that was written, what is queued
      // waits for those answers (and goes with what comes meanwhile).
      if (may_write_ && ring_.size() <= unsent_) flush();
      return;
    }
    if (!tcp_connected_) {
      if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
      connected();
      if (socket_ == nullptr || !tcp_connected_) return;
    } else if ((events & EPOLLOUT) && !may_write_) {
      may_write_ = true;  // a write was blocked: go on with it now
      flush();
      if (socket_ == nullptr) return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) read();
  }

  void flush() {
    while (!out_.empty()) {
      ssize_t n = ::send(socket_->fd(), out_.data(), out_.size(), MSG_NOSIGNAL);
      if (n > 0) {
        size_t sent = static_cast<size_t>(n);
        bool all = sent == out_.size();
        out_.consume(sent);
        if (all) {
          unsent_ = 0;
          break;
        }
        may_write_ = false;  // edge-triggered: a short write means the socket's buffer is full
        return;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        may_write_ = false;
        return;
      }
      return drop(errnoText(n < 0 ? errno : EPIPE));
    }
    out_.shrinkIfEmpty(kKeepBuffer);
  }

  void read() {
    Guard guard(this);
    for (;;) {
      char* at = in_.reserve(kReadChunk);
      size_t room = in_.writable();
      ssize_t n = ::read(socket_->fd(), at, room);
      if (n > 0) {
        in_.commit(static_cast<size_t>(n));
        if (!handleInput(guard)) return;
        if (static_cast<size_t>(n) < room) break;  // edge-triggered: the socket is empty
        continue;
      }
      if (n == 0) return drop("connection closed by the server");
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return drop(errnoText(errno));
    }
    in_.shrinkIfEmpty(kKeepBuffer);
    // The batch in flight is answered: write what waited for it.
    if (unsent_ > 0 && ring_.size() <= unsent_) flushSoon();
  }

  // Handles every complete reply in the input. false: the connection was dropped (or destroyed).
  bool handleInput(Guard& guard) {
    while (!in_.empty()) {
      size_t used = 0;
      resp::Parser::Status st = parser_.parse(std::string_view(in_.data(), in_.size()), &used);
      if (st == resp::Parser::Status::Incomplete) return true;
      if (st == resp::Parser::Status::Invalid) {
        drop("a reply that is not RESP");
        return false;
      }
      dispatch(parser_.root());  // the reply's bytes stay in place until it is handled
      if (guard.gone || socket_ == nullptr) return false;
      in_.consume(used);
    }
    return true;
  }

  void dispatch(const resp::Value& r) {
    if (ring_.empty()) {
      if (!onUnsolicited(r)) drop("a reply to no command");
      return;
    }
    Answered a;
    take(&a);
    if (a.op == Op::kHandshake) return handshakeReply(r);
    if (a.op == Op::kScriptLoad) {  // a failure costs a NOSCRIPT round trip later, no more
      if (r.type == resp::Type::Error && state_ == State::kReady) logErrorReply(r.str);
      return;
    }
    counters_->add(counters_->round_trips);
    if (a.finished) return;  // timed out already (the connection is being dropped)
    onReply(a, &r);
  }

  // Takes the oldest call off the FIFO: its callback and flags into *a, the strings it kept into
  // the scratch strings (whose storage goes to the slot in exchange).
  void take(Answered* a) {
    Pending& p = ring_.front();
    a->done = std::move(p.done);
    a->op = p.op;
    a->finished = p.finished;
    a->evalsha = p.evalsha;
    if (p.op == Op::kGetOrCreate) scratch_value_.swap(p.proposed);
    if (p.evalsha) scratch_args_.swap(p.script_args);
    ring_.pop();
  }

  void closeSocket() {
    if (socket_ == nullptr) return;
    socket_->close();
    socket_ = nullptr;
    flush_soon_ = false;
    tcp_connected_ = false;
    may_write_ = false;
    unsent_ = 0;
    in_.clear();
    out_.clear();
    in_.shrinkIfEmpty(kKeepBuffer);
    out_.shrinkIfEmpty(kKeepBuffer);
  }

  // The connection is lost (or could not be made): every call in flight fails, then back off.
  void drop(const std::string& why) {
    if (socket_ == nullptr || state_ == State::kClosed) return;
    bool was_ready = link_ready_;
    link_ready_ = false;
    state_ = State::kBackoff;  // calls made from the callbacks below fail at once
    closeSocket();
    connect_timer_.cancel();
    command_timer_.cancel();
    {
      Guard guard(this);
      while (!ring_.empty()) {
        Answered a;
        take(&a);
        if (a.finished) continue;
        counters_->add(counters_->errors);
        if (a.op == Op::kHandshake || a.op == Op::kScriptLoad) continue;
        onReply(a, nullptr);
        if (guard.gone) return;
      }
    }
    down(was_ready, why);
  }

  void down(bool was_ready, const std::string& why) {
    state_ = State::kBackoff;
    spdlog::debug("redis {} {}: {} ({})", shared_->address, name_,
                  was_ready ? "connection lost" : "cannot connect", why);
    onDown(was_ready, why);
    backoff_timer_.armAfter(nextBackoff());
  }

  // 100 ms doubling to 5 s (RedisSettings::reconnect_min/max), each drawn in [d/2, d].
  uint64_t nextBackoff() {
    uint64_t lo =
        static_cast<uint64_t>(std::max<int64_t>(shared_->settings.reconnect_min.count(), 1));
    uint64_t hi =
        static_cast<uint64_t>(std::max<int64_t>(shared_->settings.reconnect_max.count(), 1));
    uint64_t d = hi;
    if (!auth_failed_ && attempt_ < 32) d = std::min(hi, lo << attempt_);
    ++attempt_;
    std::uniform_int_distribution<uint64_t> jitter(d / 2, d);
    return std::max<uint64_t>(jitter(rng_), 1);
  }

  void onTimer(int tag) override {
    switch (tag) {
      case kConnectTimer:
        if (state_ == State::kConnecting) drop("connect timeout");
        break;
      case kBackoffTimer:
        if (state_ == State::kBackoff) connect();
        break;
      case kCommandTimer:
        checkDeadlines();
        break;
    }
  }

  void checkDeadlines() {
    uint64_t now = loop_.now();
    size_t i = 0;
    while (i < ring_.size() && (ring_.at(i).finished || ring_.at(i).deadline == kNoDeadline)) ++i;
    if (i == ring_.size()) return;
    if (ring_.at(i).deadline > now) {
      command_timer_.armAt(ring_.at(i).deadline);
      return;
    }
    // The oldest command expired: fail the expired ones, then drop the connection (which fails
    // the rest). Calls made from these callbacks fail at once (the connection is not ready).
    state_ = State::kDropping;
    shared_->noteFailure();
    uint64_t expired = 0;
    Guard guard(this);
    for (; i < ring_.size(); ++i) {
      Pending& p = ring_.at(i);
      if (p.finished || p.deadline == kNoDeadline) continue;
      if (p.deadline > now) break;
      ++expired;
      p.finished = true;
      counters_->add(counters_->timeouts);
      Callback done = std::move(p.done);
      if (done) done(kFailed);
      if (guard.gone) return;
    }
    drop(std::to_string(expired) + " command(s) timed out after " +
         std::to_string(shared_->settings.command_timeout.count()) + " ms");
  }

  PendingRing ring_;
  resp::ByteQueue out_;
  resp::ByteQueue in_;
  resp::Parser parser_;
  std::string scratch_value_;
  std::string scratch_args_;
  Socket* socket_ = nullptr;  // nullptr: no connection (back-off, or not started)
  bool tcp_connected_ = false;
  bool may_write_ = false;
  bool flush_soon_ = false;
  size_t unsent_ = 0;  // the newest calls of the FIFO whose commands are not written out yet
  bool* guard_ = nullptr;
  Timer connect_timer_{loop_, this, kConnectTimer};
  Timer command_timer_{loop_, this, kCommandTimer};
  Timer backoff_timer_{loop_, this, kBackoffTimer};
  std::minstd_rand rng_;
  uint32_t attempt_ = 0;
  bool link_ready_ = false;
  bool ever_ready_ = false;
  uint64_t last_error_log_ms_ = 0;
};

void Socket::onIoEvents(uint32_t events) {
  if (owner_ != nullptr) owner_->onSocketEvents(events);
}

// ---- the worker's store -------------------------------------------------------------------------

class RedisStore final : public StateStore, private Connection {
 public:
  RedisStore(EventLoop& loop, std::shared_ptr<Shared> shared, std::shared_ptr<Counters> counters,
             size_t worker)
      : Connection(loop, std::move(shared), std::move(counters),
                   "worker " + std::to_string(worker)) {
    shared_->links_total.fetch_add(1);
    load_scripts_ = true;
    // Created on the engine's thread: connect from the worker's.
    std::weak_ptr<bool> alive = alive_;
    loop.post([this, alive] {
      if (alive.lock()) start();
    });
  }

  ~RedisStore() override {
    bool was_ready = linkReady();
    shutdown();
    if (was_ready) shared_->links_ready.fetch_sub(1);
    shared_->links_total.fetch_sub(1);
  }

  // SET key proposed NX GET PX ttl: nil when this call created the entry, else its value.
  void getOrCreate(std::string_view key, std::string_view proposed, Duration ttl,
                   Callback done) override {
    Pending* p = begin(Op::kGetOrCreate, std::move(done));
    if (p == nullptr) return;
    p->proposed.assign(proposed);
    Ttl t(ttl);
    resp::appendCommand(output(), {"SET", {shared_->namespace_prefix, key}, proposed, "NX", "GET",
                                   "PX", t.text()});
    flushSoon();
  }

  void get(std::string_view key, Callback done) override {
    Pending* p = begin(Op::kGet, std::move(done));
    if (p == nullptr) return;
    resp::appendCommand(output(), {"GET", {shared_->namespace_prefix, key}});
    flushSoon();
  }

  void compareAndSet(std::string_view key, std::string_view expected, std::string_view replacement,
                     Duration ttl, Callback done) override {
    Pending* p = begin(Op::kCompareAndSet, std::move(done));
    if (p == nullptr) return;
    Ttl t(ttl);
    p->script_args.clear();
    resp::appendArgs(p->script_args, {{shared_->namespace_prefix, key}, expected, replacement,
                                      t.text(), shared_->channel});
    sendScript(*p, /*evalsha=*/true);
  }

  void touch(std::string_view key, Duration ttl) override {
    Pending* p = begin(Op::kTouch, Callback());
    if (p == nullptr) return;
    Ttl t(ttl);
    resp::appendCommand(output(), {"PEXPIRE", {shared_->namespace_prefix, key}, t.text()});
    flushSoon();
  }

  void erase(std::string_view key) override {
    Pending* p = begin(Op::kErase, Callback());
    if (p == nullptr) return;
    p->script_args.clear();
    resp::appendArgs(p->script_args, {{shared_->namespace_prefix, key}, shared_->channel});
    sendScript(*p, /*evalsha=*/true);
  }

  bool available() const override { return ready(); }

 private:
  // A TTL in milliseconds, as text.
  struct Ttl {
    explicit Ttl(Duration ttl) {
      len = static_cast<size_t>(std::to_chars(buf, buf + sizeof buf, ttlMs(ttl)).ptr - buf);
    }
    std::string_view text() const { return {buf, len}; }
    char buf[24];
    size_t len;
  };

  // The FIFO record for a call, or nullptr after failing the call at once (not connected, or too
  // many calls in flight).
  Pending* begin(Op op, Callback&& done) {
    if (!ready() || inFlight() >= kMaxInFlight) {
      counters_->add(counters_->errors);
      if (!ready()) shared_->noteFailure();  // (too many in flight is overload, not an outage)
      if (done) done(kFailed);
      return nullptr;
    }
    Pending& p = push(op, commandDeadline());
    p.done = std::move(done);
    return &p;
  }

  // EVALSHA sha 1 args... (or EVAL script 1 args...), the arguments encoded in p.script_args.
  void sendScript(Pending& p, bool evalsha) {
    bool cas = p.op == Op::kCompareAndSet;
    std::string_view script = cas ? scripts::kCompareAndSet : scripts::kErase;
    std::string_view sha = cas ? scripts::kCompareAndSetSha : scripts::kEraseSha;
    size_t args = cas ? 5 : 2;  // key, expected, replacement, ttl, channel | key, channel
    p.evalsha = evalsha;
    resp::appendCommandHead(output(), 3 + args,
                            {evalsha ? "EVALSHA" : "EVAL", evalsha ? sha : script, "1"});
    output().append(p.script_args);
    flushSoon();
  }

  void onReply(Answered& a, const resp::Value* r) override {
    if (r == nullptr) {
      shared_->noteFailure();
      return finish(a, kFailed);
    }
    if (r->type == resp::Type::Error) {
      if (a.evalsha && r->str.starts_with("NOSCRIPT")) {
        // Redis forgot the script since this connection loaded it (SCRIPT FLUSH): send it. (The
        // call then runs after the calls queued behind it: only in this rare case.)
        if (!ready() || inFlight() >= kMaxInFlight) {
          counters_->add(counters_->errors);
          return finish(a, kFailed);
        }
        Pending& p = push(a.op, commandDeadline());
        p.done = std::move(a.done);
        p.script_args.swap(scratchArgs());
        return sendScript(p, /*evalsha=*/false);
      }
      counters_->add(counters_->errors);
      logErrorReply(r->str);
      return finish(a, kFailed);
    }
    Reply out;
    out.ok = true;
    switch (a.op) {
      case Op::kGetOrCreate:
        if (r->type == resp::Type::Nil) {
          out.created = true;
          out.value = scratchValue();
        } else if (r->type == resp::Type::Bulk) {
          out.value = r->str;
        } else {
          out.ok = false;
        }
        break;
      case Op::kGet:
        if (r->type == resp::Type::Bulk) {
          out.value = r->str;
        } else if (r->type != resp::Type::Nil) {
          out.ok = false;
        }
        break;
      case Op::kCompareAndSet:
        if (r->type == resp::Type::Array && r->count == 2 &&
            parser().at(*r, 0).type == resp::Type::Integer) {
          out.swapped = parser().at(*r, 0).integer == 1;
          const resp::Value& v = parser().at(*r, 1);
          if (v.type == resp::Type::Bulk) out.value = v.str;
        } else {
          out.ok = false;
        }
        break;
      default:
        break;
    }
    if (!out.ok) counters_->add(counters_->errors);
    finish(a, out.ok ? out : kFailed);
  }

  void onReady() override { shared_->linkUp(); }
  void onDown(bool was_ready, const std::string& why) override {
    shared_->linkDown(was_ready, name_, why, auth_failed_);
  }

  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// ---- the change notifications -------------------------------------------------------------------

class Subscriber final : public Connection {
 public:
  Subscriber(EventLoop& loop, std::shared_ptr<Shared> shared)
      : Connection(loop, std::move(shared), std::make_shared<Counters>(), "subscriber") {}
  ~Subscriber() override { shutdown(); }

 private:
  void onDown(bool was_ready, const std::string& why) override {
    if (down_logged_ || auth_failed_) return;
    down_logged_ = true;
    spdlog::warn(
        "redis {}: change notifications interrupted ({}: {}); cached entries may be stale until "
        "they expire",
        shared_->address, was_ready ? "connection lost" : "cannot connect", why);
  }

  void onReady() override {
    if (down_logged_) spdlog::info("redis {}: change notifications resumed", shared_->address);
    down_logged_ = false;
    // No FIFO record: from now on every reply is a message of the subscription (its confirmation
    // first).
    resp::appendCommand(output(), {"SUBSCRIBE", shared_->channel});
    flushSoon();
  }

  bool onUnsolicited(const resp::Value& r) override {
    if (r.type != resp::Type::Array || r.count < 3) return true;
    const resp::Value& kind = parser().at(r, 0);
    const resp::Value& payload = parser().at(r, 2);
    if (kind.type != resp::Type::Bulk || kind.str != "message") {
      if (kind.type == resp::Type::Bulk && kind.str == "subscribe")
        spdlog::debug("redis {}: subscribed to {}", shared_->address, shared_->channel);
      return true;
    }
    if (payload.type != resp::Type::Bulk) return true;
    std::string_view key = payload.str;
    const std::string& prefix = shared_->namespace_prefix;
    if (!key.starts_with(prefix)) return true;
    key.remove_prefix(prefix.size());
    shared_->notify(key);
    return true;
  }

  bool down_logged_ = false;
};

// ---- the backend --------------------------------------------------------------------------------

class RedisBackend final : public StoreBackend {
 public:
  explicit RedisBackend(const RedisSettings& settings)
      : shared_(std::make_shared<Shared>(settings)) {
    // inspect()'s hiredis writes with write(2): a connection reset must not kill the process with
    // SIGPIPE. (The worker connections send with MSG_NOSIGNAL.)
    struct sigaction old {};
    if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL)
      signal(SIGPIPE, SIG_IGN);
  }
  ~RedisBackend() override { stop(); }

  std::unique_ptr<StateStore> forWorker(EventLoop& loop, size_t worker) override {
    auto counters = std::make_shared<Counters>();
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      shared_->counters.push_back(counters);
    }
    return std::make_unique<RedisStore>(loop, shared_, std::move(counters), worker);
  }

  void onChange(std::function<void(std::string_view key)> changed) override {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    shared_->on_change = std::move(changed);
  }
  void onReconnect(std::function<void()> reachable) override {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    shared_->on_reconnect = std::move(reachable);
  }

  // The subscriber runs on a thread of its own, with its own loop.
  void start() override {
    std::lock_guard<std::mutex> lock(lifecycle_);
    if (thread_.joinable()) return;
    shared_->stopped.store(false);
    loop_ = std::make_unique<EventLoop>();
    subscriber_ = std::make_unique<Subscriber>(*loop_, shared_);
    Subscriber* sub = subscriber_.get();
    loop_->post([sub] { sub->start(); });
    EventLoop* loop = loop_.get();
    thread_ = std::thread([loop] {
      try {
        loop->run();
      } catch (const std::exception& e) {
        spdlog::critical("redis subscriber: {}", e.what());
      }
    });
  }

  // Stops the notifications and the onReconnect calls; the workers' stores keep working until
  // they are destroyed.
  void stop() override {
    std::lock_guard<std::mutex> lock(lifecycle_);
    shared_->stopped.store(true);
    if (!thread_.joinable()) return;
    EventLoop* loop = loop_.get();
    loop->post([loop] { loop->stop(); });
    thread_.join();
    subscriber_.reset();  // the loop no longer runs: safe from this thread
    loop_->collectGarbage();
    loop_.reset();
  }

  StoreStatus status() const override {
    StoreStatus s;
    s.type = "redis";
    s.address = shared_->address;
    int total = shared_->links_total.load();
    s.connected = total > 0 && shared_->links_ready.load() >= total;
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      for (const auto& c : shared_->counters) {
        s.round_trips += c->round_trips.load(std::memory_order_relaxed);
        s.errors += c->errors.load(std::memory_order_relaxed);
        s.timeouts += c->timeouts.load(std::memory_order_relaxed);
        s.reconnects += c->reconnects.load(std::memory_order_relaxed);
      }
    }
    s.notifications = shared_->notifications.load(std::memory_order_relaxed);
    return s;
  }

  // A short-lived synchronous connection (admin thread).
  Inspection inspect(std::string_view key) override {
    Inspection out;
    const RedisSettings& cfg = shared_->settings;
    std::unique_ptr<redisContext, void (*)(redisContext*)> c(
        redisConnectWithTimeout(shared_->connect_host.c_str(), cfg.port,
                                toTimeval(cfg.connect_timeout)),
        &redisFree);
    if (c == nullptr || c->err) {
      out.error =
          "cannot connect to redis " + shared_->address + ": " + (c ? c->errstr : "out of memory");
      return out;
    }
    redisSetTimeout(c.get(), toTimeval(std::max<Duration>(cfg.command_timeout, 1000ms)));
    using ReplyPtr = std::unique_ptr<redisReply, void (*)(void*)>;
    auto command = [&](int argc, const char** argv, const size_t* lens) {
      return ReplyPtr(static_cast<redisReply*>(redisCommandArgv(c.get(), argc, argv, lens)),
                      &freeReplyObject);
    };
    auto failed = [&](const ReplyPtr& r) {
      if (r == nullptr) {
        out.error = std::string("redis ") + shared_->address + ": " + c->errstr;
        return true;
      }
      if (r->type == REDIS_REPLY_ERROR) {
        out.error = std::string("redis ") + shared_->address + ": " + std::string(r->str, r->len);
        return true;
      }
      return false;
    };
    if (!cfg.password.empty()) {
      const char* argv[2] = {"AUTH", cfg.password.data()};
      size_t lens[2] = {4, cfg.password.size()};
      if (failed(command(2, argv, lens))) return out;
    }
    std::string full = shared_->namespace_prefix + std::string(key);
    const char* get_argv[2] = {"GET", full.data()};
    size_t get_lens[2] = {3, full.size()};
    ReplyPtr value = command(2, get_argv, get_lens);
    if (failed(value)) return out;
    const char* ttl_argv[2] = {"PTTL", full.data()};
    size_t ttl_lens[2] = {4, full.size()};
    ReplyPtr ttl = command(2, ttl_argv, ttl_lens);
    if (failed(ttl)) return out;
    if (value->type == REDIS_REPLY_STRING) out.value.emplace(value->str, value->len);
    if (ttl->type == REDIS_REPLY_INTEGER && ttl->integer >= 0) out.ttl_ms = ttl->integer;
    out.ok = true;
    return out;
  }

 private:
  std::shared_ptr<Shared> shared_;
  std::mutex lifecycle_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<Subscriber> subscriber_;
  std::thread thread_;
};

}  // namespace

std::unique_ptr<StoreBackend> makeRedisBackend(const RedisSettings& settings) {
  return std::make_unique<RedisBackend>(settings);
}

}  // namespace ballast::state
