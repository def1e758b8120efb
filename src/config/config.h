// The configuration model: what `ballast se --config FILE` reads (docs/configuration.md is the
// reference). A Config is immutable once loaded; workers get it as a shared snapshot.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/address.h"

namespace ballast::config {

using Duration = std::chrono::milliseconds;

enum class Protocol { Tcp, Http };
enum class LbAlgorithm { RoundRobin, LeastConnections, LeastResponseTime, RandomTwoChoices, ConsistentHash };
enum class HashKeyType { ClientIp, Header, Path, Cookie };
enum class MonitorType { Tcp, Http, Https };
enum class PersistenceType { None, ClientIp, HttpHeader, HttpCookie, AppCookie };

struct SeSettings {
  unsigned workers = 0;                         // 0 in the file is invalid; default = number of cores
  std::optional<SocketAddress> admin;           // absent: no admin listener
  std::string admin_text;                       // as written, for messages
  Duration drain_timeout = std::chrono::seconds(30);
  uint32_t buffer_size = 16 * 1024;             // per-connection, per-direction buffer (bytes)
  // Unix socket through which a new `ballast se --takeover PATH` takes the listening sockets
  // (binary upgrade without dropping connections). Empty: none.
  std::string control_socket;
};

struct RedisSettings {
  SocketAddress address;                        // resolved at load
  std::string address_text = "127.0.0.1:6379";
  std::string password_file;                    // "" = no AUTH
  std::string password;                         // read from password_file at load
  std::string prefix = "ballast";               // keys: "{prefix}:v1:persist:{vs}:{key}"
  Duration connect_timeout = std::chrono::seconds(1);
  Duration timeout = std::chrono::milliseconds(200);  // per command; then decide without the store
};

struct StoreSettings {
  std::string type = "memory";                 // memory | redis
  RedisSettings redis;
  uint32_t cache_size = 100000;                // entries this engine keeps (LRU) to skip round trips
};

// Session persistence: a client keeps its server, the same on every engine sharing the store.
struct Persistence {
  PersistenceType type = PersistenceType::None;
  Duration timeout = std::chrono::seconds(300); // an entry lives this long after its last use
  std::string header;                           // http_header: the field naming the client
  std::string cookie;                           // http_cookie: the cookie Ballast sets (default
                                                // "BALLAST_SERVER"); app_cookie: the server's
  uint32_t ipv4_prefix = 32;                    // client_ip: clients grouped by network
  uint32_t ipv6_prefix = 128;
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
  // Further attempts on another server after a failure (connect refused/timeout always; a reset or
  // empty response only for idempotent requests that can be sent again). 0..10, default 2.
  uint32_t retries = 2;
  std::string access_log;                       // "" = off, "stdout", or a file path
  Persistence persistence;                      // type None: off
  std::string se_group = "default";             // managed engines: the SE group it is placed in
  // Apdex threshold T of the controller's analytics (satisfied <= T, tolerated <= 4T); an engine
  // on its own accepts and ignores it.
  Duration apdex_threshold = std::chrono::milliseconds(500);
  int line = 0;                                 // where it was defined, for messages
};

// A group of service engines that virtual services are placed on (the controller's; a standalone
// engine accepts and ignores them).
struct SeGroup {
  std::string name;
  uint32_t max_vs_per_se = 10;                  // virtual services one SE of the group may serve
  uint32_t min_se_per_vs = 1;                   // SEs each virtual service runs on
  std::string ha_mode = "n_plus_m";             // the only mode for now
  uint32_t spares = 0;                          // SEs kept free (the "m" of n + m)
  int line = 0;
};

struct Server {
  std::string address_text;                     // as written: "127.0.0.1:9001", "localhost:9001"
  SocketAddress address;                        // resolved at load time
  uint32_t weight = 1;                          // 1..256
  bool enabled = true;                          // false: no new traffic at all
  bool drain = false;                           // no new connections; existing ones finish
  uint32_t max_connections = 0;                 // concurrent connections (TCP) or requests in
                                                // flight (HTTP) across the engine; 0 = no limit
};

// For consistent_hash: what identifies a client.
struct HashKey {
  HashKeyType type = HashKeyType::ClientIp;
  std::string name;                             // header or cookie name (type Header / Cookie)
};

// Passive health: servers that fail in a row are taken out for a while (like Envoy's outlier
// detection; same defaults).
struct OutlierDetection {
  bool enabled = true;
  uint32_t consecutive_5xx = 5;                 // 0 = not on 5xx
  uint32_t consecutive_gateway_failure = 5;     // connect refused/timeout, reset, timeout; 0 = off
  Duration base_ejection_time = std::chrono::seconds(30);  // times the number of ejections
  Duration max_ejection_time = std::chrono::seconds(300);
  uint32_t max_ejection_percent = 10;           // of the pool's servers; at least one may be ejected
  // Never eject when fewer than this percentage of the pool's servers would be left in use.
  uint32_t panic_threshold = 50;
};

struct HealthMonitor {
  std::string name;
  MonitorType type = MonitorType::Tcp;
  Duration interval = std::chrono::seconds(5);
  Duration timeout = std::chrono::seconds(2);
  uint32_t rise = 2;                            // successes in a row to go up
  uint32_t fall = 3;                            // failures in a row to go down
  std::string method = "GET";                   // http/https: from `request: "GET /health"`
  std::string path = "/";
  std::string host;                             // Host field; default: the server's address
  std::vector<std::pair<int, int>> expect = {{200, 299}};  // accepted status ranges
  std::string body;                             // substring the body must contain ("" = any)
  uint16_t port = 0;                            // check this port instead of the server's
  int line = 0;
};

struct ConnectionPoolSettings {
  uint32_t max_idle_per_server = 64;            // per worker
  Duration idle_timeout = std::chrono::seconds(30);
};

struct Pool {
  std::string name;
  LbAlgorithm lb_algorithm = LbAlgorithm::RoundRobin;
  HashKey hash_key;                             // consistent_hash only
  std::vector<Server> servers;
  ConnectionPoolSettings connection_pool;
  std::vector<std::string> health_monitors;     // names in Config::health_monitors; all must pass
  OutlierDetection outlier_detection;
  int line = 0;
};

struct Config {
  std::string source;                           // file path it was loaded from
  SeSettings se;
  StoreSettings store;
  std::vector<VirtualService> virtual_services;
  std::vector<Pool> pools;
  std::vector<HealthMonitor> health_monitors;
  std::vector<SeGroup> se_groups;               // "default" is implied when not listed

  const Pool* findPool(const std::string& name) const;
  const HealthMonitor* findMonitor(const std::string& name) const;
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
const char* toString(HashKeyType t);
const char* toString(MonitorType t);
const char* toString(PersistenceType t);

}  // namespace ballast::config
