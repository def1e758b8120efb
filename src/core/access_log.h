// Access logs: one line per request or connection, written by a thread of its own so that a slow
// disk never holds a worker up. Each worker appends to its own buffer (a mutex only the writer
// thread ever contends for, briefly, when it swaps buffers); when a buffer is over its cap because
// the writer cannot keep up, lines are dropped and counted rather than blocking.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace ballast {

class AccessLog {
 public:
  // target: "stdout" or a file path (opened for append, created 0640). Null with *error set when
  // the file cannot be opened.
  static std::shared_ptr<AccessLog> open(const std::string& target, size_t workers,
                                         std::string* error);
  ~AccessLog();  // writes what is buffered, stops the thread
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // Appends one line (a newline is added). Called by worker `worker` only; never blocks on I/O.
  void write(size_t worker, std::string_view line);
  // Reopens the file (after rotation). Thread-safe.
  bool reopen(std::string* error);

  const std::string& target() const;
  uint64_t written() const;  // lines written
  uint64_t dropped() const;  // lines dropped because the writer could not keep up

 private:
  class Impl;
  explicit AccessLog(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ballast
