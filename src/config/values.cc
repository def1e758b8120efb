#include "config/values.h"

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

}  // namespace ballast::config
