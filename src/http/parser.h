// Strict, incremental HTTP/1.1 parsers (RFC 9112). The proxy's hot path: no allocation per call
// beyond the fields vector (reused across messages), no copies of the input.
//
// Usage: keep the bytes of the message being received in one contiguous buffer and call parse()
// with all of them each time more arrive. The parser remembers how far it has scanned, so a head
// that arrives one byte at a time costs O(n) overall. On Complete, head() views the buffer and
// headLength() is the number of bytes to consume.
#pragma once

#include <cstddef>
#include <string_view>

#include "http/message.h"

namespace ballast::http {

enum class ParseStatus { Incomplete, Complete, Error };

class RequestParser {
 public:
  explicit RequestParser(const Limits& limits) : limits_(limits) {}

  ParseStatus parse(const char* data, size_t len);
  const RequestHead& head() const { return head_; }
  size_t headLength() const { return head_length_; }
  const ParseError& error() const { return error_; }
  // Call before parsing the next message (the buffer now starts at its first byte).
  void reset();

 private:
  Limits limits_;
  RequestHead head_;
  ParseError error_;
  size_t scanned_ = 0;        // bytes already searched for the end of the head
  size_t line_start_ = 0;     // start of the line being scanned
  size_t head_start_ = 0;     // after any leading empty lines
  size_t head_length_ = 0;
  bool start_line_checked_ = false;
};

class ResponseParser {
 public:
  explicit ResponseParser(const Limits& limits) : limits_(limits) {}

  // request_method: the method of the request this response answers (HEAD responses and 2xx to
  // CONNECT have no body).
  ParseStatus parse(const char* data, size_t len, Method request_method);
  const ResponseHead& head() const { return head_; }
  size_t headLength() const { return head_length_; }
  const ParseError& error() const { return error_; }
  void reset();

 private:
  Limits limits_;
  ResponseHead head_;
  ParseError error_;
  size_t scanned_ = 0;
  size_t line_start_ = 0;
  size_t head_length_ = 0;
  bool start_line_checked_ = false;
};

// Decodes a chunked body (RFC 9112 section 7.1) incrementally, strictly.
class ChunkedDecoder {
 public:
  enum class Status {
    NeedMore,  // consumed what it could; call again with more bytes
    Data,      // *payload is chunk data (a view into the input); go on after consuming it
    Done,      // last-chunk and trailer section consumed: the body is complete
    Error,     // malformed: error() says why
  };

  explicit ChunkedDecoder(const Limits& limits) : limits_(limits) {}

  // Decodes from the start of [data, data + len). *consumed is how many bytes were used (framing
  // and, on Data, the payload too); the caller drops them and calls again.
  Status decode(const char* data, size_t len, size_t* consumed, std::string_view* payload);
  const ParseError& error() const { return error_; }
  void reset();
  bool done() const { return state_ == State::Done; }

 private:
  enum class State { Size, Data, DataCrlf, Trailer, Done };
  Limits limits_;
  ParseError error_;
  State state_ = State::Size;
  uint64_t remaining_ = 0;     // payload bytes left in the current chunk
  size_t trailer_bytes_ = 0;
};

// Case-insensitive ASCII comparison.
bool equalsIgnoreCase(std::string_view a, std::string_view b);

}  // namespace ballast::http
