#include "core/event_loop.h"

#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace ballast {

uint64_t monotonicMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

uint64_t monotonicUs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

// Drains the eventfd that post() writes to, then runs the posted closures.
class EventLoop::Wakeup : public IoHandler {
 public:
  explicit Wakeup(EventLoop& loop) : loop_(loop) {}
  void onIoEvents(uint32_t) override {
    uint64_t value;
    while (::read(loop_.eventfd_, &value, sizeof value) > 0) {
    }
    loop_.runPosted();
  }

 private:
  EventLoop& loop_;
};

Timer::~Timer() {
  if (scheduled_ != 0) loop_.heapErase(heap_index_);
}

void Timer::armAt(uint64_t deadline_ms) {
  if (deadline_ms == 0) deadline_ms = 1;
  deadline_ = deadline_ms;
  loop_.schedule(this);
}

void Timer::armAfter(uint64_t delay_ms) { armAt(loop_.now() + delay_ms); }

EventLoop::EventLoop() {
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw std::runtime_error(std::string("epoll_create1: ") + strerror(errno));
  eventfd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (eventfd_ < 0) throw std::runtime_error(std::string("eventfd: ") + strerror(errno));
  wakeup_ = std::make_unique<Wakeup>(*this);
  addReader(eventfd_, wakeup_.get());
  updateTime();
}

EventLoop::~EventLoop() {
  graveyard_.clear();
  for (Timer* t : heap_) t->scheduled_ = 0;
  heap_.clear();
  ::close(eventfd_);
  ::close(epfd_);
}

void EventLoop::updateTime() {
  now_us_ = monotonicUs();
  now_ms_ = now_us_ / 1000;
}

void EventLoop::addConnection(int fd, IoHandler* handler) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = handler;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0)
    throw std::runtime_error(std::string("epoll_ctl add: ") + strerror(errno));
}

void EventLoop::addReader(int fd, IoHandler* handler) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = handler;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0)
    throw std::runtime_error(std::string("epoll_ctl add: ") + strerror(errno));
}

void EventLoop::remove(int fd) { epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr); }

void EventLoop::stop() { stopped_ = true; }

void EventLoop::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(posted_mutex_);
    posted_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(eventfd_, &one, sizeof one);
}

void EventLoop::runPosted() {
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(posted_mutex_);
    batch.swap(posted_);
  }
  for (auto& fn : batch) fn();
}

void EventLoop::soonLink(IoHandler** list, IoHandler* h) {
  h->soon_list_ = list;
  h->soon_prev_ = nullptr;
  h->soon_next_ = *list;
  if (*list != nullptr) (*list)->soon_prev_ = h;
  *list = h;
}

void EventLoop::soonUnlink(IoHandler* h) {
  if (h->soon_prev_ != nullptr) {
    h->soon_prev_->soon_next_ = h->soon_next_;
  } else {
    *h->soon_list_ = h->soon_next_;
  }
  if (h->soon_next_ != nullptr) h->soon_next_->soon_prev_ = h->soon_prev_;
  h->soon_list_ = nullptr;
  h->soon_prev_ = h->soon_next_ = nullptr;
}

void EventLoop::callSoon(IoHandler* handler) {
  if (handler->soon_list_ == nullptr) soonLink(&soon_head_, handler);
}

void EventLoop::cancelSoon(IoHandler* handler) {
  if (handler->soon_list_ != nullptr) soonUnlink(handler);
}

void EventLoop::runSoon() {
  // Only those asked for so far run now: one asking again runs in the next iteration.
  soon_running_ = soon_head_;
  soon_head_ = nullptr;
  for (IoHandler* h = soon_running_; h != nullptr; h = h->soon_next_) h->soon_list_ = &soon_running_;
  while (soon_running_ != nullptr) {
    IoHandler* h = soon_running_;
    soonUnlink(h);
    h->onIoEvents(0);
  }
}

void EventLoop::deferDelete(std::unique_ptr<Deferred> obj) { graveyard_.push_back(std::move(obj)); }

void EventLoop::run() {
  constexpr int kMaxEvents = 256;
  epoll_event events[kMaxEvents];
  while (!stopped_) {
    int n = epoll_wait(epfd_, events, kMaxEvents, nextTimeoutMs());
    updateTime();
    if (n < 0 && errno != EINTR)
      throw std::runtime_error(std::string("epoll_wait: ") + strerror(errno));
    for (int i = 0; i < n; ++i) static_cast<IoHandler*>(events[i].data.ptr)->onIoEvents(events[i].events);
    runSoon();
    graveyard_.clear();
    runTimers();
    graveyard_.clear();
  }
}

// ---- timer heap -------------------------------------------------------------------------------

void EventLoop::schedule(Timer* t) {
  if (t->scheduled_ == 0) {
    t->scheduled_ = t->deadline_;
    heapPush(t);
  } else if (t->deadline_ < t->scheduled_) {
    t->scheduled_ = t->deadline_;
    siftUp(t->heap_index_);
  }
  // A later deadline keeps the earlier heap entry; runTimers() reschedules it when it comes due.
}

void EventLoop::heapPush(Timer* t) {
  t->heap_index_ = heap_.size();
  heap_.push_back(t);
  siftUp(t->heap_index_);
}

void EventLoop::heapErase(size_t i) {
  Timer* removed = heap_[i];
  removed->scheduled_ = 0;
  Timer* last = heap_.back();
  heap_.pop_back();
  if (i == heap_.size()) return;
  heap_[i] = last;
  last->heap_index_ = i;
  siftDown(i);
  siftUp(last->heap_index_);
}

void EventLoop::siftUp(size_t i) {
  Timer* t = heap_[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (heap_[parent]->scheduled_ <= t->scheduled_) break;
    heap_[i] = heap_[parent];
    heap_[i]->heap_index_ = i;
    i = parent;
  }
  heap_[i] = t;
  t->heap_index_ = i;
}

void EventLoop::siftDown(size_t i) {
  Timer* t = heap_[i];
  size_t n = heap_.size();
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && heap_[child + 1]->scheduled_ < heap_[child]->scheduled_) ++child;
    if (heap_[child]->scheduled_ >= t->scheduled_) break;
    heap_[i] = heap_[child];
    heap_[i]->heap_index_ = i;
    i = child;
  }
  heap_[i] = t;
  t->heap_index_ = i;
}

void EventLoop::runTimers() {
  while (!heap_.empty() && heap_[0]->scheduled_ <= now_ms_) {
    Timer* t = heap_[0];
    heapErase(0);
    if (t->deadline_ == 0) continue;  // cancelled
    if (t->deadline_ > now_ms_) {     // pushed back since it was scheduled
      t->scheduled_ = t->deadline_;
      heapPush(t);
      continue;
    }
    t->deadline_ = 0;
    t->handler_->onTimer(t->tag_);
  }
}

int EventLoop::nextTimeoutMs() const {
  if (!graveyard_.empty() || soon_head_ != nullptr) return 0;
  if (heap_.empty()) return 1000;
  uint64_t next = heap_[0]->scheduled_;
  if (next <= now_ms_) return 0;
  uint64_t wait = next - now_ms_;
  return wait > 1000 ? 1000 : static_cast<int>(wait);
}

}  // namespace ballast
