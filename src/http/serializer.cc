// Normalised heads for forwarding, and Ballast's own canned responses.
#include "http/serializer.h"

#include <array>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "http/cookie.h"
#include "http/syntax.h"

namespace ballast::http {
namespace {

// Appends to a fixed buffer; remembers an overflow instead of checking at every call site.
class Writer {
 public:
  Writer(char* out, size_t cap) : out_(out), cap_(cap) {}

  void put(std::string_view s) {
    if (s.empty()) return;
    if (s.size() > cap_ - len_) {
      overflow_ = true;
      return;
    }
    std::memcpy(out_ + len_, s.data(), s.size());
    len_ += s.size();
  }
  void putNumber(uint64_t v) {
    char buf[24];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    put(std::string_view(buf, static_cast<size_t>(r.ptr - buf)));
  }
  void putField(std::string_view name, std::string_view value) {
    put(name);
    put(": ");
    put(value);
    put("\r\n");
  }
  size_t result() const { return overflow_ ? 0 : len_; }

 private:
  char* out_;
  size_t cap_;
  size_t len_ = 0;
  bool overflow_ = false;
};

void putTransferEncoding(Writer& w, std::string_view before_chunked) {
  w.put("Transfer-Encoding: ");
  if (!before_chunked.empty()) {
    w.put(before_chunked);
    w.put(", ");
  }
  w.put("chunked\r\n");
}

struct Reason {
  int status;
  const char* phrase;
};

// RFC 9110 section 15.
constexpr Reason kReasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {103, "Early Hints"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {305, "Use Proxy"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Content"},
    {425, "Too Early"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {451, "Unavailable For Legal Reasons"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
    {511, "Network Authentication Required"},
};

constexpr size_t constLength(const char* s) {
  size_t n = 0;
  while (s[n] != '\0') ++n;
  return n;
}

// A complete error response, built at compile time: no allocation, cannot fail at run time.
struct Canned {
  int status = 0;
  std::array<char, 192> text{};
  size_t len = 0;

  constexpr void put(const char* s) {
    for (size_t i = 0; s[i] != '\0'; ++i) text[len++] = s[i];
  }
  constexpr void putNumber(size_t v) {
    char digits[20] = {};
    size_t n = 0;
    do {
      digits[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (n > 0) text[len++] = digits[--n];
  }
};

constexpr Canned makeCanned(int status, const char* phrase) {
  Canned c;
  c.status = status;
  c.put("HTTP/1.1 ");
  c.putNumber(static_cast<size_t>(status));
  c.put(" ");
  c.put(phrase);
  c.put("\r\nContent-Type: text/plain\r\nContent-Length: ");
  c.putNumber(constLength(phrase) + 1);
  c.put("\r\nConnection: close\r\n\r\n");
  c.put(phrase);
  c.put("\n");
  return c;
}

constexpr size_t kErrorCount = [] {
  size_t n = 0;
  for (const Reason& r : kReasons) n += r.status >= 400 ? 1 : 0;
  return n;
}();

// Every 4xx and 5xx status of kReasons.
constexpr std::array<Canned, kErrorCount> kCanned = [] {
  std::array<Canned, kErrorCount> all{};
  size_t n = 0;
  for (const Reason& r : kReasons) {
    if (r.status >= 400) all[n++] = makeCanned(r.status, r.phrase);
  }
  return all;
}();

}  // namespace

size_t serializeRequestHead(const RequestHead& head, const RequestForwarding& fwd, char* out,
                            size_t cap) {
  Writer w(out, cap);
  w.put(head.method);
  w.put(" ");
  if (!head.forward_target.empty() && head.forward_target[0] == '?') w.put("/");
  w.put(head.forward_target);
  w.put(" HTTP/1.1\r\n");
  w.putField("Host", head.authority);
  bool has_forwarded_fields = false;
  for (const Field& f : head.fields) {
    const bool forwarded_kind =
        f.kind == FieldKind::XForwardedFor || f.kind == FieldKind::XForwardedProto;
    has_forwarded_fields |= forwarded_kind;
    if (!f.drop) {
      w.putField(f.name, f.value);
    } else if (forwarded_kind && !fwd.add_forwarded &&
               !detail::connectionNames(head.fields, f.name)) {
      w.putField(f.name, f.value);  // passed through untouched, as configured
    }
  }
  if (fwd.add_forwarded) {
    // Received X-Forwarded-For values first (unless Connection made them hop-by-hop), then ours.
    const bool keep_received =
        has_forwarded_fields && !detail::connectionNames(head.fields, "X-Forwarded-For");
    bool first = true;
    auto append = [&](std::string_view v) {
      if (v.empty()) return;
      w.put(first ? std::string_view("X-Forwarded-For: ") : std::string_view(", "));
      w.put(v);
      first = false;
    };
    if (keep_received) {
      for (const Field& f : head.fields) {
        if (f.kind == FieldKind::XForwardedFor) append(f.value);
      }
    }
    append(fwd.client_ip);
    if (!first) w.put("\r\n");
    if (!fwd.proto.empty()) w.putField("X-Forwarded-Proto", fwd.proto);
  }
  if (head.body == BodyKind::ContentLength) {
    w.put("Content-Length: ");
    w.putNumber(head.content_length);
    w.put("\r\n");
  } else if (head.body == BodyKind::Chunked) {
    putTransferEncoding(w, head.transfer_codings_before_chunked);
  }
  if (head.upgrade) {
    w.put("Connection: upgrade\r\n");
    w.putField("Upgrade", head.upgrade_value);
  }
  w.put("\r\n");
  return w.result();
}

size_t serializeResponseHead(const ResponseHead& head, const ResponseForwarding& fwd, char* out,
                             size_t cap) {
  Writer w(out, cap);
  w.put("HTTP/1.1 ");
  w.putNumber(static_cast<uint64_t>(head.status));
  w.put(" ");
  w.put(head.reason);
  w.put("\r\n");
  for (const Field& f : head.fields) {
    if (f.drop) continue;
    if (!fwd.own_cookie.empty() && detail::equalsNoCase(f.name, "set-cookie") &&
        setCookieName(f.value) == fwd.own_cookie)
      continue;
    w.putField(f.name, f.value);
  }
  // Where a received Date would be, for the head to read back the same.
  if (!head.has_date && head.status >= 200) w.put(dateField());
  // RFC 9110 8.6: no Content-Length in 1xx and 204 responses.
  if (head.has_content_length && head.status >= 200 && head.status != 204) {
    w.put("Content-Length: ");
    w.putNumber(head.content_length);
    w.put("\r\n");
  }
  if (head.body == BodyKind::Chunked && !fwd.dechunk) {
    putTransferEncoding(w, head.transfer_codings_before_chunked);
  }
  if (head.upgrade) {
    w.put("Connection: upgrade\r\n");
    w.putField("Upgrade", head.upgrade_value);
  } else if (fwd.close) {
    w.put("Connection: close\r\n");
  } else if (fwd.client_http10) {
    w.put("Connection: keep-alive\r\n");
  }
  w.put(fwd.extra_fields);
  w.put("\r\n");
  return w.result();
}

std::string_view dateField() {
  // The C library's day and month names follow the locale; HTTP's are fixed.
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  thread_local time_t formatted_at = -1;
  thread_local char text[48];
  thread_local size_t length = 0;
  time_t now = ::time(nullptr);
  if (now != formatted_at) {
    struct tm t {};
    ::gmtime_r(&now, &t);
    int n = std::snprintf(text, sizeof text, "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n",
                          kDays[t.tm_wday], t.tm_mday, kMonths[t.tm_mon], t.tm_year + 1900,
                          t.tm_hour, t.tm_min, t.tm_sec);
    length = n > 0 && static_cast<size_t>(n) < sizeof text ? static_cast<size_t>(n) : 0;
    formatted_at = now;
  }
  return std::string_view(text, length);
}

size_t writeChunkHeader(size_t n, char* out) {
  char* p = std::to_chars(out, out + 16, n, 16).ptr;  // 16 hex digits hold any size_t
  *p++ = '\r';
  *p++ = '\n';
  return static_cast<size_t>(p - out);
}

std::string_view errorResponse(int status) {
  for (const Canned& c : kCanned) {
    if (c.status == status) return std::string_view(c.text.data(), c.len);
  }
  return errorResponse(500);  // a status Ballast does not send: the generic server error
}

const char* reasonPhrase(int status) {
  for (const Reason& r : kReasons) {
    if (r.status == status) return r.phrase;
  }
  switch (status / 100) {  // RFC 9110 15: the class names
    case 1:
      return "Informational";
    case 2:
      return "Successful";
    case 3:
      return "Redirection";
    case 4:
      return "Client Error";
    case 5:
      return "Server Error";
    default:
      return "Unknown";
  }
}

}  // namespace ballast::http
