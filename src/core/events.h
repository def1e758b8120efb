// Events: state changes an operator must see (a server going down, an ejection, a reload). The
// engine logs each as one JSON line and keeps the latest for /status.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace ballast {

struct Event {
  std::string type;  // server_down, server_up, pool_down, pool_up, server_ejected, ...
  std::vector<std::pair<std::string, std::string>> fields;  // pool, server, reason, ... in order
};

class EventSink {
 public:
  virtual ~EventSink() = default;
  // Thread-safe; called off the hot path only (state changes are rare).
  virtual void emit(Event event) = 0;
};

}  // namespace ballast
