// Counters for virtual services and servers. Each worker writes only its own slot (single writer:
// a relaxed load+store, no locked instruction on the hot path); readers (the admin thread) sum the
// slots. Stats objects are keyed by name and outlive configuration snapshots.
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <memory>
#include <string>

namespace ballast {

class Counter {
 public:
  void add(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  void sub(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) - n, std::memory_order_relaxed); }
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }
  void set(uint64_t v) { v_.store(v, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

// Latency histogram with fixed bounds (seconds, as Prometheus expects them).
class Histogram {
 public:
  static constexpr std::array<double, 14> kBoundsSeconds = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                           0.025,  0.05,  0.1,    0.25,  0.5,
                                                           1,      2.5,   5,      10};
  static constexpr std::array<uint64_t, 14> kBoundsMicros = {
      500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
      1000000, 2500000, 5000000, 10000000};
  static constexpr size_t kBuckets = kBoundsSeconds.size() + 1;  // the last one is +Inf

  void observeMicros(uint64_t us) {
    size_t i = 0;
    while (i < kBoundsMicros.size() && us > kBoundsMicros[i]) ++i;
    buckets_[i].add();
    sum_us_.add(us);
  }
  uint64_t bucket(size_t i) const { return buckets_[i].get(); }  // not cumulative
  uint64_t sumMicros() const { return sum_us_.get(); }

 private:
  std::array<Counter, kBuckets> buckets_;
  Counter sum_us_;
};

// Bounds of the phase histograms (analytics): four buckets per doubling from 100 µs, each ~19%
// wide, so percentiles read from merged histograms stay within a bucket's width of the truth.
// bound[i] = round(100 * 2^(i/4)) µs, i = 0..79 (100 µs .. ~88 s); inclusive upper bounds.
inline constexpr size_t kPhaseBounds = 80;
inline constexpr std::array<uint64_t, kPhaseBounds> kPhaseBoundsUs = [] {
  // 2^(j/4) for j = 0..3 (std::pow is not constexpr); bound[4k + j] = 100 * 2^k * 2^(j/4).
  constexpr double kQuarterSteps[4] = {1.0, 1.189207115002721, 1.4142135623730951, 1.681792830507429};
  std::array<uint64_t, kPhaseBounds> bounds{};
  for (size_t i = 0; i < kPhaseBounds; ++i)
    bounds[i] = static_cast<uint64_t>(100.0 * static_cast<double>(uint64_t{1} << (i / 4)) *
                                          kQuarterSteps[i % 4] + 0.5);
  return bounds;
}();

// The bucket of a duration: the first i with us <= bound[i], or kPhaseBounds (overflow).
// bound[4k] is exactly 100 * 2^k, so the doubling comes from a bit width and at most three
// comparisons finish it: no loop over the table on the data path.
constexpr size_t phaseBucketIndex(uint64_t us) {
  if (us <= kPhaseBoundsUs[0]) return 0;
  // 100 * 2^k < us <= 100 * 2^(k+1)  <=>  2^k <= (us - 1) / 100 < 2^(k+1)
  size_t k = static_cast<size_t>(std::bit_width((us - 1) / 100)) - 1;
  size_t i = 4 * k + 1;
  if (i >= kPhaseBounds) return kPhaseBounds;
  size_t last = i + 3;  // bound 100 * 2^(k+1), or the overflow bucket after bound[79]
  while (i < last && us > kPhaseBoundsUs[i]) ++i;
  return i;
}

// Fine latency histogram of one phase of an exchange (see VsPhases), for the controller's
// analytics: histograms of several workers and engines merge by adding buckets.
class PhaseHistogram {
 public:
  static constexpr size_t kBuckets = kPhaseBounds + 1;  // the last one is the overflow

  void observeMicros(uint64_t us) {
    buckets_[phaseBucketIndex(us)].add();
    sum_us_.add(us);
  }
  uint64_t bucket(size_t i) const { return buckets_[i].get(); }  // not cumulative
  // The sum of the buckets (one store less per observation than a counter of its own).
  uint64_t count() const {
    uint64_t n = 0;
    for (const Counter& b : buckets_) n += b.get();
    return n;
  }
  uint64_t sumMicros() const { return sum_us_.get(); }

 private:
  std::array<Counter, kBuckets> buckets_;
  Counter sum_us_;
};

// Why a connection or request failed. Names appear in /metrics (errorKindName).
enum class ErrorKind : uint8_t {
  BadRequest,      // malformed or unsupported request (400, 417, 501, 505)
  HeadTooLarge,    // request head over the limits (414, 431)
  HeaderTimeout,   // request head not received in time (408)
  ClientTimeout,   // client inactive in the middle of a request or response
  ClientAbort,     // client closed or reset before its response was complete
  MaxConnections,  // refused: the virtual service's connection limit
  NoServer,        // no server could be used (503)
  ConnectRefused,  // a server refused or reset the connection attempt
  ConnectTimeout,  // a server did not accept in time
  ServerReset,     // a server closed or reset in the middle of an exchange
  ServerTimeout,   // a server did not answer in time (504)
  BadResponse,     // malformed or ambiguous response (502)
  kCount,
};
const char* errorKindName(ErrorKind kind);
constexpr size_t kErrorKinds = static_cast<size_t>(ErrorKind::kCount);

// Latency of an exchange by phase (analytics; see PhaseHistogram). Each phase is observed when it
// ends, so a request that fails midway still counts in the phases it went through.
struct VsPhases {
  // HTTP: first byte of the request -> end of its head.
  PhaseHistogram header;
  // Opening a new server connection until it is established (a reused one has none).
  PhaseHistogram connect;
  // HTTP: request sent -> first byte of the response.
  PhaseHistogram response;
  // HTTP: first byte of the response -> its last byte handed to the client.
  PhaseHistogram transfer;
  // HTTP: first byte of the request -> last byte of the response. TCP: the connection's life.
  PhaseHistogram total;
};

struct ServerPhases {
  PhaseHistogram connect;   // new connections to the server
  PhaseHistogram response;  // request sent -> first byte of the response
};

// Counters of one virtual service in one worker.
struct alignas(64) VsCounters {
  Counter connections_total;
  Counter connections_active;
  Counter requests;
  Counter bytes_in;    // from clients
  Counter bytes_out;   // to clients
  std::array<Counter, 5> responses;  // 1xx..5xx
  std::array<Counter, kErrorKinds> errors;
  Counter retries;                   // further attempts on another server
  std::array<Counter, 6> persistence;  // persistence decisions by outcome (proxy::PersistOutcome)
  Histogram request_duration;        // first byte of request -> last byte of response
  // Last, on lines of their own: the counters above keep their cache lines.
  alignas(64) VsPhases phases;
};

// Counters of one server in one worker.
struct alignas(64) ServerCounters {
  Counter connections_total;   // connections opened
  Counter connections_active;  // open now (in use or idle in the reuse pool)
  Counter connections_idle;    // idle in the reuse pool now
  Counter requests;            // requests (HTTP) or connections (TCP) sent to it
  Counter bytes_in;            // from the server
  Counter bytes_out;           // to the server
  std::array<Counter, 5> responses;
  std::array<Counter, kErrorKinds> errors;
  Counter retries;              // attempts that failed here and went on to another server
  Counter ejections;            // times the outlier detector took it out
  Histogram response_duration;  // request sent -> first byte of the response
  // For the balancing algorithms (this worker's share; algorithms sum the workers' slots).
  Counter in_flight;            // requests in flight (HTTP) or open connections (TCP)
  Counter ewma_us;              // moving average of response times (µs), see recordResponseTime
  Counter ewma_samples;
  // On lines of their own: other workers read in_flight and ewma_us at every pick.
  alignas(64) ServerPhases phases;
};

// Folds a response time into a worker's moving average (weight 1/8 per sample, like TCP's SRTT).
inline void recordResponseTime(ServerCounters& c, uint64_t us) {
  uint64_t avg = c.ewma_us.get();
  c.ewma_us.set(c.ewma_samples.get() == 0 ? us : avg - avg / 8 + us / 8);
  c.ewma_samples.add();
}

template <typename Slot>
class PerWorker {
 public:
  explicit PerWorker(size_t workers) : n_(workers), slots_(std::make_unique<Slot[]>(workers)) {}
  Slot& operator[](size_t worker) { return slots_[worker]; }
  const Slot& operator[](size_t worker) const { return slots_[worker]; }
  size_t size() const { return n_; }

  template <typename F>
  uint64_t sum(F field) const {
    uint64_t total = 0;
    for (size_t i = 0; i < n_; ++i) total += field(slots_[i]);
    return total;
  }

 private:
  size_t n_;
  std::unique_ptr<Slot[]> slots_;
};

struct VsStats {
  explicit VsStats(size_t workers) : per_worker(workers) {}
  PerWorker<VsCounters> per_worker;
  // Open client connections across all workers: the max_connections limit is checked on it.
  std::atomic<int64_t> open_connections{0};
};

struct ServerStats {
  ServerStats(size_t workers, uint32_t key) : per_worker(workers), key(key) {}
  PerWorker<ServerCounters> per_worker;
  // Small number naming the server for the life of the process (same id, same key across
  // reloads): per-worker tables such as idle connection lists are indexed by it.
  const uint32_t key;
};

inline size_t statusClassIndex(int status) {
  int c = status / 100 - 1;
  return c < 0 ? 0 : (c > 4 ? 4 : static_cast<size_t>(c));
}

}  // namespace ballast
