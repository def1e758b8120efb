#include "proxy/attempt.h"

#include <string>

namespace ballast::proxy {

bool ServerAttempt::begin(WorkerContext& ctx, Service& service, const lb::Server& server) {
  if (server.max_connections != 0) {
    int32_t before = server.state->limited_in_use.fetch_add(1, std::memory_order_relaxed);
    if (before >= static_cast<int32_t>(server.max_connections)) {
      server.state->limited_in_use.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
    holds_slot_ = true;
  }
  ctx_ = &ctx;
  service_ = &service;
  server_ = &server;
  counters_ = service.server_counters[server.index];
  counters_->requests.add();
  counters_->in_flight.add();
  active_ = true;
  return true;
}

void ServerAttempt::end(std::optional<lb::Outcome> outcome) {
  if (!active_) return;
  active_ = false;
  counters_->in_flight.sub();
  if (holds_slot_) {
    server_->state->limited_in_use.fetch_sub(1, std::memory_order_relaxed);
    holds_slot_ = false;
  }
  if (outcome) report(*outcome);
}

void ServerAttempt::report(lb::Outcome outcome) {
  uint64_t now = ctx_->loop.now();
  std::optional<lb::Ejection> ejection = lb::recordOutcome(service_->pool, *server_, outcome, now);
  if (!ejection) return;
  counters_->ejections.add();
  server_->state->setHealthNote("ejected: " + ejection->reason, now);
  if (ctx_->events != nullptr)
    ctx_->events->emit({"server_ejected",
                        {{"pool", service_->pool.name},
                         {"server", server_->address_text},
                         {"reason", ejection->reason},
                         {"ejections", std::to_string(ejection->count)},
                         {"for_ms", std::to_string(ejection->until_ms - now)}}});
}

}  // namespace ballast::proxy
