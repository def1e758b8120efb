// Helpers shared by the HTTP layer's unit tests: feeding parsers whole, byte by byte, and from a
// buffer that moves between calls (as a caller that grows its buffer would).
#pragma once

#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "http/parser.h"

namespace ballast::http::testing {

// What a parse ended with, comparable across feeding strategies.
struct Outcome {
  ParseStatus status = ParseStatus::Incomplete;
  int error = 0;  // ParseError::status on Error
  size_t head_length = 0;

  bool operator==(const Outcome&) const = default;
};

inline std::string describe(const Outcome& o) {
  const char* s = o.status == ParseStatus::Complete ? "Complete"
                  : o.status == ParseStatus::Error  ? "Error"
                                                    : "Incomplete";
  return std::string(s) + " error=" + std::to_string(o.error) +
         " head_length=" + std::to_string(o.head_length);
}

enum class Feed { Whole, BytewiseSameBuffer, BytewiseMovingBuffer };

// Feeds in to parser (already reset) with the given strategy; parse(data, len) is called through
// fn so the same code serves requests and responses. The moving strategy gives every call a
// fresh heap copy and frees the previous one, so views kept from an earlier call would dangle.
template <typename Parser, typename Fn>
Outcome feed(Parser& parser, std::string_view in, Feed how, Fn&& fn,
             std::unique_ptr<char[]>* keep = nullptr) {
  auto result = [&](ParseStatus st) {
    Outcome o;
    o.status = st;
    if (st == ParseStatus::Error) o.error = parser.error().status;
    if (st == ParseStatus::Complete) o.head_length = parser.headLength();
    return o;
  };
  if (how == Feed::Whole) return result(fn(parser, in.data(), in.size()));
  ParseStatus st = ParseStatus::Incomplete;
  std::unique_ptr<char[]> buffer;
  for (size_t n = 1; n <= in.size(); ++n) {
    const char* data = in.data();
    if (how == Feed::BytewiseMovingBuffer) {
      auto next = std::make_unique<char[]>(n);
      std::memcpy(next.get(), in.data(), n);
      buffer = std::move(next);
      data = buffer.get();
    }
    st = fn(parser, data, n);
    if (st != ParseStatus::Incomplete) break;
  }
  if (keep != nullptr) *keep = std::move(buffer);
  return result(st);
}

inline ParseStatus parseRequest(RequestParser& p, const char* d, size_t n) { return p.parse(d, n); }

}  // namespace ballast::http::testing
