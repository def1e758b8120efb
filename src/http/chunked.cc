// Chunked transfer coding decoder (RFC 9112 7.1), strict and incremental.
//
// Lines (chunk-size lines, trailer lines) are consumed only once complete; the caller keeps the
// unconsumed bytes at the start of its next input, so line_scanned_ lets a long line arriving in
// pieces be searched once. Every search is bounded by its limit, so whether input is an error does
// not depend on how it was split.
#include <cstring>

#include "http/parser.h"
#include "http/syntax.h"

namespace ballast::http {
namespace {

using detail::is;

unsigned hexValue(char c) {
  return c <= '9' ? static_cast<unsigned>(c - '0') : static_cast<unsigned>((c | 0x20) - 'a' + 10);
}

size_t skipOws(const char* s, size_t i, size_t n) {
  while (i < n && is(s[i], detail::kOws)) ++i;
  return i;
}

}  // namespace

void ChunkedDecoder::reset() {
  error_ = {};
  state_ = State::Size;
  remaining_ = 0;
  trailer_bytes_ = 0;
  line_scanned_ = 0;
}

ChunkedDecoder::Status ChunkedDecoder::fail(const char* reason) {
  error_ = {400, reason};
  state_ = State::Failed;
  return Status::Error;
}

// chunk-size [ chunk-ext ], without the CRLF:
//   chunk-size = 1*HEXDIG
//   chunk-ext  = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )
bool ChunkedDecoder::parseSizeLine(const char* s, size_t n) {
  size_t i = 0;
  uint64_t size = 0;
  while (i < n && is(s[i], detail::kHex)) {
    if (i == 16) {
      fail("chunk size too large");
      return false;
    }
    size = (size << 4) | hexValue(s[i]);
    ++i;
  }
  if (i == 0) {
    fail("invalid chunk size");
    return false;
  }
  while (i < n) {
    i = skipOws(s, i, n);
    if (i == n || s[i] != ';') {
      fail("invalid chunk size line");
      return false;
    }
    i = skipOws(s, i + 1, n);
    const size_t name_start = i;
    while (i < n && is(s[i], detail::kTchar)) ++i;
    if (i == name_start) {
      fail("invalid chunk extension name");
      return false;
    }
    const size_t j = skipOws(s, i, n);
    if (j == n || s[j] != '=') continue;
    i = skipOws(s, j + 1, n);
    if (i < n && s[i] == '"') {
      ++i;
      while (true) {
        if (i == n) {
          fail("unterminated quoted string in chunk extension");
          return false;
        }
        if (s[i] == '"') {
          ++i;
          break;
        }
        if (s[i] == '\\') {
          if (i + 1 == n || !is(s[i + 1], detail::kValue)) {
            fail("invalid quoted pair in chunk extension");
            return false;
          }
          i += 2;
        } else if (is(s[i], detail::kQdtext)) {
          ++i;
        } else {
          fail("invalid character in chunk extension");
          return false;
        }
      }
    } else {
      const size_t value_start = i;
      while (i < n && is(s[i], detail::kTchar)) ++i;
      if (i == value_start) {
        fail("invalid chunk extension value");
        return false;
      }
    }
  }
  remaining_ = size;
  return true;
}

ChunkedDecoder::Status ChunkedDecoder::decode(const char* data, size_t len, size_t* consumed,
                                              std::string_view* payload) {
  size_t pos = 0;
  *payload = {};
  *consumed = 0;
  while (true) {
    switch (state_) {
      case State::Size:
      case State::Trailer: {
        const bool trailer = state_ == State::Trailer;
        // Bytes this line may still take: the whole size line, or what is left of the trailers.
        const size_t limit =
            trailer ? limits_.max_trailer_size - trailer_bytes_ : limits_.max_chunk_line;
        const size_t avail = len - pos;
        const size_t window = avail < limit ? avail : limit;
        const void* lf = line_scanned_ < window
                             ? std::memchr(data + pos + line_scanned_, '\n', window - line_scanned_)
                             : nullptr;
        if (lf == nullptr) {
          if (avail >= limit) {
            return fail(trailer ? "trailer section too large" : "chunk size line too long");
          }
          line_scanned_ = window;
          *consumed = pos;
          return Status::NeedMore;
        }
        line_scanned_ = 0;
        const char* line = data + pos;
        const size_t lf_at = static_cast<size_t>(static_cast<const char*>(lf) - line);
        if (lf_at == 0 || line[lf_at - 1] != '\r') {
          return fail(trailer ? "bare LF in trailer section" : "chunk size line not ended by CRLF");
        }
        const size_t n = lf_at - 1;
        pos += lf_at + 1;
        if (!trailer) {
          if (!parseSizeLine(line, n)) return Status::Error;
          state_ = remaining_ == 0 ? State::Trailer : State::Data;
          break;
        }
        trailer_bytes_ += lf_at + 1;
        if (n == 0) {
          state_ = State::Done;
          *consumed = pos;
          return Status::Done;
        }
        Field field;  // validated like a header field, then discarded: trailers are not forwarded
        ParseError err;
        if (!detail::parseFieldLine(line, n, &field, &err)) return fail(err.reason);
        break;
      }
      case State::Data: {
        if (pos == len) {
          *consumed = pos;
          return Status::NeedMore;
        }
        const size_t avail = len - pos;
        const size_t n = remaining_ < avail ? static_cast<size_t>(remaining_) : avail;
        *payload = std::string_view(data + pos, n);
        remaining_ -= n;
        pos += n;
        if (remaining_ == 0) state_ = State::DataCrlf;
        *consumed = pos;
        return Status::Data;
      }
      case State::DataCrlf: {
        const size_t avail = len - pos;
        if (avail < 2) {
          if (avail == 1 && data[pos] != '\r') return fail("chunk data does not match its size");
          *consumed = pos;
          return Status::NeedMore;
        }
        if (data[pos] != '\r' || data[pos + 1] != '\n') {
          return fail("chunk data does not match its size");
        }
        pos += 2;
        state_ = State::Size;
        break;
      }
      case State::Done:
        *consumed = pos;
        return Status::Done;
      case State::Failed:
        *consumed = pos;
        return Status::Error;
    }
  }
}

}  // namespace ballast::http
