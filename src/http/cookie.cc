#include "http/cookie.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>

#include "http/syntax.h"

namespace ballast::http {
namespace {

// Whitespace around cookie names, values and attributes is SP and HTAB (OWS).
using detail::equalsNoCase;
using detail::trimOws;

bool isDigit(char c) { return c >= '0' && c <= '9'; }

// The digits a token starts with (1 to max of them, followed by nothing or a non-digit).
std::optional<int> leadingNumber(std::string_view token, size_t min, size_t max) {
  size_t n = 0;
  while (n < token.size() && isDigit(token[n])) ++n;
  if (n < min || n > max) return std::nullopt;
  int v = 0;
  std::from_chars(token.data(), token.data() + n, v);
  return v;
}

// hms-time = time-field ":" time-field ":" time-field (1*2DIGIT each), then a non-digit or the end.
bool parseTime(std::string_view t, int* hour, int* minute, int* second) {
  int v[3] = {};
  size_t p = 0;
  for (int k = 0; k < 3; ++k) {
    size_t n = 0;
    while (p + n < t.size() && n < 3 && isDigit(t[p + n])) ++n;
    if (n < 1 || n > 2) return false;
    std::from_chars(t.data() + p, t.data() + p + n, v[k]);
    p += n;
    if (k < 2) {
      if (p >= t.size() || t[p] != ':') return false;
      ++p;
    }
  }
  *hour = v[0];
  *minute = v[1];
  *second = v[2];
  return true;
}

// RFC 6265 5.1.1's delimiter: everything but digits, letters, ':' and the non-ASCII.
bool isDateDelimiter(char c) {
  auto u = static_cast<unsigned char>(c);
  return u == 0x09 || (u >= 0x20 && u <= 0x2f) || (u >= 0x3b && u <= 0x40) ||
         (u >= 0x5b && u <= 0x60) || (u >= 0x7b && u <= 0x7e);
}

}  // namespace

std::optional<std::string_view> cookieIn(std::string_view cookie_field, std::string_view name) {
  std::string_view rest = cookie_field;
  while (!rest.empty()) {
    size_t end = rest.find(';');
    std::string_view pair = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    size_t eq = pair.find('=');
    if (eq != std::string_view::npos && trimOws(pair.substr(0, eq)) == name)
      return trimOws(pair.substr(eq + 1));
  }
  return std::nullopt;
}

std::string_view setCookieName(std::string_view field) {
  std::string_view pair = field.substr(0, field.find(';'));
  size_t eq = pair.find('=');
  return eq == std::string_view::npos ? std::string_view() : trimOws(pair.substr(0, eq));
}

std::optional<SetCookie> parseSetCookie(std::string_view field, std::time_t now) {
  size_t semi = field.find(';');
  std::string_view pair = field.substr(0, semi);
  size_t eq = pair.find('=');
  if (eq == std::string_view::npos) return std::nullopt;
  SetCookie out;
  out.name = trimOws(pair.substr(0, eq));
  out.value = trimOws(pair.substr(eq + 1));
  if (out.name.empty()) return std::nullopt;
  std::string_view attrs = semi == std::string_view::npos ? std::string_view() : field.substr(semi + 1);
  bool has_max_age = false;
  while (!attrs.empty()) {
    size_t end = attrs.find(';');
    std::string_view attr = attrs.substr(0, end);
    attrs = end == std::string_view::npos ? std::string_view() : attrs.substr(end + 1);
    size_t aeq = attr.find('=');
    std::string_view aname = trimOws(attr.substr(0, aeq));
    std::string_view avalue = aeq == std::string_view::npos ? std::string_view() : trimOws(attr.substr(aeq + 1));
    if (equalsNoCase(aname, "max-age")) {
      // RFC 6265 5.2.2: a leading '-' or a digit, then digits; the last one counts, and it
      // takes precedence over Expires.
      std::string_view digits = avalue;
      bool negative = !digits.empty() && digits.front() == '-';
      if (negative) digits.remove_prefix(1);
      if (digits.empty() || !std::all_of(digits.begin(), digits.end(), isDigit)) continue;
      has_max_age = true;
      out.expires_now = negative || digits.find_first_not_of('0') == std::string_view::npos;
    } else if (equalsNoCase(aname, "expires") && !has_max_age) {
      if (std::optional<std::time_t> t = parseCookieDate(avalue)) out.expires_now = *t <= now;
    }
  }
  return out;
}

std::optional<std::time_t> parseCookieDate(std::string_view text) {
  static constexpr std::array<std::string_view, 12> kMonths = {
      "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
  std::optional<int> day, month, year;
  int hour = -1, minute = -1, second = -1;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && isDateDelimiter(text[i])) ++i;
    size_t start = i;
    while (i < text.size() && !isDateDelimiter(text[i])) ++i;
    std::string_view token = text.substr(start, i - start);
    if (token.empty()) continue;
    if (hour < 0 && parseTime(token, &hour, &minute, &second)) continue;
    if (!day) {
      if (auto d = leadingNumber(token, 1, 2)) {
        day = d;
        continue;
      }
    }
    if (!month && token.size() >= 3) {
      bool found = false;
      for (size_t k = 0; k < kMonths.size(); ++k)
        if (equalsNoCase(token.substr(0, 3), kMonths[k])) {
          month = static_cast<int>(k);
          found = true;
          break;
        }
      if (found) continue;
    }
    if (!year) {
      if (auto y = leadingNumber(token, 2, 4)) year = y;
    }
  }
  if (!day || !month || !year || hour < 0) return std::nullopt;
  int y = *year;
  if (y >= 70 && y <= 99) y += 1900;
  if (y >= 0 && y <= 69) y += 2000;
  if (*day < 1 || *day > 31 || y < 1601 || hour > 23 || minute > 59 || second > 59)
    return std::nullopt;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = *month;
  tm.tm_mday = *day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  return ::timegm(&tm);
}

}  // namespace ballast::http
