// Chunked decoder properties: decoding whole, in pieces of a size derived from the input, and one
// byte at a time gives the same outcome (status, payload, bytes consumed, error); a body that
// decodes is re-encoded with writeChunkHeader and decodes again to the same payload.
#include <cstring>
#include <string>

#include "fuzz_util.h"
#include "http/parser.h"
#include "http/serializer.h"

namespace {

using namespace ballast::http;
using Status = ChunkedDecoder::Status;

struct Result {
  Status status = Status::NeedMore;
  std::string payload;
  size_t consumed = 0;
  std::string reason;
  bool operator==(const Result&) const = default;
};

// Feeds in at most step new bytes at a time (0: all), keeping unconsumed bytes like the proxy.
Result decode(std::string_view in, size_t step, const Limits& limits) {
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
    FUZZ_CHECK(consumed <= pending.size());
    if (st == Status::Data) {
      FUZZ_CHECK(!payload.empty());
      FUZZ_CHECK(payload.data() >= pending.data() &&
                 payload.data() + payload.size() <= pending.data() + consumed);
    }
    r.payload.append(payload);
    pending.erase(0, consumed);
    r.consumed += consumed;
    if (st == Status::Done) {
      r.status = st;
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

void checkWith(std::string_view in, const Limits& limits, uint64_t h) {
  const Result whole = decode(in, 0, limits);
  FUZZ_CHECK(decode(in, 1 + h % 17, limits) == whole);
  if (in.size() <= 4096) FUZZ_CHECK(decode(in, 1, limits) == whole);
  if (whole.status != Status::Done) return;
  FUZZ_CHECK(whole.consumed <= in.size());

  // Re-encode in chunks of a derived size; it must decode to the same payload.
  std::string body;
  const size_t chunk = 1 + (h >> 8) % 64;
  char header[20];
  for (size_t at = 0; at < whole.payload.size(); at += chunk) {
    const size_t n = std::min(chunk, whole.payload.size() - at);
    body.append(header, writeChunkHeader(n, header));
    body.append(whole.payload, at, n);
    body.append(kChunkTrailer);
  }
  body.append(kLastChunk);
  const Result again = decode(body, 0, Limits{});
  FUZZ_CHECK(again.status == Status::Done);
  FUZZ_CHECK(again.payload == whole.payload);
  FUZZ_CHECK(again.consumed == body.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const uint64_t h = ballast::fuzz::hashOf(in);
  checkWith(in, Limits{}, h);
  Limits small;
  small.max_chunk_line = 3 + static_cast<uint32_t>(h >> 16) % 40;
  small.max_trailer_size = 2 + static_cast<uint32_t>(h >> 24) % 64;
  checkWith(in, small, h >> 3);
  return 0;
}
