#include "http/syntax.h"

#include <limits>

namespace ballast::http::detail {
namespace {

bool validIpv4(std::string_view s) {
  int octets = 0;
  size_t i = 0;
  while (true) {
    const size_t start = i;
    unsigned value = 0;
    while (i < s.size() && is(s[i], kDigit) && i - start < 3) value = value * 10 + (s[i++] - '0');
    const size_t len = i - start;
    // dec-octet: no leading zero, at most 255.
    if (len == 0 || value > 255 || (len > 1 && s[start] == '0')) return false;
    if (++octets == 4) return i == s.size();
    if (i == s.size() || s[i] != '.') return false;
    ++i;
  }
}

bool validIpv6(std::string_view s) {
  int groups = 0;
  bool elided = false;  // "::" seen
  size_t i = 0;
  const size_t n = s.size();
  if (n >= 2 && s[0] == ':' && s[1] == ':') {
    elided = true;
    i = 2;
  }
  while (i < n) {
    const size_t start = i;
    while (i < n && is(s[i], kHex) && i - start < 5) ++i;
    const size_t len = i - start;
    if (len == 0) return false;
    if (i < n && s[i] == '.') {  // trailing IPv4 (two groups)
      if (!validIpv4(s.substr(start))) return false;
      groups += 2;
      break;
    }
    if (len > 4) return false;
    ++groups;
    if (i == n) break;
    if (s[i] != ':') return false;
    ++i;
    if (i < n && s[i] == ':') {
      if (elided) return false;
      elided = true;
      ++i;
    } else if (i == n) {
      return false;  // a single trailing colon
    }
  }
  return elided ? groups <= 7 : groups == 8;
}

bool validIpvFuture(std::string_view s) {
  // "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
  if (s.size() < 4 || (s[0] != 'v' && s[0] != 'V')) return false;
  size_t i = 1;
  while (i < s.size() && is(s[i], kHex)) ++i;
  if (i == 1 || i >= s.size() || s[i] != '.') return false;
  ++i;
  if (i == s.size()) return false;
  for (; i < s.size(); ++i) {
    if (!is(s[i], kRegName) && s[i] != ':') return false;
  }
  return true;
}

bool validRegName(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (is(s[i], kRegName)) continue;
    if (s[i] == '%' && i + 2 < s.size() && is(s[i + 1], kHex) && is(s[i + 2], kHex)) {
      i += 2;
      continue;
    }
    return false;
  }
  return true;
}

bool validPort(std::string_view s) {
  if (s.empty() || s.size() > 5) return false;
  unsigned value = 0;
  for (char c : s) {
    if (!is(c, kDigit)) return false;
    value = value * 10 + (c - '0');
  }
  return value <= 65535;
}

bool isKnownCoding(std::string_view c) {
  return equalsLower(c, "gzip") || equalsLower(c, "deflate") || equalsLower(c, "compress") ||
         equalsLower(c, "x-gzip") || equalsLower(c, "x-compress");
}

// name equals lower (lower case, with '-') when '_' is read as '-', and has a '_'.
bool underscoredAs(std::string_view name, std::string_view lower) {
  bool underscore = false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (c == '_') {
      underscore = true;
      c = '-';
    } else if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
    if (c != lower[i]) return false;
  }
  return underscore;
}

FieldKind lookalikeKind(std::string_view name) {
  if (name.find('_') == std::string_view::npos) return FieldKind::Other;
  for (std::string_view managed : {"keep-alive", "content-length", "x-forwarded-for",
                                   "proxy-connection", "transfer-encoding", "x-forwarded-proto"}) {
    if (managed.size() == name.size() && underscoredAs(name, managed)) return FieldKind::Lookalike;
  }
  return FieldKind::Other;
}

}  // namespace

FieldKind fieldKind(std::string_view name) {
  switch (name.size()) {
    case 2:
      if (equalsLower(name, "te")) return FieldKind::Te;
      break;
    case 4:
      if (equalsLower(name, "host")) return FieldKind::Host;
      if (equalsLower(name, "date")) return FieldKind::Date;
      break;
    case 6:
      if (equalsLower(name, "expect")) return FieldKind::Expect;
      break;
    case 7:
      if (equalsLower(name, "upgrade")) return FieldKind::Upgrade;
      if (equalsLower(name, "trailer")) return FieldKind::Trailer;
      break;
    case 10:
      if (equalsLower(name, "connection")) return FieldKind::Connection;
      if (equalsLower(name, "keep-alive")) return FieldKind::KeepAlive;
      return lookalikeKind(name);
    case 14:
      if (equalsLower(name, "content-length")) return FieldKind::ContentLength;
      return lookalikeKind(name);
    case 15:
      if (equalsLower(name, "x-forwarded-for")) return FieldKind::XForwardedFor;
      return lookalikeKind(name);
    case 16:
      if (equalsLower(name, "proxy-connection")) return FieldKind::ProxyConnection;
      return lookalikeKind(name);
    case 17:
      if (equalsLower(name, "transfer-encoding")) return FieldKind::TransferEncoding;
      if (equalsLower(name, "x-forwarded-proto")) return FieldKind::XForwardedProto;
      return lookalikeKind(name);
    default:
      break;
  }
  return FieldKind::Other;
}

bool parseFieldLine(const char* line, size_t n, Field* f, ParseError* err) {
  if (is(line[0], kOws)) {
    *err = {400, "obs-fold or whitespace at start of field line"};
    return false;
  }
  // line[n] is the CR of the line's CRLF: neither tchar nor OWS, so it ends these scans.
  size_t i = 0;
  while (is(line[i], kTchar)) ++i;
  if (i == n || line[i] != ':') {
    if (i < n && is(line[i], kOws)) {
      *err = {400, "whitespace between field name and colon"};
    } else if (i < n && line[i] == '\r') {
      *err = {400, "bare CR in header section"};
    } else if (i == n) {
      *err = {400, "field line without colon"};
    } else {
      *err = {400, "invalid character in field name"};
    }
    return false;
  }
  if (i == 0) {
    *err = {400, "empty field name"};
    return false;
  }
  f->name = std::string_view(line, i);
  size_t j = i + 1;
  while (is(line[j], kOws)) ++j;
  const size_t value_start = j;
  // Most bytes of a head are in values: eight at a time, one by one only around SP/HTAB/errors.
  while (j < n) {
    if (j + 8 <= n && plainValue8(load8(line + j))) {
      j += 8;
      continue;
    }
    if (!is(line[j], kValue)) {
      *err = {400,
              line[j] == '\r' ? "bare CR in header section" : "invalid character in field value"};
      return false;
    }
    ++j;
  }
  size_t value_end = n;
  while (value_end > value_start && is(line[value_end - 1], kOws)) --value_end;
  f->value = std::string_view(line + value_start, value_end - value_start);
  f->kind = fieldKind(f->name);
  f->drop = false;
  return true;
}

bool validAuthority(std::string_view s) {
  if (s.empty()) return false;
  std::string_view port;
  bool has_port = false;
  if (s[0] == '[') {
    const size_t close = s.find(']');
    if (close == std::string_view::npos) return false;
    const std::string_view literal = s.substr(1, close - 1);
    const bool ok = (!literal.empty() && (literal[0] == 'v' || literal[0] == 'V'))
                        ? validIpvFuture(literal)
                        : validIpv6(literal);
    if (!ok) return false;
    if (close + 1 < s.size()) {
      if (s[close + 1] != ':') return false;
      has_port = true;
      port = s.substr(close + 2);
    }
  } else {
    const size_t colon = s.find(':');
    const std::string_view host = s.substr(0, colon);
    if (host.empty() || !validRegName(host)) return false;
    if (colon != std::string_view::npos) {
      has_port = true;
      port = s.substr(colon + 1);
    }
  }
  return !has_port || validPort(port);
}

bool parseContentLength(std::string_view value, uint64_t* out) {
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  bool first = true;
  uint64_t result = 0;
  const bool ok = forEachListElement(value, [&](std::string_view e) {
    if (e.empty() || e.size() > 19) return false;
    uint64_t v = 0;
    for (char c : e) {
      if (!is(c, kDigit)) return false;
      v = v * 10 + static_cast<uint64_t>(c - '0');  // 19 digits cannot overflow uint64
    }
    if (v > kMax) return false;
    if (!first && v != result) return false;
    result = v;
    first = false;
    return true;
  });
  if (!ok) return false;
  *out = result;
  return true;
}

const char* TransferCodings::add(std::string_view value, size_t index) {
  if (value.empty()) return "empty Transfer-Encoding";
  const char* reason = nullptr;
  forEachListElement(value, [&](std::string_view e) {
    if (e.empty()) {
      reason = "empty transfer coding";
      return false;
    }
    if (!isToken(e)) {  // parameters included: no coding we accept takes any
      reason = "invalid transfer coding";
      return false;
    }
    if (equalsLower(e, "chunked")) {
      ++chunked_count;
      last_is_chunked = true;
      return true;
    }
    last_is_chunked = false;
    if (!isKnownCoding(e)) unknown = true;
    if (chunked_count > 0) return true;  // after a chunked: the message is rejected anyway
    if (before_begin == nullptr) {
      before_begin = e.data();
      first_field = index;
    } else if (index != first_field) {
      split = true;
    }
    before_end = e.data() + e.size();
    return true;
  });
  return reason;
}

bool ConnectionOptions::add(std::string_view value) {
  return forEachListElement(value, [&](std::string_view e) {
    if (e.empty()) return true;  // RFC 9110 5.6.1: empty elements are ignored
    if (!isToken(e)) return false;
    if (equalsLower(e, "close")) {
      close = true;
    } else if (equalsLower(e, "keep-alive")) {
      keep_alive = true;
    } else if (equalsLower(e, "upgrade")) {
      upgrade = true;
    } else {
      other = true;
    }
    return true;
  });
}

bool connectionNames(const std::vector<Field>& fields, std::string_view name) {
  for (const Field& c : fields) {
    if (c.kind != FieldKind::Connection) continue;
    bool found = false;
    forEachListElement(c.value, [&](std::string_view e) {
      found = equalsNoCase(e, name);
      return !found;
    });
    if (found) return true;
  }
  return false;
}

void dropConnectionNamed(std::vector<Field>& fields) {
  for (const Field& c : fields) {
    if (c.kind != FieldKind::Connection) continue;
    forEachListElement(c.value, [&](std::string_view e) {
      if (e.empty()) return true;
      for (Field& f : fields) {
        if (equalsNoCase(f.name, e)) f.drop = true;
      }
      return true;
    });
  }
}

}  // namespace ballast::http::detail
