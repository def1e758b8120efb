// The configuration model: what `ballast se --config FILE` reads (docs/configuration.md is the
// reference). A Config is immutable once loaded; workers get it as a shared snapshot.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/address.h"

namespace ballast::config {

using Duration = std::chrono::milliseconds;

enum class Protocol { Tcp, Http };
enum class LbAlgorithm { RoundRobin };

struct SeSettings {
  unsigned workers = 0;                         // 0 in the file is invalid; default = number of cores
  std::optional<SocketAddress> admin;           // absent: no admin listener
  std::string admin_text;                       // as written, for messages
  Duration drain_timeout = std::chrono::seconds(30);
  uint32_t buffer_size = 16 * 1024;             // per-connection, per-direction buffer (bytes)
};

struct StoreSettings {
  std::string type = "memory";                 // only "memory" for now
};

struct VsTimeouts {
  Duration client_header = std::chrono::seconds(10);  // first byte of a request -> end of its head
  Duration idle = std::chrono::seconds(60);           // http: keep-alive idle; tcp: inactivity
  Duration client = std::chrono::seconds(60);         // http: client inactivity mid-request
  Duration connect = std::chrono::seconds(5);         // server connect, per attempt
  Duration server = std::chrono::seconds(60);         // http: server inactivity (response)
};

struct VirtualService {
  std::string name;
  SocketAddress listen;
  std::string listen_text;
  Protocol protocol = Protocol::Http;
  std::string pool;                             // name of a pool in Config::pools
  uint32_t max_connections = 0;                 // 0 = unlimited
  uint32_t max_header_size = 16 * 1024;         // bytes of request (and response) head
  uint32_t max_headers = 100;                   // header fields per head
  bool x_forwarded_for = true;                  // add X-Forwarded-For and X-Forwarded-Proto
  VsTimeouts timeouts;
  int line = 0;                                 // where it was defined, for messages
};

struct Server {
  std::string address_text;                     // as written: "127.0.0.1:9001", "localhost:9001"
  SocketAddress address;                        // resolved at load time
  uint32_t weight = 1;                          // 1..256
  bool enabled = true;
};

struct ConnectionPoolSettings {
  uint32_t max_idle_per_server = 64;            // per worker
  Duration idle_timeout = std::chrono::seconds(30);
};

struct Pool {
  std::string name;
  LbAlgorithm lb_algorithm = LbAlgorithm::RoundRobin;
  std::vector<Server> servers;
  ConnectionPoolSettings connection_pool;
  int line = 0;
};

struct Config {
  std::string source;                           // file path it was loaded from
  SeSettings se;
  StoreSettings store;
  std::vector<VirtualService> virtual_services;
  std::vector<Pool> pools;

  const Pool* findPool(const std::string& name) const;
};

// A configuration error: "file:line: key.path: message".
struct ConfigError {
  std::string file;
  int line = 0;                                 // 1-based; 0 when unknown
  std::string key_path;                         // e.g. "pools[0].servers[1].address"
  std::string message;                          // e.g. "expected host:port"
  std::string toString() const;
};

struct LoadResult {
  std::shared_ptr<const Config> config;         // set on success
  std::vector<ConfigError> errors;              // non-empty on failure (all found, in file order)
  bool ok() const { return config != nullptr; }
};

// Reads and validates a YAML file. Never throws.
LoadResult loadFile(const std::string& path);
// Same from text (tests); `source_name` is used in messages.
LoadResult loadString(const std::string& yaml_text, const std::string& source_name);

const char* toString(Protocol p);
const char* toString(LbAlgorithm a);

}  // namespace ballast::config
