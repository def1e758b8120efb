#include "proxy/session.h"

namespace ballast::proxy {

Session::Session(WorkerContext& ctx, std::shared_ptr<Service> service)
    : ctx_(ctx), service_(std::move(service)) {
  next_ = ctx_.sessions;
  if (next_ != nullptr) next_->prev_ = this;
  ctx_.sessions = this;
  ++ctx_.session_count;
  service_->counters.connections_total.add();
  service_->counters.connections_active.add();
}

Session::~Session() {
  if (prev_ != nullptr) {
    prev_->next_ = next_;
  } else {
    ctx_.sessions = next_;
  }
  if (next_ != nullptr) next_->prev_ = prev_;
  --ctx_.session_count;
  service_->counters.connections_active.sub();
  service_->stats.open_connections.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace ballast::proxy
