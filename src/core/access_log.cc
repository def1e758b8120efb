#include "core/access_log.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

namespace ballast {

namespace {

// A worker's pending bytes beyond which its lines are dropped: the writer is not keeping up.
constexpr size_t kBufferCap = 1 << 20;
// Pending bytes of one worker that wake the writer before its next tick.
constexpr size_t kWakeBytes = 64 << 10;
// Initial capacity of each buffer. Under a burst a buffer grows (at most to the cap plus a line)
// and keeps that capacity, so a worker allocates only while warming up, never in a steady state.
constexpr size_t kInitialReserve = 64 << 10;
constexpr auto kTick = std::chrono::milliseconds(50);
// How long the writer waits for a non-blocking target (stdout on a non-blocking pipe) to drain.
constexpr int kWritablePollMs = 10;

int openTarget(const std::string& path, std::string* error) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0 && error) *error = "cannot open access log \"" + path + "\": " + strerror(errno);
  return fd;
}

// Writes all of [p, p+n) unless the target fails; returns the bytes written. Partial writes and
// EINTR are retried; EAGAIN (a non-blocking pipe that is full) waits for the target to drain: the
// writer thread may block, workers never do.
size_t writeAll(int fd, const char* p, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::write(fd, p + done, n - done);
    if (r > 0) {
      done += static_cast<size_t>(r);
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd pfd{fd, POLLOUT, 0};
      ::poll(&pfd, 1, kWritablePollMs);  // POLLERR/POLLHUP: the next write reports the error
    } else {
      break;  // an error (ENOSPC, EIO, EPIPE...), or 0 bytes for a non-empty write
    }
  }
  return done;
}

}  // namespace

class AccessLog::Impl {
 public:
  Impl(const std::string& target, int fd, size_t workers)
      : target_(target), stdout_(fd == STDOUT_FILENO && target == "stdout"), fd_(fd),
        slots_(new Slot[workers]), workers_(workers) {
    for (size_t i = 0; i < workers_; ++i) {
      slots_[i].active.reserve(kInitialReserve);
      slots_[i].spare.reserve(kInitialReserve);
    }
  }

  ~Impl() {
    {
      std::lock_guard lock(wake_mu_);
      stop_ = true;
    }
    wake_cv_.notify_one();
    if (thread_.joinable()) thread_.join();
    // No worker writes any more (the last reference is gone): one more round writes what they left.
    round();
    if (!stdout_) ::close(fd_);
    if (pending_fd_ >= 0) ::close(pending_fd_);  // not adopted only if round() was skipped
  }

  void start() {
    // The writer takes no signal: handlers run on the threads that expect them, and a write to a
    // closed pipe fails with EPIPE instead of killing the process (when SIGPIPE is not ignored).
    // The mask is set before the thread exists, so there is no window.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    try {
      thread_ = std::thread([this] { run(); });
    } catch (...) {
      pthread_sigmask(SIG_SETMASK, &old, nullptr);
      throw;
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    pthread_setname_np(thread_.native_handle(), "access-log");
  }

  void write(size_t worker, std::string_view line) {
    if (worker >= workers_) {  // a caller bug; never write out of bounds
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    Slot& slot = slots_[worker];
    size_t before;
    {
      std::lock_guard lock(slot.mu);  // contended only by the writer's O(1) swap
      before = slot.active.size();
      if (before <= kBufferCap) {
        slot.active.append(line);
        slot.active.push_back('\n');
        ++slot.active_lines;
      }
    }
    if (before > kBufferCap) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    // Crossing the wake mark (once per buffer swap): wake the writer early. Notifying without
    // wake_mu_ is cheap (no syscall when the writer is busy) and may be missed when it races with
    // the writer going to sleep; the tick bounds that delay.
    if (before < kWakeBytes && before + line.size() + 1 >= kWakeBytes) {
      urgent_.store(true, std::memory_order_relaxed);
      wake_cv_.notify_one();
    }
  }

  bool reopen(std::string* error) {
    if (stdout_) return true;
    int fd = openTarget(target_, error);
    if (fd < 0) return false;
    // Handed over to the writer, which switches before its next write: reopen never waits for a
    // write in progress (a slow or blocked target cannot hold up the thread that rotates logs).
    int superseded;
    {
      std::lock_guard lock(reopen_mu_);
      superseded = pending_fd_;
      pending_fd_ = fd;
    }
    if (superseded >= 0) ::close(superseded);  // reopened twice between two rounds
    return true;
  }

  const std::string& target() const { return target_; }
  uint64_t written() const { return written_.load(std::memory_order_relaxed); }
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  // One per worker, on cache lines of its own so that workers do not share them.
  struct alignas(64) Slot {
    std::mutex mu;
    std::string active;  // guarded by mu: the worker appends here
    uint64_t active_lines = 0;
    std::string spare;  // the writer's: swapped with `active`, written, cleared (capacity kept)
    uint64_t spare_lines = 0;
  };

  void run() {
    std::unique_lock lock(wake_mu_);
    while (!stop_) {
      wake_cv_.wait_for(lock, kTick,
                        [this] { return stop_ || urgent_.load(std::memory_order_relaxed); });
      urgent_.store(false, std::memory_order_relaxed);
      lock.unlock();
      round();
      lock.lock();
    }
  }

  // Writer thread (or the destructor after the join): takes every worker's buffer and writes it.
  void round() {
    adoptReopened();
    for (size_t i = 0; i < workers_; ++i) {
      Slot& slot = slots_[i];
      {
        std::lock_guard lock(slot.mu);
        slot.active.swap(slot.spare);
        std::swap(slot.active_lines, slot.spare_lines);
      }
      writeBuffer(slot.spare, slot.spare_lines);
      slot.spare.clear();
      slot.spare_lines = 0;
    }
  }

  void adoptReopened() {
    int fd;
    {
      std::lock_guard lock(reopen_mu_);
      fd = pending_fd_;
      pending_fd_ = -1;
    }
    if (fd < 0) return;
    ::close(fd_);
    fd_ = fd;
    torn_ = false;  // a fresh file: no line to terminate
  }

  // On failure the lines not completely written are dropped and counted; nothing is logged (the
  // log is what failed) and the next round tries again.
  void writeBuffer(const std::string& buf, uint64_t lines) {
    if (buf.empty()) return;
    if (torn_) {  // the last failure cut a line: end it so that the lines after it stay whole
      if (writeAll(fd_, "\n", 1) != 1) {
        dropped_.fetch_add(lines, std::memory_order_relaxed);
        return;
      }
      torn_ = false;
    }
    size_t n = writeAll(fd_, buf.data(), buf.size());
    uint64_t complete = lines;
    if (n < buf.size()) {
      auto newlines = static_cast<uint64_t>(std::count(buf.data(), buf.data() + n, '\n'));
      complete = std::min(lines, newlines);
      torn_ = n > 0 && buf[n - 1] != '\n';
      dropped_.fetch_add(lines - complete, std::memory_order_relaxed);
    }
    written_.fetch_add(complete, std::memory_order_relaxed);
  }

  const std::string target_;
  const bool stdout_;  // fd_ is 1, which is never closed or reopened
  int fd_;             // the writer's (the thread, then the destructor after the join)
  bool torn_ = false;  // the writer's: the target holds the first part of a line
  const std::unique_ptr<Slot[]> slots_;
  const size_t workers_;

  std::mutex reopen_mu_;
  int pending_fd_ = -1;  // guarded by reopen_mu_: a reopened file for the writer to switch to

  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  bool stop_ = false;  // guarded by wake_mu_
  std::atomic<bool> urgent_{false};

  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> dropped_{0};
  std::thread thread_;
};

std::shared_ptr<AccessLog> AccessLog::open(const std::string& target, size_t workers,
                                           std::string* error) {
  int fd = STDOUT_FILENO;
  if (target != "stdout") {
    fd = openTarget(target, error);
    if (fd < 0) return nullptr;
  }
  auto impl = std::make_unique<Impl>(target, fd, std::max<size_t>(workers, 1));
  impl->start();
  return std::shared_ptr<AccessLog>(new AccessLog(std::move(impl)));
}

AccessLog::AccessLog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AccessLog::~AccessLog() = default;

void AccessLog::write(size_t worker, std::string_view line) { impl_->write(worker, line); }
bool AccessLog::reopen(std::string* error) { return impl_->reopen(error); }
const std::string& AccessLog::target() const { return impl_->target(); }
uint64_t AccessLog::written() const { return impl_->written(); }
uint64_t AccessLog::dropped() const { return impl_->dropped(); }

}  // namespace ballast
