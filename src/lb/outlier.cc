#include "lb/outlier.h"

#include <algorithm>
#include <atomic>

namespace ballast::lb {

// How outcomes count (as Envoy's outlier detection without split local-origin errors):
//   Success        resets both consecutive counts.
//   ServerError    counts toward consecutive_5xx; ends a run of gateway failures (a 500 is not a
//                  gateway failure, so the gateway count is "consecutive" no more).
//   GatewayFailure counts toward both: for the 5xx detector it is what a 502/503/504 would be.
// A detector whose threshold is 0 is off; enabled = false turns the whole detection off (failures
// are not counted then; a success still clears what was counted before).
//
// Ejection time: base_ejection_time x n, capped by max(max_ejection_time, base_ejection_time),
// where n is the server's ejection multiplier (ServerState::ejections). The multiplier decays as
// simply as possible: when the last ejection ended more than max_ejection_time before the next
// one, the next one counts as the first again. (Envoy lowers it by one per interval instead.)
//
// Limits, checked only when a threshold is reached (never on the success path):
//   max_ejection_percent: at most floor(servers x percent / 100) servers of the pool ejected at
//     once, and always at least one.
//   panic_threshold: no ejection that would leave fewer than panic_threshold percent of the pool's
//     enabled, healthy (active health) servers not ejected.
// Two workers ejecting two different servers at the same instant may both pass these checks (the
// scan is not a lock); the excess is bounded by the number of workers racing, and each server's
// own ejection is decided by one compare-and-swap, so exactly one caller reports it.

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

void clear(std::atomic<uint32_t>& counter) {
  if (counter.load(kRelaxed) != 0) counter.store(0, kRelaxed);
}

bool ejectionAllowed(const Pool& pool, const Server& server, const config::OutlierDetection& od,
                     uint64_t now_ms) {
  const size_t total = pool.servers.size();
  size_t ejected = 0;   // other servers ejected now
  size_t in_use = 0;    // enabled, healthy servers
  size_t remaining = 0; // of those, not ejected, other than this one
  for (const Server& s : pool.servers) {
    const ServerState& st = *s.state;
    const bool is_ejected = &s != &server && st.ejected(now_ms);
    if (is_ejected) ++ejected;
    if (s.enabled && st.healthy.load(kRelaxed)) {
      ++in_use;
      if (&s != &server && !is_ejected) ++remaining;
    }
  }
  const uint64_t max_ejected =
      std::max<uint64_t>(1, static_cast<uint64_t>(total) * od.max_ejection_percent / 100);
  if (ejected + 1 > max_ejected) return false;
  if (static_cast<uint64_t>(remaining) * 100 < static_cast<uint64_t>(od.panic_threshold) * in_use)
    return false;
  return true;
}

}  // namespace

std::optional<Ejection> recordOutcome(const Pool& pool, const Server& server, Outcome outcome,
                                      uint64_t now_ms) {
  if (pool.config == nullptr || server.state == nullptr) return std::nullopt;
  const config::OutlierDetection& od = pool.config->outlier_detection;
  ServerState& st = *server.state;
  if (outcome == Outcome::Success) {  // even when off: no stale count waits for it to be on again
    clear(st.consecutive_gateway_failures);
    clear(st.consecutive_5xx);
    return std::nullopt;
  }
  if (!od.enabled) return std::nullopt;

  uint32_t gateway = 0;
  uint32_t errors_5xx = 0;
  switch (outcome) {
    case Outcome::Success:
      break;  // handled above
    case Outcome::ServerError:
      clear(st.consecutive_gateway_failures);
      errors_5xx = st.consecutive_5xx.fetch_add(1, kRelaxed) + 1;
      break;
    case Outcome::GatewayFailure:
      gateway = st.consecutive_gateway_failures.fetch_add(1, kRelaxed) + 1;
      errors_5xx = st.consecutive_5xx.fetch_add(1, kRelaxed) + 1;
      break;
  }

  std::string reason;
  if (od.consecutive_gateway_failure != 0 && gateway >= od.consecutive_gateway_failure) {
    reason = std::to_string(gateway) + " consecutive gateway failures";
  } else if (od.consecutive_5xx != 0 && errors_5xx >= od.consecutive_5xx) {
    reason = std::to_string(errors_5xx) + " consecutive 5xx";
  } else {
    return std::nullopt;
  }

  uint64_t previous_until = st.ejected_until_ms.load(std::memory_order_acquire);
  if (previous_until > now_ms) return std::nullopt;  // already ejected
  if (!ejectionAllowed(pool, server, od, now_ms)) return std::nullopt;

  const uint64_t base = static_cast<uint64_t>(std::max<int64_t>(0, od.base_ejection_time.count()));
  const uint64_t max_time = std::max<uint64_t>(
      base, static_cast<uint64_t>(std::max<int64_t>(0, od.max_ejection_time.count())));
  uint32_t count = st.ejections.load(kRelaxed);
  const bool decayed = previous_until != 0 && now_ms - previous_until > max_time;
  count = decayed || count == 0 ? 1 : count + 1;
  // base x count, capped; computed without overflow however large count grows.
  uint64_t duration = 0;
  if (base != 0)
    duration = std::min(max_time, base * std::min<uint64_t>(count, max_time / base + 1));
  const uint64_t until = now_ms + std::max<uint64_t>(duration, 1);

  // Exactly one concurrent caller moves ejected_until_ms from the value it saw to its deadline.
  if (!st.ejected_until_ms.compare_exchange_strong(previous_until, until, std::memory_order_acq_rel,
                                                   std::memory_order_acquire)) {
    return std::nullopt;
  }
  st.ejections.store(count, kRelaxed);
  st.consecutive_gateway_failures.store(0, kRelaxed);
  st.consecutive_5xx.store(0, kRelaxed);
  return Ejection{until, count, std::move(reason)};
}

}  // namespace ballast::lb
