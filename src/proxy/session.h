// What every client connection of a worker shares: the worker's context, and a list of live
// sessions so the worker can drain or abort them.
#pragma once

#include <cstddef>
#include <memory>

#include "core/buffer.h"
#include "core/event_loop.h"
#include "core/events.h"
#include "proxy/persistence.h"
#include "proxy/service.h"
#include "proxy/upstream.h"

namespace ballast::proxy {

class Session;

// Per-worker state the proxy uses. Owned by the worker; lives as long as its loop.
struct WorkerContext {
  WorkerContext(EventLoop& l, BufferPool& b, UpstreamPool& u, size_t w)
      : loop(l), buffers(b), upstreams(u), worker(w) {}
  EventLoop& loop;
  BufferPool& buffers;
  UpstreamPool& upstreams;
  size_t worker;
  bool draining = false;    // stopping: finish what is in flight, accept nothing new
  EventSink* events = nullptr;  // state changes seen on the data path (ejections)
  PersistenceResolver* persistence = nullptr;  // this worker's link to the shared store
  Session* sessions = nullptr;  // intrusive list of live sessions
  size_t session_count = 0;
};

// A client connection and everything it drives (L4 stream or HTTP exchanges).
class Session : public Deferred {
 public:
  Session(WorkerContext& ctx, std::shared_ptr<ServiceSlot> slot);
  ~Session() override;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Stop taking new work: close when idle, or after the exchange in flight.
  virtual void drain() = 0;
  // Close now (drain timeout reached).
  virtual void abort() = 0;

  Session* next() const { return next_; }
  const ServiceSlot& slot() const { return *slot_; }

 protected:
  // Moves to the slot's current version of the virtual service (between requests), carrying the
  // connection's place in the counters over when the virtual service itself changed.
  void followSlot();

  WorkerContext& ctx_;
  std::shared_ptr<ServiceSlot> slot_;
  std::shared_ptr<Service> service_;
  // False once the session has ended: an answer (from the store) arriving later is dropped.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

 private:
  Session* prev_ = nullptr;
  Session* next_ = nullptr;
};

}  // namespace ballast::proxy
