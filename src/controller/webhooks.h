// Webhook notifications: targets (API objects of kind `webhooks`) with event filters, and the
// Notifier that POSTs each controller event to the targets that want it, signed with HMAC-SHA256,
// retried with backoff. Every target has its own delivery thread, so a slow or dead target only
// delays itself and publish() never waits for the network.
#pragma once

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace ballast::controller {

using Json = nlohmann::json;

// The event types a webhook may subscribe to: the controller's own and those the service engines
// report (health and anomalies).
inline constexpr std::array<std::string_view, 18> kWebhookEventTypes = {
    "se_joined",      "se_lost",        "se_returned",    "se_removed",  "vs_placed",   "vs_moved",
    "vs_unplaced",    "config_applied", "config_failed",  "object_changed",
    "health_changed", "server_up",      "server_down",    "pool_up",     "pool_down",
    "vs_up",          "vs_down",        "anomaly"};

struct WebhookTarget {
  std::string name, url, secret;
  std::vector<std::string> events;   // event types; empty: all
  std::vector<std::string> objects;  // "kind/name", or a bare name matching any kind; empty: all
  bool enabled = true;
  std::chrono::milliseconds timeout{5000};  // connect, read and write, each
  int max_attempts = 8;
};

// One problem in a written object, as the API's 422 "errors" list carries it:
// {"path": "url", "message": "..."}.
struct FieldError {
  std::string path;
  std::string message;
};
void to_json(Json& out, const FieldError& error);

// The problems of a `webhooks` object as written through the API (empty: valid).
std::vector<FieldError> validateWebhook(const Json& body);
// A body that validateWebhook accepted; missing keys take their defaults.
WebhookTarget webhookFromJson(const Json& body);
// The body as the API returns it: the secret replaced by "***".
Json redactWebhook(const Json& body);

// Lower-case hex of HMAC-SHA256(key, data).
std::string hmacSha256Hex(std::string_view key, std::string_view data);

struct NotifierOptions {
  std::chrono::milliseconds initial_backoff{1000};  // doubles after each failed attempt
  std::chrono::milliseconds max_backoff{60000};
  size_t queue_limit = 1000;  // deliveries waiting per target, besides the one being sent
};

class Notifier {
 public:
  explicit Notifier(NotifierOptions options = {});
  ~Notifier();  // stop()
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Targets are matched by name: a kept target keeps its queue (a new url, secret, timeout or
  // max_attempts applies from its next attempt); a removed one stops and drops its queue. A
  // disabled target takes no new events. Never waits for the network.
  void setTargets(std::vector<WebhookTarget> targets);

  // Queues `event` ({"id", "time", "type", "object", "message", "details"}) for every enabled
  // target whose filters match it; a full queue drops its oldest delivery. Never waits for the
  // network: the controller calls it holding its own lock.
  void publish(const Json& event);

  // {"pending", "delivered", "failed", "dropped", "last_attempt", "last_status", "last_error",
  //  "next_attempt", "recent": [{"event_id", "type", "state", "attempts", "last_status",
  //  "last_error", "time"}]} (recent: the last 50 deliveries, newest first); null for an unknown
  // target.
  Json status(const std::string& target) const;

  // Stops every delivery thread and waits for them; pending deliveries are abandoned. Backoff
  // waits and requests in flight are interrupted (a connect in progress may take up to the
  // target's timeout). publish() does nothing afterwards.
  void stop();

 private:
  class Worker;

  NotifierOptions options_;
  mutable std::mutex mu_;
  bool stopped_ = false;
  std::map<std::string, std::shared_ptr<Worker>> workers_;
  std::vector<std::shared_ptr<Worker>> retired_;  // removed, their threads not joined yet
};

}  // namespace ballast::controller
