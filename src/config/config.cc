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
    case LbAlgorithm::RoundRobin:
      return "round_robin";
  }
  return "unknown";
}

}  // namespace ballast::config
