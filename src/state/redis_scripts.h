// The Lua scripts of the Redis store (internal to src/state; the tests check their SHA-1 digests
// against what Redis computes, so an edited script with a stale digest fails a test instead of
// silently costing a second round trip per call).
#pragma once

#include <string_view>

namespace ballast::state::scripts {

// KEYS[1] = key; ARGV = expected, replacement, ttl (ms), change channel.
// Returns {1, replacement} after replacing, {0, current value or nil} otherwise.
inline constexpr std::string_view kCompareAndSet =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur == ARGV[1] then\n"
    "  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
    "  redis.call('PUBLISH', ARGV[4], KEYS[1])\n"
    "  return {1, ARGV[2]}\n"
    "end\n"
    "return {0, cur}\n";
inline constexpr std::string_view kCompareAndSetSha = "430f948a6e63ebd21c3b0c0298ee8b9b269c68ad";

// KEYS[1] = key; ARGV = change channel. Publishes only when there was an entry to remove.
inline constexpr std::string_view kErase =
    "if redis.call('DEL', KEYS[1]) == 1 then\n"
    "  redis.call('PUBLISH', ARGV[1], KEYS[1])\n"
    "end\n"
    "return 1\n";
inline constexpr std::string_view kEraseSha = "d086b5aa84828293fa1fd5ac478886c22da017d2";

}  // namespace ballast::state::scripts
