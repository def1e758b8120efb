#include "controller/sqlite.h"

#include <sqlite3.h>

namespace ballast::controller::sqlite {

Statement::Statement(sqlite3* db, const char* sql) : db_(db) {
  if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) fail("prepare");
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::bind(int index, const std::string& text) {
  check(sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()),
                          SQLITE_TRANSIENT));
  return *this;
}

Statement& Statement::bind(int index, int64_t value) {
  check(sqlite3_bind_int64(stmt_, index, value));
  return *this;
}

Statement& Statement::bindBlob(int index, const std::string& data) {
  check(sqlite3_bind_blob(stmt_, index, data.data(), static_cast<int>(data.size()),
                          SQLITE_TRANSIENT));
  return *this;
}

bool Statement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc != SQLITE_DONE) fail("step");
  return false;
}

void Statement::run() {
  step();
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

std::string Statement::text(int column) {
  const unsigned char* p = sqlite3_column_text(stmt_, column);
  return p == nullptr ? std::string()
                      : std::string(reinterpret_cast<const char*>(p),
                                    static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

std::string Statement::blob(int column) {
  const void* p = sqlite3_column_blob(stmt_, column);
  return p == nullptr ? std::string()
                      : std::string(static_cast<const char*>(p),
                                    static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

int64_t Statement::integer(int column) { return sqlite3_column_int64(stmt_, column); }

void Statement::check(int rc) {
  if (rc != SQLITE_OK) fail("bind");
}

void Statement::fail(const char* what) {
  throw StoreError(std::string("sqlite ") + what + ": " + sqlite3_errmsg(db_));
}

void exec(sqlite3* db, const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    std::string text = message ? message : sqlite3_errmsg(db);
    sqlite3_free(message);
    throw StoreError("sqlite: " + text);
  }
}

}  // namespace ballast::controller::sqlite
