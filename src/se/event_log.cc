#include "se/event_log.h"

#include <time.h>

#include <chrono>
#include <cstdio>

namespace ballast::se {

namespace {
std::string utcNow() {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(ms / 1000);
  tm utc{};
  gmtime_r(&secs, &utc);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}
}  // namespace

void EventLog::emit(Event event) {
  nlohmann::ordered_json line;
  line["time"] = utcNow();
  line["event"] = event.type;
  for (auto& [k, v] : event.fields) line[k] = v;
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back(text);
    while (events_.size() > keep_) events_.pop_front();
  }
  // One write per line, so lines from several threads never interleave.
  text += '\n';
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

nlohmann::json EventLog::recent(size_t n) const {
  std::lock_guard<std::mutex> lock(mutex_);
  nlohmann::json out = nlohmann::json::array();
  size_t start = events_.size() > n ? events_.size() - n : 0;
  for (size_t i = start; i < events_.size(); ++i) out.push_back(nlohmann::json::parse(events_[i]));
  return out;
}

}  // namespace ballast::se
