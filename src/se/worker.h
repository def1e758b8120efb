// A worker thread: its own event loop, buffers, upstream connection pool and listeners.
// Shares nothing with other workers but the immutable snapshot and the counters it alone writes.
#pragma once

#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "core/buffer.h"
#include "core/event_loop.h"
#include "proxy/listener.h"
#include "proxy/service.h"
#include "proxy/session.h"
#include "proxy/upstream.h"
#include "state/state_store.h"

namespace ballast::se {

class Worker : public TimerHandler {
 public:
  Worker(size_t index, size_t buffer_size, EventSink* events);
  ~Worker() override;

  // Serves `snapshot`: for each of its virtual services (in order), listens on the sockets it
  // already has for that address plus `new_fds[i]` (owned by the worker from here on); closes the
  // listeners of addresses no longer served. Before start() it runs at once; after, it runs on the
  // worker's thread and the future says when it is done.
  std::future<void> apply(std::shared_ptr<const proxy::Snapshot> snapshot,
                          std::vector<std::vector<int>> new_fds);
  void start();
  // Stop accepting; close idle connections; let the others finish. The loop stops by itself once
  // no session is left.
  void beginDrain();
  // Close everything now and stop.
  void abortAll();
  void join();
  bool finished() const { return finished_.load(); }

  void onTimer(int) override;

  // This worker's connection to the shared store, and the resolver sessions use through it.
  // Call before start().
  void attachStore(state::StoreBackend& backend, proxy::PersistenceShared& shared);
  // Runs fn on the worker's thread.
  void post(std::function<void()> fn) { loop_.post(std::move(fn)); }
  proxy::PersistenceResolver* persistence() { return persistence_.get(); }

 private:
  void applyNow(const std::shared_ptr<const proxy::Snapshot>& snapshot,
                const std::vector<std::vector<int>>& new_fds);

  size_t index_;
  EventLoop loop_;
  BufferPool buffers_;
  proxy::UpstreamPool upstreams_;
  proxy::WorkerContext ctx_;
  std::unique_ptr<state::StateStore> store_;
  std::unique_ptr<proxy::PersistenceResolver> persistence_;
  std::vector<std::unique_ptr<proxy::Listener>> listeners_;
  Timer drain_check_;
  std::thread thread_;
  std::atomic<bool> finished_{false};
};

}  // namespace ballast::se
