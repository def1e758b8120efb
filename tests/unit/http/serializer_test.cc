// Serializer: exact output for parsed heads (the "clean out" half of the contract).
#include "http/serializer.h"

#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "http/parser.h"

namespace ballast::http {
namespace {

class RequestSerializerTest : public ::testing::Test {
 protected:
  std::string forward(std::string_view in, RequestForwarding fwd = {"192.0.2.9", "http", true}) {
    parser_.reset();
    EXPECT_EQ(parser_.parse(in.data(), in.size()), ParseStatus::Complete) << parser_.error().reason;
    char out[4096];
    const size_t n = serializeRequestHead(parser_.head(), fwd, out, sizeof out);
    EXPECT_GT(n, 0u);
    return std::string(out, n);
  }
  RequestParser parser_{Limits{}};
};

TEST_F(RequestSerializerTest, HopByHopRemovedAndForwardedAppended) {
  EXPECT_EQ(forward("GET /a?b HTTP/1.1\r\n"
                    "User-Agent: ua\r\n"
                    "Host: example.com\r\n"
                    "Connection: keep-alive, X-Secret\r\n"
                    "X-Secret: s\r\n"
                    "Keep-Alive: timeout=5\r\n"
                    "TE: trailers\r\n"
                    "Proxy-Connection: keep-alive\r\n"
                    "Upgrade: h2c\r\n"
                    "X-Forwarded-For: 198.51.100.1\r\n"
                    "Accept:   */*  \r\n"
                    "x-forwarded-for: 198.51.100.2, 198.51.100.3\r\n"
                    "X-Forwarded-Proto: https\r\n"
                    "\r\n"),
            "GET /a?b HTTP/1.1\r\n"
            "Host: example.com\r\n"
            "User-Agent: ua\r\n"
            "Accept: */*\r\n"
            "X-Forwarded-For: 198.51.100.1, 198.51.100.2, 198.51.100.3, 192.0.2.9\r\n"
            "X-Forwarded-Proto: http\r\n"
            "\r\n");
}

TEST_F(RequestSerializerTest, UnderscoredLookalikesOfManagedFieldsAreDropped) {
  // A CGI-style server reads Transfer_Encoding as Transfer-Encoding, X_Forwarded_For as
  // X-Forwarded-For: they would bypass the proxy's framing and its client address.
  EXPECT_EQ(forward("POST / HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\n"
                    "Content_Length: 9\r\nx_forwarded_FOR: 10.0.0.1\r\nX_Forwarded_Proto: https\r\n"
                    "Keep_Alive: 1\r\nProxy_Connection: x\r\nX_Client_Id: kept\r\n"
                    "X-Forwarded_For_Me: kept\r\nContent-Length: 0\r\n\r\n"),
            "POST / HTTP/1.1\r\nHost: h\r\nX_Client_Id: kept\r\nX-Forwarded_For_Me: kept\r\n"
            "X-Forwarded-For: 192.0.2.9\r\nX-Forwarded-Proto: http\r\nContent-Length: 0\r\n\r\n");
}

TEST_F(RequestSerializerTest, AbsoluteFormBecomesOriginFormWithItsAuthority) {
  EXPECT_EQ(forward("GET http://example.com/a?b HTTP/1.1\r\nHost: other\r\n\r\n", {"", "", true}),
            "GET /a?b HTTP/1.1\r\nHost: example.com\r\n\r\n");
  // An empty path is "/", also in front of a query.
  EXPECT_EQ(forward("GET http://example.com?q HTTP/1.1\r\nHost: example.com\r\n\r\n", {"", "", true}),
            "GET /?q HTTP/1.1\r\nHost: example.com\r\n\r\n");
}

TEST_F(RequestSerializerTest, ForwardedFieldsPassThroughWhenDisabled) {
  EXPECT_EQ(forward("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\n"
                    "X-Forwarded-Proto: https\r\nConnection: X-Forwarded-Proto\r\n\r\n",
                    {"192.0.2.9", "http", false}),
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n");
}

TEST_F(RequestSerializerTest, ConnectionNamedForwardedForIsNotJoined) {
  EXPECT_EQ(forward("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\n"
                    "Connection: x-forwarded-for\r\n\r\n"),
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.9\r\n"
            "X-Forwarded-Proto: http\r\n\r\n");
}

TEST_F(RequestSerializerTest, FramingRewritten) {
  EXPECT_EQ(forward("POST /p HTTP/1.1\r\nContent-Length: 5, 5\r\nHost: h\r\n"
                    "Content-Length: 5\r\n\r\n",
                    {"", "", true}),
            "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n");
  EXPECT_EQ(forward("POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n"
                    "Trailer: X-Sum\r\nTransfer-Encoding: Chunked\r\n\r\n",
                    {"", "", true}),
            "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
  EXPECT_EQ(
      forward("POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", {"", "", true}),
      "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
  EXPECT_EQ(forward("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", {"", "", true}),
            "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
}

TEST_F(RequestSerializerTest, AbsoluteFormAndHttp10) {
  EXPECT_EQ(forward("GET http://example.com:81/x?y HTTP/1.1\r\nHost: ignored\r\n\r\n",
                    {"10.0.0.1", "https", true}),
            "GET /x?y HTTP/1.1\r\nHost: example.com:81\r\nX-Forwarded-For: 10.0.0.1\r\n"
            "X-Forwarded-Proto: https\r\n\r\n");
  EXPECT_EQ(forward("OPTIONS http://example.com HTTP/1.1\r\nHost: h\r\n\r\n", {"", "", true}),
            "OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n");
  // HTTP/1.0 without Host: an empty Host (RFC 9112 3.2); 1.0 keep-alive is not forwarded.
  EXPECT_EQ(
      forward("GET / HTTP/1.0\r\nConnection: keep-alive\r\nExpect: x\r\n\r\n", {"", "", true}),
      "GET / HTTP/1.1\r\nHost: \r\n\r\n");
  EXPECT_EQ(
      forward("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
              {"", "", true}),
      "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
}

TEST_F(RequestSerializerTest, Upgrade) {
  EXPECT_EQ(forward("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                    "Sec-WebSocket-Key: k\r\n\r\n",
                    {"", "", true}),
            "GET /ws HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k\r\n"
            "Connection: upgrade\r\nUpgrade: websocket\r\n\r\n");
}

TEST_F(RequestSerializerTest, CapacityTooSmall) {
  const std::string in = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
  ASSERT_EQ(parser_.parse(in.data(), in.size()), ParseStatus::Complete);
  const RequestForwarding fwd{"", "", true};
  const std::string want = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
  char out[64];
  EXPECT_EQ(serializeRequestHead(parser_.head(), fwd, out, want.size()), want.size());
  EXPECT_EQ(std::string(out, want.size()), want);
  EXPECT_EQ(serializeRequestHead(parser_.head(), fwd, out, want.size() - 1), 0u);
  EXPECT_EQ(serializeRequestHead(parser_.head(), fwd, out, 0), 0u);
}

class ResponseSerializerTest : public ::testing::Test {
 protected:
  std::string forward(std::string_view in, ResponseForwarding fwd = {},
                      Method method = Method::Get) {
    parser_.reset();
    EXPECT_EQ(parser_.parse(in.data(), in.size(), method), ParseStatus::Complete)
        << parser_.error().reason;
    char out[4096];
    const size_t n = serializeResponseHead(parser_.head(), fwd, out, sizeof out);
    EXPECT_GT(n, 0u);
    return withDateMasked(std::string(out, n));
  }
  // The Date field Ballast adds becomes "Date: *" once its form is checked (it changes each second).
  static std::string withDateMasked(std::string head) {
    size_t at = head.find("\r\nDate: ");
    if (at == std::string::npos) return head;
    size_t end = head.find("\r\n", at + 2);
    std::string value = head.substr(at + 8, end - at - 8);
    EXPECT_TRUE(std::regex_match(value, std::regex(R"((Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-3][0-9] )"
                                                   R"((Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) )"
                                                   R"(20[0-9][0-9] [0-2][0-9]:[0-5][0-9]:[0-6][0-9] GMT)")))
        << value;
    return head.replace(at + 8, end - at - 8, "*");
  }
  ResponseParser parser_{Limits{}};
};

TEST_F(ResponseSerializerTest, HopByHopRemoved) {
  EXPECT_EQ(
      forward("HTTP/1.1 200 OK\r\nServer: s\r\nConnection: keep-alive, X-Internal\r\n"
              "Keep-Alive: timeout=5\r\nX-Internal: 1\r\nContent-Length: 12\r\n"
              "Content-Type:  text/html \r\n\r\n"),
      "HTTP/1.1 200 OK\r\nServer: s\r\nContent-Type: text/html\r\nDate: *\r\n"
      "Content-Length: 12\r\n\r\n");
}

TEST_F(ResponseSerializerTest, ConnectionPerForwarding) {
  const std::string in = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n";
  EXPECT_EQ(forward(in, {.close = true}),
            "HTTP/1.1 200 OK\r\nDate: *\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(forward(in, {.client_http10 = true}),
            "HTTP/1.1 200 OK\r\nDate: *\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_EQ(forward(in), "HTTP/1.1 200 OK\r\nDate: *\r\nContent-Length: 2\r\n\r\n");
}

TEST_F(ResponseSerializerTest, Chunked) {
  const std::string in =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nTrailer: X-Sum\r\n\r\n";
  EXPECT_EQ(forward(in), "HTTP/1.1 200 OK\r\nDate: *\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
  EXPECT_EQ(forward(in, {.close = true, .client_http10 = true, .dechunk = true}),
            "HTTP/1.1 200 OK\r\nDate: *\r\nConnection: close\r\n\r\n");
}

TEST_F(ResponseSerializerTest, CloseDelimitedKeepsItsFraming) {
  EXPECT_EQ(forward("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", {.close = true}),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nDate: *\r\nConnection: close\r\n\r\n");
}

TEST_F(ResponseSerializerTest, ContentLengthRules) {
  EXPECT_EQ(forward("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"),
            "HTTP/1.1 204 No Content\r\nDate: *\r\n\r\n");
  EXPECT_EQ(forward("HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\nETag: \"x\"\r\n\r\n"),
            "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nDate: *\r\nContent-Length: 7\r\n\r\n");
  EXPECT_EQ(forward("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", {}, Method::Head),
            "HTTP/1.1 200 OK\r\nDate: *\r\nContent-Length: 7\r\n\r\n");
  EXPECT_EQ(forward("HTTP/1.1 100 Continue\r\n\r\n"), "HTTP/1.1 100 Continue\r\n\r\n");
  EXPECT_EQ(forward("HTTP/1.1 200\r\nContent-Length: 3, 3\r\n\r\n"),
            "HTTP/1.1 200 \r\nDate: *\r\nContent-Length: 3\r\n\r\n");
}

TEST_F(ResponseSerializerTest, DateAddedOnlyWhenMissing) {
  // RFC 9110 6.6.1: a recipient with a clock adds Date to a response it forwards without one.
  EXPECT_EQ(forward("HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 0\r\n\r\n"),
            "HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(forward("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"),
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");  // interim: none needed
  EXPECT_EQ(forward("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
            "HTTP/1.1 404 Not Found\r\nDate: *\r\nContent-Length: 0\r\n\r\n");
}

TEST_F(ResponseSerializerTest, OwnCookieIsNotSetByTheServerToo) {
  // http_cookie: Ballast sets BALLAST_SERVER; the server's cookie of that name is not passed on.
  EXPECT_EQ(forward("HTTP/1.1 200 OK\r\nSet-Cookie: BALLAST_SERVER=app; Path=/\r\n"
                    "Set-Cookie: a=1\r\nset-cookie:  BALLAST_SERVER =x\r\n"
                    "Set-Cookie: BALLAST_SERVER2=kept\r\nContent-Length: 0\r\n\r\n",
                    {.extra_fields = "Set-Cookie: BALLAST_SERVER=00ff; Path=/; HttpOnly\r\n",
                     .own_cookie = "BALLAST_SERVER"}),
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: BALLAST_SERVER2=kept\r\n"
            "Date: *\r\nContent-Length: 0\r\n"
            "Set-Cookie: BALLAST_SERVER=00ff; Path=/; HttpOnly\r\n\r\n");
}

TEST_F(ResponseSerializerTest, Upgrade) {
  EXPECT_EQ(forward("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                    "Upgrade: websocket\r\nSec-WebSocket-Accept: a\r\n\r\n",
                    {.close = true}),
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: a\r\n"
            "Connection: upgrade\r\nUpgrade: websocket\r\n\r\n");
}

TEST(Serializer, ChunkHeader) {
  char out[20];
  EXPECT_EQ(std::string(out, writeChunkHeader(0, out)), "0\r\n");
  EXPECT_EQ(std::string(out, writeChunkHeader(255, out)), "ff\r\n");
  EXPECT_EQ(std::string(out, writeChunkHeader(4096, out)), "1000\r\n");
  EXPECT_EQ(std::string(out, writeChunkHeader(SIZE_MAX, out)), "ffffffffffffffff\r\n");
  EXPECT_EQ(kLastChunk, "0\r\n\r\n");
  EXPECT_EQ(kChunkTrailer, "\r\n");
}

TEST(Serializer, ErrorResponses) {
  for (int status : {400, 403, 404, 405, 408, 413, 414, 417, 431, 500, 501, 502, 503, 504, 505}) {
    const std::string_view r = errorResponse(status);
    const std::string reason = reasonPhrase(status);
    const std::string body = reason + "\n";
    EXPECT_EQ(r, "HTTP/1.1 " + std::to_string(status) + " " + reason +
                     "\r\nContent-Type: text/plain\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
    // And the client side of Ballast would accept it.
    ResponseParser p{Limits{}};
    ASSERT_EQ(p.parse(r.data(), r.size(), Method::Get), ParseStatus::Complete);
    EXPECT_EQ(p.head().status, status);
    EXPECT_EQ(p.head().content_length, body.size());
    EXPECT_EQ(p.headLength() + body.size(), r.size());
  }
  EXPECT_TRUE(errorResponse(503).starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
  EXPECT_TRUE(errorResponse(429).starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
  EXPECT_EQ(errorResponse(299), errorResponse(500));  // generic
  EXPECT_EQ(errorResponse(-1), errorResponse(500));
}

TEST(Serializer, ReasonPhrases) {
  EXPECT_STREQ(reasonPhrase(200), "OK");
  EXPECT_STREQ(reasonPhrase(413), "Content Too Large");
  EXPECT_STREQ(reasonPhrase(431), "Request Header Fields Too Large");
  EXPECT_STREQ(reasonPhrase(505), "HTTP Version Not Supported");
  EXPECT_STREQ(reasonPhrase(499), "Client Error");
  EXPECT_STREQ(reasonPhrase(42), "Unknown");
}

}  // namespace
}  // namespace ballast::http
