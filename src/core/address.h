// Socket addresses: parsing "host:port" / "[v6]:port" and formatting them back.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ballast {

class SocketAddress {
 public:
  SocketAddress() = default;

  // Parses an IP literal with a port: "127.0.0.1:80", "[::1]:80", "0.0.0.0:8080".
  // Returns nullopt and sets *error (a short phrase, e.g. "expected host:port") on failure.
  static std::optional<SocketAddress> parseLiteral(std::string_view text, std::string* error);

  // Like parseLiteral, but also accepts a host name ("localhost:9001"), resolved once with
  // getaddrinfo (blocking: call it while loading configuration, never on a worker).
  static std::optional<SocketAddress> resolve(std::string_view text, std::string* error);

  static SocketAddress fromSockaddr(const sockaddr* sa, socklen_t len);

  const sockaddr* sockaddrPtr() const { return reinterpret_cast<const sockaddr*>(&storage_); }
  socklen_t length() const { return length_; }
  int family() const { return storage_.ss_family; }
  uint16_t port() const;
  bool valid() const { return length_ != 0; }

  // "127.0.0.1:80" or "[::1]:80".
  std::string toString() const;
  // The address without the port: "127.0.0.1" or "::1".
  std::string hostString() const;

  bool operator==(const SocketAddress& other) const;

 private:
  sockaddr_storage storage_{};
  socklen_t length_ = 0;
};

}  // namespace ballast
