// Passive health: the outcome of every exchange with a server feeds a detector that takes a
// server out of rotation ("ejects" it) after consecutive failures, for base_ejection_time times
// the number of times it has been ejected (capped by max_ejection_time). Thread-safe: workers call
// it concurrently; one of them wins the ejection.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "lb/pool.h"

namespace ballast::lb {

enum class Outcome : uint8_t {
  Success,         // a response that is not a 5xx (HTTP), or a connection that worked (TCP)
  ServerError,     // a 5xx response
  GatewayFailure,  // connect refused or timed out, reset or closed early, response timeout
};

struct Ejection {
  uint64_t until_ms = 0;   // monotonic
  uint32_t count = 0;      // how many times this server has been ejected now
  std::string reason;      // "5 consecutive gateway failures", "5 consecutive 5xx"
};

// Records one outcome for `server` of `pool`. Returns the ejection when this call ejected the
// server (the caller reports the event). Never ejects beyond the pool's max_ejection_percent (at
// least one server may be), nor when fewer than panic_threshold percent of the pool's enabled,
// healthy servers would remain in use. Success resets the consecutive counts (a store only when
// they are not zero already, so the hot path does not write shared memory).
std::optional<Ejection> recordOutcome(const Pool& pool, const Server& server, Outcome outcome,
                                      uint64_t now_ms);

}  // namespace ballast::lb
