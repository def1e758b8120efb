// The controller's API and SE registry behind docs/api.md, independent of the HTTP server:
// handle() takes a parsed request and gives the response, so tests can drive it directly.
// Thread-safe: one mutex guards the store and the live state; config long polls wait on a
// condition variable.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "controller/documents.h"
#include "controller/store.h"

namespace ballast::controller {

struct Request {
  std::string method;
  std::string path;
  std::multimap<std::string, std::string> params;  // query
  std::map<std::string, std::string> headers;      // names in lower case
  std::string body;
};

struct Response {
  int status = 200;
  Json body;  // null: no body
  std::map<std::string, std::string> headers;
};

struct ServiceOptions {
  // Empty: that kind of token is not accepted.
  std::string admin_token;
  std::string readonly_token;
  std::string se_token;
  std::chrono::milliseconds se_lost_after{3000};
  std::chrono::milliseconds heartbeat_interval{1000};
};

class Service {
 public:
  using Clock = std::chrono::steady_clock;

  // Creates se_groups/default on first start and places what the store holds.
  Service(std::unique_ptr<Store> store, ServiceOptions options);

  Response handle(const Request& request);

  // Marks SEs lost that have not reported for se_lost_after and re-places their virtual
  // services. Called periodically.
  void tick(Clock::time_point now = Clock::now());

  // Wakes every waiting long poll (they answer 304): the server is stopping.
  void shutdown();

 private:
  enum class Role { None, Admin, ReadOnly, ServiceEngine };
  Role authenticate(const Request& request) const;
  Response route(const Request& request);

  Response listObjects(const std::string& kind);
  Response getObject(const std::string& kind, const std::string& name);
  Response writeObject(const Request& request, const std::string& kind, std::string name,
                       bool create_only);
  Response deleteObject(const Request& request, const std::string& kind, const std::string& name);
  Response apply(const Request& request);
  Response listSes();
  Response getSe(const std::string& name);
  Response listPlacements();
  Response vsStatus(const std::string& name);
  Response listEvents(const Request& request);
  Response registerSe(const Request& request);
  Response seConfig(const Request& request, const std::string& name);
  Response seReport(const Request& request, const std::string& name);

  // With mu_ held.
  Document currentDocument();
  Json seSummary(const SeRecord& se, const Placement& placement, Clock::time_point now);
  // Recomputes the placement and each SE's rendered configuration; wakes long polls when one
  // changed.
  void reconcile();

  std::unique_ptr<Store> store_;
  ServiceOptions options_;

  struct Live {
    Clock::time_point last_seen;
    int64_t config_revision = 0;
  };
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, Live> live_;  // by SE name
  bool stopping_ = false;
  std::vector<std::string> shortfalls_;  // last reported, to log changes only
};

}  // namespace ballast::controller
