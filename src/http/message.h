// HTTP/1.1 message heads as the parser sees them (RFC 9110, RFC 9112). No I/O here.
// All string_views point into the caller's buffer: they stay valid until that buffer is consumed.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace ballast::http {

enum class Version : uint8_t { Http10, Http11 };

enum class Method : uint8_t { Get, Head, Post, Put, Delete, Options, Connect, Trace, Patch, Other };

// How the body of a message is delimited (RFC 9112 section 6.3).
enum class BodyKind : uint8_t {
  None,           // no body (no framing fields, HEAD response, 1xx/204/304, ...)
  ContentLength,  // exactly content_length bytes
  Chunked,        // chunked transfer coding, final coding
  UntilClose,     // responses only: body ends when the server closes
};

// Field names the proxy acts on. Everything else is Other and forwarded as is.
enum class FieldKind : uint8_t {
  Other,
  Host,
  ContentLength,
  TransferEncoding,
  Connection,
  KeepAlive,
  ProxyConnection,
  Te,
  Upgrade,
  Trailer,
  Expect,
  XForwardedFor,
  XForwardedProto,
  Date,
  // A name that is one of the fields above that have a '-' with '_' instead (Transfer_Encoding,
  // X_Forwarded_For): servers behind CGI-style gateways read both the same way, so a client could
  // smuggle framing or a forged client address past the proxy. Dropped from requests.
  Lookalike,
};

struct Field {
  std::string_view name;   // as received (case preserved)
  std::string_view value;  // leading and trailing whitespace removed
  FieldKind kind = FieldKind::Other;
  // True when the field must not be forwarded as is: hop-by-hop fields (Connection, Keep-Alive,
  // Proxy-Connection, TE, Upgrade, Transfer-Encoding), any field named in Connection, and the
  // framing fields the serializer rewrites (Content-Length). Host/X-Forwarded-* are rewritten too.
  bool drop = false;
};

struct Limits {
  uint32_t max_head_size = 16 * 1024;  // bytes, start line + fields + final CRLF
  uint32_t max_fields = 100;
  uint32_t max_chunk_line = 4096;      // chunk-size line with extensions
  uint32_t max_trailer_size = 16 * 1024;
};

struct RequestHead {
  std::string_view method;
  Method method_id = Method::Other;
  std::string_view target;          // request-target as received
  // What to send upstream: origin-form path and query ("/a?b"), or "*" for OPTIONS *. For an
  // absolute-form target ("http://h/a") this is "/a" (or "/" when the path is empty; "?q" for
  // "http://h?q", to which the serializer adds the leading "/").
  std::string_view forward_target;
  // The authority to send upstream as Host: from an absolute-form target if there is one (RFC 9112
  // 3.2.2: the Host field is then ignored), else the Host field. Empty when neither exists
  // (HTTP/1.0 without Host): then an empty Host is sent (RFC 9112 3.2).
  std::string_view authority;
  Version version = Version::Http11;
  std::vector<Field> fields;        // in the order received, including the dropped ones
  BodyKind body = BodyKind::None;   // None, ContentLength or Chunked for requests
  bool has_content_length = false;
  uint64_t content_length = 0;      // when has_content_length (normalised single value)
  // The transfer codings before the final "chunked", comma separated, empty if only "chunked".
  std::string_view transfer_codings_before_chunked;
  bool keep_alive = true;           // 1.1 unless "Connection: close"; 1.0 only with keep-alive
  bool expect_continue = false;     // "Expect: 100-continue"
  bool upgrade = false;             // "Connection: upgrade" with an Upgrade field
  std::string_view upgrade_value;   // the Upgrade field's value when upgrade
};

struct ResponseHead {
  Version version = Version::Http11;
  int status = 0;
  std::string_view reason;
  std::vector<Field> fields;
  BodyKind body = BodyKind::None;
  // A HEAD or 304 response may carry the Content-Length of the representation without a body.
  bool has_content_length = false;
  uint64_t content_length = 0;
  std::string_view transfer_codings_before_chunked;
  bool has_transfer_encoding = false;
  bool has_date = false;
  bool keep_alive = true;           // server will keep the connection open after this response
  bool upgrade = false;             // 101 with "Connection: upgrade" and an Upgrade field
  std::string_view upgrade_value;
};

// A parse failure: the status to answer (400, 414, 431, 501, 505 for requests; for responses the
// caller answers 502 whatever the status here) and a short reason for logs and metrics.
struct ParseError {
  int status = 400;
  const char* reason = "";
};

}  // namespace ballast::http
