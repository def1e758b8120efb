// The admin listener: GET /status (JSON), GET /metrics (Prometheus), POST /reload. Runs on its own
// thread and event loop, off the data path; it only reads the snapshot and the counters (and asks
// the engine to reload).
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "core/address.h"
#include "core/event_loop.h"

namespace ballast::se {

class AdminServer {
 public:
  struct Handlers {
    std::function<std::string()> status;
    std::function<std::string()> metrics;
    std::function<std::string(std::string_view query)> state;
    std::function<std::pair<bool, std::string>()> reload;  // (applied, JSON report)
  };
  explicit AdminServer(Handlers handlers);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds now (so errors surface at start-up) and serves on a thread. false with *error set.
  bool start(const SocketAddress& address, std::string* error);
  void stop();

  // The complete response to a request (exposed for tests).
  std::string route(std::string_view method, std::string_view target, bool keep_alive);

 private:
  class Connection;
  class Acceptor;

  Handlers handlers_;
  EventLoop loop_;
  int listen_fd_ = -1;
  std::unique_ptr<Acceptor> acceptor_;
  std::set<Connection*> connections_;  // open ones (they delete themselves when done)
  std::thread thread_;
};

}  // namespace ballast::se
