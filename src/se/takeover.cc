#include "se/takeover.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

namespace ballast::se {

namespace {

constexpr size_t kMaxFdsPerMessage = 200;  // SCM_MAX_FD is 253
constexpr int kTimeoutMs = 10000;

bool makeAddress(const std::string& path, sockaddr_un* addr, std::string* error) {
  *addr = {};
  addr->sun_family = AF_UNIX;
  if (path.size() >= sizeof addr->sun_path) {
    *error = "control socket path too long: " + path;
    return false;
  }
  std::memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return true;
}

// Sends text with fds attached, as one message.
bool sendWithFds(int conn, const std::string& text, const int* fds, size_t n) {
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * (n == 0 ? 1 : n)));
  if (n > 0) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * n);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
  }
  return ::sendmsg(conn, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(text.size());
}

// Receives one message: its text and any fds attached. Waits up to kTimeoutMs.
bool receiveWithFds(int conn, std::string* text, std::vector<int>* fds) {
  pollfd p{conn, POLLIN, 0};
  if (::poll(&p, 1, kTimeoutMs) != 1) return false;
  char buf[4096];
  iovec iov{buf, sizeof buf};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n = ::recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
  if (n <= 0) return false;
  text->assign(buf, static_cast<size_t>(n));
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const int* received = reinterpret_cast<const int*>(CMSG_DATA(c));
    fds->insert(fds->end(), received, received + count);
  }
  return true;
}

}  // namespace

bool receiveListeners(const std::string& path, int* conn, ListenerFds* out, std::string* error) {
  sockaddr_un addr;
  if (!makeAddress(path, &addr, error)) return false;
  int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    *error = "takeover: cannot connect to " + path + ": " + strerror(errno);
    if (fd >= 0) ::close(fd);
    return false;
  }
  if (::send(fd, "takeover", 8, MSG_NOSIGNAL) != 8) {
    *error = "takeover: cannot send the request: " + std::string(strerror(errno));
    ::close(fd);
    return false;
  }
  for (;;) {
    std::string text;
    std::vector<int> fds;
    if (!receiveWithFds(fd, &text, &fds)) {
      *error = "takeover: the running service engine did not answer";
      for (auto& [address, list] : *out)
        for (int l : list) ::close(l);
      out->clear();
      ::close(fd);
      return false;
    }
    if (text == "end") break;
    // "listen <address>" with the address's sockets attached.
    if (text.rfind("listen ", 0) == 0) {
      auto& list = (*out)[text.substr(7)];
      list.insert(list.end(), fds.begin(), fds.end());
    } else {
      for (int l : fds) ::close(l);
    }
  }
  *conn = fd;
  return true;
}

void confirmTakeover(int conn) {
  [[maybe_unused]] ssize_t n = ::send(conn, "ready", 5, MSG_NOSIGNAL);
  // Wait for the old process to acknowledge (or go away) so that it has stopped handing out
  // work before we carry on.
  char buf[16];
  pollfd p{conn, POLLIN, 0};
  if (::poll(&p, 1, kTimeoutMs) == 1) n = ::recv(conn, buf, sizeof buf, 0);
  ::close(conn);
}

ControlServer::ControlServer(std::string path, std::function<ListenerFds()> listeners,
                             std::function<void()> handed_over)
    : path_(std::move(path)), listeners_(std::move(listeners)), handed_over_(std::move(handed_over)) {}

ControlServer::~ControlServer() { stop(); }

bool ControlServer::start(std::string* error) {
  sockaddr_un addr;
  if (!makeAddress(path_, &addr, error)) return false;
  struct stat st;
  if (::lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      *error = "control socket " + path_ + ": exists and is not a socket";
      return false;
    }
    // A live service engine answers there: two must not share it.
    int probe = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    bool live = probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (probe >= 0) ::close(probe);
    if (live) {
      *error = "control socket " + path_ +
               " is in use by a running service engine (to replace it, start with --takeover " +
               path_ + ")";
      return false;
    }
    ::unlink(path_.c_str());
  }
  fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd_, 4) != 0) {
    *error = "control socket " + path_ + ": " + strerror(errno);
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    return false;
  }
  ::chmod(path_.c_str(), 0600);
  stop_fd_ = eventfd(0, EFD_CLOEXEC);
  thread_ = std::thread([this] { serve(); });
  return true;
}

void ControlServer::stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(stop_fd_, &one, sizeof one);
  thread_.join();
  if (fd_ >= 0) ::close(fd_);
  ::close(stop_fd_);
  fd_ = stop_fd_ = -1;
}

void ControlServer::serve() {
  for (;;) {
    pollfd p[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents) return;
    int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) continue;
    handle(conn);
    ::close(conn);
    if (fd_ < 0) return;  // handed over: the successor serves the control socket now
  }
}

void ControlServer::handle(int conn) {
  std::string request;
  std::vector<int> none;
  if (!receiveWithFds(conn, &request, &none) || request != "takeover") return;
  ListenerFds listeners = listeners_();
  size_t count = 0;
  for (auto& [address, fds] : listeners) {
    for (size_t i = 0; i < fds.size(); i += kMaxFdsPerMessage) {
      size_t n = std::min(kMaxFdsPerMessage, fds.size() - i);
      if (!sendWithFds(conn, "listen " + address, fds.data() + i, n)) return;
      count += n;
    }
  }
  if (!sendWithFds(conn, "end", nullptr, 0)) return;
  spdlog::info("takeover: handed {} listening sockets to a new service engine; waiting for it",
               count);
  std::string reply;
  if (!receiveWithFds(conn, &reply, &none) || reply != "ready") {
    // The successor failed to start: keep serving as if nothing happened.
    spdlog::warn("takeover: the new service engine did not confirm; still serving");
    return;
  }
  spdlog::info("takeover: the new service engine serves now; draining");
  // Stop listening before saying so: the successor binds the control socket right after.
  ::close(fd_);
  fd_ = -1;
  handed_over_();
  [[maybe_unused]] ssize_t n = ::send(conn, "bye", 3, MSG_NOSIGNAL);
}

}  // namespace ballast::se
