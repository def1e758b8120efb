// A managed service engine: takes its virtual services from the controller (docs/api.md, "For
// service engines") instead of a file, and reports to it.
#pragma once

#include <chrono>
#include <string>

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

}  // namespace ballast::se
