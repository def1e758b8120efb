// L4 proxying: bytes both ways between a client and a server, with bounded buffers
// (backpressure: a full buffer stops reading from its source), half-close propagated in both
// directions, connect failover and an inactivity timeout.
#pragma once

#include <cstdint>
#include <vector>

#include <optional>

#include "core/address.h"
#include "proxy/attempt.h"
#include "proxy/session.h"

namespace ballast::proxy {

class TcpSession final : public Session, public IoHandler, public UpstreamUser, public TimerHandler {
 public:
  TcpSession(WorkerContext& ctx, std::shared_ptr<ServiceSlot> slot, int client_fd,
             const SocketAddress& peer);
  ~TcpSession() override;

  void start();
  void drain() override {}  // a byte stream has no boundary to stop at: runs until the deadline
  void abort() override { finish(false); }

  void onIoEvents(uint32_t events) override;
  void onUpstreamEvents(uint32_t events) override;
  void onTimer(int tag) override;

 private:
  // One direction of the stream.
  struct Pipe {
    explicit Pipe(BufferPool& pool) : buf(pool) {}
    Buffer buf;
    bool readable = false;  // the source may have bytes: an edge came and EAGAIN was not seen since
    bool hangup = false;    // the source's FIN was reported: read until EOF even after short reads
    bool writable = true;   // the destination took everything last time
    bool eof = false;       // the source has closed its side
    bool shut = false;      // the destination's write side was shut down
    void resetFlags() { readable = hangup = eof = shut = false, writable = true; }
  };
  enum Tag { kIdleTimer, kConnectTimer };

  void connectNext();
  void onConnectResult(int error);
  void connectFailed(ErrorKind kind);
  void logAccess();
  void pump();
  // Moves what it can from src to dst; false when the connection had to be closed.
  bool move(int src, int dst, Pipe& pipe, bool from_client);
  void finish(bool reset);

  int client_fd_;
  SocketAddress peer_;
  UpstreamConn* upstream_ = nullptr;
  ServerAttempt attempt_;
  bool resolving_ = false;                  // waiting for persistence's answer
  const lb::Server* preferred_ = nullptr;   // persistence's server for this connection
  uint32_t attempts_ = 0;
  uint32_t retries_ = 0;
  ServerCounters* failed_server_ = nullptr;  // of the last failed attempt
  uint64_t start_us_ = 0;
  uint64_t connect_start_us_ = 0;
  uint64_t connect_us_ = 0;
  std::optional<ErrorKind> error_;  // why it ended, for the access log
  bool connected_ = false;
  bool closed_ = false;
  Pipe to_server_;
  Pipe to_client_;
  Timer idle_timer_;
  Timer connect_timer_;
  std::vector<uint32_t> tried_;  // server indexes tried for this connection
  ServerCounters* server_ = nullptr;
};

}  // namespace ballast::proxy
