// Accepts client connections for one virtual service on one worker (its own SO_REUSEPORT
// socket) and starts a session for each.
#pragma once

#include <memory>

#include "proxy/session.h"

namespace ballast::proxy {

class Listener final : public IoHandler, public TimerHandler {
 public:
  // Takes ownership of the listening socket fd.
  Listener(WorkerContext& ctx, std::shared_ptr<Service> service, int fd);
  ~Listener() override;
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  void onIoEvents(uint32_t events) override;
  void onTimer(int) override;
  // Stops accepting and closes the socket.
  void close();
  // The virtual service is gone (reload): close, and let its connections drain.
  void retire();
  const Service& service() const { return *slot_->current; }
  // Serves another snapshot's version of the virtual service from now on (reload); connections
  // already accepted keep the one they started with.
  void setService(std::shared_ptr<Service> service);
  int fd() const { return fd_; }

 private:
  void accepted(int fd, const SocketAddress& peer);

  WorkerContext& ctx_;
  std::shared_ptr<ServiceSlot> slot_;
  int fd_;
  bool paused_ = false;
  Timer resume_timer_;  // accept paused after running out of file descriptors
};

}  // namespace ballast::proxy
