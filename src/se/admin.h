// The admin listener: GET /status (JSON) and GET /metrics (Prometheus). Runs on its own thread,
// off the data path; it only reads the snapshot and the counters.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "core/address.h"

namespace httplib {
class Server;
}

namespace ballast::se {

class AdminServer {
 public:
  struct Handlers {
    std::function<std::string()> status;
    std::function<std::string()> metrics;
  };
  explicit AdminServer(Handlers handlers);
  ~AdminServer();

  // Binds now (so errors surface at start-up) and serves on a thread. false with *error set.
  bool start(const SocketAddress& address, std::string* error);
  void stop();

 private:
  Handlers handlers_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace ballast::se
