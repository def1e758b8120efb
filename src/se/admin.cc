#include "se/admin.h"

#include <httplib.h>

namespace ballast::se {

AdminServer::AdminServer(Handlers handlers)
    : handlers_(std::move(handlers)), server_(std::make_unique<httplib::Server>()) {
  // A scrape or a status call at a time is plenty; keep the thread count small.
  server_->new_task_queue = [] { return new httplib::ThreadPool(2); };
  server_->Get("/status", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(handlers_.status(), "application/json");
  });
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(handlers_.metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server_->set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 404) res.set_content("not found: try /status or /metrics\n", "text/plain");
  });
}

AdminServer::~AdminServer() { stop(); }

bool AdminServer::start(const SocketAddress& address, std::string* error) {
  if (!server_->bind_to_port(address.hostString().c_str(), address.port())) {
    *error = "admin: cannot listen on " + address.toString();
    return false;
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return true;
}

void AdminServer::stop() {
  if (thread_.joinable()) {
    server_->stop();
    thread_.join();
  }
}

}  // namespace ballast::se
