// Response parser: the table of rules (every error is answered 502 by the caller), each case also
// fed one byte at a time, and the framing/keep-alive decisions for valid responses.
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "http/parser.h"
#include "http_test_util.h"

namespace ballast::http {
namespace {

using testing::Feed;
using testing::Outcome;
using namespace std::string_literals;

enum class Want { Ok, Incomplete, Error };

struct Case {
  std::string name;
  std::string input;
  Want expect;
  Method method = Method::Get;  // of the request answered
};

std::string ok(const std::string& fields) { return "HTTP/1.1 200 OK\r\n" + fields + "\r\n"; }
std::string status(const std::string& status_line, const std::string& fields = "") {
  return status_line + "\r\n" + fields + "\r\n";
}

Limits smallLimits() {
  Limits l;
  l.max_head_size = 128;
  l.max_fields = 3;
  return l;
}

std::vector<Case> responseCases() {
  return {
      // --- status line
      {"ok_basic", ok("Content-Length: 0\r\n"), Want::Ok},
      {"no_fields", ok(""), Want::Ok},
      {"reason_missing_sp", status("HTTP/1.1 200"), Want::Ok},
      {"reason_empty", status("HTTP/1.1 200 "), Want::Ok},
      {"reason_with_spaces", status("HTTP/1.1 404 Not  Found "), Want::Ok},
      {"reason_obs_text", status("HTTP/1.1 200 \xc3\x93K"), Want::Ok},
      {"reason_ctl", status("HTTP/1.1 200 O\x01K"), Want::Error},
      {"reason_nul", status("HTTP/1.1 200 O\0K"s), Want::Error},
      {"http10", status("HTTP/1.0 200 OK"), Want::Ok},
      {"http12_is_11", status("HTTP/1.2 200 OK"), Want::Ok},
      {"http20", status("HTTP/2.0 200 OK"), Want::Error},
      {"http09", status("HTTP/0.9 200 OK"), Want::Error},
      {"lowercase_http", status("http/1.1 200 OK"), Want::Error},
      {"status_099", status("HTTP/1.1 099 X"), Want::Error},
      {"status_600", status("HTTP/1.1 600 X"), Want::Error},
      {"status_599", status("HTTP/1.1 599 X"), Want::Ok},
      {"status_two_digits", status("HTTP/1.1 20 OK"), Want::Error},
      {"status_four_digits", status("HTTP/1.1 2000 OK"), Want::Error},
      {"status_letters", status("HTTP/1.1 2x0 OK"), Want::Error},
      {"double_space", status("HTTP/1.1  200 OK"), Want::Error},
      {"tab_separator", status("HTTP/1.1\t200 OK"), Want::Error},
      {"status_line_bare_lf", "HTTP/1.1 200 OK\n\r\n", Want::Error},
      {"status_line_bare_cr", "HTTP/1.1 200 OK\rX: y\r\n\r\n", Want::Error},
      {"leading_crlf", "\r\nHTTP/1.1 200 OK\r\n\r\n", Want::Error},
      {"garbage", "\x16\x03\x01\r\n\r\n", Want::Error},
      {"incomplete", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", Want::Incomplete},
      // --- fields
      {"obs_fold", ok("X-A: b\r\n c\r\n"), Want::Error},
      {"space_before_colon", ok("X-A : b\r\n"), Want::Error},
      {"bare_cr_value", ok("X-A: b\rc\r\n"), Want::Error},
      {"bare_lf_field", "HTTP/1.1 200 OK\r\nX-A: b\n\r\n", Want::Error},
      {"nul_value", ok("X-A: \0\r\n"s), Want::Error},
      {"ctl_value", ok("X-A: \x07\r\n"), Want::Error},
      {"invalid_name", ok("X/A: b\r\n"), Want::Error},
      {"empty_name", ok(": b\r\n"), Want::Error},
      {"obs_text_value", ok("X-A: \xff\r\n"), Want::Ok},
      // --- framing
      {"cl_te", ok("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"), Want::Error},
      {"cl_conflict", ok("Content-Length: 3\r\nContent-Length: 4\r\n"), Want::Error},
      {"cl_list_conflict", ok("Content-Length: 3, 4\r\n"), Want::Error},
      {"cl_list_same", ok("Content-Length: 3, 3\r\n"), Want::Ok},
      {"cl_invalid", ok("Content-Length: -1\r\n"), Want::Error},
      {"cl_overflow", ok("Content-Length: 99999999999999999999\r\n"), Want::Error},
      {"te_chunked", ok("Transfer-Encoding: chunked\r\n"), Want::Ok},
      {"te_gzip_chunked", ok("Transfer-Encoding: gzip, chunked\r\n"), Want::Ok},
      {"te_unknown_before_chunked", ok("Transfer-Encoding: br, chunked\r\n"), Want::Ok},
      {"te_not_chunked", ok("Transfer-Encoding: gzip\r\n"), Want::Ok},
      {"te_chunked_not_final", ok("Transfer-Encoding: chunked, gzip\r\n"), Want::Ok},
      {"te_chunked_twice", ok("Transfer-Encoding: chunked, chunked\r\n"), Want::Error},
      {"te_empty", ok("Transfer-Encoding:\r\n"), Want::Error},
      {"te_invalid", ok("Transfer-Encoding: chunked;x=1\r\n"), Want::Error},
      {"te_http10", status("HTTP/1.0 200 OK", "Transfer-Encoding: chunked\r\n"), Want::Error},
      {"te_204", status("HTTP/1.1 204 No Content", "Transfer-Encoding: chunked\r\n"), Want::Ok},
      {"cl_te_304",
       status("HTTP/1.1 304 Not Modified", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
       Want::Error},
      // --- upgrade
      {"upgrade_101",
       status("HTTP/1.1 101 Switching Protocols", "Connection: Upgrade\r\nUpgrade: websocket\r\n"),
       Want::Ok},
      {"upgrade_101_no_connection", status("HTTP/1.1 101 Switching Protocols", "Upgrade: ws\r\n"),
       Want::Error},
      {"upgrade_101_no_upgrade",
       status("HTTP/1.1 101 Switching Protocols", "Connection: upgrade\r\n"), Want::Error},
      {"upgrade_101_two_upgrades",
       status("HTTP/1.1 101 X", "Connection: upgrade\r\nUpgrade: a\r\nUpgrade: b\r\n"),
       Want::Error},
      {"connection_invalid", ok("Connection: a b\r\n"), Want::Error},
  };
}

std::vector<Case> limitCases() {
  return {
      // 17 (status line) + 3 + N + 2 + 2 = 24 + N bytes
      {"head_at_limit", ok("X: " + std::string(128 - 24, 'a') + "\r\n"), Want::Ok},
      {"head_over_limit", ok("X: " + std::string(128 - 23, 'a') + "\r\n"), Want::Error},
      {"head_over_limit_unterminated", "HTTP/1.1 200 OK\r\nX: " + std::string(200, 'a'),
       Want::Error},
      {"status_line_too_long", "HTTP/1.1 200 " + std::string(200, 'a') + "\r\n\r\n", Want::Error},
      {"fields_at_limit", ok("A: 1\r\nB: 2\r\nC: 3\r\n"), Want::Ok},
      {"too_many_fields", ok("A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n"), Want::Error},
  };
}

Outcome parseWith(const Limits& limits, const Case& c, Feed how) {
  ResponseParser parser(limits);
  return testing::feed(parser, c.input, how, [&c](ResponseParser& p, const char* d, size_t n) {
    return p.parse(d, n, c.method);
  });
}

void checkCase(const Case& c, const Limits& limits) {
  const Outcome whole = parseWith(limits, c, Feed::Whole);
  const ParseStatus want = c.expect == Want::Ok           ? ParseStatus::Complete
                           : c.expect == Want::Incomplete ? ParseStatus::Incomplete
                                                          : ParseStatus::Error;
  EXPECT_EQ(whole.status, want) << describe(whole);
  if (whole.status == ParseStatus::Error) {
    EXPECT_EQ(whole.error, 502);
  }
  if (whole.status == ParseStatus::Complete) {
    EXPECT_EQ(whole.head_length, c.input.size());
  }
  EXPECT_EQ(parseWith(limits, c, Feed::BytewiseSameBuffer), whole);
  EXPECT_EQ(parseWith(limits, c, Feed::BytewiseMovingBuffer), whole);
}

class ResponseTable : public ::testing::TestWithParam<Case> {};
class ResponseLimits : public ::testing::TestWithParam<Case> {};
TEST_P(ResponseTable, Status) { checkCase(GetParam(), Limits{}); }
TEST_P(ResponseLimits, Status) { checkCase(GetParam(), smallLimits()); }

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::string caseName(const ::testing::TestParamInfo<Case>& info) { return info.param.name; }
INSTANTIATE_TEST_SUITE_P(Http, ResponseTable, ::testing::ValuesIn(responseCases()), caseName);
INSTANTIATE_TEST_SUITE_P(Http, ResponseLimits, ::testing::ValuesIn(limitCases()), caseName);

// --- Framing and connection decisions

class ResponseHeadTest : public ::testing::Test {
 protected:
  const ResponseHead& parse(std::string_view in, Method method = Method::Get) {
    parser_.reset();
    const ParseStatus st = parser_.parse(in.data(), in.size(), method);
    EXPECT_EQ(st, ParseStatus::Complete) << parser_.error().reason;
    return parser_.head();
  }
  const Field* find(std::string_view name) {
    for (const Field& f : parser_.head().fields) {
      if (equalsIgnoreCase(f.name, name)) return &f;
    }
    return nullptr;
  }
  ResponseParser parser_{Limits{}};
};

TEST_F(ResponseHeadTest, StatusLine) {
  const ResponseHead& h = parse("HTTP/1.1 404 Not Found\r\nServer: x\r\n\r\n");
  EXPECT_EQ(h.status, 404);
  EXPECT_EQ(h.reason, "Not Found");
  EXPECT_EQ(h.version, Version::Http11);
  EXPECT_EQ(parse("HTTP/1.1 200\r\n\r\n").reason, "");
  EXPECT_EQ(parse("HTTP/1.0 200 OK\r\n\r\n").version, Version::Http10);
}

TEST_F(ResponseHeadTest, BodyKinds) {
  EXPECT_EQ(parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").body, BodyKind::ContentLength);
  EXPECT_EQ(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").body, BodyKind::Chunked);
  EXPECT_EQ(parse("HTTP/1.1 200 OK\r\n\r\n").body, BodyKind::UntilClose);
  EXPECT_EQ(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").body, BodyKind::UntilClose);
  EXPECT_EQ(parse("HTTP/1.1 204 No Content\r\n\r\n").body, BodyKind::None);
  EXPECT_EQ(parse("HTTP/1.1 100 Continue\r\n\r\n").body, BodyKind::None);
  EXPECT_EQ(parse("HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n").body, BodyKind::None);
  EXPECT_EQ(parse("HTTP/1.1 200 OK\r\n\r\n", Method::Connect).body, BodyKind::None);
  EXPECT_EQ(parse("HTTP/1.1 407 Auth\r\nContent-Length: 1\r\n\r\n", Method::Connect).body,
            BodyKind::ContentLength);

  const ResponseHead& head = parse("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", Method::Head);
  EXPECT_EQ(head.body, BodyKind::None);
  EXPECT_TRUE(head.has_content_length);
  EXPECT_EQ(head.content_length, 1234u);
  const ResponseHead& nm = parse("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n");
  EXPECT_EQ(nm.body, BodyKind::None);
  EXPECT_TRUE(nm.has_content_length);
  EXPECT_EQ(nm.content_length, 99u);
}

TEST_F(ResponseHeadTest, TransferEncodingForwardedOnlyWhenCloseDelimited) {
  const ResponseHead& gz = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
  EXPECT_FALSE(find("Transfer-Encoding")->drop);
  EXPECT_FALSE(gz.keep_alive);
  const ResponseHead& ch = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
  EXPECT_TRUE(find("Transfer-Encoding")->drop);
  EXPECT_EQ(ch.transfer_codings_before_chunked, "gzip");
  EXPECT_TRUE(ch.keep_alive);
}

TEST_F(ResponseHeadTest, KeepAlive) {
  EXPECT_TRUE(parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
  EXPECT_FALSE(
      parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").keep_alive);
  EXPECT_FALSE(parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
  EXPECT_TRUE(
      parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
  EXPECT_FALSE(parse("HTTP/1.1 200 OK\r\n\r\n").keep_alive);  // close-delimited
  EXPECT_TRUE(parse("HTTP/1.1 204 No Content\r\n\r\n").keep_alive);
}

TEST_F(ResponseHeadTest, Upgrade) {
  const ResponseHead& h = parse(
      "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Accept: x\r\n\r\n");
  EXPECT_TRUE(h.upgrade);
  EXPECT_EQ(h.upgrade_value, "websocket");
  EXPECT_EQ(h.body, BodyKind::None);
  EXPECT_FALSE(parse("HTTP/1.1 200 OK\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n").upgrade);
}

TEST_F(ResponseHeadTest, HopByHopDropped) {
  parse(
      "HTTP/1.1 200 OK\r\nConnection: close, X-Internal\r\nKeep-Alive: 5\r\nX-Internal: 1\r\n"
      "Proxy-Connection: x\r\nServer: s\r\nContent-Length: 0\r\nTrailer: X\r\n\r\n");
  for (const char* name :
       {"Connection", "Keep-Alive", "X-Internal", "Proxy-Connection", "Content-Length"}) {
    EXPECT_TRUE(find(name)->drop) << name;
  }
  EXPECT_FALSE(find("Server")->drop);
  EXPECT_FALSE(find("Trailer")->drop);  // not chunked
  parse("HTTP/1.1 200 OK\r\nTrailer: X\r\nTransfer-Encoding: chunked\r\n\r\n");
  EXPECT_TRUE(find("Trailer")->drop);
}

TEST(ResponseParser, ErrorStatusIsAlways502) {
  ResponseParser p{Limits{}};
  const std::string in = "HTTP/1.1 200 OK\r\nX : y\r\n\r\n";
  ASSERT_EQ(p.parse(in.data(), in.size(), Method::Get), ParseStatus::Error);
  EXPECT_EQ(p.error().status, 502);
  EXPECT_STREQ(p.error().reason, "whitespace between field name and colon");
}

TEST(ResponseParser, InterimThenFinal) {
  const std::string in =
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
  ResponseParser p{Limits{}};
  ASSERT_EQ(p.parse(in.data(), in.size(), Method::Post), ParseStatus::Complete);
  EXPECT_EQ(p.head().status, 100);
  const size_t used = p.headLength();
  p.reset();
  ASSERT_EQ(p.parse(in.data() + used, in.size() - used, Method::Post), ParseStatus::Complete);
  EXPECT_EQ(p.head().status, 200);
  EXPECT_EQ(used + p.headLength(), in.size() - 2);
}

}  // namespace
}  // namespace ballast::http
