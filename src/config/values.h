// Scalar value syntax of the configuration file: durations, sizes, integers, booleans, names.
// Pure functions, no YAML: the loader (loader.cc) and the REST layer can share them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

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

// Names of virtual services and pools: 1-64 characters from [A-Za-z0-9_.-].
bool isValidName(std::string_view name);

}  // namespace ballast::config
