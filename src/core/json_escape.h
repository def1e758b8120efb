// JSON string escaping for lines built by hand on the data path (access logs, events): cheaper than
// a JSON library's object model, and strict about what reaches a log collector.
#pragma once

#include <string>
#include <string_view>

namespace ballast {

// Appends `s` to `out` as a JSON string literal, quotes included. Escapes '"' and '\\', and the C0
// control characters and DEL as \u00XX; passes well-formed UTF-8 through unchanged; replaces each
// maximal ill-formed subsequence (a stray byte, an overlong form, a surrogate, a code point over
// U+10FFFF, a truncated sequence) with the escape \ufffd, as the Unicode standard recommends. The
// output is therefore always valid JSON and valid UTF-8, whatever bytes a client sent.
void appendJsonString(std::string& out, std::string_view s);

}  // namespace ballast
