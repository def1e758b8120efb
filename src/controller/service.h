// The controller's API and SE registry behind docs/api.md, independent of the HTTP server:
// handle() takes a parsed request and gives the response, so tests can drive it directly.
// Thread-safe: one mutex guards the store and the live state; config long polls wait on a
// condition variable.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "controller/documents.h"
#include "controller/monitor.h"
#include "controller/sessions.h"
#include "controller/store.h"
#include "controller/webhooks.h"

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
  Json body;  // null: no body (unless content_type is set)
  std::map<std::string, std::string> headers;
  std::string content_type;  // set: `raw` is the body (dashboard assets)
  std::string raw;
};

struct ServiceOptions {
  // Empty: that kind of token is not accepted.
  std::string admin_token;
  std::string readonly_token;
  std::string se_token;
  std::chrono::milliseconds se_lost_after{3000};
  std::chrono::milliseconds heartbeat_interval{1000};
  bool tls = false;  // served over HTTPS: dashboard cookies are Secure
  // Config long polls that may wait at once (each holds a server thread); beyond, a poll is
  // answered at once, and the engine polls again a second later.
  size_t max_long_polls = 128;
  std::string analytics_db;  // "" = analytics in memory only
  MonitorOptions monitor;
  NotifierOptions notifier;
};

class Service {
 public:
  using Clock = std::chrono::steady_clock;

  // Creates se_groups/default on first start and places what the store holds. Throws
  // std::runtime_error when the analytics database cannot be opened.
  Service(std::unique_ptr<Store> store, ServiceOptions options);

  Response handle(const Request& request);

  // Marks SEs lost that have not reported for se_lost_after and re-places their virtual
  // services; scores health every health interval; saves analytics. Called periodically.
  void tick(Clock::time_point now = Clock::now());

  // Wakes every waiting long poll (they answer 304) and saves analytics: the server is stopping.
  void shutdown();

 private:
  enum class Role { None, Admin, ReadOnly, ServiceEngine };
  Role tokenRole(const std::string& token) const;
  // The bearer token's role, else the dashboard session's (*by_session set).
  Role authenticate(const Request& request, bool* by_session);
  Response route(const Request& request);
  // The dashboard: /ui/ assets and POST/GET/DELETE /api/v1/session (login, check, logout).
  Response serveUi(const Request& request);
  Response session(const Request& request);

  Response listObjects(const std::string& kind);
  Response getObject(const std::string& kind, const std::string& name);
  Response writeObject(const Request& request, const std::string& kind, std::string name,
                       bool create_only);
  Response deleteObject(const Request& request, const std::string& kind, const std::string& name);
  Response apply(const Request& request);
  Response listSes();
  Response getSe(const std::string& name);
  Response deleteSe(const Request& request, const std::string& name);
  Response listPlacements();
  Response vsStatus(const std::string& name);
  Response listEvents(const Request& request);
  Response health(const std::vector<std::string>& path);
  Response analyticsSeries(const Request& request, const std::vector<std::string>& path);
  Response listWebhooks();
  Response getWebhook(const std::string& name);
  Response writeWebhook(const Request& request, std::string name, bool create_only);
  Response deleteWebhook(const Request& request, const std::string& name);
  Response registerSe(const Request& request);
  Response seConfig(const Request& request, const std::string& name);
  Response seReport(const Request& request, const std::string& name);

  // With mu_ held.
  // Stores an event and hands it to the webhooks.
  void raise(const std::string& type, const std::string& object, const std::string& message,
             const Json& details = Json::object());
  void loadWebhookTargets();
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
  std::optional<Clock::time_point> last_tick_;  // when tick() last ran (or the service started)
  size_t long_polls_ = 0;  // waiting now
  bool stopping_ = false;
  std::vector<std::string> shortfalls_;  // last reported, to log changes only

  Notifier notifier_;
  std::unique_ptr<HealthMonitor> monitor_;

  std::mutex sessions_mu_;  // apart from mu_: a login never waits behind the store
  Sessions sessions_;
};

}  // namespace ballast::controller
