// Scalar value syntax of the configuration file: durations, sizes, integers, booleans, names.
// Pure functions, no YAML: the loader (loader.cc) and the REST layer can share them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "config/config.h"

namespace ballast::config {

// Unsigned decimal digits only ("42"; no sign, spaces, "0x" or "1_000"). Values too large for
// uint64_t saturate to UINT64_MAX so that a range check rejects them.
bool parseUnsigned(std::string_view text, uint64_t* out);

// "true" or "false" (also "True"/"TRUE"/"False"/"FALSE", as in YAML 1.2). Not yes/no/on/off.
bool parseBool(std::string_view text, bool* out);

// A number with a unit: "300ms", "2s", "1.5s", "5m", "1h". On failure returns false and sets
// *error to a phrase such as "expected a duration with a unit, e.g. 300ms, 2s, 5m". Huge values
// saturate (to be rejected by a range check); values finer than a millisecond are errors.
bool parseDuration(std::string_view text, Duration* out, std::string* error);

// Bytes as a plain integer ("16384") or with a binary unit ("16KiB", "1MiB"). Huge values
// saturate to UINT64_MAX.
bool parseSize(std::string_view text, uint64_t* out);

// The shortest exact spelling with the largest unit: 0s, 300ms, 30s, 5m, 1h, 1500ms.
std::string formatDuration(Duration d);
// 16KiB, 1MiB, or plain bytes when not a whole number of KiB.
std::string formatSize(uint64_t bytes);

// Names of virtual services, pools and health monitors: 1-64 characters from [A-Za-z0-9_.-].
bool isValidName(std::string_view name);

// The prefix of the data store's keys ("{prefix}:v1:persist:..."): 1-64 characters from
// [A-Za-z0-9_.-:].
bool isValidKeyPrefix(std::string_view prefix);

// The text without trailing whitespace (space, tab, CR, LF, VT, FF): a secret read from a file
// usually ends with a newline that is not part of it.
std::string_view stripTrailingWhitespace(std::string_view text);

// An HTTP token (RFC 9110 section 5.6.2): one or more of A-Z a-z 0-9 !#$%&'*+-.^_`|~. Header
// field names, methods and cookie names (RFC 6265) are tokens.
bool isToken(std::string_view text);

// A Host field value (RFC 9110 section 7.2) as a health monitor sends it: a host name or IPv4
// address (1-255 characters from A-Z a-z 0-9 - . _ ~) or a bracketed IPv6 address, then an
// optional ":port" (1-65535).
bool isValidHost(std::string_view text);

// A health monitor's request, "METHOD /path": a token, one space, then an origin-form target that
// starts with "/" and has only visible ASCII characters and no "#" (a fragment is never sent).
// On failure returns false and sets *error to a phrase for the message.
bool parseRequestLine(std::string_view text, std::string* method, std::string* path,
                      std::string* error);

// An expected status: a code from 100 to 599 ("200" -> [200, 200]) or a class from 2xx to 5xx
// ("2xx" -> [200, 299]), as an inclusive range.
bool parseStatusRange(std::string_view text, std::pair<int, int>* out);

}  // namespace ballast::config
