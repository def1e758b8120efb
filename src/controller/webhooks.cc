#include "controller/webhooks.h"

#include "controller/wall_clock.h"

#include <httplib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <functional>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>

#include "config/values.h"

namespace ballast::controller {
namespace {

using Clock = std::chrono::steady_clock;
using WallClock = std::chrono::system_clock;

constexpr size_t kRecentLimit = 50;
constexpr int kMaxAttemptsLimit = 100;
constexpr std::chrono::milliseconds kMaxTimeout{60000};
constexpr size_t kMinSecretLength = 16;
constexpr const char* kRedacted = "***";

const char* const kKeys[] = {"name",    "url",     "secret",  "events",
                             "objects", "enabled", "timeout", "max_attempts"};

std::string join(const auto& items) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ", ";
    out += item;
  }
  return out;
}


// What httplib::Client needs of a target's URL.
struct WebhookUrl {
  std::string origin;  // "http://host:port", as httplib::Client takes it
  std::string path;    // with the query, "/" at least
};

std::optional<WebhookUrl> parseUrl(std::string_view url, std::string* error) {
  std::string_view rest;
  std::string_view scheme;
  if (url.starts_with("http://")) {
    scheme = "http";
    rest = url.substr(7);
  } else if (url.starts_with("https://")) {
    scheme = "https";
    rest = url.substr(8);
#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
    *error = "https is not supported: this build's HTTP client has no TLS support";
    return std::nullopt;
#endif
  } else {
    *error = "expected http://host[:port]/path or https://host[:port]/path";
    return std::nullopt;
  }
  size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  std::string_view path = end == std::string_view::npos ? "" : rest.substr(end);
  if (authority.find('@') != std::string_view::npos) {
    *error = "credentials in the URL are not supported (requests are signed with the secret)";
    return std::nullopt;
  }
  if (!config::isValidHost(authority)) {
    *error = "expected a host name or address after " + std::string(scheme) +
             "://, then an optional :port (1-65535)";
    return std::nullopt;
  }
  for (char c : path) {
    if (c == '#') {
      *error = "a fragment (#...) is never sent: remove it";
      return std::nullopt;
    }
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      *error = "the path must be visible ASCII characters (percent-encode the others)";
      return std::nullopt;
    }
  }
  WebhookUrl out;
  out.origin = std::string(scheme) + "://" + std::string(authority);
  out.path = path.starts_with("/") ? std::string(path) : "/" + std::string(path);
  return out;
}

std::optional<std::chrono::milliseconds> parseTimeout(const Json& value, std::string* error) {
  config::Duration d{};
  std::string problem;
  if (!value.is_string() || !config::parseDuration(value.get<std::string>(), &d, &problem)) {
    *error = problem.empty() ? "expected a duration, e.g. 500ms, 5s" : problem;
    return std::nullopt;
  }
  if (d.count() <= 0 || d > kMaxTimeout) {
    *error = "expected a duration from 1ms to " + config::formatDuration(kMaxTimeout);
    return std::nullopt;
  }
  return d;
}

bool isEventType(std::string_view type) {
  return std::find(kWebhookEventTypes.begin(), kWebhookEventTypes.end(), type) !=
         kWebhookEventTypes.end();
}

// A string list under `key`: each bad item is an error at "key[i]"; `check` may add its own.
void validateStringList(const Json& body, const char* key, const char* what,
                        const std::function<std::string(const std::string&)>& check,
                        std::vector<FieldError>& errors) {
  auto it = body.find(key);
  if (it == body.end()) return;
  if (!it->is_array()) {
    errors.push_back({key, std::string("expected a list of ") + what});
    return;
  }
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& item = (*it)[i];
    std::string path = std::string(key) + "[" + std::to_string(i) + "]";
    if (!item.is_string() || item.get<std::string>().empty()) {
      errors.push_back({path, "expected a non-empty string"});
    } else if (std::string problem = check(item.get<std::string>()); !problem.empty()) {
      errors.push_back({path, problem});
    }
  }
}

std::vector<std::string> stringList(const Json& body, const char* key) {
  std::vector<std::string> out;
  if (auto it = body.find(key); it != body.end() && it->is_array()) {
    for (const Json& item : *it) out.push_back(item.get<std::string>());
  }
  return out;
}

// What went wrong with a request that got no answer, for last_error.
std::string describe(httplib::Error error) {
  switch (error) {
    case httplib::Error::Connection: return "connection failed";
    case httplib::Error::ConnectionTimeout: return "connect timed out";
    case httplib::Error::Read: return "no answer: read failed or timed out";
    case httplib::Error::Write: return "sending failed or timed out";
    case httplib::Error::SSLConnection: return "TLS handshake failed";
    case httplib::Error::SSLServerVerification: return "TLS certificate verification failed";
    case httplib::Error::Canceled: return "cancelled";
    default: return httplib::to_string(error);
  }
}

// Event fields go into header values: control characters (a CR LF would start a new header)
// become '?'.
std::string headerValue(std::string text) {
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return text;
}

}  // namespace

void to_json(Json& out, const FieldError& error) {
  out = Json{{"path", error.path}, {"message", error.message}};
}

std::vector<FieldError> validateWebhook(const Json& body) {
  if (!body.is_object()) return {{"", "expected an object"}};
  std::vector<FieldError> errors;
  for (const auto& [key, value] : body.items()) {
    if (std::find(std::begin(kKeys), std::end(kKeys), key) == std::end(kKeys)) {
      errors.push_back({key, "unknown key (expected one of: " + join(kKeys) + ")"});
    }
  }
  // The required string keys: nullptr (and an error) when missing or not a string.
  auto requiredString = [&](const char* key) -> const std::string* {
    auto it = body.find(key);
    if (it == body.end()) {
      errors.push_back({key, "required key is missing"});
      return nullptr;
    }
    if (!it->is_string()) {
      errors.push_back({key, "expected a string"});
      return nullptr;
    }
    return it->get_ptr<const std::string*>();
  };

  if (const std::string* name = requiredString("name"); name && !config::isValidName(*name)) {
    errors.push_back({"name", "expected a name of 1-64 characters from A-Z a-z 0-9 _ . -"});
  }
  if (const std::string* url = requiredString("url")) {
    std::string problem;
    if (!parseUrl(*url, &problem)) errors.push_back({"url", problem});
  }
  if (const std::string* secret = requiredString("secret")) {
    if (*secret == kRedacted) {
      errors.push_back({"secret", "answers show the secret as \"***\": send the secret itself"});
    } else if (secret->size() < kMinSecretLength) {
      errors.push_back(
          {"secret", "must be at least " + std::to_string(kMinSecretLength) + " characters"});
    }
  }
  validateStringList(
      body, "events", "event types",
      [](const std::string& type) {
        return isEventType(type) ? std::string()
                                 : "unknown event type \"" + type +
                                       "\" (expected one of: " + join(kWebhookEventTypes) + ")";
      },
      errors);
  validateStringList(
      body, "objects", "objects (kind/name or a name)",
      [](const std::string&) { return std::string(); }, errors);
  if (auto it = body.find("enabled"); it != body.end() && !it->is_boolean()) {
    errors.push_back({"enabled", "expected true or false"});
  }
  if (auto it = body.find("timeout"); it != body.end()) {
    std::string problem;
    if (!parseTimeout(*it, &problem)) errors.push_back({"timeout", problem});
  }
  if (auto it = body.find("max_attempts"); it != body.end()) {
    bool ok = it->is_number_integer() && it->get<int64_t>() >= 1 &&
              it->get<int64_t>() <= kMaxAttemptsLimit;
    if (!ok) {
      errors.push_back(
          {"max_attempts", "expected an integer from 1 to " + std::to_string(kMaxAttemptsLimit)});
    }
  }
  return errors;
}

WebhookTarget webhookFromJson(const Json& body) {
  WebhookTarget target;
  target.name = body.value("name", "");
  target.url = body.value("url", "");
  target.secret = body.value("secret", "");
  target.events = stringList(body, "events");
  target.objects = stringList(body, "objects");
  target.enabled = body.value("enabled", true);
  if (auto it = body.find("timeout"); it != body.end()) {
    std::string problem;
    target.timeout = parseTimeout(*it, &problem).value_or(target.timeout);
  }
  target.max_attempts = body.value("max_attempts", target.max_attempts);
  return target;
}

Json redactWebhook(const Json& body) {
  Json out = body;
  if (out.is_object() && out.contains("secret")) out["secret"] = kRedacted;
  return out;
}

std::string hmacSha256Hex(std::string_view key, std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  static const unsigned char kNoKey = 0;  // HMAC() wants a pointer even for an empty key
  const void* key_bytes = key.empty() ? &kNoKey : static_cast<const void*>(key.data());
  if (HMAC(EVP_sha256(), key_bytes, static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest,
           &length) == nullptr) {
    throw std::runtime_error("HMAC-SHA256 failed");
  }
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xf];
  }
  return out;
}

// One target: its settings, queue, counters and delivery thread. Everything but the thread
// itself is guarded by mu_.
class Notifier::Worker {
 public:
  // One event as every target sends it: the body is dumped once, shared by the targets.
  struct Event {
    std::shared_ptr<const std::string> body;
    Json id;
    std::string id_text;
    std::string type;
    std::string object;
  };

  Worker(WebhookTarget target, const NotifierOptions& options)
      : options_(options), target_(std::move(target)), random_(std::random_device{}()) {
    thread_ = std::thread([this] { run(); });
  }
  ~Worker() {
    stop();
    join();
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void reconfigure(WebhookTarget target) {
    std::lock_guard lock(mu_);
    target_ = std::move(target);
  }

  // Queues the event when the target is enabled and its filters match.
  void offer(const Event& event) {
    std::lock_guard lock(mu_);
    if (stopping_ || !wants(event)) return;
    if (queue_.size() >= std::max<size_t>(options_.queue_limit, 1)) {
      std::erase(recent_, queue_.front().record);
      queue_.pop_front();
      ++dropped_;
    }
    auto record = std::make_shared<Record>();
    record->event_id = event.id;
    record->type = event.type;
    record->time = WallClock::now();
    recent_.push_front(record);
    if (recent_.size() > kRecentLimit) recent_.pop_back();
    queue_.push_back({event.body, event.id_text, event.type, std::move(record)});
    cv_.notify_one();
  }

  Json status() const {
    std::lock_guard lock(mu_);
    auto orNull = [](const auto& value) { return value ? Json(*value) : Json(nullptr); };
    Json recent = Json::array();
    for (const auto& r : recent_) {
      recent.push_back({{"event_id", r->event_id},
                        {"type", r->type},
                        {"state", r->state},
                        {"attempts", r->attempts},
                        {"last_status", orNull(r->last_status)},
                        {"last_error", orNull(r->last_error)},
                        {"time", isoTime(r->time)}});
    }
    auto time = [](const std::optional<WallClock::time_point>& t) {
      return t ? Json(isoTime(*t)) : Json(nullptr);
    };
    return {{"pending", queue_.size() + (current_ ? 1 : 0)},
            {"delivered", delivered_},
            {"failed", failed_},
            {"dropped", dropped_},
            {"last_attempt", time(last_attempt_)},
            {"last_status", orNull(last_status_)},
            {"last_error", orNull(last_error_)},
            {"next_attempt", time(next_attempt_)},
            {"recent", std::move(recent)}};
  }

  // Asks the thread to end: drops the queue, wakes a backoff wait, cuts a request in flight.
  void stop() {
    std::lock_guard lock(mu_);
    stopping_ = true;
    queue_.clear();
    if (client_) client_->stop();
    cv_.notify_all();
  }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  bool finished() const { return finished_; }

 private:
  // What status() shows of one delivery; `time`: its last attempt, or when it was queued.
  struct Record {
    Json event_id;
    std::string type;
    std::string state = "pending";
    int attempts = 0;
    std::optional<int> last_status;
    std::optional<std::string> last_error;
    WallClock::time_point time;
  };
  struct Delivery {
    std::shared_ptr<const std::string> body;
    std::string id;
    std::string type;
    std::shared_ptr<Record> record;
  };
  struct Outcome {
    bool ok = false;
    bool retry = false;
    std::optional<int> status;
    std::optional<std::string> error;
  };

  bool wants(const Event& event) const {
    if (!target_.enabled) return false;
    const auto& events = target_.events;
    if (!events.empty() && std::find(events.begin(), events.end(), event.type) == events.end()) {
      return false;
    }
    if (target_.objects.empty()) return true;
    size_t slash = event.object.find('/');
    std::string_view name = slash == std::string::npos
                                ? std::string_view(event.object)
                                : std::string_view(event.object).substr(slash + 1);
    return std::any_of(target_.objects.begin(), target_.objects.end(), [&](const auto& o) {
      return o == event.object || (o.find('/') == std::string::npos && o == name);
    });
  }

  void run() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) break;
      current_ = std::move(queue_.front());
      queue_.pop_front();
      deliver(lock);
      current_.reset();
    }
    finished_ = true;
  }

  // Sends current_ until it succeeds, fails for good or the worker stops. Later deliveries wait
  // behind it, so a target receives its events in order.
  void deliver(std::unique_lock<std::mutex>& lock) {
    for (int attempt = 1;; ++attempt) {
      WebhookTarget target = target_;  // a change of settings applies from the next attempt
      lock.unlock();
      Outcome outcome = send(target, *current_);
      lock.lock();
      if (stopping_) return;
      Record& record = *current_->record;
      record.attempts = attempt;
      record.time = WallClock::now();
      record.last_status = outcome.status;
      record.last_error = outcome.error;
      last_attempt_ = record.time;
      last_status_ = outcome.status;
      last_error_ = outcome.error;
      if (outcome.ok) {
        record.state = "delivered";
        ++delivered_;
        return;
      }
      if (!outcome.retry || attempt >= target_.max_attempts) {
        record.state = "failed";
        ++failed_;
        spdlog::warn("webhook {}: event {} ({}) failed after {} attempt(s): {}", target_.name,
                     current_->id, current_->type, attempt,
                     outcome.error.value_or("unknown error"));
        return;
      }
      auto wait = backoff(attempt);
      next_attempt_ = WallClock::now() + wait;
      cv_.wait_until(lock, Clock::now() + wait, [&] { return stopping_; });
      next_attempt_.reset();
      if (stopping_) return;
    }
  }

  // One POST; no lock held but while registering the client, so stop() can cut it.
  Outcome send(const WebhookTarget& target, const Delivery& delivery) {
    Outcome outcome;
    std::string problem;
    std::optional<WebhookUrl> url = parseUrl(target.url, &problem);
    if (!url) {  // validated when written: only a target set up without the API gets here
      outcome.error = "bad url: " + problem;
      return outcome;
    }
    httplib::Client client(url->origin);
    client.set_connection_timeout(target.timeout);
    client.set_read_timeout(target.timeout);
    client.set_write_timeout(target.timeout);
    client.set_url_encode(false);  // the path was checked to be plain ASCII: send it as written
    httplib::Headers headers = {
        {"X-Ballast-Signature", "sha256=" + hmacSha256Hex(target.secret, *delivery.body)},
        {"X-Ballast-Event", headerValue(delivery.type)},
        {"X-Ballast-Delivery", delivery.id},
        {"User-Agent", "ballast/" BALLAST_VERSION},
    };
    {
      std::lock_guard lock(mu_);
      if (stopping_) return outcome;
      client_ = &client;
    }
    httplib::Result result = client.Post(url->path, headers, *delivery.body, "application/json");
    {
      std::lock_guard lock(mu_);
      client_ = nullptr;
    }
    if (!result) {
      outcome.retry = true;
      outcome.error = describe(result.error());
      return outcome;
    }
    int status = result->status;
    outcome.status = status;
    outcome.ok = status >= 200 && status <= 299;
    outcome.retry = status == 408 || status == 429 || status >= 500;
    if (!outcome.ok) outcome.error = "HTTP " + std::to_string(status);
    return outcome;
  }

  // initial_backoff doubled per failed attempt, capped, then +-20% so that targets that failed
  // together do not retry together.
  std::chrono::milliseconds backoff(int failed_attempts) {
    auto wait = options_.initial_backoff;
    for (int i = 1; i < failed_attempts && wait < options_.max_backoff; ++i) wait *= 2;
    wait = std::min(wait, options_.max_backoff);
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    auto jittered = std::chrono::milliseconds(
        static_cast<int64_t>(static_cast<double>(wait.count()) * jitter(random_)));
    return std::clamp(jittered, std::chrono::milliseconds(1), options_.max_backoff);
  }

  const NotifierOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  WebhookTarget target_;
  bool stopping_ = false;
  std::deque<Delivery> queue_;
  std::optional<Delivery> current_;  // taken off the queue, being sent or waiting to retry
  httplib::Client* client_ = nullptr;  // the request in flight
  std::deque<std::shared_ptr<Record>> recent_;  // newest first
  int64_t delivered_ = 0, failed_ = 0, dropped_ = 0;
  std::optional<WallClock::time_point> last_attempt_, next_attempt_;
  std::optional<int> last_status_;
  std::optional<std::string> last_error_;
  std::mt19937 random_;
  std::atomic<bool> finished_ = false;
  std::thread thread_;  // last: starts once everything above exists
};

Notifier::Notifier(NotifierOptions options) : options_(options) {}

Notifier::~Notifier() { stop(); }

void Notifier::setTargets(std::vector<WebhookTarget> targets) {
  std::lock_guard lock(mu_);
  if (stopped_) return;
  std::map<std::string, std::shared_ptr<Worker>> next;
  for (WebhookTarget& target : targets) {
    std::string name = target.name;
    auto kept = workers_.find(name);
    if (kept != workers_.end()) {
      kept->second->reconfigure(std::move(target));
      next[name] = std::move(kept->second);
      workers_.erase(kept);
    } else if (auto again = next.find(name); again != next.end()) {
      again->second->reconfigure(std::move(target));  // a name listed twice: the last wins
    } else {
      next[name] = std::make_shared<Worker>(std::move(target), options_);
    }
  }
  // Removed targets stop now; their threads are joined once done, never here (one may be in the
  // middle of a request, and the caller may hold its own lock).
  for (auto& [name, worker] : workers_) {
    worker->stop();
    retired_.push_back(std::move(worker));
  }
  workers_ = std::move(next);
  std::erase_if(retired_, [](const std::shared_ptr<Worker>& w) {
    if (!w->finished()) return false;
    w->join();
    return true;
  });
}

void Notifier::publish(const Json& event) {
  Worker::Event e;
  auto text = [&](const char* key) {
    auto it = event.find(key);
    return it != event.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  e.id = event.value("id", Json(nullptr));
  e.id_text = headerValue(e.id.is_string() ? e.id.get<std::string>() : e.id.dump());
  e.type = text("type");
  e.object = text("object");
  // Invalid UTF-8 (say, in a message quoting an engine's error) is replaced rather than thrown
  // on: the caller holds its lock and only wants the event sent.
  e.body = std::make_shared<const std::string>(
      event.dump(-1, ' ', false, Json::error_handler_t::replace));
  std::lock_guard lock(mu_);
  if (stopped_) return;
  for (auto& [name, worker] : workers_) worker->offer(e);
}

Json Notifier::status(const std::string& target) const {
  std::lock_guard lock(mu_);
  auto it = workers_.find(target);
  return it == workers_.end() ? Json(nullptr) : it->second->status();
}

void Notifier::stop() {
  std::vector<std::shared_ptr<Worker>> all;
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    for (auto& [name, worker] : workers_) all.push_back(std::move(worker));
    workers_.clear();
    for (auto& worker : retired_) all.push_back(std::move(worker));
    retired_.clear();
  }
  for (auto& worker : all) worker->stop();  // all at once, then wait
  for (auto& worker : all) worker->join();
}

}  // namespace ballast::controller
