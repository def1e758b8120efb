// A managed service engine: takes its virtual services from the controller (docs/api.md, "For
// service engines") instead of a file, and reports to it.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "config/config.h"

namespace ballast::se {

struct ManagedOptions {
  std::string controller_url;  // http(s)://host:port
  std::string token_file;      // the SE token
  std::string name;            // this engine's name (unique in the controller)
  std::string address;         // where it serves (reported; default: the host's)
  std::string se_group = "default";
  std::string state_dir;       // last configuration kept here (default /var/lib/ballast/<name>)
  std::string config_path;     // optional: a file with this engine's own `se` and `store` sections
  std::chrono::milliseconds report_interval{1000};
};

// Runs until SIGTERM/SIGINT; the exit code.
int runManaged(const ManagedOptions& options);

// The pieces of managed mode that do no I/O (unit-tested).
namespace managed {

// The configuration an engine runs: its own `se` and `store` sections (YAML text of the
// --config file, "" for the defaults) with the virtual services, pools and health monitors of a
// controller document's "config". Validated by config::loadString; `source` names it in
// /status and in messages.
config::LoadResult mergeConfig(const std::string& own_yaml, const nlohmann::json& controller_config,
                               const std::string& source);

// An error of a configuration as one line without the line number (which would point into the
// merged document, not anything the operator wrote): "virtual_services[0].listen: expected
// host:port".
std::string describe(const config::LoadResult& result);

// Counters of a report: `now` (renderCounters) minus what the last report sent (`sent`, by
// virtual service and server; absent = since start). Gauges and max_connections are sent as they
// are; phase histograms as sparse differences matched by bucket index (one that went down is sent
// whole: its counters restarted).
nlohmann::json counterDeltas(const nlohmann::json& now, const nlohmann::json& sent);
// Records `now` as sent, phase histograms included in their cumulative sparse form (keeps entries
// no longer in `now`: a virtual service that comes back continues its counters).
void markSent(const nlohmann::json& now, nlohmann::json* sent);

// Retry delays: `first`, doubling up to `max`, each jittered down by up to half so that engines
// restarted together do not retry in step.
class Backoff {
 public:
  Backoff(std::chrono::milliseconds first, std::chrono::milliseconds max);
  std::chrono::milliseconds next();
  void reset() { current_ = first_; }
  void setMax(std::chrono::milliseconds max) {
    max_ = max;
    current_ = std::min(current_, max_);
  }

 private:
  std::chrono::milliseconds first_, max_, current_;
  std::minstd_rand random_;
};

// The last applied controller document {"revision", "config"}, kept in a state directory.
struct KeptDocument {
  int64_t revision = 0;
  nlohmann::json config;
};
// {"revision": integer, "config": object} as the controller sends it, or nullopt.
std::optional<KeptDocument> parseDocument(const std::string& text);
// Writes it atomically (temporary file, fsync, rename). false with *error set.
bool saveDocument(const std::string& dir, const KeptDocument& doc, std::string* error);
// The kept document, or nullopt (none, or unreadable: *error says why, "" when there is none).
std::optional<KeptDocument> loadDocument(const std::string& dir, std::string* error);

}  // namespace managed
}  // namespace ballast::se
