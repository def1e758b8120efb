// Binary upgrade without dropping connections: a new `ballast se --takeover PATH` takes the
// listening sockets of the running one over its control socket (a Unix SOCK_SEQPACKET socket,
// SCM_RIGHTS), starts serving on them, and says so; the old one then stops accepting and drains.
// Connections waiting in the sockets' accept queues are never lost: the sockets stay open
// throughout, only their owner changes.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace ballast::se {

// Listening sockets by the address they are bound to ("127.0.0.1:8080").
using ListenerFds = std::map<std::string, std::vector<int>>;

// The new process's side. Connects to `path`, receives the listeners. On success *conn is the
// open connection to confirm on.
bool receiveListeners(const std::string& path, int* conn, ListenerFds* out, std::string* error);
// Tells the old process that the new one serves now, and closes the connection.
void confirmTakeover(int conn);

// The running process's side: serves takeover requests on `path`.
class ControlServer {
 public:
  // listeners: the sockets to hand over (called on the control thread; must be thread-safe).
  // handed_over: called once a successor confirmed it serves (then this process should drain).
  ControlServer(std::string path, std::function<ListenerFds()> listeners,
                std::function<void()> handed_over);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Binds the socket (replacing a stale one left by a process that is gone; refusing when a live
  // process listens there) and serves on a thread.
  bool start(std::string* error);
  void stop();

 private:
  void serve();
  void handle(int conn);

  std::string path_;
  std::function<ListenerFds()> listeners_;
  std::function<void()> handed_over_;
  int fd_ = -1;
  int stop_fd_ = -1;
  std::thread thread_;
};

}  // namespace ballast::se
