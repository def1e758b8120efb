// Request and response head parsers (RFC 9112 sections 2-6, RFC 9110 fields).
//
// Both scan forward only: scanned_ marks how far the input has been searched, so a head arriving
// in small pieces costs O(n) overall. Each field line is parsed as soon as its CRLF arrives; the
// checks that need the whole head (framing, Host, Connection) run once, when the empty line is
// found. The result therefore depends only on the bytes, never on how they were split. Views in
// the head point into the buffer of the latest call; if the caller moved its buffer between calls
// they are rebased onto the new one.
#include "http/parser.h"

#include <cstdint>
#include <cstring>
#include <utility>

#include "http/syntax.h"

namespace ballast::http {
namespace {

using detail::equalsLower;
using detail::is;

Method methodId(std::string_view m) {
  switch (m.size()) {
    case 3:
      if (m == "GET") return Method::Get;
      if (m == "PUT") return Method::Put;
      break;
    case 4:
      if (m == "HEAD") return Method::Head;
      if (m == "POST") return Method::Post;
      break;
    case 5:
      if (m == "TRACE") return Method::Trace;
      if (m == "PATCH") return Method::Patch;
      break;
    case 6:
      if (m == "DELETE") return Method::Delete;
      break;
    case 7:
      if (m == "OPTIONS") return Method::Options;
      if (m == "CONNECT") return Method::Connect;
      break;
    default:
      break;
  }
  return Method::Other;
}

// The forms of request-target (RFC 9112 3.2) and what to forward for each. On success sets
// *forward and, for absolute-form, *authority (else leaves it empty).
bool checkTarget(Method method, std::string_view target, std::string_view* forward,
                 std::string_view* authority, bool* absolute, ParseError* err) {
  *absolute = false;
  *authority = {};
  if (method == Method::Connect) {
    // authority-form: uri-host ":" port. Ballast does not tunnel: a well-formed CONNECT gets 501.
    const size_t colon = target.rfind(':');
    const bool has_port = colon != std::string_view::npos && colon + 1 < target.size() &&
                          target.find(']', colon) == std::string_view::npos;
    if (target[0] != '/' && has_port && detail::validAuthority(target)) {
      *err = {501, "CONNECT not supported"};
    } else {
      *err = {400, "CONNECT needs an authority-form target"};
    }
    return false;
  }
  if (target[0] == '/') {
    *forward = target;
    return true;
  }
  if (target == "*") {
    if (method != Method::Options) {
      *err = {400, "asterisk-form target with a method other than OPTIONS"};
      return false;
    }
    *forward = target;
    return true;
  }
  size_t scheme_len = 0;
  if (target.size() >= 7 && equalsLower(target.substr(0, 7), "http://")) {
    scheme_len = 7;
  } else if (target.size() >= 8 && equalsLower(target.substr(0, 8), "https://")) {
    scheme_len = 8;
  } else {
    *err = {400, "invalid request target"};
    return false;
  }
  const std::string_view rest = target.substr(scheme_len);
  const size_t path = rest.find_first_of("/?");
  const std::string_view auth = rest.substr(0, path);
  if (auth.find('@') != std::string_view::npos) {
    *err = {400, "userinfo in request target"};  // RFC 9110 4.2.4
    return false;
  }
  if (!detail::validAuthority(auth)) {
    *err = {400, "invalid authority in request target"};
    return false;
  }
  if (path == std::string_view::npos) {
    // RFC 9112 3.2.4: an empty path is "/", or "*" for OPTIONS.
    *forward = method == Method::Options ? std::string_view("*") : std::string_view("/");
  } else if (rest[path] == '?') {
    // An empty path with a query: "?q" here, the serializer puts the "/" in front (RFC 9112
    // 3.2.2 and RFC 3986: the path of "http://h?q" is empty, which means "/").
    *forward = rest.substr(path);
  } else {
    *forward = rest.substr(path);
  }
  *authority = auth;
  *absolute = true;
  return true;
}

// Moves a view from the buffer [old_base, old_base + old_len) to the same offset in new_base.
// Views elsewhere (static strings) are left alone. Only addresses are compared: the old buffer
// may be gone.
void rebaseView(std::string_view* v, const char* old_base, size_t old_len, const char* new_base) {
  if (v->data() == nullptr) return;
  const auto addr = reinterpret_cast<uintptr_t>(v->data());
  const auto old_addr = reinterpret_cast<uintptr_t>(old_base);
  if (addr < old_addr || addr > old_addr + old_len) return;
  *v = std::string_view(new_base + (addr - old_addr), v->size());
}

}  // namespace

bool equalsIgnoreCase(std::string_view a, std::string_view b) { return detail::equalsNoCase(a, b); }

namespace {

// Splits "name/version" (version empty when there is none).
std::pair<std::string_view, std::string_view> protocolParts(std::string_view p) {
  size_t slash = p.find('/');
  if (slash == std::string_view::npos) return {p, {}};
  return {p.substr(0, slash), p.substr(slash + 1)};
}

bool offers(std::string_view offered, std::string_view protocol) {
  const auto parts = protocolParts(protocol);  // not a structured binding: lambdas capture it
  const std::string_view name = parts.first, version = parts.second;
  bool found = false;
  detail::forEachListElement(offered, [&](std::string_view o) {
    auto [offered_name, offered_version] = protocolParts(o);
    found = !name.empty() && detail::equalsNoCase(name, offered_name) &&
            (version.empty() || offered_version.empty() ||
             detail::equalsNoCase(version, offered_version));
    return !found;
  });
  return found;
}

}  // namespace

bool upgradeChosenFromOffer(std::string_view offered, std::string_view chosen) {
  bool any = false;
  bool all = detail::forEachListElement(chosen, [&](std::string_view c) {
    if (c.empty()) return true;
    any = true;
    return offers(offered, c);
  });
  return any && all;
}

// ---------------------------------------------------------------------------------------------
// RequestParser

ParseStatus RequestParser::fail(int status, const char* reason) {
  error_ = {status, reason};
  phase_ = Phase::Failed;
  return ParseStatus::Error;
}

void RequestParser::reset() {
  std::vector<Field> fields = std::move(head_.fields);  // keep its capacity
  fields.clear();
  head_ = RequestHead{};
  head_.fields = std::move(fields);
  error_ = {};
  phase_ = Phase::Leading;
  empty_lines_ = 0;
  scanned_ = line_start_ = head_start_ = head_length_ = 0;
  method_end_ = target_start_ = target_end_ = 0;
  base_ = nullptr;
  base_len_ = 0;
}

void RequestParser::rebase(const char* data, size_t len) {
  if (base_ != nullptr && base_ != data) {
    RequestHead& h = head_;
    for (std::string_view* v : {&h.method, &h.target, &h.forward_target, &h.authority,
                                &h.transfer_codings_before_chunked, &h.upgrade_value}) {
      rebaseView(v, base_, base_len_, data);
    }
    for (Field& f : h.fields) {
      rebaseView(&f.name, base_, base_len_, data);
      rebaseView(&f.value, base_, base_len_, data);
    }
  }
  base_ = data;
  base_len_ = len;
}

ParseStatus RequestParser::parse(const char* data, size_t len) {
  if (phase_ == Phase::Failed) return ParseStatus::Error;
  rebase(data, len);
  if (phase_ == Phase::Done) return ParseStatus::Complete;

  // RFC 9112 2.2: skip a few empty lines before the request-line.
  while (phase_ == Phase::Leading) {
    const size_t p = head_start_;
    if (p >= len) return ParseStatus::Incomplete;
    if (data[p] == '\n') return fail(400, "bare LF in header section");
    if (data[p] != '\r') {
      phase_ = Phase::Method;
      scanned_ = line_start_ = head_start_;
      break;
    }
    if (p + 1 >= len) return ParseStatus::Incomplete;
    if (data[p + 1] != '\n') return fail(400, "bare CR in header section");
    if (empty_lines_ == 4) return fail(400, "too many empty lines before the request line");
    ++empty_lines_;
    head_start_ += 2;
  }

  // Nothing past limit_end is looked at: a head must end within it.
  const size_t limit_end = head_start_ + limits_.max_head_size;
  const size_t end = len < limit_end ? len : limit_end;
  if (phase_ != Phase::Fields) {
    const ParseStatus st = scanRequestLine(data, end, limit_end);
    if (st != ParseStatus::Complete) return st;
  }

  while (true) {
    const void* lf = scanned_ < end ? std::memchr(data + scanned_, '\n', end - scanned_) : nullptr;
    if (lf == nullptr) {
      scanned_ = end;
      if (end == limit_end) return fail(431, "header section too large");
      return ParseStatus::Incomplete;
    }
    const size_t p = static_cast<size_t>(static_cast<const char*>(lf) - data);
    if (p == line_start_ || data[p - 1] != '\r') return fail(400, "bare LF in header section");
    const size_t n = p - 1 - line_start_;
    if (n == 0) {
      head_length_ = p + 1;
      return finish();
    }
    if (head_.fields.size() >= limits_.max_fields) return fail(431, "too many header fields");
    Field& f = head_.fields.emplace_back();
    if (!detail::parseFieldLine(data + line_start_, n, &f, &error_)) {
      phase_ = Phase::Failed;
      return ParseStatus::Error;
    }
    line_start_ = scanned_ = p + 1;
  }
}

// Validates the request-line byte by byte as it arrives, so that garbage (a TLS ClientHello, a
// binary protocol) is refused at its first byte rather than when a buffer fills up.
ParseStatus RequestParser::scanRequestLine(const char* data, size_t end, size_t limit_end) {
  size_t i = scanned_;
  if (phase_ == Phase::Method) {
    while (i < end && is(data[i], detail::kTchar)) ++i;
    if (i < end) {
      if (data[i] != ' ' || i == head_start_) return fail(400, "invalid character in method");
      method_end_ = i++;
      target_start_ = i;
      phase_ = Phase::Target;
    }
  }
  if (phase_ == Phase::Target) {
    while (i + 8 <= end && detail::plainTarget8(detail::load8(data + i))) i += 8;
    while (i < end && is(data[i], detail::kTarget)) ++i;
    if (i < end) {
      if (data[i] != ' ') {
        return fail(400, data[i] == '\r' || data[i] == '\n'
                             ? "missing HTTP version"
                             : "invalid character in request target");
      }
      if (i == target_start_) return fail(400, "empty request target");
      target_end_ = i++;
      phase_ = Phase::Version;
    }
  }
  if (phase_ == Phase::Version) {
    static constexpr char kPattern[] = "HTTP/#.#\r\n";  // '#': a digit
    for (; i < end; ++i) {
      const size_t k = i - target_end_ - 1;
      const char want = kPattern[k];
      if (want == '#' ? !is(data[i], detail::kDigit) : data[i] != want) {
        return fail(400, k < 8 ? "malformed HTTP version" : "request line not ended by CRLF");
      }
      if (k == 9) {
        scanned_ = line_start_ = i + 1;
        phase_ = Phase::Fields;
        return checkRequestLine(data);
      }
    }
  }
  scanned_ = i;
  if (i == limit_end) return fail(414, "request line too long");
  return ParseStatus::Incomplete;
}

ParseStatus RequestParser::checkRequestLine(const char* data) {
  const char major = data[target_end_ + 6];
  const char minor = data[target_end_ + 8];
  if (major != '1') return fail(505, "HTTP version not supported");
  // RFC 9110 2.5: a higher minor version is handled as the highest we support.
  head_.version = minor == '0' ? Version::Http10 : Version::Http11;
  head_.method = std::string_view(data + head_start_, method_end_ - head_start_);
  head_.method_id = methodId(head_.method);
  head_.target = std::string_view(data + target_start_, target_end_ - target_start_);
  bool absolute = false;
  if (!checkTarget(head_.method_id, head_.target, &head_.forward_target, &head_.authority,
                   &absolute, &error_)) {
    phase_ = Phase::Failed;
    return ParseStatus::Error;
  }
  return ParseStatus::Complete;
}

// The checks that need the whole head: Host, framing, Connection, Expect, Upgrade.
ParseStatus RequestParser::finish() {
  RequestHead& h = head_;
  const bool http11 = h.version == Version::Http11;
  const Field* host = nullptr;
  const Field* upgrade = nullptr;
  int host_count = 0;
  int upgrade_count = 0;
  bool has_te = false;
  bool has_trailer = false;
  detail::TransferCodings codings;
  detail::ConnectionOptions connection;

  for (size_t i = 0; i < h.fields.size(); ++i) {
    Field& f = h.fields[i];
    switch (f.kind) {
      case FieldKind::Other:
      case FieldKind::Date:
        break;
      case FieldKind::Lookalike:
        f.drop = true;
        break;
      case FieldKind::Host:
        f.drop = true;
        host = &f;
        ++host_count;
        break;
      case FieldKind::ContentLength: {
        f.drop = true;
        uint64_t value = 0;
        if (!detail::parseContentLength(f.value, &value)) {
          return fail(400, "invalid Content-Length");
        }
        if (h.has_content_length && value != h.content_length) {
          return fail(400, "conflicting Content-Length values");
        }
        h.has_content_length = true;
        h.content_length = value;
        break;
      }
      case FieldKind::TransferEncoding:
        f.drop = true;
        has_te = true;
        if (const char* reason = codings.add(f.value, i)) return fail(400, reason);
        break;
      case FieldKind::Connection:
        f.drop = true;
        if (!connection.add(f.value)) return fail(400, "invalid Connection option");
        break;
      case FieldKind::KeepAlive:
      case FieldKind::ProxyConnection:
      case FieldKind::Te:
      case FieldKind::XForwardedFor:
      case FieldKind::XForwardedProto:
        f.drop = true;
        break;
      case FieldKind::Upgrade:
        f.drop = true;
        upgrade = &f;
        ++upgrade_count;
        break;
      case FieldKind::Trailer:
        has_trailer = true;
        break;
      case FieldKind::Expect:
        if (!http11) {
          f.drop = true;  // RFC 9110 10.1.1: ignored in HTTP/1.0
        } else if (equalsLower(f.value, "100-continue")) {
          h.expect_continue = true;
        } else {
          return fail(417, "unsupported expectation");
        }
        break;
    }
  }

  if (host_count > 1) return fail(400, "multiple Host fields");
  if (host_count == 0 && http11) return fail(400, "missing Host");
  if (host != nullptr && !host->value.empty() && !detail::validAuthority(host->value)) {
    return fail(400, "invalid Host");
  }
  // The target was validated with the request line; this only fills in the views.
  bool absolute = false;
  ParseError unused;
  checkTarget(h.method_id, h.target, &h.forward_target, &h.authority, &absolute, &unused);
  if (absolute) {
    // RFC 9112 3.2: the Host must then carry that authority; it is ignored but cannot be empty.
    if (host != nullptr && host->value.empty()) return fail(400, "empty Host with absolute-form");
  } else if (host != nullptr) {
    h.authority = host->value;
  }

  if (has_te) {
    if (!http11) return fail(400, "Transfer-Encoding in an HTTP/1.0 request");
    if (h.has_content_length) return fail(400, "both Content-Length and Transfer-Encoding");
    if (!codings.last_is_chunked) return fail(400, "chunked is not the final transfer coding");
    if (codings.chunked_count > 1) return fail(400, "chunked applied more than once");
    if (codings.unknown) return fail(501, "unknown transfer coding");
    if (codings.split) return fail(400, "transfer codings split across fields");
    h.body = BodyKind::Chunked;
    h.transfer_codings_before_chunked = codings.before();
  } else if (h.has_content_length) {
    h.body = BodyKind::ContentLength;
  }

  if (upgrade_count > 1) return fail(400, "multiple Upgrade fields");
  h.keep_alive = !connection.close && (http11 || connection.keep_alive);
  // RFC 9110 7.8: Upgrade is ignored in an HTTP/1.0 request. An offer of h2c (HTTP/2 over
  // cleartext) is ignored too (a server may ignore any upgrade): tunnelled, the HTTP/2 requests
  // that follow would pass the proxy unseen ("h2c smuggling").
  if (http11 && connection.upgrade && upgrade != nullptr && !upgrade->value.empty() &&
      !offers(upgrade->value, "h2c")) {
    h.upgrade = true;
    h.upgrade_value = upgrade->value;
  }
  if (connection.other) detail::dropConnectionNamed(h.fields);
  if (has_trailer && h.body == BodyKind::Chunked) {
    for (Field& f : h.fields) {
      if (f.kind == FieldKind::Trailer) f.drop = true;  // trailers are not forwarded
    }
  }
  phase_ = Phase::Done;
  return ParseStatus::Complete;
}

// ---------------------------------------------------------------------------------------------
// ResponseParser

ParseStatus ResponseParser::fail(const char* reason) {
  error_ = {502, reason};
  failed_ = true;
  return ParseStatus::Error;
}

void ResponseParser::reset() {
  std::vector<Field> fields = std::move(head_.fields);
  fields.clear();
  head_ = ResponseHead{};
  head_.fields = std::move(fields);
  error_ = {};
  scanned_ = line_start_ = head_length_ = 0;
  start_line_checked_ = done_ = failed_ = false;
  base_ = nullptr;
  base_len_ = 0;
}

void ResponseParser::rebase(const char* data, size_t len) {
  if (base_ != nullptr && base_ != data) {
    ResponseHead& h = head_;
    for (std::string_view* v : {&h.reason, &h.transfer_codings_before_chunked, &h.upgrade_value}) {
      rebaseView(v, base_, base_len_, data);
    }
    for (Field& f : h.fields) {
      rebaseView(&f.name, base_, base_len_, data);
      rebaseView(&f.value, base_, base_len_, data);
    }
  }
  base_ = data;
  base_len_ = len;
}

ParseStatus ResponseParser::parse(const char* data, size_t len, Method request_method) {
  if (failed_) return ParseStatus::Error;
  rebase(data, len);
  if (done_) return ParseStatus::Complete;
  const size_t limit_end = limits_.max_head_size;
  const size_t end = len < limit_end ? len : limit_end;
  while (true) {
    const void* lf = scanned_ < end ? std::memchr(data + scanned_, '\n', end - scanned_) : nullptr;
    if (lf == nullptr) {
      scanned_ = end;
      if (end == limit_end) return fail("response head too large");
      return ParseStatus::Incomplete;
    }
    const size_t p = static_cast<size_t>(static_cast<const char*>(lf) - data);
    if (p == line_start_ || data[p - 1] != '\r') return fail("bare LF in response head");
    const size_t n = p - 1 - line_start_;
    if (!start_line_checked_) {
      if (checkStatusLine(data, n) != ParseStatus::Complete) return ParseStatus::Error;
      start_line_checked_ = true;
    } else if (n == 0) {
      head_length_ = p + 1;
      return finish(request_method);
    } else {
      if (head_.fields.size() >= limits_.max_fields) return fail("too many response fields");
      Field& f = head_.fields.emplace_back();
      if (!detail::parseFieldLine(data + line_start_, n, &f, &error_)) {
        error_.status = 502;
        failed_ = true;
        return ParseStatus::Error;
      }
    }
    line_start_ = scanned_ = p + 1;
  }
}

// status-line = HTTP-version SP status-code SP [ reason-phrase ]; "HTTP/1.1 200" without the
// second SP is accepted (common in the wild).
ParseStatus ResponseParser::checkStatusLine(const char* data, size_t n) {
  const std::string_view line(data, n);
  if (n < 12 || line.substr(0, 5) != "HTTP/" || !is(line[5], detail::kDigit) || line[6] != '.' ||
      !is(line[7], detail::kDigit) || line[8] != ' ' || !is(line[9], detail::kDigit) ||
      !is(line[10], detail::kDigit) || !is(line[11], detail::kDigit)) {
    return fail("malformed status line");
  }
  if (line[5] != '1') return fail("unsupported HTTP version");
  head_.version = line[7] == '0' ? Version::Http10 : Version::Http11;
  head_.status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  if (head_.status < 100 || head_.status > 599) return fail("invalid status code");
  if (n > 12) {
    if (line[12] != ' ') return fail("malformed status line");
    for (size_t i = 13; i < n; ++i) {
      if (!is(line[i], detail::kValue)) return fail("invalid character in reason phrase");
    }
    head_.reason = line.substr(13);
  }
  return ParseStatus::Complete;
}

ParseStatus ResponseParser::finish(Method request_method) {
  ResponseHead& h = head_;
  const bool http11 = h.version == Version::Http11;
  const Field* upgrade = nullptr;
  int upgrade_count = 0;
  bool has_te = false;
  bool has_trailer = false;
  detail::TransferCodings codings;
  detail::ConnectionOptions connection;

  for (size_t i = 0; i < h.fields.size(); ++i) {
    Field& f = h.fields[i];
    switch (f.kind) {
      case FieldKind::ContentLength: {
        f.drop = true;
        uint64_t value = 0;
        if (!detail::parseContentLength(f.value, &value)) return fail("invalid Content-Length");
        if (h.has_content_length && value != h.content_length) {
          return fail("conflicting Content-Length values");
        }
        h.has_content_length = true;
        h.content_length = value;
        break;
      }
      case FieldKind::Date:
        h.has_date = true;
        break;
      case FieldKind::TransferEncoding:
        has_te = true;  // drop decided below: kept as received for a close-delimited body
        if (const char* reason = codings.add(f.value, i)) return fail(reason);
        break;
      case FieldKind::Connection:
        f.drop = true;
        if (!connection.add(f.value)) return fail("invalid Connection option");
        break;
      case FieldKind::KeepAlive:
      case FieldKind::ProxyConnection:
      case FieldKind::Te:
        f.drop = true;
        break;
      case FieldKind::Upgrade:
        f.drop = true;
        upgrade = &f;
        ++upgrade_count;
        break;
      case FieldKind::Trailer:
        has_trailer = true;
        break;
      default:  // Host, Expect, X-Forwarded-*: no meaning in a response, forwarded as is
        break;
    }
  }

  h.has_transfer_encoding = has_te;
  if (has_te) {
    // RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
    if (!http11) return fail("Transfer-Encoding in an HTTP/1.0 response");
    if (h.has_content_length) return fail("both Content-Length and Transfer-Encoding");
    if (codings.chunked_count > 1) return fail("chunked applied more than once");
    if (codings.last_is_chunked && codings.split)
      return fail("transfer codings split across fields");
  }
  const int s = h.status;
  if (request_method == Method::Head || s < 200 || s == 204 || s == 304 ||
      (request_method == Method::Connect && s < 300)) {
    h.body = BodyKind::None;  // RFC 9112 6.3 rules 1 and 2
  } else if (has_te) {
    // Rule 4: chunked not final means the body runs until the server closes.
    h.body = codings.last_is_chunked ? BodyKind::Chunked : BodyKind::UntilClose;
  } else if (h.has_content_length) {
    h.body = BodyKind::ContentLength;
  } else {
    h.body = BodyKind::UntilClose;
  }
  if (h.body == BodyKind::Chunked) h.transfer_codings_before_chunked = codings.before();
  if (has_te) {
    for (Field& f : h.fields) {
      if (f.kind == FieldKind::TransferEncoding) f.drop = h.body != BodyKind::UntilClose;
    }
  }

  if (upgrade_count > 1) return fail("multiple Upgrade fields");
  h.keep_alive =
      !connection.close && (http11 || connection.keep_alive) && h.body != BodyKind::UntilClose;
  if (s == 101) {
    if (!connection.upgrade || upgrade == nullptr || upgrade->value.empty()) {
      return fail("101 without Connection: upgrade and Upgrade");
    }
    h.upgrade = true;
    h.upgrade_value = upgrade->value;
  }
  if (connection.other) detail::dropConnectionNamed(h.fields);
  if (has_trailer && h.body == BodyKind::Chunked) {
    for (Field& f : h.fields) {
      if (f.kind == FieldKind::Trailer) f.drop = true;
    }
  }
  done_ = true;
  return ParseStatus::Complete;
}

}  // namespace ballast::http
