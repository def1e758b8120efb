// Strict, incremental HTTP/1.1 parsers (RFC 9112). The proxy's hot path: no allocation per call
// beyond the fields vector (reused across messages), no copies of the input.
//
// Usage: keep the bytes of the message being received in one contiguous buffer and call parse()
// with all of them each time more arrive. The parser remembers how far it has scanned, so a head
// that arrives one byte at a time costs O(n) overall. On Complete, head() views the buffer and
// headLength() is the number of bytes to consume.
#pragma once

#include <cstddef>
#include <cstdint>
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
  enum class Phase : uint8_t { Leading, Method, Target, Version, Fields, Done, Failed };
  ParseStatus fail(int status, const char* reason);
  ParseStatus scanRequestLine(const char* data, size_t end, size_t limit_end);
  ParseStatus checkRequestLine(const char* data);
  ParseStatus finish();
  void rebase(const char* data, size_t len);

  Limits limits_;
  RequestHead head_;
  ParseError error_;
  Phase phase_ = Phase::Leading;
  uint8_t empty_lines_ = 0;   // leading CRLFs skipped
  size_t scanned_ = 0;        // bytes already searched for the end of the head
  size_t line_start_ = 0;     // start of the line being scanned
  size_t head_start_ = 0;     // after any leading empty lines
  size_t head_length_ = 0;
  size_t method_end_ = 0;     // request-line part offsets, set as the line is scanned
  size_t target_start_ = 0;
  size_t target_end_ = 0;
  const char* base_ = nullptr;  // the buffer the views in head_ point into, and its length
  size_t base_len_ = 0;
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
  ParseStatus fail(const char* reason);
  ParseStatus checkStatusLine(const char* data, size_t n);
  ParseStatus finish(Method request_method);
  void rebase(const char* data, size_t len);

  Limits limits_;
  ResponseHead head_;
  ParseError error_;
  size_t scanned_ = 0;
  size_t line_start_ = 0;
  size_t head_length_ = 0;
  bool start_line_checked_ = false;
  bool done_ = false;
  bool failed_ = false;
  const char* base_ = nullptr;
  size_t base_len_ = 0;
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
  enum class State { Size, Data, DataCrlf, Trailer, Done, Failed };
  Status fail(const char* reason);
  bool parseSizeLine(const char* line, size_t n);

  Limits limits_;
  ParseError error_;
  State state_ = State::Size;
  uint64_t remaining_ = 0;     // payload bytes left in the current chunk
  size_t trailer_bytes_ = 0;
  size_t line_scanned_ = 0;    // bytes of the incomplete line at the input's start already searched
};

// Case-insensitive ASCII comparison.
bool equalsIgnoreCase(std::string_view a, std::string_view b);

// Upgrade protocols (RFC 9110 7.8, "name[/version]"): whether every protocol of a 101's Upgrade
// (chosen) is one the request's Upgrade offered (same name, any case; a version in chosen must be
// the offered one when that names one). A server must not switch to a protocol not offered.
bool upgradeChosenFromOffer(std::string_view offered, std::string_view chosen);

}  // namespace ballast::http
