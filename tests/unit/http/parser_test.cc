// Request parser: one table over every rule (expected status per case), each case also fed one
// byte at a time, plus checks of the parsed head for the valid cases that matter.
#include "http/parser.h"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "http_test_util.h"

namespace ballast::http {
namespace {

using testing::Feed;
using testing::Outcome;
using namespace std::string_literals;

constexpr int kOk = 0;           // Complete
constexpr int kIncomplete = -1;  // needs more bytes

struct Case {
  std::string name;
  std::string input;
  int expect;  // kOk, kIncomplete or the error status
};

// A GET / with Host: a, then the given field lines (each ending in CRLF), then the empty line.
std::string get(const std::string& fields) {
  return "GET / HTTP/1.1\r\nHost: a\r\n" + fields + "\r\n";
}
std::string post(const std::string& fields) {
  return "POST / HTTP/1.1\r\nHost: a\r\n" + fields + "\r\n";
}
std::string line(const std::string& request_line, const std::string& fields = "Host: a\r\n") {
  return request_line + "\r\n" + fields + "\r\n";
}
std::string host(const std::string& value) {
  return line("GET / HTTP/1.1", "Host: " + value + "\r\n");
}

Limits smallLimits() {
  Limits l;
  l.max_head_size = 256;
  l.max_fields = 4;
  return l;
}

std::vector<Case> requestCases() {
  return {
      // --- valid basics
      {"get_basic", get(""), kOk},
      {"get_with_fields", get("User-Agent: t\r\nAccept: */*\r\n"), kOk},
      {"http10_without_host", "GET / HTTP/1.0\r\n\r\n", kOk},
      {"http12_is_11", line("GET / HTTP/1.2"), kOk},
      {"http19_is_11", line("GET / HTTP/1.9"), kOk},
      {"lowercase_method_is_other", line("get / HTTP/1.1"), kOk},
      {"extension_method", line("PROPFIND /x HTTP/1.1"), kOk},
      {"incomplete_head", "GET / HTTP/1.1\r\nHost: a\r\n", kIncomplete},
      {"incomplete_request_line", "GET / HTTP/1.", kIncomplete},
      {"empty_input", "", kIncomplete},
      // --- leading empty lines (RFC 9112 2.2)
      {"leading_crlf_1", "\r\n" + get(""), kOk},
      {"leading_crlf_4", "\r\n\r\n\r\n\r\n" + get(""), kOk},
      {"leading_crlf_5", "\r\n\r\n\r\n\r\n\r\n" + get(""), 400},
      {"leading_bare_lf", "\n" + get(""), 400},
      {"leading_bare_cr", "\rGET / HTTP/1.1\r\n", 400},
      // --- request line
      {"method_invalid_char", line("G@T / HTTP/1.1"), 400},
      {"method_empty", line(" / HTTP/1.1"), 400},
      {"method_tab_separator", line("GET\t/ HTTP/1.1"), 400},
      {"method_nul", "GE\0T / HTTP/1.1\r\n"s, 400},
      {"tls_client_hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"s, 400},
      {"binary_garbage", "\x00\x01\x02\x03"s, 400},
      {"double_space_before_target", line("GET  / HTTP/1.1"), 400},
      {"double_space_before_version", line("GET /  HTTP/1.1"), 400},
      {"space_after_version", line("GET / HTTP/1.1 "), 400},
      {"target_ctl", line("GET /a\x01 HTTP/1.1"), 400},
      {"target_del", line("GET /a\x7f HTTP/1.1"), 400},
      {"target_obs_text", line("GET /\xc3\xa9 HTTP/1.1"), 400},
      {"target_fragment", line("GET /a#b HTTP/1.1"), 400},
      {"target_tab", line("GET /a\tb HTTP/1.1"), 400},
      {"missing_version", "GET /\r\nHost: a\r\n\r\n", 400},
      {"missing_target_and_version", "GET\r\n\r\n", 400},
      {"version_lowercase", line("GET / http/1.1"), 400},
      {"version_no_minor", line("GET / HTTP/1"), 400},
      {"version_two_digit_major", line("GET / HTTP/11.1"), 400},
      {"version_two_digit_minor", line("GET / HTTP/1.10"), 400},
      {"version_extra", line("GET / HTTP/1.1.1"), 400},
      {"version_letters", line("GET / HTTP/a.b"), 400},
      {"version_20", line("GET / HTTP/2.0"), 505},
      {"version_30", line("GET / HTTP/3.0"), 505},
      {"version_09", line("GET / HTTP/0.9"), 505},
      {"h2_preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
      {"request_line_bare_lf", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
      {"request_line_bare_cr", "GET / HTTP/1.1\rHost: a\r\n\r\n", 400},
      // --- target forms (RFC 9112 3.2)
      {"origin_form_query", line("GET /a/b?c=d&e HTTP/1.1"), kOk},
      {"absolute_form", line("GET http://example.com/a?b HTTP/1.1", "Host: other\r\n"), kOk},
      {"absolute_form_https_upper", line("GET HTTPS://example.com:8443/ HTTP/1.1"), kOk},
      {"absolute_form_empty_path", line("GET http://example.com HTTP/1.1"), kOk},
      {"absolute_form_ipv6", line("GET http://[::1]:80/x HTTP/1.1"), kOk},
      {"absolute_form_other_scheme", line("GET ftp://example.com/ HTTP/1.1"), 400},
      {"absolute_form_empty_authority", line("GET http:///a HTTP/1.1"), 400},
      {"absolute_form_userinfo", line("GET http://u:p@example.com/ HTTP/1.1"), 400},
      {"absolute_form_query_no_path", line("GET http://example.com?q HTTP/1.1"), kOk},
      {"absolute_form_bad_port", line("GET http://example.com:x/ HTTP/1.1"), 400},
      {"absolute_form_empty_host_field", line("GET http://example.com/ HTTP/1.1", "Host:\r\n"),
       400},
      {"absolute_form_invalid_host_field",
       line("GET http://example.com/ HTTP/1.1", "Host: a b\r\n"), 400},
      {"absolute_form_two_hosts",
       line("GET http://example.com/ HTTP/1.1", "Host: a\r\nHost: a\r\n"), 400},
      {"absolute_form_11_without_host", "GET http://example.com/ HTTP/1.1\r\n\r\n", 400},
      {"absolute_form_10_without_host", "GET http://example.com/ HTTP/1.0\r\n\r\n", kOk},
      {"asterisk_options", line("OPTIONS * HTTP/1.1"), kOk},
      {"asterisk_get", line("GET * HTTP/1.1"), 400},
      {"connect_authority", line("CONNECT example.com:443 HTTP/1.1"), 501},
      {"connect_origin_form", line("CONNECT / HTTP/1.1"), 400},
      {"connect_no_port", line("CONNECT example.com HTTP/1.1"), 400},
      {"authority_form_get", line("GET example.com:80 HTTP/1.1"), 400},
      {"relative_target", line("GET a/b HTTP/1.1"), 400},
      // --- Host
      {"host_missing_11", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400},
      {"host_twice", get("Host: a\r\n"), 400},
      {"host_twice_10", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      {"host_empty_origin_form", host(""), kOk},
      {"host_port", host("example.com:8080"), kOk},
      {"host_ipv4", host("192.0.2.1"), kOk},
      {"host_ipv6", host("[2001:db8::1]:443"), kOk},
      {"host_ipv6_v4_tail", host("[::ffff:192.0.2.1]"), kOk},
      {"host_ipvfuture", host("[v1.fe80::a+en1]"), kOk},
      {"host_pct_encoded", host("ex%41mple.com"), kOk},
      {"host_sub_delims", host("a-b_c~d!$&'()*+,;=e"), kOk},
      {"host_space_inside", host("a b"), 400},
      {"host_slash", host("a/b"), 400},
      {"host_userinfo", host("u@a"), 400},
      {"host_bad_pct", host("a%zz"), 400},
      {"host_port_letters", host("a:http"), 400},
      {"host_port_too_big", host("a:65536"), 400},
      {"host_port_empty", host("a:"), 400},
      {"host_only_port", host(":80"), 400},
      {"host_two_colons", host("a:1:2"), 400},
      {"host_ipv6_unclosed", host("[::1"), 400},
      {"host_ipv6_two_elisions", host("[1::2::3]"), 400},
      {"host_ipv6_too_many_groups", host("[1:2:3:4:5:6:7:8:9]"), 400},
      {"host_ipv6_zone", host("[fe80::1%25eth0]"), 400},
      {"host_ipv6_bad_v4", host("[::1.2.3.256]"), 400},
      {"host_after_bracket", host("[::1]x"), 400},
      {"host_invalid_10", "GET / HTTP/1.0\r\nHost: a b\r\n\r\n", 400},
      {"host_obs_text", host("\xc3\xa9"), 400},
      // --- field syntax
      {"field_space_before_colon", get("X-A : b\r\n"), 400},
      {"field_tab_before_colon", get("X-A\t: b\r\n"), 400},
      {"host_space_before_colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
      {"obs_fold", get("X-A: b\r\n c\r\n"), 400},
      {"obs_fold_tab", get("X-A: b\r\n\tc\r\n"), 400},
      {"whitespace_before_first_field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400},
      {"bare_cr_in_value", get("X-A: b\rc\r\n"), 400},
      {"bare_cr_end_of_value", get("X-A: b\r\r\n"), 400},
      {"bare_cr_in_name", get("X\r-A: b\r\n"), 400},
      {"bare_cr_empty_line", "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", 400},
      {"bare_lf_after_field", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400},
      {"bare_lf_end_of_head", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400},
      {"nul_in_value", get("X-A: b\0c\r\n"s), 400},
      {"ctl_in_value",
       get("X-A: b\x01"
           "c\r\n"),
       400},
      {"esc_in_value", get("X-A: \x1b[31m\r\n"), 400},
      {"del_in_value", get("X-A: b\x7f\r\n"), 400},
      {"htab_in_value", get("X-A: b\tc\r\n"), kOk},
      {"obs_text_in_value", get("X-A: caf\xc3\xa9 \x80\xff\r\n"), kOk},
      {"empty_value", get("X-Empty:\r\nX-Blank:   \r\n"), kOk},
      {"invalid_name_char", get("X@A: b\r\n"), 400},
      {"name_with_paren", get("(X): b\r\n"), 400},
      {"name_obs_text", get("X\xe9: b\r\n"), 400},
      {"empty_name", get(": b\r\n"), 400},
      {"no_colon", get("X-A b\r\n"), 400},
      {"name_only", get("X-A\r\n"), 400},
      {"name_tchars", get("!#$%&'*+-.^_`|~09azAZ: b\r\n"), kOk},
      // --- Content-Length
      {"cl_valid", post("Content-Length: 5\r\n"), kOk},
      {"cl_zero", post("Content-Length: 0\r\n"), kOk},
      {"cl_max", post("Content-Length: 9223372036854775807\r\n"), kOk},
      {"cl_overflow", post("Content-Length: 9223372036854775808\r\n"), 400},
      {"cl_overflow_u64", post("Content-Length: 18446744073709551616\r\n"), 400},
      {"cl_too_many_digits", post("Content-Length: 00000000000000000005\r\n"), 400},
      {"cl_plus", post("Content-Length: +5\r\n"), 400},
      {"cl_minus", post("Content-Length: -5\r\n"), 400},
      {"cl_hex", post("Content-Length: 0x5\r\n"), 400},
      {"cl_space_inside", post("Content-Length: 5 5\r\n"), 400},
      {"cl_empty", post("Content-Length:\r\n"), 400},
      {"cl_letters", post("Content-Length: five\r\n"), 400},
      {"cl_decimal", post("Content-Length: 5.0\r\n"), 400},
      {"cl_list_same", post("Content-Length: 5, 5\r\n"), kOk},
      {"cl_list_same_no_space", post("Content-Length: 5,5\r\n"), kOk},
      {"cl_list_differ", post("Content-Length: 5, 6\r\n"), 400},
      {"cl_list_empty_element", post("Content-Length: 5,,5\r\n"), 400},
      {"cl_list_trailing_comma", post("Content-Length: 5,\r\n"), 400},
      {"cl_fields_same", post("Content-Length: 5\r\nContent-Length: 5\r\n"), kOk},
      {"cl_fields_differ", post("Content-Length: 5\r\nContent-Length: 6\r\n"), 400},
      {"cl_fields_one_empty", post("Content-Length: 5\r\nContent-Length:\r\n"), 400},
      {"cl_name_case", post("content-LENGTH: 5\r\n"), kOk},
      // --- Transfer-Encoding
      {"te_chunked", post("Transfer-Encoding: chunked\r\n"), kOk},
      {"te_chunked_case", post("Transfer-Encoding: ChUnKeD\r\n"), kOk},
      {"te_gzip_chunked", post("Transfer-Encoding: gzip, chunked\r\n"), kOk},
      {"te_known_codings",
       post("Transfer-Encoding: deflate,compress,x-gzip,x-compress,chunked\r\n"), kOk},
      {"te_two_fields", post("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"), kOk},
      {"te_split_codings",
       post("Transfer-Encoding: gzip\r\nTransfer-Encoding: deflate, chunked\r\n"), 400},
      {"te_cl_conflict", post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), 400},
      {"te_cl_conflict_reversed", post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"), 400},
      {"te_not_final", post("Transfer-Encoding: chunked, gzip\r\n"), 400},
      {"te_only_gzip", post("Transfer-Encoding: gzip\r\n"), 400},
      {"te_identity", post("Transfer-Encoding: identity\r\n"), 400},
      {"te_chunked_twice", post("Transfer-Encoding: chunked, chunked\r\n"), 400},
      {"te_chunked_twice_fields",
       post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), 400},
      {"te_chunked_then_field", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"),
       400},
      {"te_unknown_coding", post("Transfer-Encoding: foo, chunked\r\n"), 501},
      {"te_identity_before_chunked", post("Transfer-Encoding: identity, chunked\r\n"), 501},
      {"te_empty", post("Transfer-Encoding:\r\n"), 400},
      {"te_empty_element", post("Transfer-Encoding: , chunked\r\n"), 400},
      {"te_parameter", post("Transfer-Encoding: chunked;q=1\r\n"), 400},
      {"te_quoted", post("Transfer-Encoding: \"chunked\"\r\n"), 400},
      {"te_space_inside", post("Transfer-Encoding: chun ked\r\n"), 400},
      {"te_vertical_tab",
       post("Transfer-Encoding: \x0b"
            "chunked\r\n"),
       400},
      {"te_http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"te_http10_with_cl",
       "POST / HTTP/1.0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      // --- Expect
      {"expect_100", post("Expect: 100-continue\r\nContent-Length: 1\r\n"), kOk},
      {"expect_100_case", post("Expect: 100-Continue\r\n"), kOk},
      {"expect_other", post("Expect: something\r\n"), 417},
      {"expect_empty", post("Expect:\r\n"), 417},
      {"expect_http10_ignored", "POST / HTTP/1.0\r\nExpect: something\r\n\r\n", kOk},
      // --- Connection, Upgrade
      {"connection_list", get("Connection: keep-alive, X-A\r\nX-A: b\r\n"), kOk},
      {"connection_empty_elements", get("Connection: , close,\r\n"), kOk},
      {"connection_invalid_token", get("Connection: a b\r\n"), 400},
      {"upgrade_websocket", get("Connection: Upgrade\r\nUpgrade: websocket\r\n"), kOk},
      {"upgrade_two_fields", get("Connection: upgrade\r\nUpgrade: a\r\nUpgrade: b\r\n"), 400},
  };
}

std::vector<Case> limitCases() {
  return {
      // 16 (request line) + 9 (Host) + 3 + N + 2 + 2 (final CRLF) = 32 + N bytes.
      {"head_at_limit",
       "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(256 - 32, 'a') + "\r\n\r\n", kOk},
      {"head_over_limit",
       "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(256 - 31, 'a') + "\r\n\r\n", 431},
      {"head_over_limit_unterminated", "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(300, 'a'),
       431},
      {"request_line_too_long", "GET /" + std::string(300, 'a') + " HTTP/1.1\r\n\r\n", 414},
      // The request line is 16 + N bytes.
      {"request_line_fills_limit", "GET /" + std::string(256 - 16, 'a') + " HTTP/1.1\r\n\r\n", 431},
      {"request_line_over_limit", "GET /" + std::string(256 - 15, 'a') + " HTTP/1.1\r\n\r\n", 414},
      {"fields_at_limit", get("A: 1\r\nB: 2\r\nC: 3\r\n"), kOk},
      {"too_many_fields", get("A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n"), 431},
      {"leading_lines_not_counted",
       "\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(256 - 32, 'a') + "\r\n\r\n",
       kOk},
  };
}

Outcome parseWith(const Limits& limits, std::string_view in, Feed how) {
  RequestParser parser(limits);
  return testing::feed(parser, in, how, testing::parseRequest);
}

int expectedOf(const Outcome& o) {
  switch (o.status) {
    case ParseStatus::Complete:
      return kOk;
    case ParseStatus::Incomplete:
      return kIncomplete;
    case ParseStatus::Error:
      return o.error;
  }
  return -2;
}

class RequestTable : public ::testing::TestWithParam<Case> {};
class RequestLimits : public ::testing::TestWithParam<Case> {};

void checkCase(const Case& c, const Limits& limits) {
  const Outcome whole = parseWith(limits, c.input, Feed::Whole);
  EXPECT_EQ(expectedOf(whole), c.expect) << describe(whole);
  // The same bytes, one at a time, give the same result (and the same head length).
  EXPECT_EQ(parseWith(limits, c.input, Feed::BytewiseSameBuffer), whole);
  EXPECT_EQ(parseWith(limits, c.input, Feed::BytewiseMovingBuffer), whole);
  if (whole.status == ParseStatus::Complete) {
    EXPECT_EQ(whole.head_length, c.input.size());
  }
}

TEST_P(RequestTable, Status) { checkCase(GetParam(), Limits{}); }
TEST_P(RequestLimits, Status) { checkCase(GetParam(), smallLimits()); }

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::string caseName(const ::testing::TestParamInfo<Case>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Http, RequestTable, ::testing::ValuesIn(requestCases()), caseName);
INSTANTIATE_TEST_SUITE_P(Http, RequestLimits, ::testing::ValuesIn(limitCases()), caseName);

// --- What the parser extracts from valid requests

class RequestHeadTest : public ::testing::Test {
 protected:
  const RequestHead& parse(std::string_view in) {
    parser_.reset();
    const ParseStatus st = parser_.parse(in.data(), in.size());
    EXPECT_EQ(st, ParseStatus::Complete) << parser_.error().reason;
    return parser_.head();
  }
  const Field* find(std::string_view name) {
    for (const Field& f : parser_.head().fields) {
      if (equalsIgnoreCase(f.name, name)) return &f;
    }
    return nullptr;
  }
  RequestParser parser_{Limits{}};
};

TEST_F(RequestHeadTest, TypicalGet) {
  const std::string in =
      "GET /index.html?x=1 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent:  curl/8 \r\n"
      "Accept: */*\r\n\r\nBODY";
  const RequestHead& h = parse(in);
  EXPECT_EQ(parser_.headLength(), in.size() - 4);
  EXPECT_EQ(h.method, "GET");
  EXPECT_EQ(h.method_id, Method::Get);
  EXPECT_EQ(h.target, "/index.html?x=1");
  EXPECT_EQ(h.forward_target, "/index.html?x=1");
  EXPECT_EQ(h.authority, "www.example.com");
  EXPECT_EQ(h.version, Version::Http11);
  EXPECT_EQ(h.body, BodyKind::None);
  EXPECT_FALSE(h.has_content_length);
  EXPECT_TRUE(h.keep_alive);
  EXPECT_FALSE(h.expect_continue);
  EXPECT_FALSE(h.upgrade);
  ASSERT_EQ(h.fields.size(), 3u);
  EXPECT_EQ(h.fields[0].kind, FieldKind::Host);
  EXPECT_TRUE(h.fields[0].drop);
  EXPECT_EQ(h.fields[1].name, "User-Agent");
  EXPECT_EQ(h.fields[1].value, "curl/8");  // OWS trimmed
  EXPECT_EQ(h.fields[1].kind, FieldKind::Other);
  EXPECT_FALSE(h.fields[1].drop);
}

TEST_F(RequestHeadTest, MethodIds) {
  const std::pair<const char*, Method> methods[] = {
      {"GET", Method::Get},     {"HEAD", Method::Head},     {"POST", Method::Post},
      {"PUT", Method::Put},     {"DELETE", Method::Delete}, {"OPTIONS", Method::Options},
      {"TRACE", Method::Trace}, {"PATCH", Method::Patch},   {"get", Method::Other},
      {"Get", Method::Other},   {"PURGE", Method::Other},
  };
  for (const auto& [name, id] : methods) {
    const std::string in = std::string(name) + " / HTTP/1.1\r\nHost: a\r\n\r\n";
    EXPECT_EQ(parse(in).method_id, id) << name;
  }
}

TEST_F(RequestHeadTest, FieldKindsAndDrops) {
  const RequestHead& h = parse(
      "POST / HTTP/1.1\r\nhost: a\r\nCONTENT-LENGTH: 3\r\nConnection: keep-alive\r\n"
      "Keep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\nUpgrade: h2c\r\nTrailer: X\r\n"
      "Expect: 100-continue\r\nX-Forwarded-For: 1.2.3.4\r\nx-forwarded-proto: https\r\n"
      "Other: o\r\n\r\n");
  const std::pair<FieldKind, bool> want[] = {
      {FieldKind::Host, true},
      {FieldKind::ContentLength, true},
      {FieldKind::Connection, true},
      {FieldKind::KeepAlive, true},
      {FieldKind::ProxyConnection, true},
      {FieldKind::Te, true},
      {FieldKind::Upgrade, true},
      {FieldKind::Trailer, false},  // not chunked: kept
      {FieldKind::Expect, false},
      {FieldKind::XForwardedFor, true},
      {FieldKind::XForwardedProto, true},
      {FieldKind::Other, false},
  };
  ASSERT_EQ(h.fields.size(), std::size(want));
  for (size_t i = 0; i < h.fields.size(); ++i) {
    EXPECT_EQ(h.fields[i].kind, want[i].first) << h.fields[i].name;
    EXPECT_EQ(h.fields[i].drop, want[i].second) << h.fields[i].name;
  }
  EXPECT_FALSE(h.upgrade);  // Upgrade without the "upgrade" connection option
  EXPECT_TRUE(h.expect_continue);
}

TEST_F(RequestHeadTest, TrailerDroppedWhenChunked) {
  const RequestHead& h =
      parse("POST / HTTP/1.1\r\nHost: a\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n");
  EXPECT_EQ(h.body, BodyKind::Chunked);
  EXPECT_TRUE(find("Trailer")->drop);
}

TEST_F(RequestHeadTest, ConnectionNamedFieldsDropped) {
  const RequestHead& h = parse(
      "GET / HTTP/1.1\r\nX-Secret: 1\r\nHost: a\r\nConnection: x-secret, Close\r\n"
      "X-Other: 2\r\nx-SECRET: 3\r\n\r\n");
  EXPECT_FALSE(h.keep_alive);
  EXPECT_TRUE(h.fields[0].drop);
  EXPECT_FALSE(find("X-Other")->drop);
  EXPECT_TRUE(h.fields[4].drop);
}

TEST_F(RequestHeadTest, KeepAlive) {
  EXPECT_TRUE(parse("GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
  EXPECT_FALSE(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
  EXPECT_FALSE(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n").keep_alive);
  EXPECT_FALSE(parse("GET / HTTP/1.0\r\n\r\n").keep_alive);
  EXPECT_TRUE(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
  EXPECT_FALSE(parse("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
  EXPECT_FALSE(
      parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n").keep_alive);
}

TEST_F(RequestHeadTest, Upgrade) {
  const RequestHead& h = parse(
      "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Key: k\r\n\r\n");
  EXPECT_TRUE(h.upgrade);
  EXPECT_EQ(h.upgrade_value, "websocket");
  EXPECT_TRUE(find("Upgrade")->drop);
  EXPECT_FALSE(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n").upgrade);
  EXPECT_FALSE(parse("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").upgrade);
  EXPECT_FALSE(
      parse("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade);
}

TEST_F(RequestHeadTest, H2cUpgradeIsIgnored) {
  // Tunnelled, the HTTP/2 requests after an h2c upgrade would pass the proxy unseen.
  for (const char* offer : {"h2c", "H2C", "websocket, h2c"}) {
    const std::string request = std::string("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, "
                                            "HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
                                            "Upgrade: ") + offer + "\r\n\r\n";
    const RequestHead& h = parse(request);  // the head views the request's bytes
    EXPECT_FALSE(h.upgrade) << offer;
    EXPECT_TRUE(find("Upgrade")->drop);
    EXPECT_TRUE(find("HTTP2-Settings")->drop);
  }
  EXPECT_TRUE(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2\r\n\r\n").upgrade);
}

TEST(UpgradeChoice, A101MustChooseAnOfferedProtocol) {
  EXPECT_TRUE(upgradeChosenFromOffer("websocket", "websocket"));
  EXPECT_TRUE(upgradeChosenFromOffer("websocket", "WebSocket"));
  EXPECT_TRUE(upgradeChosenFromOffer("foo/2, websocket", "websocket"));
  EXPECT_TRUE(upgradeChosenFromOffer("foo/2", "foo/2"));
  EXPECT_TRUE(upgradeChosenFromOffer("foo", "foo/2"));  // no version offered: any
  EXPECT_TRUE(upgradeChosenFromOffer("foo/2", "foo"));
  EXPECT_FALSE(upgradeChosenFromOffer("foo/2", "foo/3"));
  EXPECT_FALSE(upgradeChosenFromOffer("websocket", "foo"));
  EXPECT_FALSE(upgradeChosenFromOffer("websocket", "websocket, foo"));
  EXPECT_FALSE(upgradeChosenFromOffer("websocket", ""));
  EXPECT_FALSE(upgradeChosenFromOffer("websocket", "websocketx"));
  EXPECT_FALSE(upgradeChosenFromOffer("websocket", "/"));
}

TEST_F(RequestHeadTest, ContentLengthNormalised) {
  const RequestHead& h = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7 , 7,7\r\n\r\n");
  EXPECT_EQ(h.body, BodyKind::ContentLength);
  EXPECT_TRUE(h.has_content_length);
  EXPECT_EQ(h.content_length, 7u);
  const RequestHead& z = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(z.body, BodyKind::ContentLength);
  EXPECT_EQ(z.content_length, 0u);
  EXPECT_EQ(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n")
                .content_length,
            9223372036854775807u);
}

TEST_F(RequestHeadTest, TransferCodings) {
  EXPECT_EQ(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
                .transfer_codings_before_chunked,
            "");
  const RequestHead& h =
      parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip ,deflate,  chunked\r\n\r\n");
  EXPECT_EQ(h.body, BodyKind::Chunked);
  EXPECT_EQ(h.transfer_codings_before_chunked, "gzip ,deflate");
  EXPECT_EQ(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n")
                .transfer_codings_before_chunked,
            "gzip");
}

TEST_F(RequestHeadTest, AbsoluteForm) {
  const RequestHead& h = parse("GET http://Example.com:8080/a/b?c HTTP/1.1\r\nHost: other\r\n\r\n");
  EXPECT_EQ(h.target, "http://Example.com:8080/a/b?c");
  EXPECT_EQ(h.forward_target, "/a/b?c");
  EXPECT_EQ(h.authority, "Example.com:8080");  // the Host field is ignored
  EXPECT_EQ(parse("GET http://example.com HTTP/1.1\r\nHost: x\r\n\r\n").forward_target, "/");
  const RequestHead& o = parse("OPTIONS https://example.com HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(o.forward_target, "*");
  EXPECT_EQ(o.authority, "example.com");
}

TEST_F(RequestHeadTest, AsteriskAndHttp10) {
  const RequestHead& h = parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(h.forward_target, "*");
  const RequestHead& old = parse("GET /x HTTP/1.0\r\n\r\n");
  EXPECT_EQ(old.version, Version::Http10);
  EXPECT_TRUE(old.authority.empty());
  EXPECT_TRUE(parse("GET / HTTP/1.1\r\nHost:\r\n\r\n").authority.empty());
}

TEST_F(RequestHeadTest, ExpectIgnoredInHttp10) {
  const RequestHead& h = parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
  EXPECT_FALSE(h.expect_continue);
  EXPECT_TRUE(find("Expect")->drop);
}

TEST_F(RequestHeadTest, ObsTextAndEmptyValues) {
  parse("GET / HTTP/1.1\r\nHost: a\r\nX-A: \xe9t\xe9\r\nX-B:\r\nX-C: \t \r\n\r\n");
  EXPECT_EQ(find("X-A")->value, "\xe9t\xe9");
  EXPECT_EQ(find("X-B")->value, "");
  EXPECT_EQ(find("X-C")->value, "");
}

TEST(RequestParser, ErrorReasons) {
  RequestParser p{Limits{}};
  const std::string in =
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
  ASSERT_EQ(p.parse(in.data(), in.size()), ParseStatus::Error);
  EXPECT_EQ(p.error().status, 400);
  EXPECT_STREQ(p.error().reason, "both Content-Length and Transfer-Encoding");
  p.reset();
  const std::string te = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br, chunked\r\n\r\n";
  ASSERT_EQ(p.parse(te.data(), te.size()), ParseStatus::Error);
  EXPECT_STREQ(p.error().reason, "unknown transfer coding");
}

TEST(RequestParser, RejectsGarbageAtFirstByte) {
  RequestParser p{Limits{}};
  const char hello = '\x16';  // TLS handshake record
  EXPECT_EQ(p.parse(&hello, 1), ParseStatus::Error);
  EXPECT_EQ(p.error().status, 400);
  // And an invalid request line is refused as soon as its CRLF arrives, before any field.
  RequestParser q{Limits{}};
  const std::string v = "GET / HTTP/2.0\r\n";
  EXPECT_EQ(q.parse(v.data(), v.size()), ParseStatus::Error);
  EXPECT_EQ(q.error().status, 505);
  RequestParser r{Limits{}};
  const std::string c = "CONNECT a:443 HTTP/1.1\r\n";
  EXPECT_EQ(r.parse(c.data(), c.size()), ParseStatus::Error);
  EXPECT_EQ(r.error().status, 501);
}

TEST(RequestParser, ErrorIsSticky) {
  RequestParser p{Limits{}};
  EXPECT_EQ(p.parse("@", 1), ParseStatus::Error);
  EXPECT_EQ(p.parse("GET / HTTP/1.1\r\n\r\n", 18), ParseStatus::Error);
}

TEST(RequestParser, ViewsFollowAMovedBuffer) {
  const std::string in = "GET /path HTTP/1.1\r\nHost: example.com\r\nX-A: value\r\n\r\n";
  RequestParser p{Limits{}};
  std::unique_ptr<char[]> keep;
  const Outcome o = testing::feed(p, in, Feed::BytewiseMovingBuffer, testing::parseRequest, &keep);
  ASSERT_EQ(o.status, ParseStatus::Complete);
  // Every view points into the last buffer (the earlier ones are freed; ASan would catch a read).
  const RequestHead& h = p.head();
  EXPECT_EQ(h.method.data(), keep.get());
  EXPECT_EQ(h.target, "/path");
  EXPECT_EQ(h.authority, "example.com");
  EXPECT_EQ(h.fields[1].name, "X-A");
  EXPECT_EQ(h.fields[1].value, "value");
}

TEST(RequestParser, ReusesFieldStorage) {
  RequestParser p{Limits{}};
  const std::string in = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
  ASSERT_EQ(p.parse(in.data(), in.size()), ParseStatus::Complete);
  const Field* storage = p.head().fields.data();
  const size_t capacity = p.head().fields.capacity();
  for (int i = 0; i < 3; ++i) {
    p.reset();
    EXPECT_TRUE(p.head().fields.empty());
    ASSERT_EQ(p.parse(in.data(), in.size()), ParseStatus::Complete);
    EXPECT_EQ(p.head().fields.data(), storage);
    EXPECT_EQ(p.head().fields.capacity(), capacity);
  }
}

TEST(RequestParser, PipelinedRequests) {
  const std::string in = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
  RequestParser p{Limits{}};
  ASSERT_EQ(p.parse(in.data(), in.size()), ParseStatus::Complete);
  EXPECT_EQ(p.head().target, "/1");
  const size_t used = p.headLength();
  p.reset();
  ASSERT_EQ(p.parse(in.data() + used, in.size() - used), ParseStatus::Complete);
  EXPECT_EQ(p.head().target, "/2");
  EXPECT_EQ(p.headLength(), in.size() - used);
}

TEST(RequestParser, EqualsIgnoreCase) {
  EXPECT_TRUE(equalsIgnoreCase("Content-Length", "content-length"));
  EXPECT_TRUE(equalsIgnoreCase("", ""));
  EXPECT_FALSE(equalsIgnoreCase("a", "ab"));
  EXPECT_FALSE(equalsIgnoreCase("\r", "-"));
  EXPECT_FALSE(equalsIgnoreCase("[", "{"));
}

}  // namespace
}  // namespace ballast::http
