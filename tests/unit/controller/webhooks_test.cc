#include "controller/webhooks.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace ballast::controller {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---- HMAC ----------------------------------------------------------------------------------

TEST(HmacSha256, Rfc4231TestVectors) {
  std::string key3(20, '\xaa');
  std::string key4;
  for (char c = 1; c <= 25; ++c) key4 += c;
  std::string big_key(131, '\xaa');
  EXPECT_EQ(hmacSha256Hex(std::string(20, '\x0b'), "Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  EXPECT_EQ(hmacSha256Hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(hmacSha256Hex(key3, std::string(50, '\xdd')),
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
  EXPECT_EQ(hmacSha256Hex(key4, std::string(50, '\xcd')),
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
  EXPECT_EQ(hmacSha256Hex(big_key, "Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  EXPECT_EQ(hmacSha256Hex(big_key,
                          "This is a test using a larger than block-size key and a larger than "
                          "block-size data. The key needs to be hashed before being used by the "
                          "HMAC algorithm."),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

// ---- validation ----------------------------------------------------------------------------

Json validBody() {
  return {{"name", "ops"},
          {"url", "http://hooks.example.com:8080/ballast?team=ops"},
          {"secret", "0123456789abcdef"},
          {"events", {"vs_down", "server_down"}},
          {"objects", {"web", "pools/api"}},
          {"enabled", false},
          {"timeout", "500ms"},
          {"max_attempts", 3}};
}

// The error paths and messages, "path: message" each.
std::vector<std::string> problems(const Json& body) {
  std::vector<std::string> out;
  for (const FieldError& e : validateWebhook(body)) out.push_back(e.path + ": " + e.message);
  return out;
}

std::vector<std::string> problemsWith(const char* key, const Json& value) {
  Json body = validBody();
  body[key] = value;
  return problems(body);
}

TEST(ValidateWebhook, AcceptsAValidBodyAndReadsIt) {
  EXPECT_TRUE(problems(validBody()).empty());
  EXPECT_TRUE(problems({{"name", "a"}, {"url", "http://127.0.0.1/"}, {"secret", "s3cret-s3cret-s3"}})
                  .empty());
  EXPECT_TRUE(problemsWith("url", "http://[::1]:9000").empty());

  WebhookTarget t = webhookFromJson(validBody());
  EXPECT_EQ(t.name, "ops");
  EXPECT_EQ(t.url, "http://hooks.example.com:8080/ballast?team=ops");
  EXPECT_EQ(t.secret, "0123456789abcdef");
  EXPECT_EQ(t.events, (std::vector<std::string>{"vs_down", "server_down"}));
  EXPECT_EQ(t.objects, (std::vector<std::string>{"web", "pools/api"}));
  EXPECT_FALSE(t.enabled);
  EXPECT_EQ(t.timeout, 500ms);
  EXPECT_EQ(t.max_attempts, 3);

  WebhookTarget defaults =
      webhookFromJson({{"name", "a"}, {"url", "http://h/"}, {"secret", "0123456789abcdef"}});
  EXPECT_TRUE(defaults.events.empty());
  EXPECT_TRUE(defaults.objects.empty());
  EXPECT_TRUE(defaults.enabled);
  EXPECT_EQ(defaults.timeout, 5s);
  EXPECT_EQ(defaults.max_attempts, 8);
}

TEST(ValidateWebhook, RejectsBadUrls) {
  for (const char* url : {"ftp://h/x", "hooks.example.com/x", "http://", "http:///x",
                          "http://h:0/", "http://h:70000/", "http://user:pw@h/", "http://h/a b",
                          "http://h/x#frag"}) {
    auto p = problemsWith("url", url);
    ASSERT_EQ(p.size(), 1u) << url;
    EXPECT_TRUE(p[0].starts_with("url: ")) << p[0];
  }
  EXPECT_EQ(problemsWith("url", "ftp://h/x")[0],
            "url: expected http://host[:port]/path or https://host[:port]/path");
  EXPECT_EQ(problemsWith("url", 7)[0], "url: expected a string");
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
  EXPECT_TRUE(problemsWith("url", "https://hooks.example.com/x").empty());
#else
  EXPECT_EQ(problemsWith("url", "https://hooks.example.com/x")[0],
            "url: https is not supported: this build's HTTP client has no TLS support");
#endif
}

TEST(ValidateWebhook, RejectsBadFields) {
  EXPECT_EQ(problemsWith("secret", "short"),
            std::vector<std::string>{"secret: must be at least 16 characters"});
  EXPECT_EQ(problemsWith("secret", "***")[0],
            "secret: answers show the secret as \"***\": send the secret itself");
  auto events = problemsWith("events", {"vs_down", "vs_exploded"});
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].starts_with("events[1]: unknown event type \"vs_exploded\" (expected one "
                                    "of: se_joined, "))
      << events[0];
  EXPECT_EQ(problemsWith("events", "vs_down")[0], "events: expected a list of event types");
  EXPECT_EQ(problemsWith("objects", {"web", 3})[0], "objects[1]: expected a non-empty string");
  EXPECT_EQ(problemsWith("enabled", "yes")[0], "enabled: expected true or false");
  for (Json timeout : {Json("5"), Json("0s"), Json(5), Json("2m"), Json("soon")}) {
    auto p = problemsWith("timeout", timeout);
    ASSERT_EQ(p.size(), 1u) << timeout;
    EXPECT_TRUE(p[0].starts_with("timeout: ")) << p[0];
  }
  for (Json attempts : {Json(0), Json(101), Json("3"), Json(2.5)}) {
    EXPECT_EQ(problemsWith("max_attempts", attempts),
              std::vector<std::string>{"max_attempts: expected an integer from 1 to 100"})
        << attempts;
  }
  EXPECT_EQ(problemsWith("name", "no spaces")[0],
            "name: expected a name of 1-64 characters from A-Z a-z 0-9 _ . -");

  Json unknown = validBody();
  unknown["retries"] = 3;
  auto p = problems(unknown);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_TRUE(p[0].starts_with("retries: unknown key (expected one of: name, url, secret,"))
      << p[0];

  EXPECT_EQ(problems({{"name", "a"}}),
            (std::vector<std::string>{"url: required key is missing",
                                      "secret: required key is missing"}));
  EXPECT_EQ(problems(Json::array()), std::vector<std::string>{": expected an object"});
}

TEST(ValidateWebhook, ErrorsSerializeAsTheApiErrorList) {
  Json errors = validateWebhook({{"name", "a"}, {"url", "http://h/"}, {"secret", "x"}});
  EXPECT_EQ(errors, Json::parse(R"([{"path": "secret",
                                     "message": "must be at least 16 characters"}])"));
}

TEST(RedactWebhook, HidesTheSecretOnly) {
  Json redacted = redactWebhook(validBody());
  EXPECT_EQ(redacted["secret"], "***");
  Json rest = redacted;
  rest.erase("secret");
  Json expected = validBody();
  expected.erase("secret");
  EXPECT_EQ(rest, expected);
  EXPECT_EQ(redactWebhook({{"name", "a"}}), Json({{"name", "a"}}));
}

// ---- delivery ------------------------------------------------------------------------------

// A webhook receiver on 127.0.0.1: records every request and answers what `answer` says (200
// by default). Requests can be held back until release().
class Receiver {
 public:
  struct Received {
    std::string path, body;
    httplib::Headers headers;
    std::string header(const char* name) const {
      auto it = headers.find(name);
      return it == headers.end() ? "" : it->second;
    }
    Json event() const { return Json::parse(body); }
  };
  using Answer = std::function<int(size_t index)>;  // index: 0 for the first request

  explicit Receiver(Answer answer = nullptr) : answer_(std::move(answer)) {
    server_.Post(".*", [this](const httplib::Request& req, httplib::Response& res) {
      size_t index;
      {
        std::unique_lock lock(mu_);
        index = received_.size();
        received_.push_back({req.path, req.body, req.headers});
        cv_.notify_all();
        if (index < hold_first_) cv_.wait_for(lock, 5s, [&] { return released_; });
      }
      res.status = answer_ ? answer_(index) : 200;
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(1ms);
  }
  ~Receiver() {
    release();
    server_.stop();
    thread_.join();
  }

  // The first `n` requests wait for release() (at most 5 s) before they are answered.
  void holdFirst(size_t n) {
    std::lock_guard lock(mu_);
    hold_first_ = n;
  }
  void release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

  std::string url(const std::string& path = "/hook") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  bool waitFor(size_t count, std::chrono::milliseconds timeout = 3s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return received_.size() >= count; });
  }
  std::vector<Received> received() {
    std::lock_guard lock(mu_);
    return received_;
  }
  std::vector<int64_t> eventIds() {
    std::vector<int64_t> ids;
    for (const Received& r : received()) ids.push_back(r.event()["id"].get<int64_t>());
    return ids;
  }

 private:
  Answer answer_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Received> received_;
  size_t hold_first_ = 0;
  bool released_ = false;
};

WebhookTarget target(const std::string& name, const std::string& url) {
  WebhookTarget t;
  t.name = name;
  t.url = url;
  t.secret = "secret-of-" + name + "-0123456789";
  t.timeout = 1s;
  return t;
}

Json event(int64_t id, const std::string& type = "vs_down",
           const std::string& object = "virtual_services/web") {
  return {{"id", id},
          {"time", "2024-05-01T12:00:00.000Z"},
          {"type", type},
          {"object", object},
          {"message", "event " + std::to_string(id)},
          {"details", {{"n", id}}}};
}

NotifierOptions fastRetries() {
  NotifierOptions options;
  options.initial_backoff = 20ms;
  options.max_backoff = 100ms;
  return options;
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 3s) {
  auto deadline = Clock::now() + timeout;
  while (!condition()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// A port on 127.0.0.1 nothing listens on: bound, then closed.
int closedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

int64_t count(const Notifier& n, const std::string& target, const char* key) {
  Json s = n.status(target);
  return s.is_null() ? -1 : s[key].get<int64_t>();
}

TEST(Notifier, PostsTheEventSignedWithTheSecret) {
  Receiver receiver;
  Notifier notifier;
  WebhookTarget t = target("ops", receiver.url("/in?team=ops"));
  notifier.setTargets({t});
  Json sent = event(42);
  notifier.publish(sent);
  ASSERT_TRUE(receiver.waitFor(1));

  Receiver::Received r = receiver.received()[0];
  EXPECT_EQ(r.path, "/in");
  EXPECT_EQ(r.event(), sent);
  EXPECT_EQ(r.header("X-Ballast-Signature"), "sha256=" + hmacSha256Hex(t.secret, r.body));
  EXPECT_EQ(r.header("Content-Type"), "application/json");
  EXPECT_EQ(r.header("X-Ballast-Event"), "vs_down");
  EXPECT_EQ(r.header("X-Ballast-Delivery"), "42");
  EXPECT_EQ(r.header("User-Agent"), "ballast/" BALLAST_VERSION);

  ASSERT_TRUE(eventually([&] { return count(notifier, "ops", "delivered") == 1; }));
  Json status = notifier.status("ops");
  EXPECT_EQ(status["pending"], 0);
  EXPECT_EQ(status["failed"], 0);
  EXPECT_EQ(status["last_status"], 200);
  EXPECT_TRUE(status["last_error"].is_null());
  EXPECT_TRUE(status["last_attempt"].is_string());
  EXPECT_TRUE(status["next_attempt"].is_null());
  ASSERT_EQ(status["recent"].size(), 1u);
  Json recent = status["recent"][0];
  EXPECT_EQ(recent["event_id"], 42);
  EXPECT_EQ(recent["type"], "vs_down");
  EXPECT_EQ(recent["state"], "delivered");
  EXPECT_EQ(recent["attempts"], 1);
  EXPECT_EQ(recent["last_status"], 200);
  EXPECT_TRUE(recent["time"].get<std::string>().ends_with("Z"));
  EXPECT_TRUE(notifier.status("nobody").is_null());
}

TEST(Notifier, InvalidUtf8InAnEventIsReplacedNotThrown) {
  Receiver receiver;
  Notifier notifier;
  notifier.setTargets({target("ops", receiver.url())});
  Json bad = event(1);
  bad["message"] = "apply failed: \xff";
  EXPECT_NO_THROW(notifier.publish(bad));
  ASSERT_TRUE(receiver.waitFor(1));
  EXPECT_EQ(receiver.received()[0].event()["message"], "apply failed: \xef\xbf\xbd");
}

TEST(Notifier, FiltersByTypeAndObject) {
  Receiver by_type, by_name, by_kind_name, everything, disabled;
  Notifier notifier;
  WebhookTarget t1 = target("by_type", by_type.url());
  t1.events = {"server_down", "pool_down"};
  WebhookTarget t2 = target("by_name", by_name.url());
  t2.objects = {"web"};
  WebhookTarget t3 = target("by_kind_name", by_kind_name.url());
  t3.objects = {"pools/web"};
  t3.events = {"pool_down"};
  WebhookTarget t4 = target("everything", everything.url());
  WebhookTarget t5 = target("disabled", disabled.url());
  t5.enabled = false;
  notifier.setTargets({t1, t2, t3, t4, t5});

  notifier.publish(event(1, "server_down", "pools/web"));
  notifier.publish(event(2, "vs_down", "virtual_services/web"));
  notifier.publish(event(3, "pool_down", "pools/api"));
  notifier.publish(event(4, "pool_down", "pools/web"));
  notifier.publish(event(5, "se_lost", "ses/web2"));

  auto settled = [&](const char* name, int64_t expected) {
    return eventually([&] {
      return count(notifier, name, "delivered") == expected &&
             count(notifier, name, "pending") == 0;
    });
  };
  ASSERT_TRUE(settled("by_type", 3));
  ASSERT_TRUE(settled("by_name", 3));
  ASSERT_TRUE(settled("by_kind_name", 1));
  ASSERT_TRUE(settled("everything", 5));
  EXPECT_EQ(by_type.eventIds(), (std::vector<int64_t>{1, 3, 4}));
  EXPECT_EQ(by_name.eventIds(), (std::vector<int64_t>{1, 2, 4}));
  EXPECT_EQ(by_kind_name.eventIds(), (std::vector<int64_t>{4}));
  EXPECT_EQ(everything.eventIds(), (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(count(notifier, "disabled", "delivered"), 0);
  EXPECT_TRUE(disabled.received().empty());
}

TEST(Notifier, RetriesServerErrorsWithBackoff) {
  Receiver receiver([](size_t index) { return index < 2 ? 500 : 200; });
  Notifier notifier(fastRetries());
  notifier.setTargets({target("ops", receiver.url())});
  auto start = Clock::now();
  notifier.publish(event(7));
  ASSERT_TRUE(eventually([&] { return count(notifier, "ops", "delivered") == 1; }));
  auto elapsed = Clock::now() - start;
  // Backoffs of 20 ms then 40 ms, each at least 80% of that.
  EXPECT_GE(elapsed, 48ms);

  auto received = receiver.received();
  ASSERT_EQ(received.size(), 3u);
  for (const auto& r : received) {
    EXPECT_EQ(r.body, received[0].body);  // the same bytes, so the same signature
    EXPECT_EQ(r.header("X-Ballast-Delivery"), "7");
  }
  Json recent = notifier.status("ops")["recent"][0];
  EXPECT_EQ(recent["state"], "delivered");
  EXPECT_EQ(recent["attempts"], 3);
  EXPECT_EQ(notifier.status("ops")["failed"], 0);
}

TEST(Notifier, ClientErrorFailsAtOnce) {
  Receiver receiver([](size_t) { return 400; });
  Notifier notifier(fastRetries());
  notifier.setTargets({target("ops", receiver.url())});
  notifier.publish(event(1));
  ASSERT_TRUE(eventually([&] { return count(notifier, "ops", "failed") == 1; }));
  std::this_thread::sleep_for(60ms);  // longer than a backoff: no second attempt comes
  EXPECT_EQ(receiver.received().size(), 1u);
  Json status = notifier.status("ops");
  EXPECT_EQ(status["last_status"], 400);
  EXPECT_EQ(status["last_error"], "HTTP 400");
  EXPECT_EQ(status["recent"][0]["state"], "failed");
  EXPECT_EQ(status["recent"][0]["attempts"], 1);
  EXPECT_EQ(status["delivered"], 0);
}

TEST(Notifier, ConnectionErrorsAreRetriedThenFail) {
  Notifier notifier(fastRetries());
  WebhookTarget t = target("ops", "http://127.0.0.1:" + std::to_string(closedPort()) + "/hook");
  t.max_attempts = 3;
  notifier.setTargets({t});
  notifier.publish(event(1));
  ASSERT_TRUE(eventually([&] { return count(notifier, "ops", "failed") == 1; }));
  Json status = notifier.status("ops");
  EXPECT_TRUE(status["last_status"].is_null());
  EXPECT_EQ(status["last_error"], "connection failed");
  EXPECT_EQ(status["pending"], 0);
  EXPECT_EQ(status["recent"][0]["state"], "failed");
  EXPECT_EQ(status["recent"][0]["attempts"], 3);
}

TEST(Notifier, HangingTargetDelaysOnlyItself) {
  Receiver hanging, healthy;
  hanging.holdFirst(1000);
  Notifier notifier;
  WebhookTarget slow = target("slow", hanging.url());
  slow.timeout = 200ms;
  slow.max_attempts = 1;
  notifier.setTargets({slow, target("fast", healthy.url())});

  constexpr int kEvents = 20;
  auto start = Clock::now();
  for (int i = 1; i <= kEvents; ++i) notifier.publish(event(i));
  auto publishing = Clock::now() - start;
  EXPECT_LT(publishing, 20ms);  // far below the slow target's timeout

  ASSERT_TRUE(healthy.waitFor(kEvents, 2s));
  EXPECT_LT(Clock::now() - start, 1s);
  EXPECT_GE(count(notifier, "slow", "pending"), kEvents - 1);  // still stuck on the first ones

  // The hanging request times out and fails; its successors are still waiting.
  ASSERT_TRUE(eventually([&] { return count(notifier, "slow", "failed") >= 1; }));
  EXPECT_EQ(notifier.status("slow")["last_error"], "no answer: read failed or timed out");
  auto stop_start = Clock::now();
  notifier.stop();
  EXPECT_LT(Clock::now() - stop_start, 150ms);
}

TEST(Notifier, StopInterruptsARequestInFlight) {
  Receiver hanging;
  hanging.holdFirst(1);
  Notifier notifier;
  WebhookTarget t = target("ops", hanging.url());
  t.timeout = 5s;
  notifier.setTargets({t});
  notifier.publish(event(1));
  ASSERT_TRUE(hanging.waitFor(1));
  auto start = Clock::now();
  notifier.stop();
  EXPECT_LT(Clock::now() - start, 500ms);
  notifier.publish(event(2));  // ignored once stopped
}

TEST(Notifier, FullQueueDropsTheOldest) {
  Receiver receiver;
  receiver.holdFirst(1);
  NotifierOptions options;
  options.queue_limit = 3;
  Notifier notifier(options);
  notifier.setTargets({target("ops", receiver.url())});
  notifier.publish(event(1));
  ASSERT_TRUE(receiver.waitFor(1));  // event 1 is in flight; the others queue behind it
  for (int i = 2; i <= 7; ++i) notifier.publish(event(i));
  Json status = notifier.status("ops");
  EXPECT_EQ(status["dropped"], 3);
  EXPECT_EQ(status["pending"], 4);  // 1 in flight and 5, 6, 7
  std::vector<int64_t> listed;
  for (const Json& r : status["recent"]) listed.push_back(r["event_id"].get<int64_t>());
  EXPECT_EQ(listed, (std::vector<int64_t>{7, 6, 5, 1}));

  receiver.release();
  ASSERT_TRUE(eventually([&] { return count(notifier, "ops", "delivered") == 4; }));
  EXPECT_EQ(receiver.eventIds(), (std::vector<int64_t>{1, 5, 6, 7}));
}

TEST(Notifier, SetTargetsKeepsChangesAndRemoves) {
  Receiver kept, removed;
  kept.holdFirst(1);
  removed.holdFirst(1);
  Notifier notifier;
  WebhookTarget a = target("a", kept.url());
  WebhookTarget b = target("b", removed.url());
  notifier.setTargets({a, b});
  notifier.publish(event(1));
  ASSERT_TRUE(kept.waitFor(1));
  ASSERT_TRUE(removed.waitFor(1));
  notifier.publish(event(2));  // queued behind event 1 on both

  // a keeps its queue and signs its next deliveries with the new secret; b is gone.
  a.secret = "a-brand-new-secret-for-a";
  notifier.setTargets({a});
  EXPECT_TRUE(notifier.status("b").is_null());
  EXPECT_EQ(count(notifier, "a", "pending"), 2);
  kept.release();
  removed.release();
  ASSERT_TRUE(eventually([&] { return count(notifier, "a", "delivered") == 2; }));
  notifier.publish(event(3));
  ASSERT_TRUE(eventually([&] { return count(notifier, "a", "delivered") == 3; }));

  auto received = kept.received();
  ASSERT_EQ(received.size(), 3u);
  EXPECT_EQ(received[1].event()["id"], 2);
  EXPECT_EQ(received[1].header("X-Ballast-Signature"),
            "sha256=" + hmacSha256Hex(a.secret, received[1].body));
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(removed.received().size(), 1u);  // b's queued event 2 was dropped, 3 never queued
}

TEST(Notifier, StopEndsALongBackoffQuickly) {
  Receiver receiver([](size_t) { return 503; });
  NotifierOptions options;
  options.initial_backoff = 10s;
  Notifier notifier(options);
  notifier.setTargets({target("ops", receiver.url())});
  notifier.publish(event(1));
  ASSERT_TRUE(eventually([&] { return notifier.status("ops")["next_attempt"].is_string(); }));
  Json status = notifier.status("ops");
  EXPECT_EQ(status["pending"], 1);
  EXPECT_EQ(status["last_status"], 503);
  EXPECT_EQ(status["recent"][0]["state"], "pending");
  EXPECT_EQ(status["recent"][0]["attempts"], 1);
  auto start = Clock::now();
  notifier.stop();
  EXPECT_LT(Clock::now() - start, 100ms);
}

}  // namespace
}  // namespace ballast::controller
