// One event loop per worker thread: epoll (edge-triggered for connections), timers, deferred
// destruction, and a queue of closures posted from other threads. Nothing here blocks except
// epoll_wait itself.
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace ballast {

class EventLoop;

// Receives readiness events for one file descriptor.
class IoHandler {
 public:
  virtual ~IoHandler() = default;
  // events == 0: a call asked for with EventLoop::callSoon (more work was left for later).
  virtual void onIoEvents(uint32_t events) = 0;

 private:
  friend class EventLoop;
  IoHandler* soon_prev_ = nullptr;
  IoHandler* soon_next_ = nullptr;
  IoHandler** soon_list_ = nullptr;  // the list it is on, if any
};

class TimerHandler {
 public:
  virtual ~TimerHandler() = default;
  virtual void onTimer(int tag) = 0;
};

// A one-shot timer owned by a connection. Re-arming it later than its current deadline is a store
// (the heap entry stays and is rescheduled when it comes due), so per-request timeout refreshes
// cost almost nothing.
class Timer {
 public:
  Timer(EventLoop& loop, TimerHandler* handler, int tag = 0)
      : loop_(loop), handler_(handler), tag_(tag) {}
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void armAt(uint64_t deadline_ms);
  void armAfter(uint64_t delay_ms);
  void cancel() { deadline_ = 0; }  // the heap entry, if any, is dropped lazily
  bool armed() const { return deadline_ != 0; }
  uint64_t deadline() const { return deadline_; }

 private:
  friend class EventLoop;
  EventLoop& loop_;
  TimerHandler* handler_;
  int tag_;
  uint64_t deadline_ = 0;     // 0: not armed
  uint64_t scheduled_ = 0;    // when the heap entry fires; 0: no heap entry
  size_t heap_index_ = 0;
};

// Base for objects whose destruction must wait until the current batch of events is handled
// (another event in the batch may still point at them).
class Deferred {
 public:
  virtual ~Deferred() = default;
};

class EventLoop {
 public:
  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Edge-triggered registration for connections: EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET.
  void addConnection(int fd, IoHandler* handler);
  // Level-triggered read interest (listeners, eventfds).
  void addReader(int fd, IoHandler* handler);
  void remove(int fd);

  // Runs until stop(). Returns when stopped.
  void run();
  void stop();  // from the loop's thread
  // Thread-safe: runs fn on the loop's thread soon.
  void post(std::function<void()> fn);

  // Calls handler->onIoEvents(0) after the current batch of events, once however often asked.
  // A connection that stopped early to be fair to others asks for this to go on.
  void callSoon(IoHandler* handler);
  // Forgets a callSoon request (the handler is going away).
  void cancelSoon(IoHandler* handler);

  // Destroys obj after the current batch of events.
  void deferDelete(std::unique_ptr<Deferred> obj);
  // Destroys what deferDelete collected (for use after run() returned).
  void collectGarbage() { graveyard_.clear(); }

  // Monotonic time, cached once per loop iteration (events of one batch share it).
  uint64_t now() const { return now_ms_; }
  uint64_t nowUs() const { return now_us_; }
  void updateTime();

 private:
  friend class Timer;
  class Wakeup;
  void schedule(Timer* t);
  void heapPush(Timer* t);
  void heapErase(size_t i);
  void siftUp(size_t i);
  void siftDown(size_t i);
  void runTimers();
  int nextTimeoutMs() const;
  void runPosted();
  void runSoon();
  static void soonLink(IoHandler** list, IoHandler* h);
  static void soonUnlink(IoHandler* h);

  int epfd_ = -1;
  int eventfd_ = -1;
  bool stopped_ = false;
  uint64_t now_ms_ = 0;
  uint64_t now_us_ = 0;
  std::vector<Timer*> heap_;  // min-heap on Timer::scheduled_
  std::vector<std::unique_ptr<Deferred>> graveyard_;
  IoHandler* soon_head_ = nullptr;     // asked for during this iteration
  IoHandler* soon_running_ = nullptr;  // being called now
  std::unique_ptr<Wakeup> wakeup_;
  std::mutex posted_mutex_;
  std::vector<std::function<void()>> posted_;
};

uint64_t monotonicMs();
uint64_t monotonicUs();

}  // namespace ballast
