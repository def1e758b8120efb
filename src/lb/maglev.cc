#include "lb/maglev.h"

#include <algorithm>
#include <limits>
#include <string_view>

#include "lb/balancer.h"

namespace ballast::lb {

namespace {

// Two independent hashes of a server's id give its permutation: where it starts and its step.
constexpr uint64_t kOffsetSeed = 0x6a09e667f3bcc908ULL;
constexpr uint64_t kSkipSeed = 0xbb67ae8584caa73bULL;
constexpr uint32_t kFree = std::numeric_limits<uint32_t>::max();

uint64_t mix64(uint64_t x) {  // splitmix64's finalizer: a bijection with full avalanche
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

bool isPrime(uint64_t n) {
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  for (uint64_t d = 3; d * d <= n; d += 2)
    if (n % d == 0) return false;
  return true;
}

struct Member {
  std::string_view id;
  uint32_t index;
  uint32_t weight;
  uint32_t credit = 0;  // turns are taken when it reaches the largest weight
  uint64_t next = 0;    // the next entry of its permutation to try
  uint64_t skip = 0;
};

}  // namespace

uint32_t maglevTableSize(size_t servers) {
  constexpr uint64_t kLargest32BitPrime = 4294967291ULL;
  uint64_t step = 65536;
  while (step < 100 * static_cast<uint64_t>(servers)) step *= 2;
  if (step >= kLargest32BitPrime) return static_cast<uint32_t>(kLargest32BitPrime);
  uint64_t size = step + 1;
  while (!isPrime(size)) ++size;
  return static_cast<uint32_t>(size);
}

bool maglevMember(const Server& s) { return s.enabled && !s.drain && s.weight > 0; }

std::vector<uint32_t> buildMaglev(const std::vector<Server>& servers) {
  std::vector<Member> members;
  for (const Server& s : servers)
    if (maglevMember(s)) members.push_back({s.id, s.index, s.weight});
  if (members.empty()) return {};
  // Turns are taken in the order of the ids, never of the positions in the pool, so that the
  // table depends on the set of servers only.
  std::sort(members.begin(), members.end(), [](const Member& a, const Member& b) {
    return a.id != b.id ? a.id < b.id : a.index < b.index;
  });

  const uint64_t size = maglevTableSize(servers.size());
  uint32_t max_weight = 0;
  for (Member& m : members) {
    uint64_t h = hashKey(m.id);
    m.next = mix64(h ^ kOffsetSeed) % size;
    m.skip = mix64(h ^ kSkipSeed) % (size - 1) + 1;  // size is prime: every skip visits all entries
    max_weight = std::max(max_weight, m.weight);
  }

  std::vector<uint32_t> table(size, kFree);
  uint64_t filled = 0;
  // Each round, every server earns its weight in credit and takes a turn (claims the next free
  // entry of its permutation) per max_weight of credit: the heaviest server takes one turn per
  // round, a server of half its weight one every other round, so entries follow the weights.
  for (;;) {
    for (Member& m : members) {
      m.credit += m.weight;
      if (m.credit < max_weight) continue;
      m.credit -= max_weight;
      uint64_t pos = m.next;
      while (table[pos] != kFree) {
        pos += m.skip;
        if (pos >= size) pos -= size;
      }
      table[pos] = m.index;
      pos += m.skip;
      if (pos >= size) pos -= size;
      m.next = pos;
      if (++filled == size) return table;
    }
  }
}

}  // namespace ballast::lb
