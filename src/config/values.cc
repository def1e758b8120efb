#include "config/values.h"

#include <arpa/inet.h>

#include <algorithm>
#include <limits>

namespace ballast::config {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

bool isDigit(char c) { return c >= '0' && c <= '9'; }

// Saturating a * b + c for the small, non-negative operands used here.
uint64_t mulAdd(uint64_t a, uint64_t b, uint64_t c) {
  if (b != 0 && a > (kMax - c) / b) return kMax;
  return a * b + c;
}

// Splits "12.5ms" into the number ("12.5") and the rest ("ms").
std::string_view leadingNumber(std::string_view text, std::string_view* rest) {
  size_t i = 0;
  while (i < text.size() && (isDigit(text[i]) || text[i] == '.')) ++i;
  *rest = text.substr(i);
  return text.substr(0, i);
}

}  // namespace

bool parseUnsigned(std::string_view text, uint64_t* out) {
  if (text.empty()) return false;
  uint64_t value = 0;
  for (char c : text) {
    if (!isDigit(c)) return false;
    value = mulAdd(value, 10, static_cast<uint64_t>(c - '0'));
  }
  *out = value;
  return true;
}

bool parseBool(std::string_view text, bool* out) {
  if (text == "true" || text == "True" || text == "TRUE") {
    *out = true;
    return true;
  }
  if (text == "false" || text == "False" || text == "FALSE") {
    *out = false;
    return true;
  }
  return false;
}

bool parseDuration(std::string_view text, Duration* out, std::string* error) {
  static constexpr const char* kSyntax = "expected a duration with a unit, e.g. 300ms, 2s, 5m";
  if (!text.empty() && text.front() == '-') {
    Duration ignored;
    std::string unused;
    *error = parseDuration(text.substr(1), &ignored, &unused) ? "a duration cannot be negative"
                                                               : kSyntax;
    return false;
  }
  std::string_view unit;
  std::string_view number = leadingNumber(text, &unit);

  uint64_t unit_ms = 0;
  if (unit == "ms") {
    unit_ms = 1;
  } else if (unit == "s") {
    unit_ms = 1000;
  } else if (unit == "m") {
    unit_ms = 60 * 1000;
  } else if (unit == "h") {
    unit_ms = 60 * 60 * 1000;
  } else {
    *error = kSyntax;
    return false;
  }

  // number = digits [ "." digits ]
  size_t dot = number.find('.');
  std::string_view whole = number.substr(0, dot);
  std::string_view fraction =
      dot == std::string_view::npos ? std::string_view{} : number.substr(dot + 1);
  uint64_t whole_value = 0;
  uint64_t fraction_value = 0;
  if (!parseUnsigned(whole, &whole_value) ||
      (dot != std::string_view::npos && !parseUnsigned(fraction, &fraction_value)) ||
      fraction.size() > 9) {
    *error = kSyntax;
    return false;
  }

  // Exact arithmetic: fraction_value * unit_ms < 10^9 * 3.6e6 fits easily in 64 bits.
  uint64_t scale = 1;
  for (size_t i = 0; i < fraction.size(); ++i) scale *= 10;
  uint64_t fraction_ms_scaled = fraction_value * unit_ms;
  if (fraction_ms_scaled % scale != 0) {
    *error = "durations have millisecond resolution";
    return false;
  }
  uint64_t total = mulAdd(whole_value, unit_ms, fraction_ms_scaled / scale);
  constexpr uint64_t kMaxMs = static_cast<uint64_t>(std::numeric_limits<Duration::rep>::max());
  *out = Duration(static_cast<Duration::rep>(total > kMaxMs ? kMaxMs : total));
  return true;
}

bool parseSize(std::string_view text, uint64_t* out) {
  size_t i = 0;
  while (i < text.size() && isDigit(text[i])) ++i;
  std::string_view unit = text.substr(i);
  uint64_t multiplier = 0;
  if (unit.empty()) {
    multiplier = 1;
  } else if (unit == "KiB") {
    multiplier = 1024;
  } else if (unit == "MiB") {
    multiplier = 1024 * 1024;
  } else {
    return false;
  }
  uint64_t value = 0;
  if (!parseUnsigned(text.substr(0, i), &value)) return false;
  *out = mulAdd(value, multiplier, 0);
  return true;
}

std::string formatDuration(Duration d) {
  auto ms = d.count();
  if (ms == 0) return "0s";
  if (ms % (60 * 60 * 1000) == 0) return std::to_string(ms / (60 * 60 * 1000)) + "h";
  if (ms % (60 * 1000) == 0) return std::to_string(ms / (60 * 1000)) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string formatSize(uint64_t bytes) {
  if (bytes != 0 && bytes % (1024 * 1024) == 0)
    return std::to_string(bytes / (1024 * 1024)) + "MiB";
  if (bytes != 0 && bytes % 1024 == 0) return std::to_string(bytes / 1024) + "KiB";
  return std::to_string(bytes);
}

bool isValidName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || isDigit(c) || c == '_' ||
              c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool isValidKeyPrefix(std::string_view prefix) {
  if (prefix.empty() || prefix.size() > 64) return false;
  for (char c : prefix) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || isDigit(c) || c == '_' ||
              c == '.' || c == '-' || c == ':';
    if (!ok) return false;
  }
  return true;
}

std::string_view stripTrailingWhitespace(std::string_view text) {
  size_t end = text.size();
  while (end > 0 && (text[end - 1] == ' ' || text[end - 1] == '\t' || text[end - 1] == '\r' ||
                     text[end - 1] == '\n' || text[end - 1] == '\v' || text[end - 1] == '\f')) {
    --end;
  }
  return text.substr(0, end);
}

bool isToken(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || isDigit(c) ||
              std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

bool isValidHost(std::string_view text) {
  std::string_view host = text;
  std::string_view port;
  bool has_port = false;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return false;
    std::string literal(text.substr(1, close - 1));
    in6_addr address{};
    if (literal.empty() || ::inet_pton(AF_INET6, literal.c_str(), &address) != 1) return false;
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      has_port = true;
      port = rest.substr(1);
    }
  } else {
    size_t colon = text.find(':');
    if (colon != std::string_view::npos) {
      has_port = true;
      host = text.substr(0, colon);
      port = text.substr(colon + 1);  // a second ':' fails the digit check below
    }
    if (host.empty() || host.size() > 255) return false;
    for (char c : host) {
      bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || isDigit(c) || c == '-' ||
                c == '.' || c == '_' || c == '~';
      if (!ok) return false;
    }
  }
  if (has_port) {
    uint64_t value = 0;
    if (!parseUnsigned(port, &value) || value < 1 || value > 65535) return false;
  }
  return true;
}

bool parseRequestLine(std::string_view text, std::string* method, std::string* path,
                      std::string* error) {
  size_t space = text.find(' ');
  if (space == std::string_view::npos || space == 0 || space + 1 == text.size()) {
    *error = "expected \"METHOD /path\", e.g. \"GET /health\"";
    return false;
  }
  std::string_view m = text.substr(0, space);
  std::string_view p = text.substr(space + 1);
  if (!isToken(m)) {
    *error = "the method must be a token, e.g. GET or HEAD";
    return false;
  }
  bool visible = std::all_of(p.begin(), p.end(), [](char c) { return c > ' ' && c < 127; });
  if (p.front() != '/' || !visible || p.find('#') != std::string_view::npos) {
    *error = "the path must start with / and contain only visible ASCII characters, no spaces or #";
    return false;
  }
  *method = std::string(m);
  *path = std::string(p);
  return true;
}

bool parseStatusRange(std::string_view text, std::pair<int, int>* out) {
  if (text.size() != 3) return false;
  if (text.substr(1) == "xx") {
    if (text[0] < '2' || text[0] > '5') return false;
    int base = (text[0] - '0') * 100;
    *out = {base, base + 99};
    return true;
  }
  uint64_t code = 0;
  if (!parseUnsigned(text, &code) || code < 100 || code > 599) return false;
  *out = {static_cast<int>(code), static_cast<int>(code)};
  return true;
}

}  // namespace ballast::config
