#include "core/address.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <cerrno>
#include <cstring>

namespace ballast {
namespace {

// "host:port" split into its parts; the host is still bracket-free text.
struct HostPort {
  std::string host;
  uint16_t port = 0;
  bool bracketed = false;  // written as "[v6]:port"
};

bool parsePort(std::string_view text, uint16_t* port, std::string* error) {
  // Digits only (no sign, no spaces); the length cap keeps the arithmetic from overflowing.
  if (text.empty() || text.size() > 5) {
    *error = text.empty() ? "expected host:port" : "port must be 1-65535";
    return false;
  }
  unsigned value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      *error = "port must be 1-65535";
      return false;
    }
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value < 1 || value > 65535) {
    *error = "port must be 1-65535";
    return false;
  }
  *port = static_cast<uint16_t>(value);
  return true;
}

bool splitHostPort(std::string_view text, HostPort* out, std::string* error) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) {
      *error = "expected [IPv6]:port";
      return false;
    }
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      *error = "expected host:port";
      return false;
    }
    port = rest.substr(1);
    out->bracketed = true;
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      *error = "expected host:port";
      return false;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      *error = "an IPv6 address needs brackets, e.g. [::1]:8080";
      return false;
    }
  }
  if (host.empty()) {
    *error = out->bracketed ? "invalid IPv6 address" : "expected host:port";
    return false;
  }
  if (!parsePort(port, &out->port, error)) return false;
  out->host = std::string(host);
  return true;
}

// True for text made of digits and dots only: meant as an IPv4 address, so it must never be
// handed to getaddrinfo (which would accept "10.1" as 10.0.0.1).
bool looksLikeIpv4(std::string_view host) {
  for (char c : host) {
    if ((c < '0' || c > '9') && c != '.') return false;
  }
  return true;
}

// Fills *out from an IP literal host; sets *error and returns false when it is not one.
bool fromIpLiteral(const HostPort& hp, SocketAddress* out, std::string* error) {
  if (hp.bracketed) {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(hp.port);
    if (inet_pton(AF_INET6, hp.host.c_str(), &sin6.sin6_addr) != 1) {
      *error = "invalid IPv6 address";
      return false;
    }
    *out = SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6);
    return true;
  }
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(hp.port);
  if (inet_pton(AF_INET, hp.host.c_str(), &sin.sin_addr) != 1) {
    *error = looksLikeIpv4(hp.host) ? "invalid IPv4 address"
                                    : "expected an IP address, e.g. 0.0.0.0:8080";
    return false;
  }
  *out = SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
  return true;
}

}  // namespace

std::optional<SocketAddress> SocketAddress::parseLiteral(std::string_view text,
                                                         std::string* error) {
  std::string scratch;
  if (error == nullptr) error = &scratch;
  HostPort hp;
  if (!splitHostPort(text, &hp, error)) return std::nullopt;
  SocketAddress address;
  if (!fromIpLiteral(hp, &address, error)) return std::nullopt;
  return address;
}

std::optional<SocketAddress> SocketAddress::resolve(std::string_view text, std::string* error) {
  std::string scratch;
  if (error == nullptr) error = &scratch;
  HostPort hp;
  if (!splitHostPort(text, &hp, error)) return std::nullopt;
  if (hp.bracketed || looksLikeIpv4(hp.host)) {
    SocketAddress address;
    if (!fromIpLiteral(hp, &address, error)) return std::nullopt;
    return address;
  }

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* results = nullptr;
  int rc = getaddrinfo(hp.host.c_str(), nullptr, &hints, &results);
  if (rc != 0 || results == nullptr) {
    std::string reason = rc == EAI_SYSTEM ? std::strerror(errno) : gai_strerror(rc);
    if (rc == 0) reason = "no addresses";
    *error = "cannot resolve \"" + hp.host + "\": " + reason;
    return std::nullopt;
  }
  // Prefer an IPv4 address: "localhost" resolves to ::1 first on many hosts, while most local
  // servers listen on 127.0.0.1 only.
  const addrinfo* chosen = results;
  for (const addrinfo* ai = results; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET) {
      chosen = ai;
      break;
    }
  }
  SocketAddress address = fromSockaddr(chosen->ai_addr, chosen->ai_addrlen);
  freeaddrinfo(results);
  if (!address.valid()) {
    *error = "cannot resolve \"" + hp.host + "\": unsupported address family";
    return std::nullopt;
  }
  // getaddrinfo was asked for no service, so the port is set here.
  if (address.family() == AF_INET) {
    reinterpret_cast<sockaddr_in*>(&address.storage_)->sin_port = htons(hp.port);
  } else {
    reinterpret_cast<sockaddr_in6*>(&address.storage_)->sin6_port = htons(hp.port);
  }
  return address;
}

SocketAddress SocketAddress::fromSockaddr(const sockaddr* sa, socklen_t len) {
  SocketAddress address;
  if (sa == nullptr) return address;
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    std::memcpy(&address.storage_, sa, sizeof(sockaddr_in));
    address.length_ = sizeof(sockaddr_in);
  } else if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    std::memcpy(&address.storage_, sa, sizeof(sockaddr_in6));
    address.length_ = sizeof(sockaddr_in6);
  }
  return address;
}

uint16_t SocketAddress::port() const {
  if (!valid()) return 0;
  if (family() == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  }
  return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
}

std::string SocketAddress::hostString() const {
  char buffer[INET6_ADDRSTRLEN] = {};
  if (!valid()) return {};
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buffer,
              sizeof buffer);
  } else {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buffer,
              sizeof buffer);
  }
  return buffer;
}

std::string SocketAddress::toString() const {
  // An unset address formats as "" rather than a made-up address.
  if (!valid()) return {};
  std::string port_text = std::to_string(port());
  if (family() == AF_INET6) return "[" + hostString() + "]:" + port_text;
  return hostString() + ":" + port_text;
}

bool SocketAddress::operator==(const SocketAddress& other) const {
  if (length_ != other.length_ || family() != other.family()) return false;
  if (!valid()) return true;  // both unset
  if (port() != other.port()) return false;
  if (family() == AF_INET) {
    return reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in*>(&other.storage_)->sin_addr.s_addr;
  }
  return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr,
                     &reinterpret_cast<const sockaddr_in6*>(&other.storage_)->sin6_addr,
                     sizeof(in6_addr)) == 0;
}

}  // namespace ballast
