// One health check of one server (internal to src/health): a non-blocking connection driven by the
// checker's event loop, from the connect to a verdict, then closed.
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "core/address.h"
#include "core/event_loop.h"
#include "http/parser.h"
#include "lb/pool.h"

namespace ballast::health {

// Everything a check needs, copied out of the configuration (a probe never points into a
// snapshot). Two equal specs check the same thing the same way.
struct ProbeSpec {
  config::MonitorType type = config::MonitorType::Tcp;
  SocketAddress address;                      // where to connect
  uint64_t timeout_ms = 2000;                 // connect start -> verdict
  uint64_t interval_ms = 5000;                // between check starts
  std::string request;                        // http/https: the request bytes
  http::Method method = http::Method::Get;    // how to read the response (HEAD: no body)
  std::vector<std::pair<int, int>> expect;    // accepted status ranges
  std::string body;                           // substring the body must contain ("" = any)
  std::string sni;                            // https: server name to send ("" = none)

  bool operator==(const ProbeSpec&) const = default;
};

// The spec for checking `server` with `monitor`: the server's address, or its IP with the
// monitor's port; Host is the monitor's host or the server's address as written (with the
// monitor's port); SNI is the monitor's host unless it is an IP literal.
ProbeSpec makeProbeSpec(const lb::Server& server, const config::HealthMonitor& monitor);

struct ProbeResult {
  bool pass = false;
  std::string reason;  // on failure: "connect refused", "HTTP 500", ...; "" on success
};

// Bytes of a response body kept for the substring check; reading stops there.
inline constexpr size_t kMaxBodyKept = 64 * 1024;

class Probe final : public IoHandler, public TimerHandler, public Deferred {
 public:
  using Done = std::function<void(const ProbeResult&)>;

  // ssl_ctx: for https (may be null: https checks then fail).
  Probe(EventLoop& loop, SSL_CTX* ssl_ctx, const ProbeSpec& spec, Done done);
  ~Probe() override;
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;

  // Starts the connect. The verdict comes later, from the loop (never from within start()), by
  // one call of `done`, after which the probe holds no resources; the owner then disposes of it
  // with EventLoop::deferDelete (it may be inside one of the probe's callbacks).
  void start();
  // Abandons the check without a verdict (closes the connection).
  void cancel();
  bool finished() const { return finished_; }

  void onIoEvents(uint32_t events) override;
  void onTimer(int tag) override;

 private:
  enum class Phase : uint8_t { Connecting, Handshake, Sending, Head, Body, Done };

  void drive();
  bool handshake();
  bool sendRequest();
  bool receive();
  // Handles new bytes in in_; false once a verdict is given.
  bool onData();
  bool onHead();
  bool onBody();
  void onEof();
  bool bodyHasNeedle(size_t old_size) const;
  void pass();
  void fail(std::string reason);
  void finish(ProbeResult result);
  void closeConnection();
  std::string ioError(const char* what, int err) const;

  EventLoop& loop_;
  SSL_CTX* ssl_ctx_;
  const ProbeSpec spec_;  // a copy: the owner may change or drop its spec while this winds down
  Done done_;
  Timer timer_;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  bool tls_failed_ = false;  // a fatal TLS error: no close_notify then
  Phase phase_ = Phase::Connecting;
  bool finished_ = false;
  std::optional<ProbeResult> early_;  // a verdict reached in start(), delivered from the loop
  size_t sent_ = 0;
  std::string in_;                     // received bytes not yet consumed
  bool received_any_ = false;
  http::ResponseParser parser_{http::Limits{}};
  http::ChunkedDecoder chunked_{http::Limits{}};
  http::BodyKind body_kind_ = http::BodyKind::None;
  uint64_t body_remaining_ = 0;        // ContentLength: bytes still to come
  std::string body_;                   // kept for the substring check (<= kMaxBodyKept)
};

}  // namespace ballast::health
