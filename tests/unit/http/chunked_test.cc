// Chunked decoder: the table of rules, each case decoded whole and one byte at a time by a caller
// that drops consumed bytes as the proxy does; plus the consumption contract.
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "http/parser.h"
#include "http/serializer.h"

namespace ballast::http {
namespace {

using Status = ChunkedDecoder::Status;
using namespace std::string_literals;

struct Result {
  Status status = Status::NeedMore;  // Done, Error, or NeedMore when the input ran out
  std::string payload;
  size_t consumed = 0;  // total bytes consumed
  std::string reason;
  bool operator==(const Result&) const = default;
};

// Decodes in, delivering at most step new bytes at a time (0: all at once). Like the proxy, keeps
// the unconsumed bytes and calls again when more arrive.
Result decodeAll(std::string_view in, size_t step, const Limits& limits = {}) {
  ChunkedDecoder d(limits);
  Result r;
  std::string pending;
  size_t fed = 0;
  while (true) {
    size_t consumed = 0;
    std::string_view payload;
    const Status st = d.decode(pending.data(), pending.size(), &consumed, &payload);
    if (st == Status::Error) {
      r.status = st;
      r.reason = d.error().reason;
      r.consumed = 0;  // meaningless after an error, and it depends on the split
      return r;
    }
    EXPECT_LE(consumed, pending.size());
    r.payload.append(payload);
    pending.erase(0, consumed);
    r.consumed += consumed;
    if (st == Status::Done) {
      r.status = st;
      EXPECT_TRUE(d.done());
      return r;
    }
    if (st == Status::NeedMore) {
      if (fed == in.size()) return r;
      const size_t n = step == 0 ? in.size() - fed : std::min(step, in.size() - fed);
      pending.append(in.substr(fed, n));
      fed += n;
    }
  }
}

struct Case {
  std::string name;
  std::string input;
  Status expect;
  std::string payload;  // when Done
};

std::vector<Case> chunkedCases() {
  return {
      {"single", "5\r\nhello\r\n0\r\n\r\n", Status::Done, "hello"},
      {"two_chunks", "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", Status::Done, "abcde"},
      {"empty_body", "0\r\n\r\n", Status::Done, ""},
      {"hex_upper", "A\r\n0123456789\r\n0\r\n\r\n", Status::Done, "0123456789"},
      {"hex_lower", "a\r\n0123456789\r\n0\r\n\r\n", Status::Done, "0123456789"},
      {"leading_zeros", "0005\r\nhello\r\n000\r\n\r\n", Status::Done, "hello"},
      {"binary_data", "3\r\n\r\n\0\r\n0\r\n\r\n"s, Status::Done, "\r\n\0"s},
      {"ext_name", "5;foo\r\nhello\r\n0\r\n\r\n", Status::Done, "hello"},
      {"ext_token_value", "5;foo=bar\r\nhello\r\n0;last\r\n\r\n", Status::Done, "hello"},
      {"ext_quoted", "5;a=\"x y;z\"\r\nhello\r\n0\r\n\r\n", Status::Done, "hello"},
      {"ext_quoted_pair", "5;a=\"\\\"q\\\\\"\r\nhello\r\n0\r\n\r\n", Status::Done, "hello"},
      {"ext_bws", "5 ; a = b ;c\t=\t\"d\"\r\nhello\r\n0\r\n\r\n", Status::Done, "hello"},
      {"ext_several", "5;a;b=1;c=\"2\"\r\nhello\r\n0\r\n\r\n", Status::Done, "hello"},
      {"ext_obs_text_quoted", "5;a=\"\xe9\"\r\nhello\r\n0\r\n\r\n", Status::Done, "hello"},
      {"trailer", "5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n", Status::Done, "hello"},
      {"trailers_two", "0\r\nA: 1\r\nB:\r\n\r\n", Status::Done, ""},
      {"incomplete_size", "5", Status::NeedMore, ""},
      {"incomplete_data", "5\r\nhel", Status::NeedMore, ""},
      {"incomplete_data_crlf", "5\r\nhello\r", Status::NeedMore, ""},
      {"incomplete_last", "0\r\n", Status::NeedMore, ""},
      {"incomplete_trailer", "0\r\nX: y\r\n", Status::NeedMore, ""},
      // --- errors
      {"size_hex_prefix", "0x5\r\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"size_leading_space", " 5\r\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"size_trailing_space", "5 \r\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"size_negative", "-5\r\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"size_plus", "+5\r\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"size_missing", "\r\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"size_missing_with_ext", ";a\r\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"size_not_hex", "g\r\n", Status::Error, ""},
      {"size_17_digits", "00000000000000001\r\nx\r\n0\r\n\r\n", Status::Error, ""},
      {"size_16_digits", "ffffffffffffffff\r\n", Status::NeedMore, ""},
      {"size_bare_lf", "5\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"size_bare_cr", "5\rhello\r\n0\r\n\r\n", Status::Error, ""},
      {"ext_empty_name", "5;\r\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"ext_empty_value", "5;a=\r\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"ext_unterminated_quote", "5;a=\"b\r\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"ext_value_space", "5;a=b c\r\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"ext_no_semicolon", "5 a\r\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"ext_ctl_in_quotes", "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"ext_trailing_ws", "5;a \r\nhello\r\n0\r\n\r\n", Status::Error, ""},
      {"data_too_long", "5\r\nhelloX\r\n0\r\n\r\n", Status::Error, ""},
      {"data_too_short", "5\r\nhell\r\n0\r\n\r\n", Status::Error, ""},
      {"data_lf_only", "5\r\nhello\n0\r\n\r\n", Status::Error, ""},
      {"data_no_crlf", "5\r\nhello0\r\n\r\n", Status::Error, ""},
      {"trailer_obs_fold", "0\r\nA: 1\r\n 2\r\n\r\n", Status::Error, ""},
      {"trailer_space_before_colon", "0\r\nA : 1\r\n\r\n", Status::Error, ""},
      {"trailer_bare_lf", "0\r\nA: 1\n\r\n", Status::Error, ""},
      {"trailer_bare_cr", "0\r\nA: 1\r2\r\n\r\n", Status::Error, ""},
      {"trailer_ctl", "0\r\nA: \x01\r\n\r\n", Status::Error, ""},
      {"trailer_no_colon", "0\r\nA\r\n\r\n", Status::Error, ""},
      {"last_chunk_bare_lf_end", "0\r\n\n", Status::Error, ""},
  };
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }
void PrintTo(const Result& r, std::ostream* os) {
  *os << "status=" << static_cast<int>(r.status) << " payload=" << r.payload.size()
      << "B consumed=" << r.consumed << " reason=" << r.reason;
}

class ChunkedTable : public ::testing::TestWithParam<Case> {};

TEST_P(ChunkedTable, Decode) {
  const Case& c = GetParam();
  const Result whole = decodeAll(c.input, 0);
  EXPECT_EQ(whole.status, c.expect) << whole.reason;
  if (c.expect == Status::Done) {
    EXPECT_EQ(whole.payload, c.payload);
    EXPECT_EQ(whole.consumed, c.input.size());
  }
  const Result bytewise = decodeAll(c.input, 1);
  EXPECT_EQ(bytewise, whole);
  EXPECT_EQ(decodeAll(c.input, 3), whole);
}

INSTANTIATE_TEST_SUITE_P(Http, ChunkedTable, ::testing::ValuesIn(chunkedCases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

TEST(ChunkedDecoder, Limits) {
  Limits l;
  l.max_chunk_line = 16;
  l.max_trailer_size = 32;
  // The size line with its CRLF may take 16 bytes.
  EXPECT_EQ(decodeAll("5;abcdefghijkl\r\nhello\r\n0\r\n\r\n", 0, l).status, Status::Done);
  EXPECT_EQ(decodeAll("5;abcdefghijklm\r\nhello\r\n0\r\n\r\n", 0, l).reason,
            "chunk size line too long");
  EXPECT_EQ(decodeAll("5;abcdefghijklmn", 1, l).status, Status::Error);  // without waiting for LF
  // Trailer section: 32 bytes including the final CRLF.
  const std::string t30 = "X: " + std::string(25, 'a') + "\r\n";  // 30 bytes
  EXPECT_EQ(decodeAll("0\r\n" + t30 + "\r\n", 0, l).status, Status::Done);
  const std::string t31 = "X: " + std::string(26, 'a') + "\r\n";
  EXPECT_EQ(decodeAll("0\r\n" + t31 + "\r\n", 0, l).reason, "trailer section too large");
  EXPECT_EQ(decodeAll("0\r\n" + t31 + "\r\n", 1, l).reason, "trailer section too large");
}

TEST(ChunkedDecoder, DataSpansAsLargeAsAvailable) {
  ChunkedDecoder d{Limits{}};
  const std::string in = "a\r\n0123456789\r\n0\r\n\r\n";
  size_t consumed = 0;
  std::string_view payload;
  // Size line and 4 bytes of data available: one 4-byte span, consuming the framing too.
  ASSERT_EQ(d.decode(in.data(), 7, &consumed, &payload), Status::Data);
  EXPECT_EQ(payload, "0123");
  EXPECT_EQ(consumed, 7u);
  // The rest of the data and more: a 6-byte span (no more than the chunk).
  ASSERT_EQ(d.decode(in.data() + 7, in.size() - 7, &consumed, &payload), Status::Data);
  EXPECT_EQ(payload, "456789");
  EXPECT_EQ(consumed, 6u);
  ASSERT_EQ(d.decode(in.data() + 13, in.size() - 13, &consumed, &payload), Status::Done);
  EXPECT_EQ(consumed, in.size() - 13);
  EXPECT_TRUE(payload.empty());
}

TEST(ChunkedDecoder, NeverConsumesPartialLinesOrCrlf) {
  ChunkedDecoder d{Limits{}};
  size_t consumed = 99;
  std::string_view payload;
  EXPECT_EQ(d.decode("1f", 2, &consumed, &payload), Status::NeedMore);
  EXPECT_EQ(consumed, 0u);
  EXPECT_EQ(d.decode("1f;x=\"y\"\r", 9, &consumed, &payload), Status::NeedMore);
  EXPECT_EQ(consumed, 0u);
  // The size line complete but no data yet: the line is consumed.
  ChunkedDecoder e{Limits{}};
  EXPECT_EQ(e.decode("2\r\n", 3, &consumed, &payload), Status::NeedMore);
  EXPECT_EQ(consumed, 3u);
  EXPECT_EQ(e.decode("ab\r", 3, &consumed, &payload), Status::Data);
  EXPECT_EQ(consumed, 2u);
  EXPECT_EQ(e.decode("\r", 1, &consumed, &payload), Status::NeedMore);  // half a CRLF
  EXPECT_EQ(consumed, 0u);
  EXPECT_EQ(e.decode("\r\n0\r", 4, &consumed, &payload), Status::NeedMore);  // CRLF, part line
  EXPECT_EQ(consumed, 2u);
  EXPECT_EQ(e.decode("0\r\n\r\nNEXT", 9, &consumed, &payload), Status::Done);
  EXPECT_EQ(consumed, 5u);  // the bytes after the body stay for the next message
  EXPECT_TRUE(e.done());
}

TEST(ChunkedDecoder, ErrorReasonAndReset) {
  ChunkedDecoder d{Limits{}};
  size_t consumed = 0;
  std::string_view payload;
  EXPECT_EQ(d.decode("3\r\nabcd\r\n", 9, &consumed, &payload), Status::Data);
  EXPECT_EQ(d.decode("d\r\n", 3, &consumed, &payload), Status::Error);
  EXPECT_STREQ(d.error().reason, "chunk data does not match its size");
  EXPECT_EQ(d.decode("0\r\n\r\n", 5, &consumed, &payload), Status::Error);  // sticky
  d.reset();
  EXPECT_EQ(d.decode("0\r\n\r\n", 5, &consumed, &payload), Status::Done);
}

TEST(ChunkedDecoder, RoundTripWithChunkHeaders) {
  std::string body;
  std::string expected;
  char header[20];
  for (size_t n : {1u, 15u, 16u, 255u, 4096u}) {
    const std::string data(n, static_cast<char>('a' + n % 26));
    body.append(header, writeChunkHeader(n, header));
    body += data;
    body += kChunkTrailer;
    expected += data;
  }
  body += kLastChunk;
  const Result r = decodeAll(body, 0);
  EXPECT_EQ(r.status, Status::Done);
  EXPECT_EQ(r.payload, expected);
  EXPECT_EQ(decodeAll(body, 7), r);
}

}  // namespace
}  // namespace ballast::http
