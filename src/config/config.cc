// The configuration model's small helpers; loading and validation live in loader.cc.

#include "config/config.h"

namespace ballast::config {

const Pool* Config::findPool(const std::string& name) const {
  for (const Pool& pool : pools) {
    if (pool.name == name) return &pool;
  }
  return nullptr;
}

std::string ConfigError::toString() const {
  std::string text = file;
  if (line > 0) text += ":" + std::to_string(line);
  text += ": ";
  if (!key_path.empty()) text += key_path + ": ";
  text += message;
  return text;
}

const char* toString(Protocol p) {
  switch (p) {
    case Protocol::Tcp:
      return "tcp";
    case Protocol::Http:
      return "http";
  }
  return "unknown";
}

const char* toString(LbAlgorithm a) {
  switch (a) {
    case LbAlgorithm::RoundRobin: return "round_robin";
    case LbAlgorithm::LeastConnections: return "least_connections";
    case LbAlgorithm::LeastResponseTime: return "least_response_time";
    case LbAlgorithm::RandomTwoChoices: return "random_two_choices";
    case LbAlgorithm::ConsistentHash: return "consistent_hash";
  }
  return "unknown";
}

const char* toString(HashKeyType t) {
  switch (t) {
    case HashKeyType::ClientIp: return "client_ip";
    case HashKeyType::Header: return "header";
    case HashKeyType::Path: return "path";
    case HashKeyType::Cookie: return "cookie";
  }
  return "unknown";
}

const char* toString(MonitorType t) {
  switch (t) {
    case MonitorType::Tcp: return "tcp";
    case MonitorType::Http: return "http";
    case MonitorType::Https: return "https";
  }
  return "unknown";
}

const char* toString(PersistenceType t) {
  switch (t) {
    case PersistenceType::None: return "none";
    case PersistenceType::ClientIp: return "client_ip";
    case PersistenceType::HttpHeader: return "http_header";
    case PersistenceType::HttpCookie: return "http_cookie";
    case PersistenceType::AppCookie: return "app_cookie";
  }
  return "unknown";
}

const HealthMonitor* Config::findMonitor(const std::string& name) const {
  for (const HealthMonitor& m : health_monitors)
    if (m.name == name) return &m;
  return nullptr;
}

}  // namespace ballast::config
