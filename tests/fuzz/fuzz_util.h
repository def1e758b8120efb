// Small helpers for the HTTP fuzz targets: deterministic parameters derived from the input, and a
// check that aborts (so libFuzzer and the replay test both report it) with a message.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace ballast::fuzz {

// FNV-1a: the split points and options of a run depend on the input only.
inline uint64_t hashOf(std::string_view in) {
  uint64_t h = 1469598103934665603ull;
  for (char c : in) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

[[noreturn]] inline void fail(const char* what, int line) {
  std::fprintf(stderr, "fuzz property violated (line %d): %s\n", line, what);
  std::abort();
}

}  // namespace ballast::fuzz

#define FUZZ_CHECK(cond)                                 \
  do {                                                   \
    if (!(cond)) ::ballast::fuzz::fail(#cond, __LINE__); \
  } while (0)
