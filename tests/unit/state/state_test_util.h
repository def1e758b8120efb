// Helpers of the state store tests: a real redis-server on an ephemeral port (started and stopped
// by pid), worker loops on threads, synchronous wrappers around the asynchronous calls, a raw
// hiredis client to look at what the store wrote, and a log capture.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "state/state_store.h"

namespace ballast::state::testing {

using namespace std::chrono_literals;

inline bool waitUntil(const std::function<bool()>& pred, uint64_t timeout_ms = 3000) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return pred();
}

inline uint64_t msSince(std::chrono::steady_clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t)
          .count());
}

// A synchronous connection for looking at Redis directly (binary-safe argv commands).
class RawRedis {
 public:
  using ReplyPtr = std::unique_ptr<redisReply, void (*)(void*)>;
  explicit RawRedis(uint16_t port, const std::string& password = "") {
    timeval tv{1, 0};
    ctx_ = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (ctx_ != nullptr && ctx_->err == 0) {
      redisSetTimeout(ctx_, tv);
      if (!password.empty()) command({"AUTH", password});
    }
  }
  ~RawRedis() {
    if (ctx_ != nullptr) redisFree(ctx_);
  }
  RawRedis(const RawRedis&) = delete;
  RawRedis& operator=(const RawRedis&) = delete;
  bool ok() const { return ctx_ != nullptr && ctx_->err == 0; }

  ReplyPtr command(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (!ok()) return ReplyPtr(nullptr, &freeReplyObject);
    return ReplyPtr(static_cast<redisReply*>(redisCommandArgv(ctx_, static_cast<int>(args.size()),
                                                              argv.data(), lens.data())),
                    &freeReplyObject);
  }
  // A string reply's text; nullopt for nil, errors and no reply.
  std::optional<std::string> string(const std::vector<std::string>& args) {
    ReplyPtr r = command(args);
    if (r == nullptr || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS))
      return std::nullopt;
    return std::string(r->str, r->len);
  }
  long long integer(const std::vector<std::string>& args) {
    ReplyPtr r = command(args);
    return r != nullptr && r->type == REDIS_REPLY_INTEGER ? r->integer : -1000;
  }

 private:
  redisContext* ctx_ = nullptr;
};

// A redis-server of our own: ephemeral port, no persistence, a temporary directory; stopped by
// pid (never by name).
class RedisServer {
 public:
  explicit RedisServer(std::vector<std::string> extra = {}) : extra_(std::move(extra)) {
    char tmpl[] = "/tmp/ballast-state-test-XXXXXX";
    if (mkdtemp(tmpl) != nullptr) dir_ = tmpl;
    for (int attempt = 0; attempt < 5 && pid_ <= 0; ++attempt) {
      port_ = freePort();
      if (!launch()) stopProcess(SIGKILL);
    }
  }
  ~RedisServer() {
    stopProcess(SIGKILL);
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  bool running() const { return pid_ > 0; }
  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }

  void kill() { stopProcess(SIGKILL); }
  // Starts again on the same port (empty: no persistence).
  bool restart() {
    stopProcess(SIGKILL);
    for (int attempt = 0; attempt < 50; ++attempt) {
      if (launch()) return true;
      stopProcess(SIGKILL);
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }
  void pause() {
    if (pid_ > 0) ::kill(pid_, SIGSTOP);
  }
  void resume() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }

 private:
  static uint16_t freePort() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    uint16_t port = 0;
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
      port = ntohs(addr.sin_port);
    close(fd);
    return port;
  }

  bool launch() {
    std::vector<std::string> args = {"redis-server",
                                     "--port",
                                     std::to_string(port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--daemonize",
                                     "no",
                                     "--dir",
                                     dir_,
                                     "--logfile",
                                     dir_ + "/redis.log"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
      // Dies with the test process, even when that one crashes.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      int null_fd = open("/dev/null", O_WRONLY);
      if (null_fd >= 0) dup2(null_fd, 1);
      execvp("redis-server", argv.data());
      _exit(127);
    }
    if (pid_ < 0) return false;
    // Up when it answers (NOAUTH counts: it answered).
    auto start = std::chrono::steady_clock::now();
    while (msSince(start) < 5000) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {  // exited: port taken?
        pid_ = -1;
        return false;
      }
      RawRedis raw(port_);
      if (raw.ok() && raw.command({"PING"}) != nullptr) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }

  void stopProcess(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);  // SIGKILL ends a stopped process too (no SIGCONT: it would answer first)
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  std::vector<std::string> extra_;
  std::string dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

// A worker: an event loop running on its own thread.
class Worker {
 public:
  Worker() : thread_([this] { loop_.run(); }) {}
  ~Worker() { stop(); }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  EventLoop& loop() { return loop_; }
  std::thread::id threadId() const { return thread_.get_id(); }
  void post(std::function<void()> fn) { loop_.post(std::move(fn)); }
  // Runs fn on the loop's thread and waits for it.
  void run(const std::function<void()>& fn) {
    std::promise<void> done;
    loop_.post([&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }
  void stop() {
    if (!thread_.joinable()) return;
    loop_.post([this] { loop_.stop(); });
    thread_.join();
  }

 private:
  EventLoop loop_;
  std::thread thread_;
};

// A reply kept after its callback (a Reply's value is valid during the callback only).
struct OwnedReply {
  bool ok = false;
  std::optional<std::string> value;
  bool created = false;
  bool swapped = false;
  OwnedReply() = default;
  OwnedReply(const Reply& r)  // NOLINT: implicit on purpose
      : ok(r.ok), created(r.created), swapped(r.swapped) {
    if (r.value) value.emplace(*r.value);
  }
};

// One asynchronous call made on the worker's thread, waited for here. nullopt: no callback within
// the timeout. A second call of the callback is a test failure.
inline std::optional<OwnedReply> callOn(Worker& w, std::function<void(Callback)> issue,
                                   uint64_t timeout_ms = 3000) {
  auto promise = std::make_shared<std::promise<OwnedReply>>();
  auto calls = std::make_shared<std::atomic<int>>(0);
  std::future<OwnedReply> future = promise->get_future();
  w.post([issue = std::move(issue), promise, calls] {
    issue([promise, calls](const Reply& r) {
      if (calls->fetch_add(1) == 0) {
        promise->set_value(OwnedReply(r));
      } else {
        ADD_FAILURE() << "a callback ran twice";
      }
    });
  });
  if (future.wait_for(std::chrono::milliseconds(timeout_ms)) != std::future_status::ready)
    return std::nullopt;
  return future.get();
}

// Synchronous wrappers of one store used from worker w.
class SyncStore {
 public:
  SyncStore(Worker& w, StateStore& s) : w_(w), s_(s) {}
  std::optional<OwnedReply> getOrCreate(std::string key, std::string proposed, Duration ttl = 60s) {
    return callOn(
        w_, [this, key, proposed, ttl](Callback cb) { s_.getOrCreate(key, proposed, ttl, cb); });
  }
  std::optional<OwnedReply> get(std::string key) {
    return callOn(w_, [this, key](Callback cb) { s_.get(key, cb); });
  }
  std::optional<OwnedReply> compareAndSet(std::string key, std::string expected,
                                          std::string replacement, Duration ttl = 60s) {
    return callOn(w_, [this, key, expected, replacement, ttl](Callback cb) {
      s_.compareAndSet(key, expected, replacement, ttl, cb);
    });
  }
  void touch(std::string key, Duration ttl) {
    w_.run([&] { s_.touch(key, ttl); });
  }
  void erase(std::string key) {
    w_.run([&] { s_.erase(key); });
  }
  bool available() {
    bool out = false;
    w_.run([&] { out = s_.available(); });
    return out;
  }

 private:
  Worker& w_;
  StateStore& s_;
};

// Captures what spdlog logs while it lives.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<Sink>()) {
    previous_ = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink_));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  size_t count(const std::string& needle) const {
    std::lock_guard<std::mutex> lock(sink_->lines_mutex);
    size_t n = 0;
    for (const auto& l : sink_->lines)
      if (l.find(needle) != std::string::npos) ++n;
    return n;
  }

 private:
  struct Sink : spdlog::sinks::base_sink<std::mutex> {
    void sink_it_(const spdlog::details::log_msg& msg) override {
      std::lock_guard<std::mutex> lock(lines_mutex);
      lines.emplace_back(msg.payload.data(), msg.payload.size());
    }
    void flush_() override {}
    mutable std::mutex lines_mutex;
    std::vector<std::string> lines;
  };
  std::shared_ptr<Sink> sink_;
  std::shared_ptr<spdlog::logger> previous_;
};

// One engine: a backend, its workers (loops on threads) and their stores. Stores are destroyed on
// their workers' threads, then the loops stop, then the backend goes.
class Engine {
 public:
  Engine(std::unique_ptr<StoreBackend> backend, size_t workers) : backend_(std::move(backend)) {
    for (size_t i = 0; i < workers; ++i) {
      workers_.push_back(std::make_unique<Worker>());
      stores_.push_back(backend_->forWorker(workers_[i]->loop(), i));
    }
    backend_->start();
  }
  ~Engine() {
    for (size_t i = 0; i < workers_.size(); ++i) destroyStore(i);
    workers_.clear();
    backend_->stop();
    backend_.reset();
  }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  StoreBackend& backend() { return *backend_; }
  Worker& worker(size_t i) { return *workers_[i]; }
  StateStore& store(size_t i) { return *stores_[i]; }
  SyncStore sync(size_t i = 0) { return SyncStore(*workers_[i], *stores_[i]); }
  void destroyStore(size_t i) {
    workers_[i]->run([&] { stores_[i].reset(); });
  }
  bool allAvailable() {
    for (size_t i = 0; i < workers_.size(); ++i)
      if (stores_[i] == nullptr || !sync(i).available()) return false;
    return true;
  }
  bool waitAvailable(uint64_t timeout_ms = 3000) {
    return waitUntil([&] { return allAvailable(); }, timeout_ms);
  }

 private:
  std::unique_ptr<StoreBackend> backend_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::unique_ptr<StateStore>> stores_;
};

// Settings for a test: short back-off; timeouts generous enough for a loaded machine.
inline RedisSettings testSettings(uint16_t port, size_t workers = 1) {
  RedisSettings s;
  s.host = "127.0.0.1";
  s.port = port;
  s.workers = workers;
  s.connect_timeout = 1000ms;
  s.command_timeout = 1000ms;
  s.reconnect_min = 20ms;
  s.reconnect_max = 200ms;
  return s;
}

// One redis-server for the tests that do not disturb it, started at first use, flushed by each.
inline RedisServer& sharedRedis() {
  static RedisServer server;
  return server;
}

}  // namespace ballast::state::testing
