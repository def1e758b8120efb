// Dashboard sessions: a browser logs in once with a token and then carries a random session id in
// an HttpOnly cookie, so the token never sits in the page's storage. Kept in memory: a controller
// restart logs everyone out. Thread-compatible (the caller holds its lock).
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>

namespace ballast::controller {

class Sessions {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr const char* kCookie = "ballast_session";

  // idle_timeout: a session unused for this long ends; max_sessions: the oldest-used goes first.
  explicit Sessions(std::chrono::seconds idle_timeout = std::chrono::hours(12),
                    size_t max_sessions = 1000)
      : idle_timeout_(idle_timeout), max_sessions_(max_sessions) {}

  // A new session for a role ("admin", "readonly"): its id (64 hex digits from the CSPRNG).
  std::string create(const std::string& role, Clock::time_point now = Clock::now());
  // The role of a live session (and marks it used), or nullopt.
  std::optional<std::string> find(const std::string& id, Clock::time_point now = Clock::now());
  void remove(const std::string& id);
  size_t size() const { return sessions_.size(); }

  // The session id in a Cookie header, or "".
  static std::string idFromCookieHeader(const std::string& header);
  // Set-Cookie values: a new session (secure: only over HTTPS) and its removal.
  std::string setCookie(const std::string& id, bool secure) const;
  static std::string clearCookie(bool secure);

 private:
  struct Session {
    std::string role;
    Clock::time_point last_used;
  };
  std::chrono::seconds idle_timeout_;
  size_t max_sessions_;
  std::map<std::string, Session> sessions_;
};

}  // namespace ballast::controller
