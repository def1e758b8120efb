// L7 proxying of HTTP/1.1: one client connection, its requests in order (pipelined ones wait
// their turn), each forwarded over a pooled upstream connection; bodies stream both ways through
// bounded buffers; strict parsing both ways; every failure answered with a defined status.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <optional>

#include "core/address.h"
#include "http/parser.h"
#include "lb/outlier.h"
#include "proxy/attempt.h"
#include "proxy/session.h"

namespace ballast::proxy {

class HttpSession final : public Session, public IoHandler, public UpstreamUser, public TimerHandler {
 public:
  HttpSession(WorkerContext& ctx, std::shared_ptr<ServiceSlot> slot, int client_fd,
              const SocketAddress& peer);
  ~HttpSession() override;

  void start();
  // Answers 503 at once and closes (the virtual service's connection limit is reached).
  void startRejected();
  void drain() override;
  void abort() override;

  void onIoEvents(uint32_t events) override;
  void onUpstreamEvents(uint32_t events) override;
  void onTimer(int tag) override;

 private:
  enum class Req : uint8_t { Head, Body, Done, Tunnel };
  enum class Resp : uint8_t { Idle, Resolving, Connecting, Head, Body, Tunnel };
  enum Tag { kClientTimer, kServerTimer };

  // Readiness of one socket as edge-triggered events report it.
  struct SocketState {
    bool readable = false;  // an edge came and EAGAIN was not seen since
    bool hangup = false;    // the peer's FIN was reported: read on to EOF even after short reads
    bool writable = true;
    bool eof = false;       // read returned 0
  };

  void run();
  bool readClient();
  bool readUpstream();
  bool flushClient();
  bool flushUpstream();
  void processClient();
  void processUpstream();
  void parseRequest();
  void startExchange();
  bool acquireUpstream(bool allow_pooled);
  void forwardRequestBody();
  void handleResponseHead();
  void forwardResponseBody();
  void completeResponse();
  void onClientEof();
  void onUpstreamClosed(ErrorKind kind);
  void relay(Buffer& from, Buffer& to);
  void tunnelShutdowns();
  void respondError(int status, ErrorKind kind);
  void startLinger();
  void updateTimers();
  void releaseUpstream(bool reusable);
  void finish(bool reset);
  void attemptFailed(ErrorKind kind);
  void prepareReplay();
  static bool idempotent(http::Method m);
  bool hashRequest(const http::RequestHead& head, uint64_t* hash) const;
  static std::string_view cookieValue(const http::RequestHead& head, std::string_view name);
  // unconsumed_request: bytes of the request still in cin_ (counted as received).
  void logAccess(uint64_t unconsumed_request = 0);
  void connectExchange();
  // Sets persist_key_ to the request's persistence key ("" when it has none).
  void persistenceKey(const http::RequestHead& head);
  std::string persistenceOnResponse(const http::ResponseHead& head);
  void discardUnsentResponse();
  bool answeringHead() const;
  bool waitingForServer() const;
  void clientError(ErrorKind kind);

  int client_fd_;
  SocketAddress peer_;
  std::string client_ip_;
  SocketState client_;
  SocketState upstream_;
  Buffer cin_;   // from the client
  Buffer cout_;  // to the client
  Buffer uin_;   // from the server
  Buffer uout_;  // to the server
  http::RequestParser request_parser_;
  http::ResponseParser response_parser_;
  http::ChunkedDecoder request_chunks_;
  http::ChunkedDecoder response_chunks_;
  Timer client_timer_;
  Timer server_timer_;

  Req req_ = Req::Head;
  Resp resp_ = Resp::Idle;
  bool closed_ = false;
  bool closing_ = false;      // close once cout_ is flushed
  bool linger_ = false;       // close with a linger even if nothing more seems to be coming
  bool lingering_ = false;    // write side shut; discarding input until EOF or the linger timer
  bool registered_ = false;   // the client socket is in the event loop
  bool nodelay_ = false;      // TCP_NODELAY set on the client socket
  bool first_request_ = true;
  uint64_t progress_ = 0;     // bumped whenever bytes move or state changes

  // The exchange in flight.
  http::Method method_ = http::Method::Get;
  bool client_http10_ = false;
  bool keep_alive_ = true;    // the client connection may stay open after this exchange
  bool upgrade_requested_ = false;
  std::string upgrade_offer_;  // the request's Upgrade value (a 101 must choose from it)
  http::BodyKind request_body_ = http::BodyKind::None;
  uint64_t request_left_ = 0;
  http::BodyKind response_body_ = http::BodyKind::None;
  uint64_t response_left_ = 0;
  bool dechunk_ = false;            // 1.0 client: the chunked response goes out unframed
  bool response_started_ = false;   // bytes of a response to this request reached cout_
  bool response_sent_ = false;      // ... and some of them went out to the client
  bool server_keep_alive_ = false;
  int status_ = 0;
  bool response_bytes_seen_ = false;
  bool request_sent_ = false;
  uint64_t request_start_us_ = 0;
  uint64_t request_sent_us_ = 0;
  uint64_t response_first_byte_at_us_ = 0;  // when the first byte of the response came
  uint64_t connection_start_ms_ = 0;
  uint64_t drain_deadline_ms_ = 0;   // draining: close if idle past this
  uint64_t client_activity_ms_ = 0;
  uint64_t upstream_activity_ms_ = 0;

  UpstreamConn* upstream_conn_ = nullptr;
  ServerCounters* server_ = nullptr;
  const lb::Server* server_ref_ = nullptr;
  std::vector<uint32_t> tried_;
  std::string replay_;        // the request (head, small body), kept to send again
  bool retried_ = false;      // sent again after a pooled connection turned out closed
  // Attempts at servers for the exchange in flight.
  uint32_t attempts_ = 0;
  uint32_t retries_ = 0;
  ServerAttempt attempt_;
  uint64_t attempt_start_us_ = 0;
  const lb::Server* preferred_ = nullptr;  // persistence's server for this request
  std::string persist_key_;         // "persist:{vs}:{client key}" (storage reused)
  std::string presented_cookie_;    // http_cookie: the value of our cookie in the request
  bool cookie_server_usable_ = false;  // ... and it names a server that could be used
  bool resolve_waiting_ = false;    // startExchange() returned while the store was asked
  uint64_t exchange_id_ = 0;        // tells a late store answer from the current exchange's
  bool has_hash_ = false;           // consistent_hash key of this request
  uint64_t hash_ = 0;
  // Access log of the exchange in flight.
  std::string log_method_;
  std::string log_target_;
  const char* error_kind_ = nullptr;
  bool exchange_parsed_ = false;    // the request head of the exchange being logged parsed
  uint64_t head_us_ = 0;
  uint64_t connect_us_ = 0;
  uint64_t first_byte_us_ = 0;
  uint64_t in_mark_ = 0;            // cin_.totalConsumed() when the exchange began
  uint64_t out_mark_ = 0;           // cout_.totalProduced() when the exchange began
  std::string log_line_;
  bool upstream_write_failed_ = false;
};

}  // namespace ballast::proxy
