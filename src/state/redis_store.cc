// The Redis store: one hiredis asynchronous connection per worker, driven by that worker's event
// loop; one more connection, on a thread of its own, subscribed to the change channel.
//
// Connection life (Connection): connect (connect_timeout covers the TCP connect and the
// handshake: AUTH with the password, else PING; the connection is usable only once Redis answered
// it) -> ready -> lost (read error, EOF, a command timeout, a failed handshake) -> back off
// (100 ms doubling to 5 s, jittered) -> connect again. While not ready, calls complete at once with
// ok=false. Commands are written as they come: hiredis appends them to its output buffer and the
// buffer is written once per batch of events (EventLoop::callSoon); replies are matched in order.
//
// Timeouts: every command in flight is on a FIFO with its deadline (issue time + command_timeout;
// Redis answers in order, so the oldest is the first to expire). One timer watches the oldest.
// When it expires, the expired commands complete with ok=false (counted as timeouts) and the
// connection, now suspect, is dropped: every other command in flight completes with ok=false, and
// the connection is re-established after the back-off.
//
// Callbacks: each call's callback runs exactly once, on the worker's thread: with the reply, or
// with ok=false (not connected, timeout, connection lost, error reply). Destroying a store discards
// the callbacks of its calls still in flight WITHOUT calling them (the objects they point at may
// already be gone when an engine shuts down). A store must not be destroyed from inside one of its
// own callbacks.
//
// hiredis 0.14 notes (the parts this file relies on):
// - every callback given with a command is called exactly once: with the reply, or with NULL when
//   the context is freed (redisAsyncFree, or a read/write error, or a failed connect);
// - the ev.cleanup hook is called while the context is being freed, after those NULL callbacks;
// - redisAsyncFree from inside a reply callback is deferred until the callback returns; it must
//   never be called from the connect callback (the context would be used after it is freed), so
//   this file only calls it from timers, reply callbacks and destructors.
//
// The loop's registrations: while connecting, and while a write is blocked (the socket's buffer is
// full), the socket is registered edge-triggered for reading and writing (addConnection), and reads
// are drained; otherwise it is registered level-triggered for reading only (addReader), and writes
// are flushed from callSoon.
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>

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
#include "state/state_store.h"

namespace ballast::state {
namespace {

using namespace std::chrono_literals;

constexpr size_t kMaxInFlight = size_t{1} << 16;  // per worker: beyond, calls fail at once
constexpr size_t kPendingPool = 256;              // recycled call records per connection
constexpr uint64_t kNoDeadline = UINT64_MAX;
constexpr uint64_t kErrorLogIntervalMs = 10000;  // error replies: one log line per interval

uint64_t ttlMs(Duration ttl) { return ttl.count() < 1 ? 1 : static_cast<uint64_t>(ttl.count()); }

timeval toTimeval(Duration d) {
  timeval tv{};
  auto ms = std::max<int64_t>(d.count(), 1);
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

// Counters of one connection (relaxed atomics: written by its thread, summed by status()).
struct alignas(64) Counters {
  std::atomic<uint64_t> round_trips{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> timeouts{0};
  std::atomic<uint64_t> reconnects{0};
  void add(std::atomic<uint64_t>& c) { c.fetch_add(1, std::memory_order_relaxed); }
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

  // hiredis resolves names with getaddrinfo on every connect: do it once here (on the engine's
  // thread, at start-up) so that workers never block on DNS. A name that does not resolve now is
  // kept (and resolved by hiredis at each attempt).
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

class Connection;

// One command in flight. hiredis holds it (as the callback's privdata) from the moment the command
// is queued until it calls the callback; it is on its connection's FIFO for that whole time.
struct Pending {
  Connection* conn = nullptr;  // nullptr: the connection is gone; only free the record
  Pending* prev = nullptr;
  Pending* next = nullptr;
  uint64_t deadline = kNoDeadline;
  Op op = Op::kGet;
  bool finished = false;  // the callback ran (timed out) or will never run
  bool evalsha = false;   // sent as EVALSHA: on NOSCRIPT, sent again as EVAL
  Callback done;
  std::string proposed;                  // getOrCreate: the value if created
  std::vector<std::string> script_args;  // scripts: key, then ARGV (for the EVAL retry)
};

const Reply kFailed{};

// The registration of one hiredis context with the loop (a new one per connection attempt). It
// outlives its context until the end of the batch of events (deferDelete), since an event of the
// same batch may still name it.
class Link final : public IoHandler, public Deferred {
 public:
  Link(EventLoop& loop, Connection* owner, redisAsyncContext* ac)
      : loop_(loop), owner_(owner), ac_(ac), fd_(ac->c.fd) {
    loop_.addConnection(fd_,
                        this);  // edge-triggered until connected (may throw: hooks not set yet)
    ac->data = this;
    ac->ev.data = this;
    ac->ev.addRead = &Link::hookNoop;
    ac->ev.delRead = &Link::hookNoop;
    ac->ev.addWrite = &Link::hookAddWrite;
    ac->ev.delWrite = &Link::hookDelWrite;
    ac->ev.cleanup = &Link::hookCleanup;
  }

  redisAsyncContext* context() const { return ac_; }
  void orphan() { owner_ = nullptr; }

  void onIoEvents(uint32_t events) override {
    if (ac_ == nullptr) return;  // a stale event: the context is gone
    if (events == 0) {           // callSoon: flush what the batch queued
      if (!edge_ && want_write_) write();
      return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
      read();
      if (ac_ == nullptr) return;
    }
    if ((events & EPOLLOUT) && edge_) write();
  }

 private:
  friend class Connection;
  static void hookNoop(void*) {}
  static void hookAddWrite(void* data) {
    auto* self = static_cast<Link*>(data);
    self->want_write_ = true;
    // Connected and level-triggered: write after this batch of events (one write for all the
    // commands queued meanwhile). Otherwise the write waits for an EPOLLOUT edge.
    if (!self->writing_ && !self->edge_) self->loop_.callSoon(self);
  }
  static void hookDelWrite(void* data) { static_cast<Link*>(data)->want_write_ = false; }
  static void hookCleanup(void* data);

  void read() {
    redisAsyncHandleRead(ac_);
    if (!edge_) return;  // level-triggered: the loop reports what is left
    // Edge-triggered: drain (hiredis reads at most 16 KiB at a time).
    while (ac_ != nullptr) {
      int available = 0;
      if (ioctl(fd_, FIONREAD, &available) != 0 || available <= 0) break;
      redisAsyncHandleRead(ac_);
    }
  }

  void write() {
    writing_ = true;
    redisAsyncHandleWrite(ac_);  // completes the connect first when needed
    writing_ = false;
    if (ac_ == nullptr || !(ac_->c.flags & REDIS_CONNECTED)) return;
    if (want_write_ && !edge_) {
      // The socket's buffer is full: wait for it to drain.
      loop_.remove(fd_);
      loop_.addConnection(fd_, this);
      edge_ = true;
    } else if (!want_write_ && edge_) {
      loop_.remove(fd_);
      loop_.addReader(fd_, this);
      edge_ = false;
    }
  }

  EventLoop& loop_;
  Connection* owner_;
  redisAsyncContext* ac_;  // nullptr once hiredis freed it
  int fd_;
  bool edge_ = true;  // registered with addConnection (else addReader)
  bool want_write_ = false;
  bool writing_ = false;  // inside redisAsyncHandleWrite
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
    for (Pending* p : pool_) delete p;
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // On the loop's thread.
  void start() {
    if (state_ == State::kIdle) connect();
  }
  bool ready() const { return state_ == State::kReady; }

 protected:
  bool linkReady() const { return link_ready_; }
  size_t inFlight() const { return in_flight_; }
  enum class State { kIdle, kConnecting, kReady, kDropping, kBackoff, kClosed };

  // Hooks for the derived classes (never called once shutdown() began).
  virtual void onReady() {}
  virtual void onDown(bool /*was_ready*/, const std::string& /*why*/) {}
  // A reply (nullptr: none will come) to one of the derived class's commands. Returns true if it
  // took the record over (sent it again, or released it); false: the caller releases it.
  virtual bool onReply(Pending*, redisReply*) { return false; }

  // Frees the context; the callbacks of the calls in flight are discarded uncalled. Idempotent;
  // derived classes call it first thing in their destructors.
  void shutdown() {
    if (state_ == State::kClosed) return;
    state_ = State::kClosed;
    for (Pending* p = head_; p != nullptr; p = p->next) {
      p->finished = true;
      p->done = nullptr;
    }
    if (link_ == nullptr) return;
    redisAsyncContext* ac = link_->context();
    if (ac->c.flags & REDIS_IN_CALLBACK) {
      // Destroyed from inside a callback (not supported, but do not crash): hiredis frees the
      // context when the callback returns, after this object is gone. Cut every tie to it.
      for (Pending* p = head_; p != nullptr; p = p->next) p->conn = nullptr;
      head_ = tail_ = nullptr;
      link_->orphan();
      link_ = nullptr;
      redisAsyncFree(ac);
      return;
    }
    redisAsyncFree(ac);  // NULL replies to every command in flight, then hookCleanup
  }

  Pending* acquire() {
    if (pool_.empty()) return new Pending;
    Pending* p = pool_.back();
    pool_.pop_back();
    return p;
  }
  void release(Pending* p) {
    if (pool_.size() >= kPendingPool) {
      delete p;
      return;
    }
    p->conn = nullptr;
    p->prev = p->next = nullptr;
    p->deadline = kNoDeadline;
    p->finished = false;
    p->evalsha = false;
    p->done = nullptr;
    p->proposed.clear();
    p->script_args.clear();
    pool_.push_back(p);
  }

  // Queues a command; false if it could not be (then p is still the caller's).
  bool send(Pending* p, int argc, const char** argv, const size_t* lens, uint64_t deadline) {
    if (link_ == nullptr || in_flight_ >= kMaxInFlight) return false;
    if (redisAsyncCommandArgv(link_->context(), &Connection::replyCallback, p, argc, argv, lens) !=
        REDIS_OK)
      return false;
    p->conn = this;
    p->deadline = deadline;
    p->prev = tail_;
    p->next = nullptr;
    if (tail_ != nullptr) {
      tail_->next = p;
    } else {
      head_ = p;
    }
    tail_ = p;
    ++in_flight_;
    if (deadline != kNoDeadline && !command_timer_.armed()) command_timer_.armAt(deadline);
    return true;
  }
  uint64_t commandDeadline() const {
    return loop_.now() +
           static_cast<uint64_t>(std::max<int64_t>(shared_->settings.command_timeout.count(), 1));
  }

  // Runs the call's callback (once).
  static void finish(Pending* p, const Reply& reply) {
    p->finished = true;
    if (p->done) {
      p->done(reply);
      p->done = nullptr;
    }
  }

  // The connection stops being usable: calls fail at once from now on.
  void markDropping() {
    if (state_ == State::kReady || state_ == State::kConnecting) state_ = State::kDropping;
  }

  redisAsyncContext* context() const { return link_ != nullptr ? link_->context() : nullptr; }

  // Error replies are logged at most once per kErrorLogIntervalMs.
  void logErrorReply(const redisReply* r) {
    uint64_t now = loop_.now();
    if (last_error_log_ms_ != 0 && now - last_error_log_ms_ < kErrorLogIntervalMs) return;
    last_error_log_ms_ = now;
    spdlog::warn("redis {} {}: error reply: {}", shared_->address, name_,
                 std::string_view(r->str, r->len));
  }

  EventLoop& loop_;
  std::shared_ptr<Shared> shared_;
  std::shared_ptr<Counters> counters_;
  std::string name_;
  State state_ = State::kIdle;
  bool load_scripts_ = false;  // SCRIPT LOAD the store's scripts on every connection
  bool auth_failed_ = false;   // the last handshake was refused (logged once per backend)

 private:
  friend class Link;
  enum TimerTag { kConnectTimer, kCommandTimer, kBackoffTimer };

  void connect() {
    state_ = State::kConnecting;
    auth_failed_ = false;
    redisAsyncContext* ac =
        redisAsyncConnect(shared_->connect_host.c_str(), shared_->settings.port);
    if (ac == nullptr || ac->err) {
      std::string why = ac != nullptr ? ac->errstr : "out of memory";
      if (ac != nullptr) redisAsyncFree(ac);
      down(false, why);
      return;
    }
    try {
      link_ = new Link(loop_, this, ac);
    } catch (const std::exception& e) {
      redisAsyncFree(ac);
      down(false, e.what());
      return;
    }
    redisAsyncSetConnectCallback(ac, &Connection::connectCallback);
    connect_timer_.armAfter(
        static_cast<uint64_t>(std::max<int64_t>(shared_->settings.connect_timeout.count(), 1)));
  }

  static void connectCallback(const redisAsyncContext* ac, int status) {
    auto* link = static_cast<Link*>(ac->data);
    if (link->owner_ == nullptr) return;
    Connection* self = link->owner_;
    if (status != REDIS_OK) {
      self->drop_reason_ = ac->errstr;  // hiredis frees the context next (-> hookCleanup)
      return;
    }
    redisEnableKeepAlive(const_cast<redisContext*>(&ac->c));
    self->sendHandshake();
  }

  // AUTH (or PING): the connection is ready only once Redis answered. Within connect_timeout.
  void sendHandshake() {
    Pending* p = acquire();
    p->op = Op::kHandshake;
    const std::string& password = shared_->settings.password;
    const char* argv[2] = {"AUTH", password.data()};
    size_t lens[2] = {4, password.size()};
    if (password.empty()) {
      argv[0] = "PING";
      lens[0] = 4;
    }
    if (!send(p, password.empty() ? 1 : 2, argv, lens, kNoDeadline)) {
      release(p);
      return;
    }
    if (!load_scripts_) return;
    // Pipelined behind the handshake, so ahead of every EVALSHA on this connection: EVALSHA finds
    // the scripts (NOSCRIPT only after a SCRIPT FLUSH during the connection).
    for (std::string_view script : {scripts::kCompareAndSet, scripts::kErase}) {
      Pending* load = acquire();
      load->op = Op::kScriptLoad;
      const char* load_argv[3] = {"SCRIPT", "LOAD", script.data()};
      size_t load_lens[3] = {6, 4, script.size()};
      if (!send(load, 3, load_argv, load_lens, kNoDeadline)) release(load);
    }
  }

  void handshakeReply(redisReply* r) {
    if (r == nullptr || state_ != State::kConnecting) return;
    if (r->type == REDIS_REPLY_ERROR) {
      std::string msg(r->str, r->len);
      bool auth = msg.find("AUTH") != std::string::npos ||
                  msg.find("WRONGPASS") != std::string::npos ||
                  msg.find("password") != std::string::npos;
      if (auth) {
        auth_failed_ = true;
        if (!shared_->auth_error_logged.exchange(true))
          spdlog::error("redis {}: authentication failed ({}); the store stays unavailable",
                        shared_->address, msg);
      }
      drop_reason_ = msg;
      dropLink();  // inside a reply callback: hiredis frees the context when it returns
      return;
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

  // Frees the context (at once, or when the current reply callback returns).
  void dropLink() {
    markDropping();
    if (link_ != nullptr) redisAsyncFree(link_->context());
  }

  static void replyCallback(redisAsyncContext*, void* reply, void* privdata) {
    auto* p = static_cast<Pending*>(privdata);
    auto* r = static_cast<redisReply*>(reply);
    Connection* self = p->conn;
    if (self == nullptr) {  // its connection was destroyed
      delete p;
      return;
    }
    self->unlink(p);
    if (r != nullptr && p->op != Op::kHandshake && p->op != Op::kScriptLoad)
      self->counters_->add(self->counters_->round_trips);
    if (self->state_ == State::kClosed || p->finished) {
      self->release(p);
      return;
    }
    if (r == nullptr) {  // the connection is going away
      self->counters_->add(self->counters_->errors);
      self->markDropping();
    }
    if (p->op == Op::kHandshake) {
      self->handshakeReply(r);
      self->release(p);
      return;
    }
    if (p->op == Op::kScriptLoad) {  // a failure costs a NOSCRIPT round trip later, no more
      if (r != nullptr && r->type == REDIS_REPLY_ERROR && self->state_ == State::kReady)
        self->logErrorReply(r);
      self->release(p);
      return;
    }
    if (!self->onReply(p, r)) self->release(p);
  }

  void unlink(Pending* p) {
    if (p->prev != nullptr) {
      p->prev->next = p->next;
    } else {
      head_ = p->next;
    }
    if (p->next != nullptr) {
      p->next->prev = p->prev;
    } else {
      tail_ = p->prev;
    }
    p->prev = p->next = nullptr;
    --in_flight_;
  }

  // From Link::hookCleanup: hiredis is freeing the context (every command in flight was answered
  // with NULL already).
  void linkClosed(Link* link) {
    if (link != link_) return;
    link_ = nullptr;
    connect_timer_.cancel();
    command_timer_.cancel();
    bool was_ready = link_ready_;
    link_ready_ = false;
    if (state_ == State::kClosed) return;
    std::string why = drop_reason_;
    if (why.empty()) {
      redisAsyncContext* ac = link->context();
      why = ac != nullptr && ac->err ? ac->errstr : "connection closed";
    }
    drop_reason_.clear();
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
        if (state_ == State::kConnecting) {
          drop_reason_ = "connect timeout";
          dropLink();
        }
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
    Pending* p = head_;
    while (p != nullptr && (p->finished || p->deadline == kNoDeadline)) p = p->next;
    if (p == nullptr) return;
    if (p->deadline > now) {
      command_timer_.armAt(p->deadline);
      return;
    }
    // The oldest command expired: fail the expired ones, then drop the connection (which fails
    // the rest). Calls made from these callbacks fail at once (the connection is dropping).
    markDropping();
    shared_->noteFailure();
    uint64_t expired = 0;
    for (; p != nullptr && (p->deadline <= now || p->finished); p = p->next) {
      if (p->finished) continue;
      ++expired;
      counters_->add(counters_->timeouts);
      finish(p, kFailed);
    }
    drop_reason_ = std::to_string(expired) + " command(s) timed out after " +
                   std::to_string(shared_->settings.command_timeout.count()) + " ms";
    dropLink();
  }

  Link* link_ = nullptr;
  Pending* head_ = nullptr;  // in flight, oldest first
  Pending* tail_ = nullptr;
  size_t in_flight_ = 0;
  std::vector<Pending*> pool_;
  Timer connect_timer_{loop_, this, kConnectTimer};
  Timer command_timer_{loop_, this, kCommandTimer};
  Timer backoff_timer_{loop_, this, kBackoffTimer};
  std::minstd_rand rng_;
  uint32_t attempt_ = 0;
  bool link_ready_ = false;
  bool ever_ready_ = false;
  std::string drop_reason_;
  uint64_t last_error_log_ms_ = 0;
};

void Link::hookCleanup(void* data) {
  auto* self = static_cast<Link*>(data);
  self->loop_.remove(self->fd_);
  self->loop_.cancelSoon(self);
  if (self->owner_ != nullptr) self->owner_->linkClosed(self);
  self->ac_ = nullptr;
  self->loop_.deferDelete(std::unique_ptr<Deferred>(self));
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
    key_.reserve(128);
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

  void getOrCreate(std::string_view key, std::string_view proposed, Duration ttl,
                   Callback done) override {
    Pending* p = begin(Op::kGetOrCreate, std::move(done));
    if (p == nullptr) return;
    p->proposed.assign(proposed);
    fullKey(key);
    char ttl_buf[24];
    size_t ttl_len = formatTtl(ttl_buf, ttl);
    const char* argv[7] = {"SET", key_.data(), proposed.data(), "NX", "GET", "PX", ttl_buf};
    size_t lens[7] = {3, key_.size(), proposed.size(), 2, 3, 2, ttl_len};
    issue(p, 7, argv, lens);
  }

  void get(std::string_view key, Callback done) override {
    Pending* p = begin(Op::kGet, std::move(done));
    if (p == nullptr) return;
    fullKey(key);
    const char* argv[2] = {"GET", key_.data()};
    size_t lens[2] = {3, key_.size()};
    issue(p, 2, argv, lens);
  }

  void compareAndSet(std::string_view key, std::string_view expected, std::string_view replacement,
                     Duration ttl, Callback done) override {
    Pending* p = begin(Op::kCompareAndSet, std::move(done));
    if (p == nullptr) return;
    fullKey(key);
    char ttl_buf[24];
    size_t ttl_len = formatTtl(ttl_buf, ttl);
    p->script_args.assign({key_, std::string(expected), std::string(replacement),
                           std::string(ttl_buf, ttl_len), shared_->channel});
    sendScript(p, /*evalsha=*/true);
  }

  void touch(std::string_view key, Duration ttl) override {
    Pending* p = begin(Op::kTouch, nullptr);
    if (p == nullptr) return;
    fullKey(key);
    char ttl_buf[24];
    size_t ttl_len = formatTtl(ttl_buf, ttl);
    const char* argv[3] = {"PEXPIRE", key_.data(), ttl_buf};
    size_t lens[3] = {7, key_.size(), ttl_len};
    issue(p, 3, argv, lens);
  }

  void erase(std::string_view key) override {
    Pending* p = begin(Op::kErase, nullptr);
    if (p == nullptr) return;
    fullKey(key);
    p->script_args.assign({key_, shared_->channel});
    sendScript(p, /*evalsha=*/true);
  }

  bool available() const override { return ready(); }

 private:
  // A record for a call, or nullptr after failing the call at once (not connected).
  Pending* begin(Op op, Callback done) {
    if (!ready() || inFlight() >= kMaxInFlight) {
      counters_->add(counters_->errors);
      if (!ready()) shared_->noteFailure();  // (too many in flight is overload, not an outage)
      if (done) done(kFailed);
      return nullptr;
    }
    Pending* p = acquire();
    p->op = op;
    p->done = std::move(done);
    return p;
  }

  // Sends p, or fails its call and releases it.
  void issue(Pending* p, int argc, const char** argv, const size_t* lens) {
    if (send(p, argc, argv, lens, commandDeadline())) return;
    counters_->add(counters_->errors);
    shared_->noteFailure();
    finish(p, kFailed);
    release(p);
  }

  void sendScript(Pending* p, bool evalsha) {
    const auto& args = p->script_args;
    std::string_view script =
        p->op == Op::kCompareAndSet ? scripts::kCompareAndSet : scripts::kErase;
    std::string_view sha =
        p->op == Op::kCompareAndSet ? scripts::kCompareAndSetSha : scripts::kEraseSha;
    const char* argv[8];
    size_t lens[8];
    int argc = 0;
    argv[argc] = evalsha ? "EVALSHA" : "EVAL";
    lens[argc++] = evalsha ? 7 : 4;
    argv[argc] = evalsha ? sha.data() : script.data();
    lens[argc++] = evalsha ? sha.size() : script.size();
    argv[argc] = "1";
    lens[argc++] = 1;
    for (const std::string& a : args) {
      argv[argc] = a.data();
      lens[argc++] = a.size();
    }
    p->evalsha = evalsha;
    issue(p, argc, argv, lens);
  }

  bool onReply(Pending* p, redisReply* r) override {
    if (r == nullptr) {
      shared_->noteFailure();
      finish(p, kFailed);
      return false;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      if (p->evalsha && std::string_view(r->str, r->len).starts_with("NOSCRIPT")) {
        // Redis forgot the script since this connection loaded it (SCRIPT FLUSH): send it. (The
        // call then runs after the calls queued behind it: only in this rare case.)
        sendScript(p, /*evalsha=*/false);  // in flight again, or failed and released
        return true;
      }
      counters_->add(counters_->errors);
      logErrorReply(r);
      finish(p, kFailed);
      return false;
    }
    Reply out;
    out.ok = true;
    switch (p->op) {
      case Op::kGetOrCreate:
        if (r->type == REDIS_REPLY_NIL) {
          out.created = true;
          out.value = std::move(p->proposed);
        } else if (r->type == REDIS_REPLY_STRING) {
          out.value.emplace(r->str, r->len);
        } else {
          out.ok = false;
        }
        break;
      case Op::kGet:
        if (r->type == REDIS_REPLY_STRING) {
          out.value.emplace(r->str, r->len);
        } else if (r->type != REDIS_REPLY_NIL) {
          out.ok = false;
        }
        break;
      case Op::kCompareAndSet:
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_INTEGER) {
          out.swapped = r->element[0]->integer == 1;
          if (r->element[1]->type == REDIS_REPLY_STRING)
            out.value.emplace(r->element[1]->str, r->element[1]->len);
        } else {
          out.ok = false;
        }
        break;
      default:
        break;
    }
    if (!out.ok) counters_->add(counters_->errors);
    finish(p, out.ok ? out : kFailed);
    return false;
  }

  void onReady() override { shared_->linkUp(); }
  void onDown(bool was_ready, const std::string& why) override {
    shared_->linkDown(was_ready, name_, why, auth_failed_);
  }

  void fullKey(std::string_view key) {
    key_.assign(shared_->namespace_prefix);
    key_.append(key);
  }
  static size_t formatTtl(char (&buf)[24], Duration ttl) {
    auto res = std::to_chars(buf, buf + sizeof buf, ttlMs(ttl));
    return static_cast<size_t>(res.ptr - buf);
  }

  std::string key_;  // scratch: the namespaced key of the call being issued
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
    const char* argv[2] = {"SUBSCRIBE", shared_->channel.data()};
    size_t lens[2] = {9, shared_->channel.size()};
    // Not a Pending: hiredis calls this callback for the confirmation and for every message, and
    // once with NULL when the context is freed.
    redisAsyncCommandArgv(context(), &Subscriber::messageCallback, this, 2, argv, lens);
  }

  static void messageCallback(redisAsyncContext*, void* reply, void* privdata) {
    auto* self = static_cast<Subscriber*>(privdata);
    auto* r = static_cast<redisReply*>(reply);
    if (r == nullptr || self->state_ == State::kClosed) return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3) return;
    const redisReply* kind = r->element[0];
    const redisReply* payload = r->element[2];
    if (kind->type != REDIS_REPLY_STRING || std::string_view(kind->str, kind->len) != "message") {
      if (kind->type == REDIS_REPLY_STRING && std::string_view(kind->str, kind->len) == "subscribe")
        spdlog::debug("redis {}: subscribed to {}", self->shared_->address, self->shared_->channel);
      return;
    }
    if (payload->type != REDIS_REPLY_STRING) return;
    std::string_view key(payload->str, payload->len);
    const std::string& prefix = self->shared_->namespace_prefix;
    if (!key.starts_with(prefix)) return;
    key.remove_prefix(prefix.size());
    self->shared_->notify(key);
  }

  bool down_logged_ = false;
};

// ---- the backend --------------------------------------------------------------------------------

class RedisBackend final : public StoreBackend {
 public:
  explicit RedisBackend(const RedisSettings& settings)
      : shared_(std::make_shared<Shared>(settings)) {
    // hiredis writes with write(2): a connection reset must not kill the process with SIGPIPE.
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
