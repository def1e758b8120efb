// One attempt at a server on behalf of a client (an HTTP exchange or a TCP connection): counted in
// flight at the server (the balancing algorithms read it), holding one of the server's
// max_connections slots, and reporting its outcome to the outlier detector.
#pragma once

#include <optional>

#include "lb/outlier.h"
#include "proxy/service.h"
#include "proxy/session.h"

namespace ballast::proxy {

class ServerAttempt {
 public:
  ServerAttempt() = default;
  ServerAttempt(const ServerAttempt&) = delete;
  ServerAttempt& operator=(const ServerAttempt&) = delete;
  ~ServerAttempt() { end(std::nullopt); }

  // Starts an attempt at `server`; false (and nothing started) when its connection limit is
  // reached. The previous attempt, if any, must have ended.
  bool begin(WorkerContext& ctx, Service& service, const lb::Server& server);
  // Ends the attempt (no-op when none is active), reporting the outcome if there is one.
  void end(std::optional<lb::Outcome> outcome);
  // Reports an outcome without ending the attempt (an upgrade that worked stays in flight).
  void report(lb::Outcome outcome);

  bool active() const { return active_; }
  // The server of the current or last attempt (null before the first).
  const lb::Server* server() const { return server_; }
  ServerCounters* counters() const { return counters_; }
  void forget() { server_ = nullptr; counters_ = nullptr; }

 private:
  WorkerContext* ctx_ = nullptr;
  Service* service_ = nullptr;
  const lb::Server* server_ = nullptr;
  ServerCounters* counters_ = nullptr;
  bool active_ = false;
  bool holds_slot_ = false;
};

}  // namespace ballast::proxy
