// Cookies (RFC 6265) as a proxy reads them: the value of a named cookie in a Cookie field, and
// the name and value a Set-Cookie field sets (and whether it deletes the cookie).
#pragma once

#include <ctime>
#include <optional>
#include <string_view>

namespace ballast::http {

// The value of the cookie `name` in one Cookie field value ("a=1; b=2"), or nullopt. Names
// compare exactly (case matters); whitespace (SP, HTAB) around names and values is ignored.
std::optional<std::string_view> cookieIn(std::string_view cookie_field, std::string_view name);

struct SetCookie {
  std::string_view name;
  std::string_view value;
  // Max-Age of zero or less, or an Expires date not after now: the client drops the cookie.
  bool expires_now = false;
};
// The name a Set-Cookie field value sets (whitespace trimmed; empty when it has no '=').
std::string_view setCookieName(std::string_view field);

// A Set-Cookie field value (RFC 6265 5.2: whitespace around name and value ignored), or nullopt
// when its first pair has no '=' or an empty name. now: for Expires.
std::optional<SetCookie> parseSetCookie(std::string_view field, std::time_t now);

// An RFC 6265 5.1.1 cookie-date ("Thu, 01 Jan 1970 00:00:00 GMT", "Thu, 01-Jan-70 ..."), or
// nullopt when it is not one.
std::optional<std::time_t> parseCookieDate(std::string_view text);

}  // namespace ballast::http
