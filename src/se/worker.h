// A worker thread: its own event loop, buffers, upstream connection pool and listeners.
// Shares nothing with other workers but the immutable snapshot and the counters it alone writes.
#pragma once

#include <memory>
#include <thread>
#include <vector>

#include "core/buffer.h"
#include "core/event_loop.h"
#include "proxy/listener.h"
#include "proxy/service.h"
#include "proxy/session.h"
#include "proxy/upstream.h"

namespace ballast::se {

class Worker : public TimerHandler {
 public:
  Worker(size_t index, size_t buffer_size);
  ~Worker() override;

  // Listening sockets for each virtual service of the snapshot, in its order (fds are owned by
  // the worker from here on). Call before start().
  void setListeners(const std::shared_ptr<const proxy::Snapshot>& snapshot,
                    const std::vector<int>& listen_fds);
  void start();
  // Stop accepting; close idle connections; let the others finish. The loop stops by itself once
  // no session is left.
  void beginDrain();
  // Close everything now and stop.
  void abortAll();
  void join();
  bool finished() const { return finished_.load(); }

  void onTimer(int) override;

 private:
  size_t index_;
  EventLoop loop_;
  BufferPool buffers_;
  proxy::UpstreamPool upstreams_;
  proxy::WorkerContext ctx_;
  std::vector<std::unique_ptr<proxy::Listener>> listeners_;
  Timer drain_check_;
  std::thread thread_;
  std::atomic<bool> finished_{false};
};

}  // namespace ballast::se
