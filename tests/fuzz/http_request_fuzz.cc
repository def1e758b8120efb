// Request parser properties:
//  1. The result does not depend on how the bytes arrive: whole, split in two at a point derived
//     from the input (the second call from a different buffer, the first one freed), or one byte
//     at a time give the same status, error, head length and head.
//  2. Strict in, clean out: a request that parses is serialized, and the serialized head parses
//     again, to the same request; serializing that again gives the same bytes.
#include <cstring>
#include <memory>
#include <string>

#include "fuzz_util.h"
#include "http/parser.h"
#include "http/serializer.h"

namespace {

using namespace ballast::http;

bool sameFields(const RequestHead& a, const RequestHead& b) {
  if (a.fields.size() != b.fields.size()) return false;
  for (size_t i = 0; i < a.fields.size(); ++i) {
    const Field& x = a.fields[i];
    const Field& y = b.fields[i];
    if (x.name != y.name || x.value != y.value || x.kind != y.kind || x.drop != y.drop) {
      return false;
    }
  }
  return true;
}

bool sameHead(const RequestHead& a, const RequestHead& b) {
  return a.method == b.method && a.method_id == b.method_id && a.target == b.target &&
         a.forward_target == b.forward_target && a.authority == b.authority &&
         a.version == b.version && a.body == b.body &&
         a.has_content_length == b.has_content_length && a.content_length == b.content_length &&
         a.transfer_codings_before_chunked == b.transfer_codings_before_chunked &&
         a.keep_alive == b.keep_alive && a.expect_continue == b.expect_continue &&
         a.upgrade == b.upgrade && a.upgrade_value == b.upgrade_value && sameFields(a, b);
}

bool sameResult(ParseStatus st, const RequestParser& p, ParseStatus st2, const RequestParser& q) {
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

std::string serialize(const RequestHead& head, const RequestForwarding& fwd) {
  std::string out(head.target.size() + head.authority.size() + 1024, '\0');
  for (const Field& f : head.fields) out.resize(out.size() + f.name.size() + f.value.size() + 4);
  const size_t n = serializeRequestHead(head, fwd, out.data(), out.size());
  FUZZ_CHECK(n > 0);
  out.resize(n);
  return out;
}

void checkWith(std::string_view in, const Limits& limits, uint64_t h) {
  RequestParser whole(limits);
  const ParseStatus st = whole.parse(in.data(), in.size());

  // Two pieces, from two different buffers.
  {
    const size_t k = in.empty() ? 0 : h % (in.size() + 1);
    RequestParser split(limits);
    auto first = std::make_unique<char[]>(k + 1);
    std::memcpy(first.get(), in.data(), k);
    ParseStatus st2 = split.parse(first.get(), k);
    std::unique_ptr<char[]> second;
    if (st2 == ParseStatus::Incomplete) {
      second = std::make_unique<char[]>(in.size() + 1);
      std::memcpy(second.get(), in.data(), in.size());
      first.reset();
      st2 = split.parse(second.get(), in.size());
    }
    FUZZ_CHECK(sameResult(st, whole, st2, split));
  }
  // One byte at a time (same buffer).
  if (in.size() <= 4096) {
    RequestParser bytewise(limits);
    ParseStatus st3 = ParseStatus::Incomplete;
    for (size_t n = 0; n <= in.size() && st3 == ParseStatus::Incomplete; ++n) {
      st3 = bytewise.parse(in.data(), n);
    }
    FUZZ_CHECK(sameResult(st, whole, st3, bytewise));
  }
  if (st != ParseStatus::Complete) {
    FUZZ_CHECK(st == ParseStatus::Incomplete || whole.error().status >= 400);
    return;
  }
  const RequestHead& head = whole.head();
  FUZZ_CHECK(whole.headLength() <= in.size());

  // Clean out: the forwarded head parses again, to the same request.
  const RequestForwarding fwd{"203.0.113.7", (h & 2) ? "https" : "http", (h & 1) != 0};
  const std::string out = serialize(head, fwd);
  Limits big;
  big.max_head_size = 1u << 24;
  big.max_fields = 1u << 20;
  RequestParser again(big);
  FUZZ_CHECK(again.parse(out.data(), out.size()) == ParseStatus::Complete);
  FUZZ_CHECK(again.headLength() == out.size());
  const RequestHead& re = again.head();
  FUZZ_CHECK(re.method == head.method);
  // "http://h?q" forwards "?q", which the serializer sends as "/?q".
  const std::string sent_target =
      (head.forward_target.substr(0, 1) == "?" ? "/" : "") + std::string(head.forward_target);
  FUZZ_CHECK(re.target == sent_target);
  FUZZ_CHECK(re.forward_target == sent_target);
  FUZZ_CHECK(re.authority == head.authority);
  FUZZ_CHECK(re.version == Version::Http11);
  FUZZ_CHECK(re.body == head.body);
  FUZZ_CHECK(re.content_length == head.content_length);
  FUZZ_CHECK(re.transfer_codings_before_chunked == head.transfer_codings_before_chunked);
  FUZZ_CHECK(re.upgrade == head.upgrade);
  FUZZ_CHECK(re.upgrade_value == head.upgrade_value);
  // Fields with no effect on forwarding survive, in order.
  size_t j = 0;
  for (const Field& f : head.fields) {
    if (f.drop) continue;
    while (j < re.fields.size() && re.fields[j].drop) ++j;
    FUZZ_CHECK(j < re.fields.size());
    FUZZ_CHECK(re.fields[j].name == f.name && re.fields[j].value == f.value);
    ++j;
  }
  // A normalised head is a fixed point (without X-Forwarded-For, which grows by design).
  if (!fwd.add_forwarded) FUZZ_CHECK(serialize(re, fwd) == out);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const uint64_t h = ballast::fuzz::hashOf(in);
  checkWith(in, Limits{}, h);
  // Small limits reach the 414/431 paths with small inputs.
  Limits small;
  small.max_head_size = 16 + static_cast<uint32_t>(h >> 8) % 256;
  small.max_fields = static_cast<uint32_t>(h >> 20) % 8;
  checkWith(in, small, h >> 3);
  return 0;
}
