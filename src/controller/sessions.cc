#include "controller/sessions.h"

#include <openssl/rand.h>

#include <stdexcept>

namespace ballast::controller {

std::string Sessions::create(const std::string& role, Clock::time_point now) {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("no random bytes for a session");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  for (unsigned char b : bytes) {
    id += kHex[b >> 4];
    id += kHex[b & 15];
  }
  // Expired sessions go first, then the least recently used while over the cap.
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    it = now - it->second.last_used > idle_timeout_ ? sessions_.erase(it) : std::next(it);
  }
  while (sessions_.size() >= max_sessions_) {
    auto oldest = sessions_.begin();
    for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
      if (it->second.last_used < oldest->second.last_used) oldest = it;
    }
    sessions_.erase(oldest);
  }
  sessions_[id] = Session{role, now};
  return id;
}

std::optional<std::string> Sessions::find(const std::string& id, Clock::time_point now) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return std::nullopt;
  if (now - it->second.last_used > idle_timeout_) {
    sessions_.erase(it);
    return std::nullopt;
  }
  it->second.last_used = now;
  return it->second.role;
}

void Sessions::remove(const std::string& id) { sessions_.erase(id); }

std::string Sessions::idFromCookieHeader(const std::string& header) {
  // "a=1; ballast_session=abc; b=2"
  const std::string name = std::string(kCookie) + "=";
  size_t pos = 0;
  while (pos < header.size()) {
    while (pos < header.size() && (header[pos] == ' ' || header[pos] == ';')) ++pos;
    size_t end = header.find(';', pos);
    if (end == std::string::npos) end = header.size();
    if (header.compare(pos, name.size(), name) == 0) {
      std::string value = header.substr(pos + name.size(), end - pos - name.size());
      while (!value.empty() && value.back() == ' ') value.pop_back();
      return value;
    }
    pos = end;
  }
  return "";
}

std::string Sessions::setCookie(const std::string& id, bool secure) const {
  return std::string(kCookie) + "=" + id + "; Path=/; HttpOnly; SameSite=Strict; Max-Age=" +
         std::to_string(idle_timeout_.count()) + (secure ? "; Secure" : "");
}

std::string Sessions::clearCookie(bool secure) {
  return std::string(kCookie) + "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0" +
         (secure ? "; Secure" : "");
}

}  // namespace ballast::controller
