// Response parser properties (as for requests): the result does not depend on how the bytes
// arrive, and a response that parses is serialized into a head that parses again to the same
// response, and is a fixed point of parse + serialize.
#include <cstring>
#include <memory>
#include <string>

#include "fuzz_util.h"
#include "http/parser.h"
#include "http/serializer.h"

namespace {

using namespace ballast::http;

bool sameHead(const ResponseHead& a, const ResponseHead& b) {
  if (a.fields.size() != b.fields.size()) return false;
  for (size_t i = 0; i < a.fields.size(); ++i) {
    const Field& x = a.fields[i];
    const Field& y = b.fields[i];
    if (x.name != y.name || x.value != y.value || x.kind != y.kind || x.drop != y.drop) {
      return false;
    }
  }
  return a.version == b.version && a.status == b.status && a.reason == b.reason &&
         a.body == b.body && a.has_content_length == b.has_content_length &&
         a.content_length == b.content_length &&
         a.transfer_codings_before_chunked == b.transfer_codings_before_chunked &&
         a.keep_alive == b.keep_alive && a.upgrade == b.upgrade &&
         a.upgrade_value == b.upgrade_value;
}

bool sameResult(ParseStatus st, const ResponseParser& p, ParseStatus st2, const ResponseParser& q) {
  if (st != st2) return false;
  if (st == ParseStatus::Error) {
    return p.error().status == q.error().status &&
           std::strcmp(p.error().reason, q.error().reason) == 0;
  }
  if (st == ParseStatus::Complete) {
    return p.headLength() == q.headLength() && sameHead(p.head(), q.head());
  }
  return true;
}

std::string serialize(const ResponseHead& head, const ResponseForwarding& fwd) {
  std::string out(head.reason.size() + 1024, '\0');
  for (const Field& f : head.fields) out.resize(out.size() + f.name.size() + f.value.size() + 4);
  const size_t n = serializeResponseHead(head, fwd, out.data(), out.size());
  FUZZ_CHECK(n > 0);
  out.resize(n);
  return out;
}

void checkWith(std::string_view in, const Limits& limits, uint64_t h) {
  static constexpr Method kMethods[] = {Method::Get, Method::Head, Method::Connect, Method::Post};
  const Method method = kMethods[h % 4];
  ResponseParser whole(limits);
  const ParseStatus st = whole.parse(in.data(), in.size(), method);
  {
    const size_t k = in.empty() ? 0 : (h >> 4) % (in.size() + 1);
    ResponseParser split(limits);
    auto first = std::make_unique<char[]>(k + 1);
    std::memcpy(first.get(), in.data(), k);
    ParseStatus st2 = split.parse(first.get(), k, method);
    std::unique_ptr<char[]> second;
    if (st2 == ParseStatus::Incomplete) {
      second = std::make_unique<char[]>(in.size() + 1);
      std::memcpy(second.get(), in.data(), in.size());
      first.reset();
      st2 = split.parse(second.get(), in.size(), method);
    }
    FUZZ_CHECK(sameResult(st, whole, st2, split));
  }
  if (in.size() <= 4096) {
    ResponseParser bytewise(limits);
    ParseStatus st3 = ParseStatus::Incomplete;
    for (size_t n = 0; n <= in.size() && st3 == ParseStatus::Incomplete; ++n) {
      st3 = bytewise.parse(in.data(), n, method);
    }
    FUZZ_CHECK(sameResult(st, whole, st3, bytewise));
  }
  if (st != ParseStatus::Complete) {
    FUZZ_CHECK(st == ParseStatus::Incomplete || whole.error().status == 502);
    return;
  }
  const ResponseHead& head = whole.head();
  FUZZ_CHECK(head.status >= 100 && head.status <= 599);
  if (head.body == BodyKind::UntilClose) FUZZ_CHECK(!head.keep_alive);

  ResponseForwarding fwd;
  fwd.close = (h >> 10) & 1;
  fwd.client_http10 = (h >> 11) & 1;
  fwd.dechunk = (h >> 12) & 1;
  const std::string out = serialize(head, fwd);
  Limits big;
  big.max_head_size = 1u << 24;
  big.max_fields = 1u << 20;
  ResponseParser again(big);
  FUZZ_CHECK(again.parse(out.data(), out.size(), method) == ParseStatus::Complete);
  FUZZ_CHECK(again.headLength() == out.size());
  const ResponseHead& re = again.head();
  FUZZ_CHECK(re.status == head.status);
  FUZZ_CHECK(re.reason == head.reason);
  FUZZ_CHECK(re.upgrade == head.upgrade && re.upgrade_value == head.upgrade_value);
  if (!(fwd.dechunk && head.body == BodyKind::Chunked)) FUZZ_CHECK(re.body == head.body);
  if (head.body == BodyKind::ContentLength) FUZZ_CHECK(re.content_length == head.content_length);
  FUZZ_CHECK(serialize(re, fwd) == out);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const uint64_t h = ballast::fuzz::hashOf(in);
  checkWith(in, Limits{}, h);
  Limits small;
  small.max_head_size = 16 + static_cast<uint32_t>(h >> 16) % 256;
  small.max_fields = static_cast<uint32_t>(h >> 28) % 8;
  checkWith(in, small, h >> 5);
  return 0;
}
