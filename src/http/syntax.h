// Internal to src/http (not part of the layer's interface): character classes (RFC 9110 5.6,
// RFC 3986) and the field-line syntax shared by the request, response and chunked-trailer parsers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "http/message.h"

namespace ballast::http::detail {

// One 256-entry table of class bits: a single load and a mask per byte on the hot path.
enum CharClass : uint8_t {
  kTchar = 1 << 0,    // token character (RFC 9110 5.6.2)
  kValue = 1 << 1,    // field-vchar, SP, HTAB, obs-text: field values and reason phrases
  kTarget = 1 << 2,   // request-target: visible ASCII except '#' (a fragment is never sent)
  kRegName = 1 << 3,  // RFC 3986 unreserved / sub-delims (reg-name without pct-encoding)
  kHex = 1 << 4,
  kDigit = 1 << 5,
  kQdtext = 1 << 6,  // quoted-string text (RFC 9110 5.6.4), without the backslash
  kOws = 1 << 7,     // SP, HTAB
};

inline constexpr std::array<uint8_t, 256> kCharClass = [] {
  std::array<uint8_t, 256> t{};
  auto add = [&t](std::string_view chars, uint8_t cls) {
    for (char c : chars) t[static_cast<unsigned char>(c)] |= cls;
  };
  for (int c = 0; c < 256; ++c) {
    uint8_t cls = 0;
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool digit = c >= '0' && c <= '9';
    if (alpha || digit) cls |= kTchar | kRegName;
    if (digit) cls |= kDigit | kHex;
    if ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) cls |= kHex;
    if ((c >= 0x21 && c <= 0x7e) || c >= 0x80 || c == ' ' || c == '\t') cls |= kValue;
    if (c >= 0x21 && c <= 0x7e && c != '#') cls |= kTarget;
    if (c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
        (c >= 0x5d && c <= 0x7e) || c >= 0x80) {
      cls |= kQdtext;
    }
    if (c == ' ' || c == '\t') cls |= kOws;
    t[c] = cls;
  }
  add("!#$%&'*+-.^_`|~", kTchar);
  add("-._~!$&'()*+,;=", kRegName);
  return t;
}();

inline bool is(char c, uint8_t cls) {
  return (kCharClass[static_cast<unsigned char>(c)] & cls) != 0;
}

// Eight bytes at a time (SWAR) for the long runs of a head: false when any byte may be outside
// the class, and the caller then looks at the bytes one by one.
inline uint64_t load8(const char* p) {
  uint64_t w;
  std::memcpy(&w, p, sizeof w);
  return w;
}
inline constexpr uint64_t kOnes = 0x0101010101010101ull;
inline constexpr uint64_t kHighs = 0x8080808080808080ull;
// Some byte of w is below n (n <= 128).
inline constexpr uint64_t hasLess(uint64_t w, uint8_t n) { return (w - kOnes * n) & ~w & kHighs; }
// Some byte of w equals b.
inline constexpr uint64_t hasByte(uint64_t w, uint8_t b) {
  const uint64_t x = w ^ (kOnes * b);
  return (x - kOnes) & ~x & kHighs;
}
// All eight bytes are field-vchar or obs-text (SP/HTAB fall back to the byte loop only if < 0x20).
inline bool plainValue8(uint64_t w) { return (hasLess(w, 0x20) | hasByte(w, 0x7f)) == 0; }
// All eight bytes are request-target characters (0x21-0x7E except '#').
inline bool plainTarget8(uint64_t w) {
  return (hasLess(w, 0x21) | (w & kHighs) | hasByte(w, 0x7f) | hasByte(w, '#')) == 0;
}

inline constexpr std::array<char, 256> kLower = [] {
  std::array<char, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[c] = static_cast<char>(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
  }
  return t;
}();

// name is compared case-insensitively with lower, which must already be lowercase.
inline bool equalsLower(std::string_view name, std::string_view lower) {
  if (name.size() != lower.size()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (kLower[static_cast<unsigned char>(name[i])] != lower[i]) return false;
  }
  return true;
}

inline bool equalsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (kLower[static_cast<unsigned char>(a[i])] != kLower[static_cast<unsigned char>(b[i])]) {
      return false;
    }
  }
  return true;
}

inline std::string_view trimOws(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && is(s[b], kOws)) ++b;
  while (e > b && is(s[e - 1], kOws)) --e;
  return s.substr(b, e - b);
}

inline bool isToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!is(c, kTchar)) return false;
  }
  return true;
}

// Calls fn(element) for each comma-separated element of a list field value, OWS trimmed (elements
// may be empty). Stops and returns false as soon as fn returns false.
template <typename Fn>
bool forEachListElement(std::string_view value, Fn&& fn) {
  size_t start = 0;
  while (true) {
    const size_t comma = value.find(',', start);
    const size_t end = comma == std::string_view::npos ? value.size() : comma;
    if (!fn(trimOws(value.substr(start, end - start)))) return false;
    if (comma == std::string_view::npos) return true;
    start = comma + 1;
  }
}

FieldKind fieldKind(std::string_view name);

// Parses one field line (without its CRLF, n > 0, line[n] == '\r') into *f: name, trimmed value,
// kind. On a syntax error fills *err (status 400) and returns false.
bool parseFieldLine(const char* line, size_t n, Field* f, ParseError* err);

// uri-host [ ":" port ] (RFC 3986; RFC 9110 7.2): reg-name, IPv4, [IPv6] or [IPvFuture], port of
// 1-5 digits <= 65535. The host must not be empty.
bool validAuthority(std::string_view s);

// Content-Length value: 1*DIGIT, or a comma list of identical values. Fails on anything else and
// on values above 2^63-1.
bool parseContentLength(std::string_view value, uint64_t* out);

// Accumulates the transfer codings of one message over all its Transfer-Encoding fields.
struct TransferCodings {
  int chunked_count = 0;
  bool last_is_chunked = false;
  bool unknown = false;  // a coding other than gzip, deflate, compress, x-gzip, x-compress, chunked
  bool split = false;    // the codings before chunked span several fields
  size_t first_field = 0;
  const char* before_begin = nullptr;
  const char* before_end = nullptr;

  // Adds the codings of field number index. Returns a reason on a syntax error, else nullptr.
  const char* add(std::string_view value, size_t index);
  std::string_view before() const {
    return before_begin ? std::string_view(before_begin, before_end - before_begin)
                        : std::string_view();
  }
};

// Connection field options (RFC 9110 7.6.1).
struct ConnectionOptions {
  bool close = false;
  bool keep_alive = false;
  bool upgrade = false;
  bool other = false;  // names a field to remove
  // Adds the tokens of one Connection value; false when an element is not a token.
  bool add(std::string_view value);
};

// True when some Connection field in fields lists name.
bool connectionNames(const std::vector<Field>& fields, std::string_view name);

// Marks drop on every field named by a Connection option.
void dropConnectionNamed(std::vector<Field>& fields);

}  // namespace ballast::http::detail
