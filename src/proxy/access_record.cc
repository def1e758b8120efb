#include "proxy/access_record.h"

#include <fmt/format.h>
#include <time.h>

#include <chrono>

#include "core/json_escape.h"

namespace ballast::proxy {

namespace {
void field(std::string& out, const char* name, std::string_view value) {
  out += ",\"";
  out += name;
  out += "\":";
  appendJsonString(out, value);
}

void field(std::string& out, const char* name, uint64_t value) {
  fmt::format_to(std::back_inserter(out), ",\"{}\":{}", name, value);
}
}  // namespace

void formatAccessRecord(const AccessRecord& r, std::string& out) {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(ms / 1000);
  tm utc{};
  gmtime_r(&secs, &utc);
  fmt::format_to(std::back_inserter(out), "{{\"time\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\"",
                 utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                 utc.tm_sec, ms % 1000);
  field(out, "vs", r.vs);
  field(out, "client", r.client);
  if (!r.method.empty() || r.status != 0) {
    field(out, "method", r.method);
    field(out, "target", r.target);
    field(out, "status", static_cast<uint64_t>(r.status));
  }
  field(out, "server", r.server);
  field(out, "bytes_in", r.bytes_in);
  field(out, "bytes_out", r.bytes_out);
  if (!r.method.empty() || r.status != 0) field(out, "header_us", r.header_us);
  field(out, "connect_us", r.connect_us);
  if (!r.method.empty() || r.status != 0) field(out, "first_byte_us", r.first_byte_us);
  field(out, "total_us", r.total_us);
  field(out, "retries", static_cast<uint64_t>(r.retries));
  field(out, "error", r.error);
  out += '}';
}

}  // namespace ballast::proxy
