// The controller's durable state in SQLite (DATA_DIR/controller.db): desired objects, the global
// revision, events, service engines and the placement. Not thread-safe: the caller serialises.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "controller/documents.h"
#include "controller/placement.h"
#include "controller/sqlite.h"

struct sqlite3;

namespace ballast::controller {

struct StoredObject {
  std::string kind;
  std::string name;
  int64_t version = 0;
  Json body;  // as written, without "version"
};

struct Event {
  int64_t id = 0;
  std::string time;  // ISO 8601 UTC with milliseconds
  std::string type;
  std::string object;  // "virtual_services/web", "ses/se1"
  std::string message;
  Json details;
};

struct EventFilter {
  std::string type;
  std::string object;     // "kind/name", or a bare name matching any kind
  int64_t since_id = -1;  // -1: the latest ones
  int limit = 100;
};

struct SeRecord {
  std::string name;
  std::string address;
  std::string group = "default";
  std::string software_version;
  std::string state = "connected";  // connected | lost
  Json last_report;                 // null until the first report
  int64_t acked_revision = 0;
  std::string apply_error;
  int64_t config_revision = 0;  // global revision at which `config` last changed
  Json config;                  // rendered document for this SE
};

class Store {
 public:
  // Opens (creating) the database; nullptr with *error set on failure.
  static std::unique_ptr<Store> open(const std::string& path, std::string* error);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // A write transaction (BEGIN IMMEDIATE); rolled back unless commit() is called.
  class Transaction {
   public:
    explicit Transaction(Store& store);
    ~Transaction();
    void commit();
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;

   private:
    Store& store_;
    bool done_ = false;
  };

  int64_t revision();
  int64_t bumpRevision();  // the new revision

  std::vector<StoredObject> list(const std::string& kind);
  std::optional<StoredObject> get(const std::string& kind, const std::string& name);
  void put(const StoredObject& object);
  void remove(const std::string& kind, const std::string& name);

  // The event as stored (its id and time set).
  Event addEvent(const std::string& type, const std::string& object, const std::string& message,
                 const Json& details = Json::object());
  std::vector<Event> events(const EventFilter& filter);

  std::vector<SeRecord> ses();
  std::optional<SeRecord> se(const std::string& name);
  void putSe(const SeRecord& se);
  void removeSe(const std::string& name);

  Placement placement();
  void setPlacement(const Placement& placement);

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  void exec(const char* sql);
  std::string meta(const std::string& key, const std::string& fallback);
  void setMeta(const std::string& key, const std::string& value);

  sqlite3* db_;
};

}  // namespace ballast::controller
