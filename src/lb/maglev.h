// Maglev lookup table for consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
// Software Network Load Balancer", NSDI 2016, section 3.4), with weights.
//
// The table has a prime number of entries, each naming a server (its index in the pool). A key
// with hash h goes to table[h % size]. Every server walks its own permutation of the entries
// (offset + j * skip mod size, offset and skip derived from a hash of the server's stable id) and
// the servers take turns claiming the next free entry of their permutation until the table is
// full. So:
//   - the table depends only on the set of servers (ids, weights), not on their order in the pool
//     or on the history of changes: every service engine builds the same one;
//   - each server owns about size * weight / sum(weights) entries (a server takes weight/max_weight
//     turns per round);
//   - adding or removing a server moves about 1/N of the entries, nearly all of them to or from
//     that server: Maglev trades a little extra movement between the other servers for an even
//     spread (measured over 100k keys: 0.3% of the keys for 9 -> 10 servers, 0.6% for 99 -> 100
//     and 999 -> 1000; a bigger table lowers it, about 0.06% at 655373 entries for 9 -> 10).
#pragma once

#include <cstdint>
#include <vector>

#include "lb/pool.h"

namespace ballast::lb {

// The table size for a pool of `servers` servers (all of them, members or not, so that disabling
// or draining one never changes the size): the smallest prime above the smallest power of two
// that is >= max(65536, 100 * servers). So 65537 up to 655 servers, a prime just above 131072 up
// to 1310 servers, and so on. 100 entries per server keep each server's share within about 1% of
// its due (the paper's advice, M >> N); 65537 is the floor so that small pools also spread keys
// finely, and the 256 KiB table stays in the L2 cache. Sizes come in steps, not "the smallest
// prime >= 100 * servers", because a change of size reshuffles every key: with steps, adding or
// removing a server changes it only when the pool crosses 655, 1310, 2621... servers.
uint32_t maglevTableSize(size_t servers);

// Whether a server belongs in the table: the static configuration lets it take new traffic
// (enabled, not draining, weight > 0). Run-time state (health, ejection, limits) is not
// considered: a server that is down keeps its entries, and the lookup walks past it.
bool maglevMember(const Server& s);

// Builds the table for the pool's member servers (empty when there is none).
std::vector<uint32_t> buildMaglev(const std::vector<Server>& servers);

}  // namespace ballast::lb
