#include "proxy/session.h"

namespace ballast::proxy {

Session::Session(WorkerContext& ctx, std::shared_ptr<ServiceSlot> slot)
    : ctx_(ctx), slot_(std::move(slot)), service_(slot_->current) {
  next_ = ctx_.sessions;
  if (next_ != nullptr) next_->prev_ = this;
  ctx_.sessions = this;
  ++ctx_.session_count;
  service_->counters.connections_total.add();
  service_->counters.connections_active.add();
}

void Session::followSlot() {
  std::shared_ptr<Service> next = slot_->current;
  if (next == service_) return;
  if (&next->stats != &service_->stats) {
    service_->counters.connections_active.sub();
    service_->stats.open_connections.fetch_sub(1, std::memory_order_relaxed);
    next->counters.connections_active.add();
    next->stats.open_connections.fetch_add(1, std::memory_order_relaxed);
  }
  service_ = std::move(next);
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
