#include "core/json_escape.h"

#include <cstdint>

namespace ballast {

namespace {

// A UTF-8 sequence starting at s[i] (s[i] >= 0x80): its length and whether it is well formed. When
// it is not, `length` is the maximal ill-formed subpart to replace with one U+FFFD (at least 1).
struct Utf8Sequence {
  size_t length;
  bool valid;
};

Utf8Sequence utf8Sequence(std::string_view s, size_t i) {
  const auto lead = static_cast<uint8_t>(s[i]);
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // bounds of the second byte (RFC 3629, section 4)
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) lo = 0xA0;  // no overlong forms
    if (lead == 0xED) hi = 0x9F;  // no UTF-16 surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) lo = 0x90;  // no overlong forms
    if (lead == 0xF4) hi = 0x8F;  // nothing over U+10FFFF
  } else {
    return {1, false};  // a continuation byte, C0, C1 or F5..FF cannot start a sequence
  }
  size_t k = 1;
  for (; k < need && i + k < s.size(); ++k) {
    const auto c = static_cast<uint8_t>(s[i + k]);
    if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF)) break;
  }
  return {k, k == need};
}

constexpr char kHex[] = "0123456789abcdef";

}  // namespace

void appendJsonString(std::string& out, std::string_view s) {
  out.push_back('"');
  size_t run = 0;  // start of the bytes not yet copied that need no escaping
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<uint8_t>(s[i]);
    if (b >= 0x20 && b < 0x7F && b != '"' && b != '\\') {
      ++i;
      continue;
    }
    Utf8Sequence seq{1, false};
    if (b >= 0x80) {
      seq = utf8Sequence(s, i);
      if (seq.valid) {
        i += seq.length;
        continue;
      }
    }
    out.append(s.data() + run, i - run);
    if (b == '"' || b == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(b));
    } else if (b < 0x80) {  // a control character or DEL
      const char esc[] = {'\\', 'u', '0', '0', kHex[b >> 4], kHex[b & 0xF]};
      out.append(esc, sizeof esc);
    } else {
      out.append("\\ufffd");
    }
    i += seq.length;
    run = i;
  }
  out.append(s.data() + run, s.size() - run);
  out.push_back('"');
}

}  // namespace ballast
