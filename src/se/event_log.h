// The engine's events: each logged as one JSON line on stderr and the latest kept for /status.
#pragma once

#include <deque>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "core/events.h"

namespace ballast::se {

class EventLog final : public EventSink {
 public:
  explicit EventLog(size_t keep = 200) : keep_(keep) {}
  void emit(Event event) override;
  // The latest events, oldest first, as JSON objects.
  nlohmann::json recent(size_t n) const;

 private:
  size_t keep_;
  mutable std::mutex mutex_;
  std::deque<std::string> events_;  // JSON lines
};

}  // namespace ballast::se
