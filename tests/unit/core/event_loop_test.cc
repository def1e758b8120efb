#include "core/event_loop.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <vector>

namespace ballast {
namespace {

// Records timer firings (by tag) and can stop the loop after a number of them.
struct Recorder : TimerHandler {
  explicit Recorder(EventLoop& l) : loop(l) {}
  void onTimer(int tag) override {
    fired.push_back(tag);
    if (fired.size() == stop_after) loop.stop();
  }
  EventLoop& loop;
  std::vector<int> fired;
  size_t stop_after = 0;
};

TEST(Timer, FiresInDeadlineOrder) {
  EventLoop loop;
  Recorder r(loop);
  r.stop_after = 3;
  Timer a(loop, &r, 1), b(loop, &r, 2), c(loop, &r, 3);
  c.armAfter(30);
  a.armAfter(10);
  b.armAfter(20);
  loop.run();
  EXPECT_EQ(r.fired, (std::vector<int>{1, 2, 3}));
  EXPECT_FALSE(a.armed());
}

TEST(Timer, RearmingLaterPostponesWithoutFiringEarly) {
  EventLoop loop;
  Recorder r(loop);
  r.stop_after = 2;
  Timer pushed(loop, &r, 1), marker(loop, &r, 2);
  pushed.armAfter(10);
  pushed.armAfter(60);  // the heap entry stays at 10 ms and is rescheduled when due
  marker.armAfter(30);
  uint64_t start = monotonicMs();
  loop.run();
  EXPECT_EQ(r.fired, (std::vector<int>{2, 1}));
  EXPECT_GE(monotonicMs() - start, 55u);
}

TEST(Timer, RearmingEarlierTakesEffect) {
  EventLoop loop;
  Recorder r(loop);
  r.stop_after = 2;
  Timer a(loop, &r, 1), b(loop, &r, 2);
  a.armAfter(500);
  b.armAfter(20);
  a.armAfter(5);
  loop.run();
  EXPECT_EQ(r.fired, (std::vector<int>{1, 2}));
}

TEST(Timer, CancelledAndDestroyedTimersNeverFire) {
  EventLoop loop;
  Recorder r(loop);
  r.stop_after = 1;
  Timer cancelled(loop, &r, 1), last(loop, &r, 3);
  cancelled.armAfter(5);
  cancelled.cancel();
  {
    Timer destroyed(loop, &r, 2);
    destroyed.armAfter(5);
  }
  last.armAfter(30);
  loop.run();
  EXPECT_EQ(r.fired, (std::vector<int>{3}));
}

TEST(Timer, ManyTimersKeepHeapOrder) {
  EventLoop loop;
  Recorder r(loop);
  std::vector<std::unique_ptr<Timer>> timers;
  for (int i = 0; i < 200; ++i) timers.push_back(std::make_unique<Timer>(loop, &r, i));
  // Arm in a scrambled order; cancel every third; then re-arm some earlier.
  for (int i = 0; i < 200; ++i) timers[(i * 37) % 200]->armAt(loop.now() + 5 + (i * 37) % 200 / 10);
  for (int i = 0; i < 200; i += 3) timers[i]->cancel();
  r.stop_after = 200 - 67;
  loop.run();
  ASSERT_EQ(r.fired.size(), 133u);
  for (size_t i = 1; i < r.fired.size(); ++i)
    EXPECT_LE(r.fired[i - 1] / 10, r.fired[i] / 10) << "timers fired out of deadline order";
}

struct Reader : IoHandler {
  Reader(EventLoop& l, int f) : loop(l), fd(f) {}
  void onIoEvents(uint32_t events) override {
    if (events == 0) {
      ++soon_calls;
      return;
    }
    char buf[64];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) got.append(buf, static_cast<size_t>(n));
    if (got == "ping") loop.stop();
  }
  EventLoop& loop;
  int fd;
  std::string got;
  int soon_calls = 0;
};

TEST(EventLoop, DeliversReadinessAndPostedWork) {
  EventLoop loop;
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  Reader reader(loop, sv[0]);
  loop.addConnection(sv[0], &reader);
  std::thread other([&] { loop.post([&] { ASSERT_EQ(::write(sv[1], "ping", 4), 4); }); });
  loop.run();
  other.join();
  EXPECT_EQ(reader.got, "ping");
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST(EventLoop, CallSoonRunsOnceAndCanBeCancelled) {
  EventLoop loop;
  Reader a(loop, -1), b(loop, -1);
  Recorder stopper(loop);
  stopper.stop_after = 1;
  Timer t(loop, &stopper);
  loop.callSoon(&a);
  loop.callSoon(&a);  // asking twice still calls once
  loop.callSoon(&b);
  loop.cancelSoon(&b);
  t.armAfter(10);
  loop.run();
  EXPECT_EQ(a.soon_calls, 1);
  EXPECT_EQ(b.soon_calls, 0);
}

}  // namespace
}  // namespace ballast
