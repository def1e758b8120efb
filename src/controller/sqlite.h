// The little of SQLite's C API the controller's two databases use (controller.db through Store,
// analytics.db through Analytics): a prepared statement finalized on every way out, and exec(),
// both throwing StoreError on any failure.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

struct sqlite3;
struct sqlite3_stmt;

namespace ballast::controller {

// A database error (disk full, corruption): an API request that meets one fails with 500.
struct StoreError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace sqlite {

class Statement {
 public:
  Statement(sqlite3* db, const char* sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, const std::string& text);
  Statement& bind(int index, int64_t value);
  Statement& bindBlob(int index, const std::string& data);
  // true while there is a row.
  bool step();
  // Runs it to the end and makes it ready to run again with new bindings.
  void run();
  std::string text(int column);
  std::string blob(int column);
  int64_t integer(int column);

 private:
  void check(int rc);
  [[noreturn]] void fail(const char* what);
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

// Runs one or more statements without results (schema, pragmas, BEGIN/COMMIT).
void exec(sqlite3* db, const char* sql);

}  // namespace sqlite
}  // namespace ballast::controller
