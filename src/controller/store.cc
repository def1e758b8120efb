#include "controller/store.h"

#include "controller/wall_clock.h"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <stdexcept>

namespace ballast::controller {

namespace {

using sqlite::Statement;

Json parseStored(const std::string& text) {
  if (text.empty()) return nullptr;
  return Json::parse(text, nullptr, /*allow_exceptions=*/false);
}


constexpr int64_t kMaxEvents = 10000;  // older events are dropped

}  // namespace

std::unique_ptr<Store> Store::open(const std::string& path, std::string* error) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    *error = "cannot open " + path + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return nullptr;
  }
  std::unique_ptr<Store> store(new Store(db));
  try {
    sqlite3_busy_timeout(db, 5000);
    store->exec("PRAGMA journal_mode=WAL");
    store->exec("PRAGMA synchronous=NORMAL");
    store->exec(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS objects (kind TEXT NOT NULL, name TEXT NOT NULL,"
        "  version INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, name));"
        "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  time TEXT NOT NULL, type TEXT NOT NULL, object TEXT NOT NULL, message TEXT NOT NULL,"
        "  details TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS ses (name TEXT PRIMARY KEY, address TEXT NOT NULL,"
        "  se_group TEXT NOT NULL, software_version TEXT NOT NULL, last_report TEXT NOT NULL,"
        "  acked_revision INTEGER NOT NULL, apply_error TEXT NOT NULL,"
        "  config_revision INTEGER NOT NULL, config TEXT NOT NULL, state TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS placements (virtual_service TEXT NOT NULL,"
        "  se TEXT NOT NULL, PRIMARY KEY (virtual_service, se));");
  } catch (const StoreError& e) {
    *error = path + ": " + e.what();
    return nullptr;
  }
  return store;
}

Store::~Store() { sqlite3_close(db_); }

void Store::exec(const char* sql) { sqlite::exec(db_, sql); }

Store::Transaction::Transaction(Store& store) : store_(store) { store_.exec("BEGIN IMMEDIATE"); }

Store::Transaction::~Transaction() {
  if (!done_) sqlite3_exec(store_.db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

void Store::Transaction::commit() {
  store_.exec("COMMIT");
  done_ = true;
}

std::string Store::meta(const std::string& key, const std::string& fallback) {
  Statement s(db_, "SELECT value FROM meta WHERE key = ?");
  s.bind(1, key);
  return s.step() ? s.text(0) : fallback;
}

void Store::setMeta(const std::string& key, const std::string& value) {
  Statement s(db_, "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)");
  s.bind(1, key).bind(2, value).step();
}

int64_t Store::revision() { return std::stoll(meta("revision", "0")); }

int64_t Store::bumpRevision() {
  int64_t next = revision() + 1;
  setMeta("revision", std::to_string(next));
  return next;
}

std::vector<StoredObject> Store::list(const std::string& kind) {
  Statement s(db_, "SELECT name, version, body FROM objects WHERE kind = ? ORDER BY name");
  s.bind(1, kind);
  std::vector<StoredObject> out;
  while (s.step()) out.push_back({kind, s.text(0), s.integer(1), parseStored(s.text(2))});
  return out;
}

std::optional<StoredObject> Store::get(const std::string& kind, const std::string& name) {
  Statement s(db_, "SELECT version, body FROM objects WHERE kind = ? AND name = ?");
  s.bind(1, kind).bind(2, name);
  if (!s.step()) return std::nullopt;
  return StoredObject{kind, name, s.integer(0), parseStored(s.text(1))};
}

void Store::put(const StoredObject& object) {
  Statement s(db_, "INSERT OR REPLACE INTO objects (kind, name, version, body) VALUES (?,?,?,?)");
  s.bind(1, object.kind).bind(2, object.name).bind(3, object.version).bind(4, object.body.dump());
  s.step();
}

void Store::remove(const std::string& kind, const std::string& name) {
  Statement s(db_, "DELETE FROM objects WHERE kind = ? AND name = ?");
  s.bind(1, kind).bind(2, name).step();
}

Event Store::addEvent(const std::string& type, const std::string& object,
                      const std::string& message, const Json& details) {
  const std::string time = isoTime(nowMs());
  Statement s(db_, "INSERT INTO events (time, type, object, message, details) VALUES (?,?,?,?,?)");
  s.bind(1, time).bind(2, type).bind(3, object).bind(4, message).bind(5, details.dump());
  s.step();
  int64_t id = sqlite3_last_insert_rowid(db_);
  if (id % 100 == 0) {
    Statement trim(db_, "DELETE FROM events WHERE id <= ?");
    trim.bind(1, id - kMaxEvents).step();
  }
  return Event{id, time, type, object, message, details};
}

std::vector<Event> Store::events(const EventFilter& filter) {
  // Empty filters match everything; a bare object name matches it in any kind.
  const char* sql =
      "SELECT id, time, type, object, message, details FROM events"
      " WHERE (?1 = '' OR type = ?1)"
      "   AND (?2 = '' OR object = ?2 OR substr(object, instr(object, '/') + 1) = ?2)"
      "   AND id > ?3";
  std::string query = std::string(sql) + (filter.since_id >= 0 ? " ORDER BY id ASC LIMIT ?4"
                                                               : " ORDER BY id DESC LIMIT ?4");
  Statement s(db_, query.c_str());
  s.bind(1, filter.type).bind(2, filter.object);
  s.bind(3, std::max<int64_t>(filter.since_id, 0)).bind(4, static_cast<int64_t>(filter.limit));
  std::vector<Event> out;
  while (s.step()) {
    out.push_back(
        {s.integer(0), s.text(1), s.text(2), s.text(3), s.text(4), parseStored(s.text(5))});
  }
  if (filter.since_id < 0) std::reverse(out.begin(), out.end());
  return out;
}

namespace {
SeRecord readSe(Statement& s) {
  SeRecord se;
  se.name = s.text(0);
  se.address = s.text(1);
  se.group = s.text(2);
  se.software_version = s.text(3);
  se.last_report = parseStored(s.text(4));
  se.acked_revision = s.integer(5);
  se.apply_error = s.text(6);
  se.config_revision = s.integer(7);
  se.config = parseStored(s.text(8));
  se.state = s.text(9);
  return se;
}
constexpr const char* kSeColumns =
    "SELECT name, address, se_group, software_version, last_report, acked_revision, apply_error,"
    " config_revision, config, state FROM ses";
}  // namespace

std::vector<SeRecord> Store::ses() {
  Statement s(db_, (std::string(kSeColumns) + " ORDER BY name").c_str());
  std::vector<SeRecord> out;
  while (s.step()) out.push_back(readSe(s));
  return out;
}

std::optional<SeRecord> Store::se(const std::string& name) {
  Statement s(db_, (std::string(kSeColumns) + " WHERE name = ?").c_str());
  s.bind(1, name);
  if (!s.step()) return std::nullopt;
  return readSe(s);
}

void Store::putSe(const SeRecord& se) {
  Statement s(db_,
              "INSERT OR REPLACE INTO ses (name, address, se_group, software_version, last_report,"
              " acked_revision, apply_error, config_revision, config, state)"
              " VALUES (?,?,?,?,?,?,?,?,?,?)");
  s.bind(1, se.name).bind(2, se.address).bind(3, se.group).bind(4, se.software_version);
  s.bind(5, se.last_report.is_null() ? std::string() : se.last_report.dump());
  s.bind(6, se.acked_revision).bind(7, se.apply_error).bind(8, se.config_revision);
  s.bind(9, se.config.is_null() ? std::string() : se.config.dump()).bind(10, se.state);
  s.step();
}

void Store::removeSe(const std::string& name) {
  Statement s(db_, "DELETE FROM ses WHERE name = ?");
  s.bind(1, name);
  s.step();
  Statement p(db_, "DELETE FROM placements WHERE se = ?");
  p.bind(1, name);
  p.step();
}

Placement Store::placement() {
  Statement s(db_, "SELECT virtual_service, se FROM placements ORDER BY virtual_service, se");
  Placement out;
  while (s.step()) out[s.text(0)].push_back(s.text(1));
  return out;
}

void Store::setPlacement(const Placement& placement) {
  exec("DELETE FROM placements");
  for (const auto& [vs, ses] : placement) {
    for (const std::string& se : ses) {
      Statement s(db_, "INSERT INTO placements (virtual_service, se) VALUES (?, ?)");
      s.bind(1, vs).bind(2, se).step();
    }
  }
}

}  // namespace ballast::controller
