// Wall-clock time as the controller shows it: events, scores and deliveries all carry
// ISO 8601 UTC times with milliseconds ("2026-11-30T07:06:34.382Z").
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace ballast::controller {

// Milliseconds since the Unix epoch.
int64_t nowMs();
std::string isoTime(int64_t ms_since_epoch);
inline std::string isoTime(std::chrono::system_clock::time_point when) {
  return isoTime(
      std::chrono::duration_cast<std::chrono::milliseconds>(when.time_since_epoch()).count());
}

}  // namespace ballast::controller
