// One access log line: what happened to a request (HTTP) or a connection (TCP), as JSON.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ballast::proxy {

struct AccessRecord {
  std::string_view vs;
  std::string_view client;       // "ip:port"
  std::string_view method;       // HTTP only ("" when the head never parsed)
  std::string_view target;       // HTTP only, as received
  int status = 0;                // HTTP only (0: none sent)
  std::string_view server;       // address of the server of the last attempt ("" = none)
  uint64_t bytes_in = 0;         // from the client
  uint64_t bytes_out = 0;        // to the client
  uint64_t header_us = 0;        // HTTP: first byte of the request to the end of its head
  uint64_t connect_us = 0;       // server connect (0: a reused connection)
  uint64_t first_byte_us = 0;    // request sent to the first byte of the response
  uint64_t total_us = 0;         // HTTP: first byte of the request to the end of the response;
                                 // TCP: the connection's life
  uint32_t retries = 0;
  std::string_view error;        // error kind name, "" when all went well
};

// Appends the record as one JSON object (no newline), with the current UTC time first.
void formatAccessRecord(const AccessRecord& r, std::string& out);

}  // namespace ballast::proxy
